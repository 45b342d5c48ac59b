"""Every read and write the service makes to its state store, as functions of one connection.

Each write function runs inside the writer's transaction (see db.py), so what it changes — the
order, its jobs and its journal rows — becomes durable together or not at all. That is the outbox:
an order is accepted, its delivery job queued and its journal written in one commit, before the
client hears 202; a callback's event is recorded, its forward job queued and its journal written
in one commit, before the warehouse hears its ack.

Job states (lane 'wh' to warehouses, lane 'up' to the upstream webhook):
  ready      waiting for its time (next_at); `doubt` = 1 when an earlier attempt's outcome is unknown
  sending    claimed by a worker (owner, lease_until): the request may be on the wire
  done       delivered (or the warehouse answered duplicate)
  dead       the dead-letter queue: rejected, or out of attempts; `reason` says why
  held       in doubt, and the warehouse's rule neither resends nor queries: an operator decides
  cancelled  a create cancelled before anything was sent
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from dockyard.service.db import Conn

__all__ = [
    "ClaimedJob",
    "IngestItem",
    "JobResult",
    "JournalRow",
    "claim",
    "finish",
    "ingest",
    "journal",
    "quarantine",
    "record_event",
    "recover",
    "replay",
    "request_cancel",
]


# Lifecycle rank of an order's status: a late or repeated event never moves an order backwards.
RANK = {"received": 0, "delivered": 1, "accepted": 2, "picking": 3, "packed": 4, "shipped": 5, "in_transit": 6,
        "out_for_delivery": 7, "signed": 8}
FINAL = ("cancelled", "rejected")


@dataclass(frozen=True)
class JournalRow:
    at: int
    order_no: str | None
    warehouse: str | None
    flow: str | None
    step: str
    outcome: str
    elapsed_us: int | None = None
    detail: dict[str, Any] | None = None

    def values(self) -> tuple[Any, ...]:
        return (self.at, self.order_no, self.warehouse, self.flow, self.step, self.outcome, self.elapsed_us,
                None if self.detail is None else orjson.dumps(self.detail, default=str).decode("utf-8"))


_JOURNAL_SQL = ("INSERT INTO dy_journal (at, order_no, warehouse, flow, step, outcome, elapsed_us, detail) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)")


def journal(conn: Conn, rows: Iterable[JournalRow]) -> None:
    conn.executemany(_JOURNAL_SQL, [r.values() for r in rows])


# -- ingest -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class IngestItem:
    order_no: str
    tracking_id: str
    warehouse: str
    shop_code: str | None
    channel: str | None
    fingerprint: str
    payload: str  # the order as JSON text, exactly as accepted
    received_at: int
    route: str  # which routing rule chose the warehouse, for the journal
    update_flow: bool  # the warehouse has an `update` flow and on_change is `update`


@dataclass(frozen=True)
class IngestResult:
    status: str  # accepted | duplicate | conflict | updated
    tracking_id: str
    reason: str = ""


def ingest(conn: Conn, items: Sequence[IngestItem], now: int) -> list[IngestResult]:
    results: list[IngestResult] = []
    rows: list[JournalRow] = []
    for it in items:
        inserted = conn.execute(
            "INSERT INTO dy_orders (order_no, tracking_id, warehouse, shop_code, channel, fingerprint, payload, "
            "status, delivery, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, 'received', 'pending', ?, ?) "
            "ON CONFLICT (order_no) DO NOTHING RETURNING tracking_id",
            (it.order_no, it.tracking_id, it.warehouse, it.shop_code, it.channel, it.fingerprint, it.payload,
             it.received_at, now))
        if inserted:
            _queue(conn, "wh", "create", it.order_no, it.warehouse, None, now)
            rows += [JournalRow(it.received_at, it.order_no, it.warehouse, None, "received", "ok"),
                     JournalRow(now, it.order_no, it.warehouse, None, "validated", "ok"),
                     JournalRow(now, it.order_no, it.warehouse, "create", "routed", "ok",
                                detail={"warehouse": it.warehouse, "rule": it.route, "tracking_id": it.tracking_id})]
            results.append(IngestResult("accepted", it.tracking_id))
            continue
        existing = conn.execute("SELECT tracking_id, fingerprint, warehouse FROM dy_orders WHERE order_no = ?",
                                (it.order_no,))[0]
        tracking, fingerprint, warehouse = existing
        if fingerprint == it.fingerprint:
            rows.append(JournalRow(now, it.order_no, warehouse, None, "received", "duplicate",
                                   detail={"note": "the same order again: acknowledged, nothing queued"}))
            results.append(IngestResult("duplicate", tracking))
        elif it.update_flow and warehouse == it.warehouse:
            conn.execute("UPDATE dy_orders SET payload = ?, fingerprint = ?, updated_at = ? WHERE order_no = ?",
                         (it.payload, it.fingerprint, now, it.order_no))
            _queue(conn, "wh", "update", it.order_no, warehouse, None, now)
            rows.append(JournalRow(now, it.order_no, warehouse, "update", "received", "update",
                                   detail={"fingerprint": it.fingerprint}))
            results.append(IngestResult("updated", tracking))
        else:
            why = ("the order number was accepted earlier with different content"
                   + ("" if it.warehouse == warehouse else f" and routed to {warehouse}, not {it.warehouse}"))
            rows.append(JournalRow(now, it.order_no, warehouse, None, "received", "conflict",
                                   detail={"reason": why}))
            conn.execute("INSERT INTO dy_quarantine (received_at, source, order_no, reasons, body) "
                         "VALUES (?, ?, ?, ?, ?)",
                         (now, "order", it.order_no, json.dumps([why], ensure_ascii=False), it.payload))
            results.append(IngestResult("conflict", tracking, why))
    journal(conn, rows)
    return results


def _queue(conn: Conn, lane: str, kind: str, order_no: str | None, warehouse: str, payload: str | None,
           now: int, *, next_at: int | None = None) -> None:
    conn.execute("INSERT INTO dy_jobs (lane, kind, order_no, warehouse, state, next_at, payload, created_at, "
                 "updated_at) VALUES (?, ?, ?, ?, 'ready', ?, ?, ?, ?)",
                 (lane, kind, order_no, warehouse, now if next_at is None else next_at, payload, now, now))


def quarantine(conn: Conn, source: str, order_no: str | None, reasons: Sequence[str], body: str, now: int,
               warehouse: str | None = None) -> int:
    rows = conn.execute("INSERT INTO dy_quarantine (received_at, source, order_no, reasons, body) "
                        "VALUES (?, ?, ?, ?, ?) RETURNING id",
                        (now, source, order_no, json.dumps(list(reasons), ensure_ascii=False), body))
    qid = int(rows[0][0])
    journal(conn, [JournalRow(now, order_no, warehouse, source, "quarantined", "error",
                              detail={"quarantine_id": qid, "reasons": list(reasons)[:20]})])
    return qid


# -- delivery ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class ClaimedJob:
    id: int
    lane: str
    kind: str
    order_no: str | None
    warehouse: str
    attempts: int  # including this one
    request_id: str
    doubt: bool
    payload: str | None  # a forward job's event
    order_payload: str | None
    owner: str
    trace_id: str | None = None  # the order's tracking id: what logs and spans of this order carry


_CLAIM = ("SELECT j.id, j.kind, j.order_no, j.warehouse, j.attempts, j.request_id, j.doubt, j.payload, o.payload, "
          "o.tracking_id "
          "FROM dy_jobs j LEFT JOIN dy_orders o ON o.order_no = j.order_no "
          "WHERE j.lane = ? AND j.warehouse = ? AND j.state = 'ready' AND j.next_at <= ? "
          "AND NOT EXISTS (SELECT 1 FROM dy_jobs p WHERE p.order_no = j.order_no AND p.lane = j.lane "
          "AND p.id < j.id AND p.state IN ('ready', 'sending', 'held')) "
          "ORDER BY j.next_at, j.id LIMIT ?")


def claim(conn: Conn, lane: str, warehouse: str, limit: int, owner: str, lease_us: int, now: int,
          new_ids: Iterable[str]) -> list[ClaimedJob]:
    """Up to `limit` ready jobs, at most the first open one of each order; marked `sending`
    durably before anything is sent."""
    sql = _CLAIM + (" FOR UPDATE OF j SKIP LOCKED" if conn.dialect == "postgres" else "")
    rows = conn.execute(sql, (lane, warehouse, now, limit))
    ids = iter(new_ids)
    jobs: list[ClaimedJob] = []
    for jid, kind, order_no, wh, attempts, request_id, doubt, payload, order_payload, tracking in rows:
        jobs.append(ClaimedJob(int(jid), lane, kind, order_no, wh, int(attempts) + 1, request_id or next(ids),
                               bool(doubt), payload, order_payload, owner, tracking))
    if jobs:
        conn.executemany("UPDATE dy_jobs SET state = 'sending', owner = ?, lease_until = ?, attempts = ?, "
                         "request_id = ?, updated_at = ? WHERE id = ?",
                         [(owner, now + lease_us, j.attempts, j.request_id, now, j.id) for j in jobs])
    return jobs


@dataclass
class JobResult:
    job_id: int
    owner: str
    state: str  # done | ready | dead | held | cancelled
    next_at: int = 0
    doubt: bool = False
    reason: str | None = None
    outcome: dict[str, Any] | None = None
    reset_request_id: bool = False  # the next attempt must use a new request id (e.g. after a query said "absent")
    order_no: str | None = None
    order_status: str | None = None  # set the order's status (by rank, see RANK)
    delivery: str | None = None  # the order's delivery state
    warehouse_order_id: str | None = None
    waybills: list[dict[str, Any]] | None = None
    rows: list[JournalRow] = field(default_factory=list)


def finish(conn: Conn, results: Sequence[JobResult], now: int) -> int:
    """Record what became of claimed jobs; a job whose claim was lost (another process recovered
    it after the lease ran out) is left alone. Returns how many were recorded."""
    recorded = 0
    rows: list[JournalRow] = []
    for r in results:
        changed = conn.execute(
            "UPDATE dy_jobs SET state = ?, next_at = ?, doubt = ?, reason = ?, outcome = ?, owner = NULL, "
            "lease_until = NULL, request_id = CASE WHEN ? = 1 THEN NULL ELSE request_id END, updated_at = ? "
            "WHERE id = ? AND owner = ? AND state = 'sending' RETURNING id",
            (r.state, r.next_at, int(r.doubt), r.reason,
             None if r.outcome is None else json.dumps(r.outcome, ensure_ascii=False, default=str),
             int(r.reset_request_id), now, r.job_id, r.owner))
        if not changed:
            rows.append(JournalRow(now, r.order_no, None, None, "lease-lost", "warning",
                                   detail={"job": r.job_id, "note": "another worker recovered this job"}))
            continue
        recorded += 1
        rows += r.rows
        if r.order_no is not None and (r.order_status or r.delivery or r.warehouse_order_id or r.waybills):
            update_order(conn, r.order_no, now, status=r.order_status, delivery=r.delivery,
                         warehouse_order_id=r.warehouse_order_id, waybills=r.waybills)
    journal(conn, rows)
    return recorded


def update_order(conn: Conn, order_no: str, now: int, *, status: str | None = None, delivery: str | None = None,
                 warehouse_order_id: str | None = None, waybills: list[dict[str, Any]] | None = None) -> None:
    row = conn.execute("SELECT status, waybills FROM dy_orders WHERE order_no = ?", (order_no,))
    if not row:
        return
    current, old_waybills = row[0]
    new_status = current
    if status is not None and current not in FINAL and (
            status in FINAL or RANK.get(status, -1) > RANK.get(current, -1)):
        new_status = status
    merged = old_waybills
    if waybills:
        known = json.loads(old_waybills) if old_waybills else []
        seen = {(w.get("carrier_code"), w.get("waybill_no")) for w in known}
        known += [w for w in waybills if (w.get("carrier_code"), w.get("waybill_no")) not in seen]
        merged = json.dumps(known, ensure_ascii=False, default=str)
    conn.execute("UPDATE dy_orders SET status = ?, delivery = COALESCE(?, delivery), "
                 "warehouse_order_id = COALESCE(?, warehouse_order_id), waybills = ?, updated_at = ? "
                 "WHERE order_no = ?", (new_status, delivery, warehouse_order_id, merged, now, order_no))


def recover(conn: Conn, now: int, *, me: str,
            gone: Callable[[Conn, str], bool]) -> list[tuple[int, str | None, str]]:
    """Jobs that were `sending` when their worker died: the request may have left, so they come
    back as in doubt, to be settled by the warehouse's rule.

    A worker is dead when its lease ran out, or — at once — when its process is gone: every live
    process holds a lock on its owner id, so an owner whose lock can be taken is gone (`gone`, see
    Database.owner_gone)."""
    owners = [r[0] for r in conn.execute("SELECT DISTINCT owner FROM dy_jobs WHERE state = 'sending'")]
    dead = [owner for owner in owners if owner is not None and owner != me and gone(conn, owner)]
    rows = conn.execute("SELECT id, order_no, warehouse, lane, owner FROM dy_jobs WHERE state = 'sending' "
                        "AND lease_until < ?", (now,))
    for owner in dead:
        rows += conn.execute("SELECT id, order_no, warehouse, lane, owner FROM dy_jobs WHERE state = 'sending' "
                             "AND owner = ? AND lease_until >= ?", (owner, now))
    if not rows:
        return []
    reason = "the service stopped while this request may have been on the wire"
    conn.executemany("UPDATE dy_jobs SET state = 'ready', doubt = CASE WHEN lane = 'wh' THEN 1 ELSE doubt END, "
                     "reason = ?, owner = NULL, lease_until = NULL, next_at = ?, updated_at = ? "
                     "WHERE id = ? AND state = 'sending' AND owner = ?",
                     [(reason, now, now, r[0], r[4]) for r in rows])
    journal(conn, [JournalRow(now, r[1], r[2], None, "recovered", "in_doubt" if r[3] == "wh" else "retry",
                              detail={"job": r[0], "reason": reason}) for r in rows])
    return [(int(r[0]), r[1], r[2]) for r in rows]


# -- operators --------------------------------------------------------------------------------
def replay(conn: Conn, job_ids: Sequence[int], now: int, who: str) -> list[tuple[int, str]]:
    """Send dead or held jobs again. Idempotent: a job that is no longer dead or held is left as
    it is, and the answer says so."""
    out: list[tuple[int, str]] = []
    for jid in job_ids:
        row = conn.execute("SELECT state, order_no, warehouse, kind FROM dy_jobs WHERE id = ?", (jid,))
        if not row:
            out.append((jid, "no such job"))
            continue
        state, order_no, warehouse, kind = row[0]
        if state not in ("dead", "held"):
            out.append((jid, f"not replayed: the job is {state}"))
            continue
        conn.execute("UPDATE dy_jobs SET state = 'ready', attempts = 0, doubt = 0, next_at = ?, "
                     "reason = ?, updated_at = ? WHERE id = ?", (now, f"replayed by {who} (was {state})", now, jid))
        if kind == "create":
            update_order(conn, order_no, now, delivery="pending")
        journal(conn, [JournalRow(now, order_no, warehouse, kind, "replayed", "ok",
                                  detail={"job": jid, "by": who, "was": state})])
        out.append((jid, "replayed"))
    return out


def request_cancel(conn: Conn, order_no: str, now: int, has_cancel_flow: bool) -> tuple[str, str]:
    """(status, explanation). The cancel joins the order's queue behind its create, so it can
    never overtake it; a create that has not left yet is simply cancelled here."""
    row = conn.execute("SELECT warehouse, status FROM dy_orders WHERE order_no = ?", (order_no,))
    if not row:
        return "unknown", f"no order {order_no!r}"
    warehouse, status = row[0]
    if status == "cancelled":
        return "already", "the order is already cancelled"
    jobs = conn.execute("SELECT id, kind, state, attempts, doubt FROM dy_jobs WHERE order_no = ? AND lane = 'wh' "
                        "ORDER BY id", (order_no,))
    if any(kind == "cancel" and state not in ("dead",) for _, kind, state, _, _ in jobs):
        return "already", "a cancel is already queued or done for this order"
    create = next((j for j in jobs if j[1] == "create"), None)
    if create is not None and ((create[2] == "ready" and create[3] == 0 and not create[4]) or create[2] == "dead"):
        conn.execute("UPDATE dy_jobs SET state = 'cancelled', reason = 'cancelled before delivery', updated_at = ? "
                     "WHERE id = ?", (now, create[0]))
        update_order(conn, order_no, now, status="cancelled", delivery="cancelled")
        journal(conn, [JournalRow(now, order_no, warehouse, "cancel", "cancelled", "ok",
                                  detail={"note": "the create had not been delivered: nothing sent to the warehouse"})])
        return "cancelled", "cancelled before anything reached the warehouse"
    if not has_cancel_flow:
        return "unsupported", f"warehouse {warehouse} has no cancel flow configured"
    _queue(conn, "wh", "cancel", order_no, warehouse, None, now)
    journal(conn, [JournalRow(now, order_no, warehouse, "cancel", "cancel-requested", "ok")])
    return "queued", "the cancel is queued behind the order's create"


# -- feedback ---------------------------------------------------------------------------------
def record_event(conn: Conn, warehouse: str, flow: str, event: dict[str, Any], event_id: str, now: int, *,
                 forward: bool, received_at: int, want_tracking: bool = False) -> tuple[bool, str | None]:
    """Record one status event once (dedupe on warehouse + event id), apply it to its order and
    queue its forward upstream. (False when it was seen before, the order's tracking id — looked up
    only with `want_tracking`, for the order's trace)."""
    order_no = event.get("order_no")
    tracking = (conn.execute("SELECT tracking_id FROM dy_orders WHERE order_no = ?", (order_no,))
                if order_no and want_tracking else [])
    return _record_event(conn, warehouse, flow, event, event_id, now, forward=forward,
                         received_at=received_at), (tracking[0][0] if tracking else None)


def _record_event(conn: Conn, warehouse: str, flow: str, event: dict[str, Any], event_id: str, now: int, *,
                  forward: bool, received_at: int) -> bool:
    order_no = event.get("order_no")
    document = json.dumps(event, ensure_ascii=False, default=str)
    inserted = conn.execute("INSERT INTO dy_events (warehouse, event_id, order_no, status, document, received_at) "
                            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (warehouse, event_id) DO NOTHING RETURNING event_id",
                            (warehouse, event_id, order_no, event.get("status"), document, received_at))
    if not inserted:
        journal(conn, [JournalRow(now, order_no, warehouse, flow, "feedback", "duplicate",
                                  detail={"event_id": event_id, "status": event.get("status")})])
        return False
    if order_no is not None:
        status = event.get("status")
        update_order(conn, order_no, now, status=status if status in RANK or status in FINAL else None,
                     warehouse_order_id=event.get("warehouse_order_id"), waybills=event.get("waybills"))
    rows = [JournalRow(now, order_no, warehouse, flow, "feedback", "ok", now - received_at,
                       detail={"event_id": event_id, "status": event.get("status"),
                               "raw_status": event.get("raw_status"), "waybills": event.get("waybills")})]
    if forward:
        _queue(conn, "up", "forward", order_no, "_upstream", document, now)
    journal(conn, rows)
    return True
