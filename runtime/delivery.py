"""Delivery with idempotency: reserve the key, send once, then commit, release or mark in doubt.

This is where idempotency is tied to sending. The key is reserved before anything leaves; what
happens to it afterwards depends on what is actually known:

- a definite answer from the warehouse (accepted, or a rejection that retrying cannot fix) →
  COMMIT, with a summary of the response;
- a definite failure, where the request certainly did not arrive or the warehouse asked for a
  retry (connection refused, 429/5xx) → RELEASE, so the next attempt may send again;
- anything else after the request may have left (timeout, reset connection, a crash) → IN DOUBT,
  resolved later by the warehouse's rule: query it, resend with the same request id, or hold for
  an operator. Never guessed.
"""

from __future__ import annotations

import socket
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from typing import Any, Protocol

from dockyard.runtime.errors import DockyardError
from dockyard.runtime.idempotency import Action, IdempotencyStore, Status, decide
from dockyard.runtime.request import PreparedRequest, WireRequest

__all__ = [
    "DeliveryResult",
    "NotSent",
    "OutcomeUnknown",
    "Response",
    "Transport",
    "UrllibTransport",
    "Verdict",
    "default_classify",
    "origin",
    "retry_status",
    "send_once",
]


class NotSent(DockyardError):
    """The request certainly did not reach the warehouse (connection refused, no route, DNS)."""


class OutcomeUnknown(DockyardError):
    """The request may have reached the warehouse, but no answer came back (timeout, reset)."""


@dataclass(frozen=True)
class Response:
    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes


class Transport(Protocol):
    def __call__(self, request: WireRequest, timeout: float) -> Response: ...


class Verdict(StrEnum):
    ACCEPTED = "accepted"  # definite: delivered
    REJECTED = "rejected"  # definite: the warehouse said no, and the same request will not change its mind
    RETRY = "retry"  # definite failure that a later attempt may fix


def retry_status(status: int) -> bool:
    """An HTTP status that says "not now" rather than "no": timeouts, too early, rate limits and
    server errors. Such an answer never reaches a response mapping."""
    return status in (408, 425, 429) or status >= 500


def default_classify(response: Response) -> Verdict:
    """HTTP status only; warehouse flows refine this with their response mapping (flag, code, …)."""
    if 200 <= response.status < 300:
        return Verdict.ACCEPTED
    if retry_status(response.status):
        return Verdict.RETRY
    return Verdict.REJECTED


class UrllibTransport:
    """A plain HTTP(S) transport on the standard library, with one timeout for the whole call."""

    def __call__(self, request: WireRequest, timeout: float) -> Response:
        if not request.url.startswith(("http://", "https://")):  # urlopen would also read file:// URLs
            raise NotSent(f"refusing to send to {origin(request.url)}: only http and https are allowed")
        req = urllib.request.Request(request.url, data=request.body or None, method=request.method,
                                     headers=dict(request.headers))
        try:
            with urllib.request.urlopen(req, timeout=timeout) as answer:
                return Response(answer.status, tuple(answer.headers.items()), answer.read())
        except urllib.error.HTTPError as exc:
            return Response(exc.code, tuple(exc.headers.items()) if exc.headers else (), exc.read())
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, ConnectionRefusedError | socket.gaierror):
                raise NotSent(f"{request.method} {origin(request.url)}: {exc.reason}") from None
            raise OutcomeUnknown(f"{request.method} {origin(request.url)}: {exc.reason}") from None
        except (TimeoutError, ConnectionError, OSError) as exc:
            raise OutcomeUnknown(f"{request.method} {origin(request.url)}: {exc}") from None


def origin(url: str) -> str:
    """Only scheme and host of a URL, for messages: paths and queries may carry signatures and
    customer ids."""
    head, _, rest = url.partition("://")
    return f"{head}://{rest.split('/', 1)[0].split('?', 1)[0]}"


@dataclass(frozen=True)
class DeliveryResult:
    action: Action  # what the idempotency rule decided
    state: str  # committed | released | in_doubt | untouched
    request_id: str | None  # the id sent with; for QUERY, the new id to send the recovery query with
    verdict: Verdict | None = None
    summary: dict[str, Any] | None = None  # the response summary (recorded, or recorded earlier)
    reason: str = ""
    response: Response | None = field(default=None, repr=False)
    recorded_request_id: str | None = None  # QUERY: the id the earlier attempt went out with


def _summary(response: Response, verdict: Verdict) -> dict[str, Any]:
    return {"status": response.status, "verdict": verdict.value,
            "body": response.body[:2000].decode("utf-8", errors="replace")}


def send_once(prepare: Callable[[str], PreparedRequest], store: IdempotencyStore, transport: Transport, *,
              rule: str = "skip", classify: Callable[[Response], Verdict] = default_classify,
              timeout: float = 10.0, ttl: timedelta | None = None, owner: str | None = None) -> DeliveryResult:
    """Deliver one request at most once as the warehouse sees it.

    `prepare(request_id)` builds the request: it is called with a fresh id, or with the recorded one
    when the rule resends, because a warehouse that dedupes recognises the id."""
    owner = owner or uuid.uuid4().hex
    prepared = prepare(uuid.uuid4().hex)
    key = prepared.idempotency_key
    if key is None:
        raise DockyardError("this mapping declares no idempotency key; deliver it through a spec that does")
    reservation = store.reserve(key, prepared.fingerprint, owner=owner, request_id=prepared.request_id, ttl=ttl)
    # A recovery query is a request of its own: it goes out with this attempt's fresh id, which was
    # never sent (the reservation was not new), not with the recorded one.
    fresh = prepared.request_id if prepared.request_id != reservation.record.request_id else None
    decision = decide(reservation, rule, query_request_id=fresh)
    record = reservation.record
    if decision.action is not Action.SEND:
        return DeliveryResult(decision.action, "untouched", decision.request_id, summary=record.summary,
                              reason=decision.reason, recorded_request_id=decision.recorded_request_id)
    holds = reservation.status is Status.NEW
    if decision.request_id is not None and decision.request_id != prepared.request_id:
        prepared = prepare(decision.request_id)  # resend: the warehouse must see the same request id
    try:
        response = transport(prepared.request, timeout)
    except NotSent as exc:
        if holds:
            store.release(key, owner)
        return DeliveryResult(Action.SEND, "released" if holds else "untouched", prepared.request_id,
                              reason=f"not sent: {exc}")
    except Exception as exc:  # the request may have left: nobody may guess the outcome
        if holds:
            store.mark_in_doubt(key, owner, f"{type(exc).__name__}: {exc}"[:500])
        return DeliveryResult(Action.SEND, "in_doubt" if holds else "untouched", prepared.request_id,
                              reason=f"outcome unknown: {exc}")
    verdict = classify(response)
    summary = _summary(response, verdict)
    if verdict is Verdict.RETRY:
        if holds:
            store.release(key, owner)
        return DeliveryResult(Action.SEND, "released" if holds else "untouched", prepared.request_id, verdict,
                              summary, "the warehouse asked for a retry", response)
    if holds:
        store.commit(key, owner, summary)
    else:
        store.resolve(key, summary)  # a resend settled an earlier delivery or an in-doubt key
    return DeliveryResult(Action.SEND, "committed", prepared.request_id, verdict, summary, "", response)
