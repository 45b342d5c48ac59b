"""Warehouse callbacks: verify, decrypt, map, dedupe, record, acknowledge.

Order of work, and why:
1. the signature and its timestamp window are checked on the raw request before anything is
   parsed, so a forged or replayed callback (401) never reaches a mapping or the store;
2. configured fields are decrypted, and the inbound mapping turns the message into a status-event;
3. the event is recorded once per (warehouse, event id) together with its forward job, in one
   commit, before the warehouse hears its ack: an acked event is never lost, and a repeated
   delivery of the same event is acknowledged again but applied once;
4. the ack is the warehouse's own, rendered by its ack mapping from the same message.
A message that cannot be read is quarantined with its reason and answered with an error, so the
warehouse sends it again and an operator can see it.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from dockyard.runtime.errors import DockyardError, InputError, TransformError
from dockyard.runtime.fieldcrypto import get_cipher
from dockyard.runtime.signing import ReplayError, SignatureError
from dockyard.service import logs, store, tracing
from dockyard.service.config import CallbackConfig, WarehouseConfig
from dockyard.service.context import ServiceContext
from dockyard.service.db import Database, StoreError, now_us
from dockyard.service.ingest import storable_text
from dockyard.service.replay import SignedInput, dedupe_identity, signed_input

__all__ = ["CallbackReply", "handle_callback"]


@dataclass(frozen=True)
class CallbackReply:
    status: int
    body: bytes
    content_type: str
    outcome: str  # applied | duplicate | forged | unreadable | unknown-flow | foreign-order | unknown-order | error
    secret: str | None = None  # which secret verified it: current | previous (a rotation's overlap) | None


def verify(cfg: CallbackConfig, ctx: ServiceContext, query: Mapping[str, str], headers: Mapping[str, str],
           body: bytes, now: datetime) -> tuple[str | None, SignedInput | None]:
    """Raise SignatureError (or its ReplayError) unless the callback is signed with the secret, or,
    during a rotation's overlap (verify.previous, until its `until`), with the previous one.
    Returns which one verified: "current", "previous", or None when nothing is verified (only that
    word is ever reported, in the journal and metrics, never a secret), and what the scheme read
    (for the dedupe identity, which rests on the same signed content)."""
    v = cfg.verify
    if v is None:
        return None, None
    # What the signer reads, by the same rule as when we sign (runtime.request), in replay.py,
    # which also decides the dedupe identity from it.
    signed = signed_input(v, query, headers, body)
    if not signed.signature:
        raise SignatureError(f"{v.scheme}: the callback carries no signature ({signed.where})")
    window = timedelta(seconds=v.window)
    try:
        signed.signer.verify(signed.inp, signed.signature, ctx.secrets.get(v.secret), now=now, window=window)
        return "current", signed
    except ReplayError:
        raise  # a stale or missing timestamp fails whatever the secret
    except SignatureError:
        if v.previous is None:
            raise
    # the current secret did not match: the previous one, which says only whether it matched
    previous = v.previous
    try:
        signed.signer.verify(signed.inp, signed.signature, ctx.secrets.get(previous.secret), now=now, window=window)
    except SignatureError:
        raise SignatureError(f"{v.scheme}: the signature matches neither the current nor the previous secret") \
            from None
    if now >= previous.until:
        raise SignatureError(f"{v.scheme}: signed with the previous secret, whose overlap ended at "
                             f"{previous.until.isoformat()}")
    return "previous", signed


def _decrypt(document: Any, cfg: CallbackConfig, ctx: ServiceContext) -> None:
    if not cfg.decrypt:  # most flows: no import statement and no loop per callback
        return
    from dockyard.runtime.request import encrypt_fields

    for spec in cfg.decrypt:
        cipher = get_cipher(str(spec["scheme"]))
        key = ctx.secrets.get(str(spec["key"]))
        options = dict(spec.get("options") or {})
        encrypt_fields(document, str(spec["path"]), lambda text, c=cipher, k=key, o=options: c.decrypt(text, k, o))


async def handle_callback(ctx: ServiceContext, db: Database, warehouse: str, flow: str, query: Mapping[str, str],
                          headers: Mapping[str, str], body: bytes, *, forward: bool,
                          now: datetime | None = None, remote: str | None = None) -> CallbackReply:
    received = now_us()
    wh: WarehouseConfig | None = ctx.config.warehouses.get(warehouse)
    cfg = wh.callbacks.get(flow) if wh is not None else None
    if wh is None or cfg is None:
        return CallbackReply(404, f"no callback {warehouse}/{flow} is configured".encode(), "text/plain",
                             "unknown-flow")
    moment = now or datetime.now(UTC)
    try:
        signed_with, signed = verify(cfg, ctx, query, headers, body, moment)
    except SignatureError as exc:
        reason = _shown(ctx.secrets.redact(str(exc)))
        logs.event(logging.WARNING, "callback refused", warehouse=warehouse, flow=flow, reason=reason,
                   remote=remote)
        await db.write(lambda c: store.journal(c, [store.JournalRow(
            None, None, warehouse, flow, "callback-rejected", "forged",
            detail={"reason": reason, "bytes": len(body), "remote": remote})]))
        return CallbackReply(401, f"signature check failed: {reason}".encode(), "text/plain", "forged")
    except DockyardError as exc:  # a secret that vanished, an unknown scheme: ours, not theirs
        error_id = uuid.uuid4().hex[:16]
        logs.event(logging.ERROR, "callback cannot be verified", warehouse=warehouse, flow=flow, error_id=error_id,
                   reason=ctx.secrets.redact(str(exc)))
        return CallbackReply(500, f"internal error (error id {error_id})".encode(), "text/plain", "error")
    mapping = ctx.mappings[cfg.mapping]
    try:
        document = mapping.parse_input(body)
        _decrypt(document, cfg, ctx)
        event = mapping.transform(document, wh.context)
    except Exception as exc:  # whatever their message makes our reading do: a 400, never a 500
        reason = _shown(ctx.secrets.redact(str(exc) or type(exc).__name__), 2000)
        answer = _answer(exc)
        logs.event(logging.WARNING, "callback quarantined", warehouse=warehouse, flow=flow, reason=reason)
        qid = await db.write(lambda c: store.quarantine(c, "callback", None, [f"{warehouse}/{flow}: {reason}"],
                                                        storable_text(body.decode("utf-8", errors="replace")),
                                                        None, warehouse))
        return _ack_or_error(ctx, cfg, wh, None, 400, f"cannot read the message: {answer} (kept as quarantine "
                             f"#{qid})", "unreadable")
    # the identity rests on signed content only (replay.py): a field the signature does not cover
    # (Cainiao's msg_id) cannot make a replayed message new
    records = [store.EventRecord(e, dedupe_identity(cfg, mapping, query, headers, body, e, i, signed))
               for i, e in enumerate(_events(event))]
    try:
        op = store.RecordEventsOp(warehouse, flow, records, forward=forward, received_at=received,
                                  verified_with=signed_with)
        outcomes: list[store.EventOutcome] = await db.write(op)
    except StoreError as exc:  # not recorded: the warehouse must send it again
        logs.event(logging.WARNING, "callback not recorded", warehouse=warehouse, flow=flow, reason=str(exc))
        return CallbackReply(503, b"the service cannot record this callback now; send it again later",
                             "text/plain; charset=utf-8", "error")
    kinds = {o.outcome for o in outcomes}
    if not kinds & {"applied", "duplicate"} and records:
        refused = next(o for o in outcomes if o.outcome in ("foreign-order", "unknown-order"))
        logs.event(logging.WARNING, "callback refused", warehouse=warehouse, flow=flow, reason=refused.reason)
        return CallbackReply(409, f"not applied ({refused.outcome}): {refused.reason}".encode(),
                             "text/plain; charset=utf-8",
                             refused.outcome)
    outcome = "applied" if "applied" in kinds else "duplicate"
    if tracing.enabled():  # from the callback's receipt to its ack, in the order's trace (known only now)
        tracking = next((o.tracking_id for o in outcomes if o.tracking_id), None)
        with tracing.span("dockyard.feedback", tracking, {
                "dockyard.order_no": records[0].event.get("order_no") if records else None,
                "dockyard.warehouse": warehouse, "dockyard.flow": flow,
                "dockyard.status": records[0].event.get("status") if records else None,
                "dockyard.duplicate": outcome == "duplicate"}, start_us=received):
            pass
    return _ack_or_error(ctx, cfg, wh, document, 200, "", outcome, signed_with)


def _events(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The status events an inbound mapping made: one (target `status-event`) or several (target
    `status-events`: {"events": [...]}, e.g. an SF route push carrying many routes)."""
    events = result.get("events")
    if isinstance(events, list) and "status" not in result:
        return [e for e in events if isinstance(e, dict)]
    return [result]



