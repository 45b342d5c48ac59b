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
QUERY = (Action.QUERY, "req-query")  # a recovery query is a new request: never the recorded id
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
    got = decide(reservation(status, {"code": "200"} if outcome else None), rule, query_request_id="req-query")
    assert isinstance(got, Decision)
    assert (got.action, got.request_id) == expected
    assert "order-1:WH1" in got.reason
    # Only a query says which id the earlier attempt used (what a warehouse may search by).
    assert got.recorded_request_id == ("req-first" if got.action is Action.QUERY else None)


@pytest.mark.parametrize("status", [Status.IN_DOUBT, Status.DUPLICATE])
def test_a_recovery_query_gets_a_new_request_id_by_default(status: Status) -> None:
    # SF answers a requestID it has seen with A1007, and a warehouse that dedupes on the id would
    # take the query for the create: the query never goes out under the recorded id.
    ids = {decide(reservation(status), "query").request_id for _ in range(20)}
    assert len(ids) == 20 and "req-first" not in ids
    assert all(isinstance(i, str) and len(i) == 32 for i in ids)


def test_a_recovery_query_refuses_the_recorded_id() -> None:
    with pytest.raises(IdempotencyError, match="needs a new request id"):
        decide(reservation(Status.IN_DOUBT), "query", query_request_id="req-first")


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
