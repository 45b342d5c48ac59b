"""`decide()`: every duplicate rule (skip, resend, query) against every reservation status, as a
table. Pure logic: the reservations are built by hand, no store is involved."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from dockyard.runtime.idempotency import (
    Action,
    ConflictError,
    Decision,
    IdempotencyError,
    Record,
    Reservation,
    Rule,
    State,
    Status,
    decide,
)

FP = "a" * 64
WHEN = datetime(2024, 5, 1, 8, 30, tzinfo=UTC)
STATE_OF = {Status.NEW: State.RESERVED, Status.IN_FLIGHT: State.RESERVED, Status.DUPLICATE: State.COMMITTED,
            Status.IN_DOUBT: State.IN_DOUBT, Status.CONFLICT: State.COMMITTED}


def reservation(status: Status, summary: dict[str, Any] | None = None) -> Reservation:
    state = STATE_OF[status]
    reason = "read timeout" if state is State.IN_DOUBT else None
    # For `new`, the record is this attempt's (request id req-now); otherwise the earlier attempt's (req-first).
    request_id, owner = ("req-now", "attempt-now") if status is Status.NEW else ("req-first", "attempt-first")
    record = Record("order-1:WH1", FP, state, owner, request_id, summary, reason, WHEN, WHEN, None)
    return Reservation(status, record)


SEND_NOW = (Action.SEND, "req-now")
SEND_AGAIN = (Action.SEND, "req-first")  # the warehouse dedupes on the request id: reuse it
QUERY = (Action.QUERY, "req-first")
SKIP = (Action.SKIP, None)
WAIT = (Action.WAIT, None)
REFUSE = (Action.REFUSE, None)

TABLE = [
    # status,            outcome recorded,  skip,     resend,     query
    (Status.NEW, False, SEND_NOW, SEND_NOW, SEND_NOW),
    (Status.DUPLICATE, True, SKIP, SEND_AGAIN, SKIP),
    (Status.DUPLICATE, False, SKIP, SEND_AGAIN, QUERY),
    (Status.IN_FLIGHT, False, WAIT, WAIT, WAIT),
    (Status.IN_DOUBT, False, REFUSE, SEND_AGAIN, QUERY),
    (Status.CONFLICT, True, REFUSE, REFUSE, REFUSE),
]
CASES = [
    pytest.param(status, outcome, rule, expected, id=f"{status.value}{'-with-outcome' if outcome else ''}-{rule.value}")
    for status, outcome, *by_rule in TABLE
    for rule, expected in zip(Rule, by_rule, strict=True)
]


@pytest.mark.parametrize("status, outcome, rule, expected", CASES)
def test_decide(status: Status, outcome: bool, rule: Rule, expected: tuple[Action, str | None]) -> None:
    got = decide(reservation(status, {"code": "200"} if outcome else None), rule)
    assert isinstance(got, Decision)
    assert (got.action, got.request_id) == expected
    assert "order-1:WH1" in got.reason


def test_every_rule_and_status_is_in_the_table() -> None:
    assert {(s, r) for s, _, r, _ in (c.values for c in CASES)} == {(s, r) for s in Status for r in Rule}
    assert list(Rule) == [Rule.SKIP, Rule.RESEND, Rule.QUERY]


@pytest.mark.parametrize("rule", list(Rule))
def test_a_conflict_is_refused_with_the_conflict_message(rule: Rule) -> None:
    got = decide(reservation(Status.CONFLICT, {"code": "200"}), rule)
    assert got.reason == str(ConflictError("order-1:WH1", FP))
    assert "refusing to send a different one under the same key" in got.reason


def test_the_reasons_say_why() -> None:
    assert "attempt-first" in decide(reservation(Status.IN_FLIGHT), "skip").reason
    doubt = reservation(Status.IN_DOUBT)
    assert "read timeout" in decide(doubt, "skip").reason and "resolve" in decide(doubt, "skip").reason
    assert "ask the warehouse" in decide(doubt, "query").reason
    assert "same request id" in decide(doubt, "resend").reason
    assert "recorded outcome" in decide(reservation(Status.DUPLICATE, {"code": "200"}), "skip").reason


def test_rules_are_taken_as_text_from_a_spec() -> None:
    assert decide(reservation(Status.DUPLICATE), "resend").action is Action.SEND
    with pytest.raises(IdempotencyError, match=r"unknown idempotency rule 'ignore' \(known: skip, resend, query\)"):
        decide(reservation(Status.NEW), "ignore")
