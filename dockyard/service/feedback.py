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

import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl

from dockyard.runtime.errors import DockyardError
from dockyard.runtime.fieldcrypto import get_cipher
from dockyard.runtime.request import sign_body
from dockyard.runtime.signing import SignatureError, SignInput, get_signer
from dockyard.service import logs, store, tracing
from dockyard.service.config import CallbackConfig, WarehouseConfig
from dockyard.service.context import ServiceContext
from dockyard.service.db import Database, StoreError, now_us

__all__ = ["CallbackReply", "handle_callback"]


@dataclass(frozen=True)
class CallbackReply:
    status: int
    body: bytes
    content_type: str
    outcome: str  # applied | duplicate | forged | unreadable | unknown-flow | foreign-order | unknown-order | error


def _form(body: bytes) -> dict[str, str]:
    try:
        return dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
    except UnicodeDecodeError:
        return {}


def verify(cfg: CallbackConfig, ctx: ServiceContext, query: Mapping[str, str], headers: Mapping[str, str],
           body: bytes, now: datetime) -> None:
    """Raise SignatureError (or its ReplayError) unless the callback is signed with the secret."""
    v = cfg.verify
    if v is None:
        return
    signer = get_signer(v.scheme)
    section, name = signer.placement
    if section == "header" and "header" in v.options:
        name = v.options["header"]
    form = _form(body) if section == "form" or v.params == "form" or v.body.startswith("form.") else {}
    if section == "query":
        signature = query.get(name)
    elif section == "form":
        signature = form.get(name)
    else:
        signature = headers.get(name)
    if not signature:
        raise SignatureError(f"{v.scheme}: the callback carries no signature ({section} {name!r})")
    params_from = v.params or ("form" if section == "form" else "query")
    params = dict(form if params_from == "form" else query)
    params.pop(name, None)
    # What the signer reads as its body, by the same rule as when we sign (runtime.request).
    signed_body = sign_body(v.body, section, form, query, body.decode("utf-8", errors="replace"))
    secret = ctx.secrets.get(v.secret)
    signer.verify(SignInput(params, signed_body, dict(v.options)), signature, secret, now=now,
                  window=timedelta(seconds=v.window))


def _decrypt(document: Any, cfg: CallbackConfig, ctx: ServiceContext) -> None:
    from dockyard.runtime.request import encrypt_fields

    for spec in cfg.decrypt:
        cipher = get_cipher(str(spec["scheme"]))
        key = ctx.secrets.get(str(spec["key"]))
        options = dict(spec.get("options") or {})
        encrypt_fields(document, str(spec["path"]), lambda text, c=cipher, k=key, o=options: c.decrypt(text, k, o))


async def handle_callback(ctx: ServiceContext, db: Database, warehouse: str, flow: str, query: Mapping[str, str],
                          headers: Mapping[str, str], body: bytes, *, forward: bool,
                          now: datetime | None = None) -> CallbackReply:
    received = now_us()
    wh: WarehouseConfig | None = ctx.config.warehouses.get(warehouse)
    cfg = wh.callbacks.get(flow) if wh is not None else None
    if wh is None or cfg is None:
        return CallbackReply(404, f"no callback {warehouse}/{flow} is configured".encode(), "text/plain",
                             "unknown-flow")
    moment = now or datetime.now(UTC)
    try:
        verify(cfg, ctx, query, headers, body, moment)
    except SignatureError as exc:
        reason = ctx.secrets.redact(str(exc))
        logs.event(logging.WARNING, "callback refused", warehouse=warehouse, flow=flow, reason=reason,
                   remote=headers.get("X-Forwarded-For"))
        await db.write(lambda c: store.journal(c, [store.JournalRow(
            None, None, warehouse, flow, "callback-rejected", "forged",
            detail={"reason": reason, "bytes": len(body), "remote": headers.get("X-Forwarded-For")})]))
        return CallbackReply(401, f"signature check failed: {reason}".encode(), "text/plain", "forged")
    except DockyardError as exc:  # a secret that vanished, an unknown scheme: ours, not theirs
        return CallbackReply(500, f"cannot verify: {ctx.secrets.redact(str(exc))}".encode(), "text/plain", "error")
    mapping = ctx.mappings[cfg.mapping]
    try:
        document = mapping.parse_input(body)
        _decrypt(document, cfg, ctx)
        event = mapping.transform(document, wh.context)
    except (DockyardError, ValueError) as exc:
        reason = ctx.secrets.redact(str(exc))
        logs.event(logging.WARNING, "callback quarantined", warehouse=warehouse, flow=flow, reason=reason)
        await db.write(lambda c: store.quarantine(c, "callback", None, [f"{warehouse}/{flow}: {reason}"],
                                                  body.decode("utf-8", errors="replace"), now_us(), warehouse))
        return _ack_or_error(ctx, cfg, wh, None, 400, f"cannot read the message: {reason}", "unreadable")
    records = [store.EventRecord(e, _event_id(e, body, i)) for i, e in enumerate(_events(event))]
    try:
        op = store.RecordEventsOp(warehouse, flow, records, forward=forward, received_at=received)
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
    return _ack_or_error(ctx, cfg, wh, document, 200, "", outcome)


def _events(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The status events an inbound mapping made: one (target `status-event`) or several (target
    `status-events`: {"events": [...]}, e.g. an SF route push carrying many routes)."""
    events = result.get("events")
    if isinstance(events, list) and "status" not in result:
        return [e for e in events if isinstance(e, dict)]
    return [result]


def _event_id(event: dict[str, Any], body: bytes, index: int) -> str:
    """The event's own id, else the hash of the message (and its place in it)."""
    if event.get("event_id"):
        return str(event["event_id"])
    return "sha256:" + hashlib.sha256(body).hexdigest() + (f"#{index}" if index else "")


def _ack_or_error(ctx: ServiceContext, cfg: CallbackConfig, wh: WarehouseConfig, document: Any, status: int,
                  error: str, outcome: str) -> CallbackReply:
    if cfg.ack is not None and document is not None:
        ack = ctx.mappings[cfg.ack]
        try:
            return CallbackReply(status, ack.render(document, wh.context), ack.target.content_type, outcome)
        except DockyardError as exc:
            error = f"cannot render the ack: {ctx.secrets.redact(str(exc))}"
            status = 500
    if status == 200 and cfg.ack is None:
        return CallbackReply(200, b'{"success":true}', "application/json", outcome)
    return CallbackReply(status, error.encode("utf-8"), "text/plain; charset=utf-8", outcome)
