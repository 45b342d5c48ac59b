"""What to do with a reservation, under a warehouse's duplicate rule: pure logic, no store.

A warehouse's spec names one rule (`idempotency.rule`):

- `skip`: the warehouse does not dedupe, or a second create would be an error. A key delivered
  before is not sent again; its recorded outcome stands. An attempt whose outcome is unknown is
  not guessed at: the key waits for an operator (or a recovery query) to resolve it.
- `resend`: the warehouse dedupes on the request id. Sending again with the recorded request id
  is safe, so a duplicate or an in-doubt key is sent again, reusing `record.request_id`.
- `query`: the warehouse can be asked (e.g. SF's search-order). An in-doubt key, or a duplicate
  with no recorded outcome, is looked up, never blindly re-created. The query is a request of its
  own and goes out with a NEW request id: SF refuses a requestID it has seen (A1007), and a
  warehouse that dedupes on the id would take the query for the create again. The recorded id is
  handed over beside it (`recorded_request_id`), for a warehouse that searches by it.

Whatever the rule, a different payload under the same key is refused, `new` is sent, and a key
that another attempt holds is waited for.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from enum import StrEnum

from dockyard.runtime.idempotency.base import ConflictError, IdempotencyError, Reservation, Status

__all__ = ["Action", "Decision", "Rule", "decide"]


class Rule(StrEnum):
    SKIP = "skip"
    RESEND = "resend"
    QUERY = "query"


class Action(StrEnum):
    SEND = "send"  # send the request, with `request_id`
    SKIP = "skip"  # do not send: the recorded outcome is the answer
    QUERY = "query"  # ask the warehouse (a new request, sent with `request_id`) before anything else
    WAIT = "wait"  # another attempt holds the key: retry the reservation later
    REFUSE = "refuse"  # do not send; an error for the caller (conflict) or an operator (unknown outcome)


@dataclass(frozen=True)
class Decision:
    action: Action
    # The request id to send with (SEND: this attempt's, or the recorded one on a resend) or to send
    # the recovery query with (QUERY: always a new one); None when nothing goes out.
    request_id: str | None
    reason: str
    # QUERY: the id the earlier attempt went out with, for a warehouse that looks orders up by it.
    recorded_request_id: str | None = None


def decide(reservation: Reservation, rule: Rule | str, *, query_request_id: str | None = None) -> Decision:
    """The action for a reservation under a duplicate rule. `query_request_id` is the id a recovery
    query is sent with (default: a new random one); it must differ from the recorded one."""
    try:
        rule = Rule(rule)
    except ValueError:
        known = ", ".join(r.value for r in Rule)
        raise IdempotencyError(f"unknown idempotency rule {rule!r} (known: {known})") from None
    record = reservation.record
    key = record.key
    status = reservation.status
    if query_request_id is not None and query_request_id == record.request_id:
        raise IdempotencyError(f"a recovery query for key {key!r} needs a new request id, not the recorded "
                               f"{record.request_id!r}")

    def query(why: str) -> Decision:
        return Decision(Action.QUERY, query_request_id or uuid.uuid4().hex, why,
                        recorded_request_id=record.request_id)

    if status is Status.NEW:
        return Decision(Action.SEND, record.request_id, f"key {key!r} is new: this attempt holds it")
    if status is Status.CONFLICT:
        return Decision(Action.REFUSE, None, str(ConflictError(key, record.fingerprint)))
    if status is Status.IN_FLIGHT:
        return Decision(Action.WAIT, None, f"key {key!r} is being sent by another attempt ({record.owner!r}) "
                                           f"since {record.created_at.isoformat()}")
    if status is Status.DUPLICATE:
        if rule is Rule.RESEND:
            return Decision(Action.SEND, record.request_id,
                            f"key {key!r} was delivered; the warehouse dedupes, so it is sent again "
                            f"with the same request id")
        if rule is Rule.QUERY and record.summary is None:
            return query(f"key {key!r} was delivered but no outcome was recorded: ask the warehouse, "
                         f"with a new request id")
        return Decision(Action.SKIP, None, f"key {key!r} was delivered; the recorded outcome stands")
    # Status.IN_DOUBT: sent, outcome unknown.
    why = f"key {key!r} was sent but its outcome is unknown ({record.reason or 'no reason recorded'})"
    if rule is Rule.RESEND:
        return Decision(Action.SEND, record.request_id,
                        f"{why}; the warehouse dedupes, so it is sent again with the same request id, "
                        f"then resolved")
    if rule is Rule.QUERY:
        return query(f"{why}: ask the warehouse with a new request id, then resolve the key")
    return Decision(Action.REFUSE, None,
                    f"{why}; the rule 'skip' neither sends again nor asks: resolve the key once the "
                    f"warehouse's state is known")