def _shown(text: str, limit: int = 500) -> str:
    """A reason as it may be stored and answered: bad characters escaped, bounded in length."""
    text = storable_text(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _answer(exc: Exception) -> str:
    """What the sender is told about a message that cannot be read: the input's problem in our
    words, never Python's (the full reason is in the quarantine and the log)."""
    if isinstance(exc, InputError):
        head = _shown(exc.message, 300)
        return head + "".join(f"; {path or '(root)'}: {_shown(msg, 200)}" for path, msg in exc.problems[:5])
    if isinstance(exc, TransformError):
        where = f" (output field {exc.field})" if exc.field else ""
        return f"the message does not have what its mapping needs{where}"
    return "the message cannot be read"


def _ack_or_error(ctx: ServiceContext, cfg: CallbackConfig, wh: WarehouseConfig, document: Any, status: int,
                  error: str, outcome: str, secret: str | None = None) -> CallbackReply:
    """The warehouse's ack (or our error), with `secret`: which secret verified the callback."""
    if cfg.ack is not None and document is not None:
        ack = ctx.mappings[cfg.ack]
        try:
            return CallbackReply(status, ack.render(document, wh.context), ack.target.content_type, outcome, secret)
        except DockyardError as exc:
            error = f"cannot render the ack: {ctx.secrets.redact(str(exc))}"
            status = 500
    if status == 200 and cfg.ack is None:
        return CallbackReply(200, b'{"success":true}', "application/json", outcome, secret)
    return CallbackReply(status, error.encode("utf-8"), "text/plain; charset=utf-8", outcome, secret)
