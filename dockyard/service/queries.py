"""Read-side questions asked of the store: an order's status, the journal of an order (`dockyard
trace`), the dead-letter queue, and the counts the demo and `/stats` print. Every function takes a
connection and only reads."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import orjson

from dockyard.service import totals
from dockyard.service.db import Conn
from dockyard.service.forward_log import depth as forward_depth
from dockyard.service.metrics import UPSTREAM
from dockyard.service.store import forward_events

__all__ = ["dlq_list", "dlq_show", "format_timeline", "job_counts", "order_status", "sent_version", "storable_key",
           "summary", "timeline"]


def _load(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def storable_key(text: str) -> bool:
    """Whether any row could have `text` as its key. PostgreSQL's text cannot hold a NUL (psycopg
    refuses to send one, which was a 500 for `GET /orders/a%00b`) and neither store holds a lone
    surrogate: a look-up by such a key finds nothing, without asking the store."""
    return "\x00" not in text and (text.isascii() or not any("\ud800" <= ch <= "\udfff" for ch in text))


# An order's page in one statement: the order, its jobs (by id) and its callbacks' events (by time
# received), the two lists as JSON arrays built by the database. On PostgreSQL one round trip where
# three SELECTs were three: the reader lets go of the GIL at each one while it waits for the server,
# and during a delivery run it gets it back only when a busy thread's switch interval runs out (5 ms).
# On SQLite, where a step takes microseconds, it saves less: about a sixth of the read's CPU.
# SQLite before 3.44 has no ORDER BY inside an aggregate: its lists are aggregated over an ordered
# subquery, which SQLite does not flatten into an aggregate (so the order holds).
_ORDER_COLUMNS = ("o.order_no, o.tracking_id, o.warehouse, o.status, o.delivery, o.warehouse_order_id, o.waybills, "
                  "o.created_at, o.updated_at")
_ORDER_SQL = {
    "postgres": f"SELECT {_ORDER_COLUMNS}, "
                "(SELECT json_agg(json_build_array(j.id, j.lane, j.kind, j.state, j.attempts, j.reason, j.outcome) "
                "ORDER BY j.id)::text FROM dy_jobs j WHERE j.order_no = o.order_no), "
                "(SELECT json_agg(json_build_array(e.event_id, e.status, e.received_at) ORDER BY e.received_at)::text "
                "FROM dy_events e WHERE e.order_no = o.order_no) "
                "FROM dy_orders o WHERE o.order_no = ?",
    "sqlite": f"SELECT {_ORDER_COLUMNS}, "
              "(SELECT json_group_array(json_array(id, lane, kind, state, attempts, reason, outcome)) FROM "
              "(SELECT id, lane, kind, state, attempts, reason, outcome FROM dy_jobs WHERE order_no = ?1 "
              "ORDER BY id)), "
              "(SELECT json_group_array(json_array(event_id, status, received_at)) FROM "
              "(SELECT event_id, status, received_at FROM dy_events WHERE order_no = ?1 ORDER BY received_at)) "
              "FROM dy_orders o WHERE o.order_no = ?1",
}


def order_status(conn: Conn, order_no: str) -> dict[str, Any] | None:
    """What `GET /orders/{no}` answers (and the dashboard's order page shows): the order, its jobs
    and its events; None for an order the store does not hold."""
    rows = conn.execute(_ORDER_SQL[conn.dialect], (order_no,))
    if not rows:
        return None
    no, tracking, warehouse, status, delivery, wh_id, waybills, created, updated, jobs, events = rows[0]
    return {
        "order_no": no, "tracking_id": tracking, "warehouse": warehouse, "status": status, "delivery": delivery,
        "warehouse_order_id": wh_id, "waybills": _load(waybills) or [],
        "created_at": _iso(created), "updated_at": _iso(updated),
        "jobs": [{"id": j[0], "lane": j[1], "kind": j[2], "state": j[3], "attempts": j[4], "reason": j[5],
                  "outcome": _load(j[6])} for j in (orjson.loads(jobs) if jobs else ())],
        "events": [{"event_id": e[0], "status": e[1], "received_at": _iso(e[2])}
                   for e in (orjson.loads(events) if events else ())],
    }


# An order's journal and its applied events (schema v9: an applied event's row is its `feedback ok`
# step, not a journal row; schema.py), in one round trip, by time. Rows of one moment (one commit)
# are put in order by timeline().
_TIMELINE_SQL = ("SELECT id, at, warehouse, flow, step, outcome, elapsed_us, detail, NULL AS slot, 0 AS k "
                 "FROM dy_journal WHERE order_no = ? UNION ALL "
                 "SELECT NULL, recorded_at, warehouse, flow, event_id, verified_with, received_at, document, slot, 1 "
                 "FROM dy_events WHERE order_no = ? AND recorded_at IS NOT NULL ORDER BY 2, 10, 9, 1")


def timeline(conn: Conn, order_no: str) -> list[dict[str, Any]]:
    """An order's journal as a timeline. The journal keeps one row per transition (one per
    delivery attempt, holding its request and answer); the timeline shows each attempt's stages
    again as their own steps (transformed, sent, response), as they happened. An applied status
    event's `feedback ok` step is its own row in dy_events from schema v9 on (journal rows before),
    shown as the journal row was, with no journal id (`id` None)."""
    out: list[dict[str, Any]] = []
    rows = conn.execute(_TIMELINE_SQL, (order_no, order_no))
    start = 0
    while start < len(rows):  # the rows of one moment: the journal's by id, the events' by slot
        end = start
        while end < len(rows) and rows[end][1] == rows[start][1]:
            end += 1
        for r in _in_slots([r for r in rows[start:end] if not r[9]], [r for r in rows[start:end] if r[9]]):
            out += _event_step(conn, r) if r[9] else _expand(_journal_step(r))
        start = end
    return out


def _in_slots(journaled: list[tuple[Any, ...]], events: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """One moment's rows of an order in the order they were written: each event at its slot (the
    number of the order's steps written before it in that commit, schema.py), the journal's rows,
    by id, in the places left."""
    out: list[tuple[Any, ...]] = []
    rest = iter(journaled)
    for event in events:
        while len(out) < int(event[8] or 0):
            row = next(rest, None)
            if row is None:
                break
            out.append(row)
        out.append(event)
    out += rest
    return out


def _journal_step(r: tuple[Any, ...]) -> dict[str, Any]:
    return {"id": r[0], "at": _iso(r[1]), "at_us": r[1], "warehouse": r[2], "flow": r[3], "step": r[4],
            "outcome": r[5], "elapsed_ms": None if r[6] is None else round(r[6] / 1000, 3), "detail": _load(r[7])}


def _event_step(conn: Conn, r: tuple[Any, ...]) -> list[dict[str, Any]]:
    """An applied event's row as the `feedback ok` journal row it stands for: the same detail (its
    fields as the event held them), and on SQLite the same elapsed time (received → recorded;
    PostgreSQL's rows had none)."""
    _id, at, warehouse, flow, event_id, verified_with, received_at, document = r[:8]
    event = _load(document)
    elapsed = round(max(0, at - received_at) / 1000, 3) if conn.dialect == "sqlite" else None
    return [{"id": None, "at": _iso(at), "at_us": at, "warehouse": warehouse, "flow": flow, "step": "feedback",
             "outcome": "ok", "elapsed_ms": elapsed,
             "detail": {"event_id": event_id, "status": event.get("status"), "raw_status": event.get("raw_status"),
                        "waybills": event.get("waybills"),
                        **({"verified_with": verified_with} if verified_with else {})}}]


_ATTEMPT_KEYS = ("attempt", "mapping", "mapping_version", "mapping_sha", "bundle", "clock", "request_id",
                 "idempotency_key", "rule", "transform_ms")
_VERSION_KEYS = ("mapping", "mapping_version", "mapping_sha", "bundle", "clock")


def _expand(step: dict[str, Any]) -> list[dict[str, Any]]:
    """One journal row as the steps it stands for."""
    detail = step["detail"]
    if not isinstance(detail, dict):
        return [step]
    if step["step"] == "received" and step["outcome"] == "ok" and "rule" in detail:
        return [step, {**step, "step": "validated", "outcome": "ok", "elapsed_ms": None, "detail": None},
                {**step, "step": "routed", "outcome": "ok", "elapsed_ms": None,
                 "detail": {"warehouse": step["warehouse"], "rule": detail.get("rule"),
                            "tracking_id": detail.get("tracking_id")}}]
    if "request" not in detail and "mapping" not in detail:
        return [step]
    out: list[dict[str, Any]] = []
    shown = {k: v for k, v in detail.items() if k not in ("request", "response", *_ATTEMPT_KEYS)}
    if "mapping" in detail:
        out.append({**step, "step": "transformed", "outcome": "ok", "elapsed_ms": detail.get("transform_ms"),
                    "detail": {k: detail[k] for k in _ATTEMPT_KEYS if k in detail and k != "transform_ms"}})
    if isinstance(detail.get("request"), dict):
        out.append({**step, "step": "sent", "outcome": "ok", "elapsed_ms": None, "detail": detail["request"]})
    if isinstance(detail.get("response"), dict):
        out.append({**step, "step": "response", "outcome": str(detail.get("http_status", "")),
                    "detail": detail["response"]})
    elif detail.get("error") in ("no_answer",):
        out.append({**step, "step": "response", "outcome": "unknown", "detail": {"error": detail.get("reason")}})
    out.append({**step, "elapsed_ms": None, "detail": shown or None})
    return out


def sent_version(conn: Conn, order_no: str, flow: str = "create") -> dict[str, Any] | None:
    """Which mapping version turned the order into the bytes last sent for `flow`, and with which
    clock: from the journal row of the attempt the warehouse accepted, else of the latest attempt.
    None when the order was never transformed. Rows journaled before versions were recorded carry
    only the mapping's name (no `mapping_sha`)."""
    rows = conn.execute("SELECT id, at, step, detail FROM dy_journal WHERE order_no = ? AND flow = ? "
                        "AND detail IS NOT NULL ORDER BY id DESC LIMIT 200", (order_no, flow))
    latest: dict[str, Any] | None = None
    for _id, at, step, text in rows:
        detail = _load(text)
        if not isinstance(detail, dict) or "mapping" not in detail:
            continue
        found = {k: detail.get(k) for k in _VERSION_KEYS} | {"step": step, "at": _iso(at)}
        if step == "committed":
            return found
        latest = latest or found
    return latest


def format_timeline(order_no: str, steps: list[dict[str, Any]], *, verbose: bool = False) -> str:
    if not steps:
        return f"no journal entries for order {order_no!r}"
    start = steps[0]["at_us"]
    lines = [f"order {order_no}: {len(steps)} steps, from {steps[0]['at']}"]
    for s in steps:
        offset = (s["at_us"] - start) / 1000
        where = "/".join(x for x in (s["warehouse"], s["flow"]) if x)
        took = f" ({s['elapsed_ms']} ms)" if s["elapsed_ms"] is not None else ""
        lines.append(f"  +{offset:10.1f} ms  {s['step']:<16} {s['outcome']:<10} {where}{took}")
        detail = s["detail"] or {}
        shown = {k: v for k, v in detail.items() if verbose or k not in ("body",)}
        if shown:
            text = json.dumps(shown, ensure_ascii=False, default=str)
            lines.append("                 " + (text if verbose or len(text) <= 160 else text[:157] + "..."))
    return "\n".join(lines)


def dlq_list(conn: Conn, limit: int = 200, *, include_held: bool = True) -> list[dict[str, Any]]:
    states = ("dead", "held") if include_held else ("dead",)
    marks = ", ".join("?" for _ in states)
    rows = conn.execute(f"SELECT id, state, lane, kind, order_no, warehouse, attempts, reason, updated_at "
                        f"FROM dy_jobs WHERE state IN ({marks}) ORDER BY updated_at DESC, id DESC LIMIT ?",
                        (*states, limit))
    return [{"id": r[0], "state": "in_doubt" if r[1] == "held" else "dead", "lane": r[2], "kind": r[3],
             "order_no": r[4], "warehouse": r[5], "attempts": r[6], "reason": r[7], "since": _iso(r[8])}
            for r in rows]


def dlq_show(conn: Conn, job_id: int) -> dict[str, Any] | None:
    rows = conn.execute("SELECT id, state, lane, kind, order_no, warehouse, attempts, reason, outcome, request_id, "
                        "payload, created_at, updated_at FROM dy_jobs WHERE id = ?", (job_id,))
    if not rows:
        return None
    r = rows[0]
    return {"id": r[0], "state": r[1], "lane": r[2], "kind": r[3], "order_no": r[4], "warehouse": r[5],
            "attempts": r[6], "reason": r[7], "outcome": _load(r[8]), "request_id": r[9],
            "event": _events(r[10]), "created_at": _iso(r[11]), "updated_at": _iso(r[12]),
            "history": timeline(conn, r[4]) if r[4] else []}


def _events(payload: str | None) -> Any:
    """A forward job's event, or its events (a list) when several of the order's joined it."""
    events = [_load(e) for e in forward_events(payload)]
    return None if not events else events[0] if len(events) == 1 else events


def summary(conn: Conn) -> dict[str, Any]:
    """What `/stats` answers, from the store's running totals (totals.py: one read of a table of a
    few dozen rows), the deliveries in doubt (through the state index, open jobs only) and the
    events waiting in the upstream outbox (a bounded count of a table that holds only those):
    nothing here counts the history, whatever its size. `outbox_depth` counts both outboxes."""
    kept = totals.read(conn)
    jobs: dict[str, dict[str, int]] = {}
    outbox = 0
    for (warehouse, state), (n, attempts) in sorted(kept.get("job", {}).items()):
        if n == 0:
            continue
        entry = jobs.setdefault(warehouse, {})
        entry[state] = entry.get(state, 0) + n
        entry["attempts"] = entry.get("attempts", 0) + attempts
        if state in ("ready", "waiting", "claimed", "sending"):
            outbox += n
    orders = {k1: n for (k1, _), (n, _) in kept.get("delivery", {}).items() if n}
    statuses = {k1: n for (k1, _), (n, _) in kept.get("status", {}).items() if n}
    events = sum(n for n, _ in kept.get("events", {}).values())
    quarantined = sum(n for n, _ in kept.get("quarantine", {}).values())
    forwarding = forward_depth(conn)  # events in the upstream outbox (forward_log.py), up to its DEPTH_CAP
    return {"jobs": jobs, "in_doubt": in_doubt(conn), "orders_by_delivery": orders, "orders_by_status": statuses,
            "events": events, "quarantined": quarantined, "upstream_outbox": forwarding,
            "outbox_depth": outbox + forwarding}


def in_doubt(conn: Conn) -> int:
    """Deliveries in doubt: held, or waiting to be settled by the warehouse's rule. The open states
    are listed (not "not closed"), so that the state index bounds it: no history scan."""
    return int(conn.execute("SELECT COUNT(*) FROM dy_jobs WHERE state IN ('ready', 'waiting', 'claimed', "
                            "'sending', 'held') AND lane = 'wh' AND (state = 'held' OR doubt = 1)")[0][0])


def job_counts(conn: Conn) -> dict[str, int]:
    """What `/stats`, `/metrics` and the dashboard show of the jobs: the outbox (ready, waiting
    behind an earlier job of the order, claimed or being sent) per lane and in all, dead letters,
    jobs held for an operator, and the deliveries in doubt (held, or waiting to be settled by the
    warehouse's rule). From the store's running totals (totals.py, per warehouse and state; the
    upstream lane's jobs are the `_upstream` warehouse's, a name no warehouse can have) rather
    than by counting jobs: after a bad night the dead letters are tens of thousands of index
    entries, and every scrape and every second's overview counted them again. The upstream lane's
    outbox also counts the events waiting in the upstream outbox, up to forward_log.DEPTH_CAP."""
    out = {"outbox_wh": 0, "outbox_up": 0, "dead": 0, "held": 0}
    for (warehouse, state), (n, _) in totals.read(conn).get("job", {}).items():
        if state in ("ready", "waiting", "claimed", "sending"):
            out["outbox_up" if warehouse == UPSTREAM else "outbox_wh"] += n
        elif state in ("dead", "held"):
            out[state] += n
    out["outbox_up"] += forward_depth(conn)  # the upstream outbox's events (forward_log.py), not jobs
    out["outbox"] = out["outbox_wh"] + out["outbox_up"]
    out["in_doubt"] = in_doubt(conn)
    return out


def _iso(micros: int | None) -> str | None:
    if micros is None:
        return None
    return datetime.fromtimestamp(micros / 1e6, UTC).isoformat(timespec="milliseconds")
