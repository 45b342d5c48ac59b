"""Every write the service makes to its state store, and the claim.

The hot writes are batch operations (db.BatchOp): all queued operations of a kind run as one set
of statements inside the writer's group commit. What an operation changes — the order, its jobs
and its journal rows — becomes durable together or not at all. That is the outbox: an order is
accepted, its delivery job queued and its journal written in one commit, before the client hears
202; a callback's event is recorded, its forward job queued and its journal written in one
commit, before the warehouse hears its ack.

Job states (lane 'wh' to warehouses, lane 'up' to the upstream webhook) are described in
schema.py. Per order and lane, jobs run one after another: a job queued while an earlier one is
open starts `waiting`, and is made `ready` when the earlier one ends.

The journal writes one row per transition, with the details that belong to it: one `received`
row per accepted order, one row per delivery attempt named after what became of it (`committed`,
`retry`, `in-doubt`, `dead-lettered`, …) holding the request and the answer, one `feedback` row per
callback event.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import orjson

from dockyard.service.db import BatchOp, Conn, Tx
from dockyard.service.schema import FORWARD_PARTS, OPEN_STATES

__all__ = [
    "FORWARD_LOG_KEY",
    "UPSTREAM",
    "ClaimOutcome",
    "ClaimedJob",
    "EventOutcome",
    "EventRecord",
    "FinishOp",
    "IngestItem",
    "IngestOp",
    "IngestResult",
    "JobResult",
    "JournalRow",
    "MarkSendingOp",
    "RecordEventsOp",
    "WarehouseLimits",
    "apply_order_changes",
    "claim",
    "ingest",
    "journal",
    "part_of",
    "quarantine",
    "queue_forwards",
    "recover",
    "replay",
    "request_cancel",
    "set_circuit",
    "set_pause",
    "write_journal",
]


# Lifecycle rank of an order's status: a late or repeated event never moves an order backwards.
RANK = {"received": 0, "delivered": 1, "accepted": 2, "picking": 3, "packed": 4, "shipped": 5, "in_transit": 6,
        "out_for_delivery": 7, "signed": 8}
FINAL = ("cancelled", "rejected")
_OPEN = "('" + "', '".join(OPEN_STATES) + "')"
_BLOCKING = "('" + "', '".join((*OPEN_STATES, "waiting")) + "')"


def _joinable(alias: str = "") -> str:
    """A forward job that later events of its order may join: not yet taken (a claimed job may be
    on the wire, a retried one has used some of its attempts). `alias`: the table's, as "j."."""
    return f"({alias}state = 'waiting' OR ({alias}state = 'ready' AND {alias}attempts = 0))"


@dataclass(frozen=True)
class JournalRow:
    at: int | None  # None: the time of the transaction that writes it
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


# On PostgreSQL a group's journal rows go in as one statement over arrays: one statement per row
# (even pipelined) was the largest single share of the database's work per order.
_JOURNAL_PG_SQL = ("INSERT INTO dy_journal (at, order_no, warehouse, flow, step, outcome, elapsed_us, detail) "
                   "SELECT * FROM unnest(?::bigint[], ?::text[], ?::text[], ?::text[], ?::text[], ?::text[], "
                   "?::bigint[], ?::text[])")


def _columns(rows: Sequence[Sequence[Any]], *, text: tuple[int, ...]) -> list[list[Any]]:
    """Rows as one list per column, for `unnest(?::type[], …)`; the `text` columns as text (an
    array parameter must hold one type: a warehouse's order id may come as a number)."""
    columns = [list(column) for column in zip(*rows, strict=True)]
    for i in text:
        columns[i] = [v if v is None or isinstance(v, str) else str(v) for v in columns[i]]
    return columns


def _insert_many(conn: Conn, sql: str, pg_sql: str, rows: Sequence[Sequence[Any]], text: tuple[int, ...]) -> None:
    """Insert rows: on PostgreSQL, several in one statement over arrays (`pg_sql`, its `text`
    columns as text, see _columns), not a round trip per row; else `sql` once per row."""
    if conn.dialect == "postgres" and len(rows) > 1:
        conn.execute(pg_sql, _columns(rows, text=text))
    elif rows:
        conn.executemany(sql, rows)


def write_journal(conn: Conn, rows: Iterable[tuple[Any, ...]]) -> None:
    now = conn.now
    values = [(now, *r[1:]) if r[0] is None else r for r in rows]
    _insert_many(conn, _JOURNAL_SQL, _JOURNAL_PG_SQL, values, text=(1, 2, 3, 4, 5, 7))


def journal(conn: Conn, rows: Iterable[JournalRow]) -> None:
    """Journal rows written with the transaction (at its end, with everything else of the group)."""
    if isinstance(conn, Tx):
        conn.journal(r.values() for r in rows)
    else:
        write_journal(conn, [r.values() for r in rows])


def _in(conn: Conn, values: Sequence[Any]) -> tuple[str, tuple[Any, ...]]:
    """`IN (…)` for a list of values: one array parameter on PostgreSQL, one JSON array on SQLite.
    Either way the statement's text is the same whatever the number of values, so it is prepared
    once and then found in the connection's statement cache (placeholders per value made a new
    statement, parsed and planned again, for each length)."""
    if conn.dialect == "postgres":
        return "= ANY(?)", (list(values),)
    return "IN (SELECT value FROM json_each(?))", (_json_array(values),)


def _json_array(values: Iterable[Any]) -> str:
    """A list as one SQLite parameter, read back by `json_each(?)` (rows by `json_extract`)."""
    return orjson.dumps(list(values)).decode("utf-8")


def _chunks(values: Sequence[Any], size: int = 500) -> Iterable[Sequence[Any]]:
    for start in range(0, len(values), size):
        yield values[start:start + size]


def _wake(conn: Conn, key: str) -> None:
    if isinstance(conn, Tx):
        conn.wake(key)


# -- orders -----------------------------------------------------------------------------------
def apply_order_changes(conn: Conn, changes: Mapping[str, Any]) -> None:
    """Apply the group's order changes, in order_no order (every node locks dy_orders rows in the
    same order, so two groups never wait on each other in a cycle), as the group's last writes."""
    keys = sorted(changes)
    lock = " FOR UPDATE" if conn.dialect == "postgres" else ""
    updates: list[tuple[Any, ...]] = []
    for chunk in _chunks(keys):
        where, params = _in(conn, chunk)
        rows = conn.execute(f"SELECT order_no, status, waybills FROM dy_orders WHERE order_no {where} "
                            f"ORDER BY order_no{lock}", params)
        for order_no, current, old_waybills in rows:
            change = changes[order_no]
            status = current
            for wanted in change.status:
                if status not in FINAL and (wanted in FINAL or RANK.get(wanted, -1) > RANK.get(status, -1)):
                    status = wanted
            merged = old_waybills
            if change.waybills:
                known = json.loads(old_waybills) if old_waybills else []
                seen = {(w.get("carrier_code"), w.get("waybill_no")) for w in known}
                for w in change.waybills:
                    key = (w.get("carrier_code"), w.get("waybill_no"))
                    if key not in seen:
                        seen.add(key)
                        known.append(w)
                merged = json.dumps(known, ensure_ascii=False, default=str)
            updates.append((status, change.delivery, change.warehouse_order_id, merged, conn.now, order_no))
    if updates and conn.dialect == "postgres" and len(updates) > 1:  # one statement over arrays
        conn.execute("UPDATE dy_orders o SET status = v.status, delivery = COALESCE(v.delivery, o.delivery), "
                     "warehouse_order_id = COALESCE(v.woid, o.warehouse_order_id), waybills = v.waybills, "
                     "updated_at = v.at FROM unnest(?::text[], ?::text[], ?::text[], ?::text[], ?::bigint[], "
                     "?::text[]) AS v(status, delivery, woid, waybills, at, order_no) WHERE o.order_no = v.order_no",
                     _columns(updates, text=(0, 1, 2, 3, 5)))
    elif updates:
        conn.executemany("UPDATE dy_orders SET status = ?, delivery = COALESCE(?, delivery), "
                         "warehouse_order_id = COALESCE(?, warehouse_order_id), waybills = ?, updated_at = ? "
                         "WHERE order_no = ?", updates)


def _change_order(conn: Conn, order_no: str, **change: Any) -> None:
    if isinstance(conn, Tx):
        conn.change_order(order_no, **change)
        return
    from dockyard.service.db import _OrderChange

    apply_order_changes(conn, {order_no: _OrderChange(
        [change["status"]] if change.get("status") else [], change.get("delivery"),
        change.get("warehouse_order_id"), change.get("waybills"))})


# -- jobs -------------------------------------------------------------------------------------
_QUEUE_SQL = ("INSERT INTO dy_jobs (lane, kind, order_no, warehouse, state, next_at, payload, created_at, updated_at) "
              "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)")
_QUEUE_CHAINED_SQL = (
    "INSERT INTO dy_jobs (lane, kind, order_no, warehouse, state, next_at, payload, created_at, updated_at) "
    f"SELECT ?, ?, ?, ?, CASE WHEN EXISTS (SELECT 1 FROM dy_jobs p WHERE p.order_no = ? AND p.lane = ? "
    f"AND p.state IN {_BLOCKING}) THEN 'waiting' ELSE 'ready' END, ?, ?, ?, ?")


# PostgreSQL: all of a group's jobs in one statement. A statement does not see its own rows, so a
# job behind another of the same order and lane in the same batch is marked `behind` here; the
# first of each is checked against the table. WITH ORDINALITY keeps the ids in queue order.
_QUEUE_CHAINED_PG_SQL = (
    "INSERT INTO dy_jobs (lane, kind, order_no, warehouse, state, next_at, payload, created_at, updated_at) "
    "SELECT v.lane, v.kind, v.order_no, v.warehouse, CASE WHEN v.behind OR EXISTS (SELECT 1 FROM dy_jobs p "
    f"WHERE p.order_no = v.order_no AND p.lane = v.lane AND p.state IN {_BLOCKING}) THEN 'waiting' ELSE 'ready' "
    "END, ?, v.payload, ?, ? FROM unnest(?::text[], ?::text[], ?::text[], ?::text[], ?::text[], ?::boolean[]) "
    "WITH ORDINALITY AS v(lane, kind, order_no, warehouse, payload, behind, n) ORDER BY v.n")


def queue_jobs(conn: Conn, jobs: Sequence[tuple[str, str, str | None, str, str | None]]) -> None:
    """Queue (lane, kind, order_no, warehouse, payload) jobs, each behind its order's open job."""
    now = conn.now
    if conn.dialect == "postgres" and len(jobs) > 1:
        seen: set[tuple[str, str]] = set()
        behind: list[bool] = []
        for lane, _, order_no, _, _ in jobs:
            behind.append(order_no is not None and (order_no, lane) in seen)
            if order_no is not None:
                seen.add((order_no, lane))
        columns = _columns([(lane, kind, order_no, warehouse, payload) for lane, kind, order_no, warehouse, payload
                            in jobs], text=(0, 1, 2, 3, 4))
        conn.execute(_QUEUE_CHAINED_PG_SQL, [now, now, now, *columns, behind])
    else:
        conn.executemany(_QUEUE_CHAINED_SQL, [(lane, kind, order_no, warehouse, order_no, lane, now, payload, now,
                                               now) for lane, kind, order_no, warehouse, payload in jobs])
    for _, _, _, warehouse, _ in jobs:
        _wake(conn, warehouse)


# A forward job's payload is its events' JSON documents, one per line (a compact JSON text never
# holds a raw line break), forwarded in that order.
EVENT_SEPARATOR = "\n"


def forward_events(payload: str | None) -> list[str]:
    """The events (JSON texts) a forward job carries."""
    return payload.split(EVENT_SEPARATOR) if payload else []


# The upstream lane's name in `dy_jobs.warehouse` (no warehouse can have it), and the wake-up key of
# the loop that forwards the upstream outbox (forward_log.py).
UPSTREAM = "_upstream"
FORWARD_LOG_KEY = "_upstream_log"
_OPEN_UP = "('ready', 'waiting', 'claimed', 'sending', 'held')"  # a forward job in one is open


def part_of(order_no: str) -> int:
    """The upstream outbox partition of an order's events: CRC-32 of its number, the same in every
    process (unlike hash()) and every version (a change would split an order's waiting events)."""
    return zlib.crc32(order_no.encode("utf-8")) % FORWARD_PARTS


def queue_forwards(conn: Conn, forwards: Sequence[tuple[str, str]]) -> None:
    """Queue (order_no, event JSON) for the upstream webhook, in order: appended to the upstream
    outbox (dy_forwards, see forward_log.py), one insert per event.

    An order that still has an open forward *job* (queued before schema v7, or a dead one an
    operator replayed) keeps its later events behind that job, so that they are not overtaken:
    they join the job while it is untaken, or queue a job behind it. Whether any forward job is
    open at all is read from the running totals (one small indexed read per group), so the common
    case costs no lookup per order."""
    legacy: set[str] = set()
    if _open_forward_jobs(conn):
        order_nos = sorted({order_no for order_no, _ in forwards})
        for chunk in _chunks(order_nos):
            where, params = _in(conn, chunk)
            legacy.update(row[0] for row in conn.execute(
                f"SELECT DISTINCT order_no FROM dy_jobs WHERE order_no {where} AND lane = 'up' AND state IN "
                f"{_OPEN_UP}", params))
    if legacy:
        _queue_forward_jobs(conn, [f for f in forwards if f[0] in legacy])
        forwards = [f for f in forwards if f[0] not in legacy]
    if not forwards:
        return
    now = conn.now
    rows = [(part_of(order_no), order_no, document, now) for order_no, document in forwards]
    if conn.dialect == "postgres" and len(rows) > 1:  # one statement over arrays, in the given order
        conn.execute("INSERT INTO dy_forwards (part, order_no, document, created_at) SELECT v.p, v.o, v.d, v.c "
                     "FROM unnest(?::integer[], ?::text[], ?::text[], ?::bigint[]) WITH ORDINALITY AS v(p, o, d, c, n) "
                     "ORDER BY v.n", _columns(rows, text=(1, 2)))
    else:
        conn.executemany("INSERT INTO dy_forwards (part, order_no, document, created_at) VALUES (?, ?, ?, ?)", rows)
    _wake(conn, FORWARD_LOG_KEY)


def _open_forward_jobs(conn: Conn) -> bool:
    """Whether any forward job is open (from dy_totals: a read of a few rows by primary key)."""
    found = conn.execute("SELECT COALESCE(SUM(n), 0) FROM dy_totals WHERE kind = 'job' AND k1 = ? AND k2 IN "
                         f"{_OPEN_UP}", (UPSTREAM,))
    return bool(found and int(found[0][0]) > 0)


def _queue_forward_jobs(conn: Conn, forwards: Sequence[tuple[str, str]]) -> None:
    """Events of orders with an open forward job: each order's events join its last forward job
    that has not left yet (waiting behind the open one, or ready and never tried: not claimed, so
    not on the wire; not a retry, so every event it carries gets all its attempts), else a new
    job queued behind the open one. The events of a job go in one request, in order."""
    merged: dict[str, list[str]] = {}
    for order_no, document in forwards:
        merged.setdefault(order_no, []).append(document)
    order_nos = sorted(merged)
    waiting: dict[str, int] = {}
    for chunk in _chunks(order_nos):
        where, params = _in(conn, chunk)
        for order_no, job_id in conn.execute(
                f"SELECT order_no, MAX(id) FROM dy_jobs WHERE order_no {where} AND lane = 'up' AND {_joinable()} "
                "GROUP BY order_no", params):
            waiting[order_no] = int(job_id)
    appended: set[str] = set()
    if waiting:
        targets = sorted(waiting.items(), key=lambda kv: kv[1])  # rows in id order, as every writer takes them
        # joinable again: on PostgreSQL another node may have claimed it (or promoted it) since the look
        if conn.dialect == "postgres" and len(targets) > 1:  # one statement, not a round trip per job
            changed = {int(row[0]) for row in conn.execute(
                "UPDATE dy_jobs j SET payload = j.payload || ? || v.more, updated_at = ? FROM unnest(?::bigint[], "
                f"?::text[]) AS v(id, more) WHERE j.id = v.id AND {_joinable('j.')} RETURNING j.id",
                (EVENT_SEPARATOR, conn.now, [job_id for _, job_id in targets],
                 [EVENT_SEPARATOR.join(merged[o]) for o, _ in targets]))}
            done = [job_id in changed for _, job_id in targets]
        else:
            done = conn.execute_returning(
                f"UPDATE dy_jobs SET payload = payload || ? || ?, updated_at = ? WHERE id = ? AND {_joinable()} "
                "RETURNING id", [(EVENT_SEPARATOR, EVENT_SEPARATOR.join(merged[o]), conn.now, job_id)
                                 for o, job_id in targets])
        appended = {o for (o, _), ok in zip(targets, done, strict=True) if ok}
    rest = [("up", "forward", o, UPSTREAM, EVENT_SEPARATOR.join(merged[o])) for o in order_nos if o not in appended]
    if rest:
        queue_jobs(conn, rest)


def _promote(conn: Conn, ended: Iterable[tuple[str, str]]) -> None:
    """Make the next waiting job of each (order_no, lane) whose open job ended ready."""
    pairs = sorted(set(ended))
    if not pairs:
        return
    if conn.dialect == "sqlite":  # one statement: the first waiting job of each pair whose lane is free
        for chunk in _chunks(pairs):
            for (warehouse,) in conn.execute(
                    "UPDATE dy_jobs SET state = 'ready', next_at = ?, updated_at = ? WHERE id IN (SELECT MIN(w.id) "
                    "FROM dy_jobs w JOIN json_each(?) v ON w.order_no = json_extract(v.value, '$[0]') "
                    "AND w.lane = json_extract(v.value, '$[1]') "
                    "WHERE w.state = 'waiting' GROUP BY w.order_no, w.lane) AND NOT EXISTS (SELECT 1 FROM dy_jobs o "
                    f"WHERE o.order_no = dy_jobs.order_no AND o.lane = dy_jobs.lane AND o.state IN {_OPEN}) "
                    "RETURNING warehouse", (conn.now, conn.now, _json_array(chunk))):
                _wake(conn, warehouse)
        return
    # PostgreSQL: which pairs have a waiting job at all (most have none), then the first waiting
    # job of each such pair, in one statement
    waiting: set[tuple[str, str]] = set()
    for chunk in _chunks([p[0] for p in pairs]):
        where, params = _in(conn, chunk)
        waiting.update((o, lane) for o, lane in conn.execute(
            f"SELECT order_no, lane FROM dy_jobs WHERE order_no {where} AND state = 'waiting'", params))
    for chunk in _chunks([p for p in pairs if p in waiting]):
        rows = conn.execute(
            "UPDATE dy_jobs j SET state = 'ready', next_at = ?, updated_at = ? FROM (SELECT MIN(w.id) AS id "
            "FROM dy_jobs w JOIN unnest(?::text[], ?::text[]) AS v(order_no, lane) ON w.order_no = v.order_no "
            "AND w.lane = v.lane WHERE w.state = 'waiting' AND NOT EXISTS (SELECT 1 FROM dy_jobs o "
            f"WHERE o.order_no = w.order_no AND o.lane = w.lane AND o.state IN {_OPEN}) "
            "GROUP BY w.order_no, w.lane) AS m WHERE j.id = m.id AND j.state = 'waiting' RETURNING j.warehouse",
            (conn.now, conn.now, [p[0] for p in chunk], [p[1] for p in chunk]))
        for (warehouse,) in rows:
            _wake(conn, warehouse)


def _repair_waiting(conn: Conn) -> int:
    """Waiting jobs whose order has no open job left (two nodes queued and ended at the same
    moment, each not seeing the other's change): make the first of each ready."""
    rows = conn.execute(
        "SELECT order_no, lane FROM dy_jobs w WHERE w.state = 'waiting' AND w.updated_at < ? AND NOT EXISTS ("
        f"SELECT 1 FROM dy_jobs o WHERE o.order_no = w.order_no AND o.lane = w.lane AND o.state IN {_OPEN}) "
        "LIMIT 1000", (conn.now - 1_000_000,))
    _promote(conn, [(r[0], r[1]) for r in rows])
    return len(rows)


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


def ingest(conn: Conn, items: Sequence[IngestItem], now: int | None = None) -> list[IngestResult]:
    """Record orders: new ones with their delivery job and `received` row; a repeat of the same
    content is a duplicate; other content under the same number is a conflict (quarantined) or,
    with an update flow, an update."""
    stamp = conn.now
    inserted = _insert_orders(conn, items, stamp)
    results: list[IngestResult] = []
    rows: list[JournalRow] = []
    jobs: list[tuple[Any, ...]] = []
    for it, returned in zip(items, inserted, strict=True):
        if returned:
            jobs.append(("wh", "create", it.order_no, it.warehouse, "ready", stamp, None, stamp, stamp))
            _wake(conn, it.warehouse)
            rows.append(JournalRow(None, it.order_no, it.warehouse, "create", "received", "ok",
                                   detail={"tracking_id": it.tracking_id, "rule": it.route}))
            results.append(IngestResult("accepted", it.tracking_id))
            continue
        tracking, fingerprint, warehouse = conn.execute(
            "SELECT tracking_id, fingerprint, warehouse FROM dy_orders WHERE order_no = ?", (it.order_no,))[0]
        if fingerprint == it.fingerprint:
            rows.append(JournalRow(None, it.order_no, warehouse, None, "received", "duplicate",
                                   detail={"note": "the same order again: acknowledged, nothing queued"}))
            results.append(IngestResult("duplicate", tracking))
        elif it.update_flow and warehouse == it.warehouse:
            conn.execute("UPDATE dy_orders SET payload = ?, fingerprint = ?, updated_at = ? WHERE order_no = ?",
                         (it.payload, it.fingerprint, stamp, it.order_no))
            queue_jobs(conn, [("wh", "update", it.order_no, warehouse, None)])
            rows.append(JournalRow(None, it.order_no, warehouse, "update", "received", "update",
                                   detail={"fingerprint": it.fingerprint}))
            results.append(IngestResult("updated", tracking))
        else:
            why = ("the order number was accepted earlier with different content"
                   + ("" if it.warehouse == warehouse else f" and routed to {warehouse}, not {it.warehouse}"))
            rows.append(JournalRow(None, it.order_no, warehouse, None, "received", "conflict", detail={"reason": why}))
            conn.execute("INSERT INTO dy_quarantine (received_at, source, order_no, reasons, body) "
                         "VALUES (?, ?, ?, ?, ?)",
                         (stamp, "order", it.order_no, json.dumps([why], ensure_ascii=False), it.payload))
            results.append(IngestResult("conflict", tracking, why))
    _insert_many(conn, _QUEUE_SQL, _QUEUE_PG_SQL, jobs, text=(0, 1, 2, 3, 4, 6))
    journal(conn, rows)
    return results


_INSERT_ORDER_SQL = (
    "INSERT INTO dy_orders (order_no, tracking_id, warehouse, shop_code, channel, fingerprint, payload, "
    "status, delivery, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, 'received', 'pending', ?, ?) "
    "ON CONFLICT (order_no) DO NOTHING RETURNING tracking_id")
_INSERT_ORDERS_PG_SQL = (
    "INSERT INTO dy_orders (order_no, tracking_id, warehouse, shop_code, channel, fingerprint, payload, "
    "status, delivery, created_at, updated_at) SELECT v.order_no, v.tracking_id, v.warehouse, v.shop_code, "
    "v.channel, v.fingerprint, v.payload, 'received', 'pending', ?, ? FROM unnest(?::text[], ?::text[], ?::text[], "
    "?::text[], ?::text[], ?::text[], ?::text[]) WITH ORDINALITY AS v(order_no, tracking_id, warehouse, shop_code, "
    "channel, fingerprint, payload, n) ORDER BY v.n ON CONFLICT (order_no) DO NOTHING RETURNING tracking_id")
_QUEUE_PG_SQL = (
    "INSERT INTO dy_jobs (lane, kind, order_no, warehouse, state, next_at, payload, created_at, updated_at) "
    "SELECT * FROM unnest(?::text[], ?::text[], ?::text[], ?::text[], ?::text[], ?::bigint[], ?::text[], "
    "?::bigint[], ?::bigint[])")


def _insert_orders(conn: Conn, items: Sequence[IngestItem], stamp: int) -> list[bool]:
    """Insert the orders that are new; for each item, whether it was. On PostgreSQL a group's
    orders go in one statement, in order-number order: two nodes inserting overlapping numbers
    then take the unique index's locks in the same order and cannot deadlock. An item is known
    by its tracking id (fresh per item), so of two items with one number in a batch only the one
    inserted counts as new."""
    rows = [(it.order_no, it.tracking_id, it.warehouse, it.shop_code, it.channel, it.fingerprint, it.payload)
            for it in items]
    if conn.dialect != "postgres" or len(rows) <= 1:
        return conn.execute_returning(_INSERT_ORDER_SQL, [(*row, stamp, stamp) for row in rows])
    ordered = sorted(rows, key=lambda row: row[0])
    new = {row[0] for row in conn.execute(_INSERT_ORDERS_PG_SQL,
                                          [stamp, stamp, *_columns(ordered, text=(0, 1, 2, 3, 4, 5, 6))])}
    return [it.tracking_id in new for it in items]


class IngestOp(BatchOp):
    """The orders of one HTTP request; every request's orders of a group go in one set of statements."""

    phase: ClassVar[int] = 10

    def __init__(self, items: Sequence[IngestItem]) -> None:
        self.items = items

    @classmethod
    def run(cls, tx: Tx, ops: Sequence[IngestOp]) -> list[list[IngestResult]]:
        flat = [it for op in ops for it in op.items]
        results = iter(ingest(tx, flat))
        return [[next(results) for _ in op.items] for op in ops]


def quarantine(conn: Conn, source: str, order_no: str | None, reasons: Sequence[str], body: str,
               now: int | None = None, warehouse: str | None = None) -> int:
    rows = conn.execute("INSERT INTO dy_quarantine (received_at, source, order_no, reasons, body) "
                        "VALUES (?, ?, ?, ?, ?) RETURNING id",
                        (conn.now, source, order_no, json.dumps(list(reasons), ensure_ascii=False), body))
    qid = int(rows[0][0])
    journal(conn, [JournalRow(None, order_no, warehouse, source, "quarantined", "error",
                              detail={"quarantine_id": qid, "reasons": list(reasons)[:20]})])
    return qid


# -- delivery: the claim ------------------------------------------------------------------------
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
    payload: str | None  # a forward job's events (forward_events)
    order_payload: str | None
    owner: str
    trace_id: str | None = None  # the order's tracking id: what logs and spans of this order carry
    probe: bool = False  # the half-open circuit's one probe
    created_at: int | None = None  # when the order was recorded


@dataclass(frozen=True)
class WarehouseLimits:
    """What all nodes share about one warehouse (see schema.py, dy_limits)."""

    concurrency: int
    rate: float | None = None  # calls per second, all nodes together
    burst: float = 1.0
    probe_us: int = 10_000_000  # how long the half-open probe may take before another may go


@dataclass(frozen=True)
class ClaimOutcome:
    jobs: list[ClaimedJob]
    wait_us: int = 0  # nothing may be claimed for this long (circuit open, rate limit, Retry-After)
    circuit: str = "closed"  # closed | open | half_open, as all nodes see it
    reason: str = ""
    # nothing claimed and nothing in the way (no reason): µs until the earliest ready job of the
    # lane is due (0 or less: due now, taken by another claim); None: none is queued
    next_due_us: int | None = None


_CLAIM = ("SELECT j.id, j.kind, j.order_no, j.warehouse, j.attempts, j.request_id, j.doubt, j.payload, o.payload, "
          "o.tracking_id, o.created_at FROM dy_jobs j LEFT JOIN dy_orders o ON o.order_no = j.order_no "
          "WHERE j.lane = ? AND j.warehouse = ? AND j.state = 'ready' AND j.next_at <= ? "
          "ORDER BY j.next_at LIMIT ?")


def claim(conn: Conn, lane: str, warehouse: str, limit: int, owner: str, lease_us: int,
          new_ids: Iterable[str], limits: WarehouseLimits | None = None, finishing: int = 0) -> ClaimOutcome:
    """Up to `limit` due jobs of a lane and warehouse, marked `claimed` (not yet on the wire) in
    this short transaction. With `limits`, the warehouse's shared limits are honoured first: its
    circuit (one probe across all nodes when half-open), a `Retry-After` pause, its rate bucket, and
    its concurrency counted over every node's claimed and sending jobs (less this node's
    `finishing` ones, whose exchange is over and whose outcome is being committed)."""
    now = conn.now
    circuit, probe = "closed", False
    state: tuple[Any, ...] | None = None
    if limits is not None:
        state = _limits_row(conn, warehouse)
        tokens, refilled_at, paused_until, opened_until, probe_until = state
        if paused_until > now:
            return ClaimOutcome([], paused_until - now, circuit, "paused (Retry-After)")
        if opened_until > now:
            return ClaimOutcome([], opened_until - now, "open", "circuit open")
        if opened_until:
            circuit = "half_open"
            if probe_until > now:
                return ClaimOutcome([], min(probe_until - now, 1_000_000), circuit, "a probe is out")
            limit, probe = 1, True
        limit = min(limit, limits.concurrency)  # less the jobs in flight, counted once there is work
        if limits.rate:
            tokens = limits.burst if tokens is None else min(
                limits.burst, tokens + (now - (refilled_at or now)) * limits.rate / 1e6)
            if tokens < 1:
                conn.execute("UPDATE dy_limits SET tokens = ?, refilled_at = ? WHERE warehouse = ?",
                             (tokens, now, warehouse))
                return ClaimOutcome([], int((1 - tokens) / limits.rate * 1e6) + 1, circuit, "rate limit")
            limit = min(limit, int(tokens))
        if limit <= 0:
            return ClaimOutcome([], 0, circuit, "concurrency")
    sql = _CLAIM + (" FOR UPDATE OF j SKIP LOCKED" if conn.dialect == "postgres" else "")
    rows = conn.execute(sql, (lane, warehouse, now, limit))
    if limits is not None and rows:
        # The jobs in flight are counted after the due ones are read, and only when there are some:
        # half of a delivery run's claims find nothing (a wake-up after the queue was taken), and
        # the count was a statement of each. The limits row is locked, so no other claim moves the
        # count in between; rows read beyond the allowance stay ready (their lock ends with this
        # short transaction).
        active = int(conn.execute("SELECT COUNT(*) FROM dy_jobs WHERE warehouse = ? AND state IN "
                                  "('claimed', 'sending')", (warehouse,))[0][0])
        allowed = limits.concurrency - max(0, active - finishing)
        if allowed <= 0:
            return ClaimOutcome([], 0, circuit, "concurrency")
        rows = rows[:allowed]
    if not rows:  # when the loop may look again: read here, not in a round trip of its own
        return ClaimOutcome([], 0, circuit, next_due_us=next_due(conn, lane, warehouse))
    ids = iter(new_ids)
    jobs = [ClaimedJob(int(jid), lane, kind, order_no, wh, int(attempts) + 1, request_id or next(ids), bool(doubt),
                       payload, order_payload, owner, tracking, probe, created)
            for jid, kind, order_no, wh, attempts, request_id, doubt, payload, order_payload, tracking, created
            in rows]
    if jobs and conn.dialect == "postgres" and len(jobs) > 1:  # one statement over arrays
        conn.execute("UPDATE dy_jobs j SET state = 'claimed', owner = ?, lease_until = ?, attempts = v.attempts, "
                     "request_id = v.request_id, updated_at = ? FROM unnest(?::bigint[], ?::integer[], ?::text[]) "
                     "AS v(id, attempts, request_id) WHERE j.id = v.id",
                     (owner, now + lease_us, now, [j.id for j in jobs], [j.attempts for j in jobs],
                      [j.request_id for j in jobs]))
    elif jobs:
        conn.executemany("UPDATE dy_jobs SET state = 'claimed', owner = ?, lease_until = ?, attempts = ?, "
                         "request_id = ?, updated_at = ? WHERE id = ?",
                         [(owner, now + lease_us, j.attempts, j.request_id, now, j.id) for j in jobs])
    if limits is not None and state is not None and jobs and (limits.rate or probe or state[4]):
        # without a rate limit or a probe to record or clear, the row would be written unchanged
        # (the bucket's refill time only matters to a rate): a write, and its WAL, per claim saved
        tokens = state[0]
        if limits.rate:
            tokens = min(limits.burst, (limits.burst if tokens is None else tokens)
                         + (now - (state[1] or now)) * limits.rate / 1e6) - len(jobs)
        conn.execute("UPDATE dy_limits SET tokens = ?, refilled_at = ?, probe_owner = ?, probe_until = ? "
                     "WHERE warehouse = ?", (tokens, now, owner if probe else None,
                                            now + limits.probe_us if probe else 0, warehouse))
    return ClaimOutcome(jobs, 0, circuit)


def _limits_row(conn: Conn, warehouse: str) -> tuple[Any, ...]:
    lock = " FOR UPDATE" if conn.dialect == "postgres" else ""
    sql = ("SELECT tokens, refilled_at, paused_until, opened_until, probe_until FROM dy_limits "
           f"WHERE warehouse = ?{lock}")
    rows = conn.execute(sql, (warehouse,))
    if not rows:
        conn.execute("INSERT INTO dy_limits (warehouse) VALUES (?) ON CONFLICT (warehouse) DO NOTHING", (warehouse,))
        rows = conn.execute(sql, (warehouse,))
    tokens, refilled, paused, opened, probe_until = rows[0]
    return (None if tokens is None else float(tokens), refilled, int(paused), int(opened), int(probe_until))


def next_due(conn: Conn, lane: str, warehouse: str) -> int | None:
    """When the earliest ready job of a lane and warehouse is due (None: none is queued)."""
    rows = conn.execute("SELECT MIN(next_at) FROM dy_jobs WHERE lane = ? AND warehouse = ? AND state = 'ready'",
                        (lane, warehouse))
    return None if not rows or rows[0][0] is None else int(rows[0][0]) - conn.now


def set_circuit(conn: Conn, warehouse: str, *, open_for_us: int | None, by: str) -> None:
    """Open the warehouse's circuit for every node (open_for_us), or close it (None)."""
    _limits_row(conn, warehouse)
    if open_for_us is None:
        conn.execute("UPDATE dy_limits SET opened_until = 0, opened_by = NULL, probe_owner = NULL, probe_until = 0 "
                     "WHERE warehouse = ?", (warehouse,))
    else:
        conn.execute("UPDATE dy_limits SET opened_until = ?, opened_by = ?, probe_owner = NULL, probe_until = 0 "
                     "WHERE warehouse = ?", (conn.now + open_for_us, by, warehouse))


def set_pause(conn: Conn, warehouse: str, pause_us: int, reason: str) -> None:
    """The warehouse asked every caller to wait (Retry-After): no node claims for it until then."""
    _limits_row(conn, warehouse)
    until = conn.now + pause_us
    conn.execute("UPDATE dy_limits SET paused_until = ?, pause_reason = ? WHERE warehouse = ? AND paused_until < ?",
                 (until, reason, warehouse, until))


class MarkSendingOp(BatchOp):
    """Durably mark a claimed job as on the wire, just before its request is written: from here a
    crash leaves it in doubt. False when the job is no longer this worker's."""

    phase: ClassVar[int] = 5

    def __init__(self, job_id: int, owner: str) -> None:
        self.job_id = job_id
        self.owner = owner

    @classmethod
    def run(cls, tx: Tx, ops: Sequence[MarkSendingOp]) -> list[bool]:
        if len(ops) == 1:
            return tx.execute_returning("UPDATE dy_jobs SET state = 'sending', updated_at = ? WHERE id = ? "
                                        "AND owner = ? AND state IN ('claimed', 'sending') RETURNING id",
                                        [(tx.now, op.job_id, op.owner) for op in ops])
        # The group's jobs in one statement per owner (a node's jobs all have its owner), ids in
        # ascending order as finish() keeps them. On PostgreSQL no other node updates these rows
        # while they are this owner's, short of a lease recovery, which the owner check turns away.
        by_owner: dict[str, list[int]] = {}
        for op in ops:
            by_owner.setdefault(op.owner, []).append(op.job_id)
        marked: set[tuple[str, int]] = set()
        for owner, ids in by_owner.items():
            for chunk in _chunks(sorted(set(ids))):
                where, params = _in(tx, chunk)
                marked.update((owner, int(row[0])) for row in tx.execute(
                    f"UPDATE dy_jobs SET state = 'sending', updated_at = ? WHERE id {where} AND owner = ? "
                    "AND state IN ('claimed', 'sending') RETURNING id", (tx.now, *params, owner)))
        return [(op.owner, op.job_id) in marked for op in ops]


# -- delivery: the outcome ----------------------------------------------------------------------
@dataclass
class JobResult:
    job_id: int
    owner: str
    state: str  # done | ready | dead | held | cancelled
    delay_us: int = 0  # when `ready`: due this long after the commit
    doubt: bool = False
    reason: str | None = None
    outcome: dict[str, Any] | None = None
    reset_request_id: bool = False  # the next attempt must use a new request id (e.g. after a query said "absent")
    order_no: str | None = None
    lane: str = "wh"
    warehouse: str | None = None
    order_status: str | None = None  # set the order's status (by rank, see RANK)
    delivery: str | None = None  # the order's delivery state
    warehouse_order_id: str | None = None
    waybills: list[dict[str, Any]] | None = None
    rows: list[JournalRow] = field(default_factory=list)
    ingested_at: int | None = None  # an accepted create: its order's ingest time (the dashboard's ingest → accepted)


_FINISH_SQL = ("UPDATE dy_jobs SET state = ?, next_at = ?, doubt = ?, reason = ?, outcome = ?, owner = NULL, "
               "lease_until = NULL, request_id = CASE WHEN ? = 1 THEN NULL ELSE request_id END, updated_at = ? "
               "WHERE id = ? AND owner = ? AND state IN ('claimed', 'sending') RETURNING id")

_FINISH_PG_SQL = (
    "UPDATE dy_jobs j SET state = v.state, next_at = v.next_at, doubt = v.doubt, reason = v.reason, "
    "outcome = v.outcome, owner = NULL, lease_until = NULL, request_id = CASE WHEN v.reset = 1 THEN NULL "
    "ELSE j.request_id END, updated_at = v.at FROM unnest(?::text[], ?::bigint[], ?::integer[], ?::text[], "
    "?::text[], ?::integer[], ?::bigint[], ?::bigint[], ?::text[]) AS v(state, next_at, doubt, reason, outcome, "
    "reset, at, id, owner) WHERE j.id = v.id AND j.owner = v.owner AND j.state IN ('claimed', 'sending') "
    "RETURNING j.id")


def finish(conn: Conn, results: Sequence[JobResult], now: int | None = None) -> int:
    """Record what became of claimed jobs; a job whose claim was lost (another process recovered
    it) is left alone. Returns how many were recorded. Results that set the same values (a batch
    of forwarded events) are recorded by one statement."""
    stamp = conn.now
    ordered = sorted(results, key=lambda r: r.job_id)  # every node updates job rows in id order
    buckets: dict[tuple[Any, ...], list[JobResult]] = {}
    for r in ordered:
        values = (r.state, stamp + r.delay_us, int(r.doubt), r.reason,
                  None if r.outcome is None else json.dumps(r.outcome, ensure_ascii=False, default=str),
                  int(r.reset_request_id), stamp, r.owner)
        buckets.setdefault(values, []).append(r)
    done: set[int] = set()
    singles = [(values, group[0]) for values, group in buckets.items() if len(group) == 1]
    if singles and conn.dialect == "postgres" and len(singles) > 1:  # one statement over arrays
        rows_in = [(*v[:7], r.job_id, v[7]) for v, r in singles]
        done.update(int(row[0]) for row in conn.execute(_FINISH_PG_SQL, _columns(rows_in, text=(0, 3, 4, 8))))
    elif singles:
        changed = conn.execute_returning(_FINISH_SQL, [(*v[:7], r.job_id, v[7]) for v, r in singles])
        done.update(r.job_id for (_, r), ok in zip(singles, changed, strict=True) if ok)
    for values, group in buckets.items():
        if len(group) > 1:
            for chunk in _chunks([r.job_id for r in group]):
                where, params = _in(conn, chunk)
                done.update(int(row[0]) for row in conn.execute(
                    _FINISH_SQL.replace("WHERE id = ?", f"WHERE id {where}"), (*values[:7], *params, values[7])))
    rows: list[JournalRow] = []
    ended: list[tuple[str, str]] = []
    for r in ordered:
        if r.job_id not in done:
            rows.append(JournalRow(None, r.order_no, r.warehouse, None, "lease-lost", "warning",
                                   detail={"job": r.job_id, "note": "another worker recovered this job"}))
            continue
        rows += r.rows
        if r.ingested_at is not None and r.warehouse and isinstance(conn, Tx):
            conn.count_accepted(r.warehouse, r.ingested_at)
        if r.state == "ready" and r.warehouse:
            _wake(conn, r.warehouse)
        elif r.state in ("done", "dead", "cancelled") and r.order_no is not None:
            ended.append((r.order_no, r.lane))
        if r.order_no is not None and (r.order_status or r.delivery or r.warehouse_order_id or r.waybills):
            _change_order(conn, r.order_no, status=r.order_status, delivery=r.delivery,
                          warehouse_order_id=r.warehouse_order_id, waybills=r.waybills)
    _promote(conn, ended)
    journal(conn, rows)
    return len(done)


class FinishOp(BatchOp):
    phase: ClassVar[int] = 30

    def __init__(self, results: Sequence[JobResult]) -> None:
        self.results = results

    @classmethod
    def run(cls, tx: Tx, ops: Sequence[FinishOp]) -> list[int]:
        if len(ops) == 1:
            return [finish(tx, ops[0].results)]
        flat = [r for op in ops for r in op.results]
        finish(tx, flat)
        return [len(op.results) for op in ops]


# A job claimed by this process that it does not hold is an orphan only after this long: the claim
# that took it may have committed a moment before its answer reached the claiming loop.
ORPHAN_GRACE_US = 15_000_000


def recover(conn: Conn, now: int | None = None, *, me: str, gone: Callable[[Conn, str], bool],
            holding: frozenset[int] | None = None) -> list[tuple[int, str | None, str]]:
    """Jobs that were claimed or on the wire when their worker died. A `claimed` job never left:
    it is simply ready again. A `sending` job may have reached the warehouse: it comes back in
    doubt, to be settled by the warehouse's rule.

    A worker is dead when its lease ran out, or when its process is gone (Database.owner_gone).
    With `holding` (the jobs this process `me` is working on), this process's own orphans come
    back too: jobs the store has as claimed by it that it does not hold. They happen when the
    store goes away at the wrong moment: a claim that committed but whose answer was lost with the
    connection, or an outcome that could not be written. Without this they would count against the
    warehouse's concurrency, and wait, until their lease ran out (minutes).
    Also makes ready any waiting job left without an open predecessor (see _repair_waiting)."""
    stamp = conn.now
    owners = [r[0] for r in conn.execute("SELECT DISTINCT owner FROM dy_jobs WHERE state IN ('claimed', 'sending')")]
    dead = [owner for owner in owners if owner is not None and owner != me and gone(conn, owner)]
    rows = conn.execute("SELECT id, order_no, warehouse, lane, owner, state FROM dy_jobs "
                        "WHERE state IN ('claimed', 'sending') AND lease_until < ?", (stamp,))
    for owner in dead:
        rows += conn.execute("SELECT id, order_no, warehouse, lane, owner, state FROM dy_jobs "
                             "WHERE state IN ('claimed', 'sending') AND owner = ? AND lease_until >= ?", (owner, stamp))
    if holding is not None:
        seen = {int(r[0]) for r in rows}
        rows += [r for r in conn.execute("SELECT id, order_no, warehouse, lane, owner, state FROM dy_jobs "
                                         "WHERE state IN ('claimed', 'sending') AND owner = ? AND lease_until >= ? "
                                         "AND updated_at < ?", (me, stamp, stamp - ORPHAN_GRACE_US))
                 if int(r[0]) not in holding and int(r[0]) not in seen]
    _repair_waiting(conn)
    if not rows:
        return []
    def reason(r: tuple[Any, ...]) -> str:
        who = ("this node lost track of it while the store was away" if r[4] == me
               else "the service stopped")
        if r[5] == "sending":
            return f"{who} while this request may have been on the wire"
        return f"{who} before this request was written: it is sent again"

    conn.executemany(
        "UPDATE dy_jobs SET state = 'ready', doubt = CASE WHEN ? = 1 THEN 1 ELSE doubt END, reason = ?, owner = NULL, "
        "lease_until = NULL, next_at = ?, updated_at = ? WHERE id = ? AND state = ? AND owner = ?",
        [(int(r[5] == "sending" and r[3] == "wh"), reason(r), stamp, stamp, r[0], r[5], r[4]) for r in rows])
    journal(conn, [JournalRow(None, r[1], r[2], None, "recovered",
                              "in_doubt" if r[5] == "sending" and r[3] == "wh" else "retry",
                              detail={"job": r[0], "reason": reason(r)})
                   for r in rows])
    for r in rows:
        _wake(conn, r[2])
    return [(int(r[0]), r[1], r[2]) for r in rows]


# -- operators --------------------------------------------------------------------------------
def replay(conn: Conn, job_ids: Sequence[int], now: int | None = None, who: str = "operator") -> list[tuple[int, str]]:
    """Send dead or held jobs again. Idempotent: a job that is no longer dead or held is left as
    it is, and the answer says so. A replayed job goes back to the front of its order's queue:
    later jobs of the order that have not started wait for it again."""
    out: list[tuple[int, str]] = []
    stamp = conn.now
    for jid in job_ids:
        row = conn.execute("SELECT state, order_no, warehouse, kind, lane FROM dy_jobs WHERE id = ?", (jid,))
        if not row:
            out.append((jid, "no such job"))
            continue
        state, order_no, warehouse, kind, lane = row[0]
        if state not in ("dead", "held"):
            out.append((jid, f"not replayed: the job is {state}"))
            continue
        new_state = "ready"
        if order_no is not None:
            conn.execute("UPDATE dy_jobs SET state = 'waiting', updated_at = ? WHERE order_no = ? AND lane = ? "
                         "AND id > ? AND state = 'ready'", (stamp, order_no, lane, jid))
            earlier = conn.execute(f"SELECT 1 FROM dy_jobs WHERE order_no = ? AND lane = ? AND id < ? "
                                   f"AND state IN {_BLOCKING} LIMIT 1", (order_no, lane, jid))
            new_state = "waiting" if earlier else "ready"
        conn.execute("UPDATE dy_jobs SET state = ?, attempts = 0, doubt = 0, next_at = ?, "
                     "reason = ?, updated_at = ? WHERE id = ?",
                     (new_state, stamp, f"replayed by {who} (was {state})", stamp, jid))
        if kind == "create" and order_no is not None:
            _change_order(conn, order_no, delivery="pending")
        journal(conn, [JournalRow(None, order_no, warehouse, kind, "replayed", "ok",
                                  detail={"job": jid, "by": who, "was": state})])
        _wake(conn, warehouse)
        out.append((jid, "replayed"))
    return out


def discard(conn: Conn, job_ids: Sequence[int], who: str, why: str) -> list[tuple[int, str]]:
    """Give up on dead or held jobs for good, with the operator's reason: the job becomes
    `cancelled` (so nothing counts it as dead or in doubt any more), an order whose create is
    discarded is `discarded`, and the next waiting job of the order may go. Idempotent like replay."""
    out: list[tuple[int, str]] = []
    ended: list[tuple[str, str]] = []
    for jid in job_ids:
        row = conn.execute("SELECT state, order_no, warehouse, kind, lane FROM dy_jobs WHERE id = ?", (jid,))
        if not row:
            out.append((jid, "no such job"))
            continue
        state, order_no, warehouse, kind, lane = row[0]
        if state not in ("dead", "held"):
            out.append((jid, f"not discarded: the job is {state}"))
            continue
        conn.execute("UPDATE dy_jobs SET state = 'cancelled', doubt = 0, reason = ?, updated_at = ? WHERE id = ?",
                     (f"discarded by {who}: {why}", conn.now, jid))
        if kind == "create" and order_no is not None:
            _change_order(conn, order_no, delivery="discarded")
        if order_no is not None:
            ended.append((order_no, lane))
        journal(conn, [JournalRow(None, order_no, warehouse, kind, "discarded", "ok",
                                  detail={"job": jid, "by": who, "was": state, "reason": why})])
        out.append((jid, "discarded"))
    _promote(conn, ended)
    return out


def request_cancel(conn: Conn, order_no: str, now: int | None = None,
                   has_cancel_flow: bool = True) -> tuple[str, str]:
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
                     "WHERE id = ? AND state = ?", (conn.now, create[0], create[2]))
        _change_order(conn, order_no, status="cancelled", delivery="cancelled")
        journal(conn, [JournalRow(None, order_no, warehouse, "cancel", "cancelled", "ok",
                                  detail={"note": "the create had not been delivered: nothing sent to the warehouse"})])
        _promote(conn, [(order_no, "wh")])
        return "cancelled", "cancelled before anything reached the warehouse"
    if not has_cancel_flow:
        return "unsupported", f"warehouse {warehouse} has no cancel flow configured"
    queue_jobs(conn, [("wh", "cancel", order_no, warehouse, None)])
    journal(conn, [JournalRow(None, order_no, warehouse, "cancel", "cancel-requested", "ok")])
    return "queued", "the cancel is queued behind the order's create"


# -- feedback ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class EventRecord:
    """One status event of a callback, as the inbound mapping made it."""

    event: dict[str, Any]
    event_id: str


@dataclass(frozen=True)
class EventOutcome:
    outcome: str  # applied | duplicate | foreign-order | unknown-order
    tracking_id: str | None
    reason: str = ""


_EVENT_COLUMNS = "warehouse, event_id, order_no, status, document, received_at, recorded_at, flow, verified_with, slot"


def _insert_events(conn: Conn, rows: list[tuple[Any, ...]]) -> list[bool]:
    """Insert (warehouse, event_id, order_no, status, document, received_at, recorded_at, flow,
    verified_with, slot) rows, each once; for each row, whether it was new. On PostgreSQL in one
    statement: what it returns are the keys it inserted, and of rows with the same key in one
    batch the first is the new one."""
    if len(rows) <= 1:
        return conn.execute_returning(
            f"INSERT INTO dy_events ({_EVENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (warehouse, event_id) DO NOTHING RETURNING event_id", rows)
    if conn.dialect == "postgres":
        new = {(w, e) for w, e in conn.execute(
            f"INSERT INTO dy_events ({_EVENT_COLUMNS}) "
            "SELECT * FROM unnest(?::text[], ?::text[], ?::text[], ?::text[], ?::text[], ?::bigint[], ?::bigint[], "
            "?::text[], ?::text[], ?::integer[]) "
            "ON CONFLICT (warehouse, event_id) DO NOTHING RETURNING warehouse, event_id",
            _columns(rows, text=(0, 1, 2, 3, 4, 7, 8)))}
    else:  # SQLite: the rows as one JSON array, inserted in its order (`WHERE true`: an upsert's SELECT needs one)
        new = {(w, e) for w, e in conn.execute(
            f"INSERT INTO dy_events ({_EVENT_COLUMNS}) "
            "SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), json_extract(value, '$[2]'), "
            "json_extract(value, '$[3]'), json_extract(value, '$[4]'), json_extract(value, '$[5]'), "
            "json_extract(value, '$[6]'), json_extract(value, '$[7]'), json_extract(value, '$[8]'), "
            "json_extract(value, '$[9]') FROM json_each(?) "
            "WHERE true ORDER BY key ON CONFLICT (warehouse, event_id) DO NOTHING RETURNING warehouse, event_id",
            (_json_array([w, None if e is None else str(e), None if o is None else str(o), st, doc, at, *rest]
                         for w, e, o, st, doc, at, *rest in rows),))}
    out: list[bool] = []
    for row in rows:
        key = (row[0], None if row[1] is None else str(row[1]))
        out.append(key in new)
        new.discard(key)  # a second row with the key in this batch is its duplicate
    return out


class RecordEventsOp(BatchOp):
    """The status events of one callback: each recorded once (dedupe on warehouse + event id),
    applied to its order and queued for forwarding — but only for an order that was routed to
    this warehouse. An event for another warehouse's order (`foreign-order`) or for no order of
    ours (`unknown-order`) is journaled and never applied or forwarded, signed or not."""

    phase: ClassVar[int] = 20

    def __init__(self, warehouse: str, flow: str, records: Sequence[EventRecord], *, forward: bool,
                 received_at: int, verified_with: str | None = None) -> None:
        self.verified_with = verified_with  # which secret verified the callback (current | previous), never it
        self.warehouse = warehouse
        self.flow = flow
        self.records = records
        self.forward = forward
        self.received_at = received_at

    @classmethod
    def run(cls, tx: Tx, ops: Sequence[RecordEventsOp]) -> list[list[EventOutcome]]:
        order_nos = sorted({str(r.event.get("order_no")) for op in ops for r in op.records if r.event.get("order_no")})
        orders: dict[str, tuple[str, str]] = {}
        for chunk in _chunks(order_nos):
            where, params = _in(tx, chunk)
            for order_no, warehouse, tracking in tx.execute(
                    f"SELECT order_no, warehouse, tracking_id FROM dy_orders WHERE order_no {where}", params):
                orders[order_no] = (warehouse, tracking)
        out: list[list[EventOutcome]] = []
        fresh_rows: list[tuple[Any, ...]] = []
        candidates: list[tuple[RecordEventsOp, EventRecord, str, str]] = []
        # An applied event is its own `feedback ok` step (schema v9; queries.timeline): its row holds
        # where that step stands among its order's steps of this commit (`slot`, counting the
        # journal rows of the order already in the group, and every step journaled or recorded here
        # before it: each candidate is one step, applied or duplicate), so that the timeline shows
        # the steps of one moment in the order they had as journal rows.
        slots: dict[str, int] = {}
        for row in tx.journal_rows:  # those of this moment (a row may carry a time of its own)
            if row[1] is not None and (row[0] is None or row[0] == tx.now):
                slots[row[1]] = slots.get(row[1], 0) + 1

        def slot(order_no: str) -> int:
            n = slots.get(order_no, 0)
            slots[order_no] = n + 1
            return n
        for op in ops:
            outcomes: list[EventOutcome] = []
            for rec in op.records:
                order_no = rec.event.get("order_no")
                known = orders.get(str(order_no)) if order_no else None
                if known is None or known[0] != op.warehouse:
                    outcome = "unknown-order" if known is None else "foreign-order"
                    reason = (f"no order {order_no!r} was sent to {op.warehouse}" if known is None else
                              f"order {order_no!r} was routed to another warehouse, not {op.warehouse}")
                    if order_no:
                        slot(str(order_no))
                    tx.journal([JournalRow(None, str(order_no) if order_no else None, op.warehouse, op.flow,
                                           "feedback", outcome, detail={
                                               "event_id": rec.event_id, "status": rec.event.get("status"),
                                               "reason": reason}).values()])
                    outcomes.append(EventOutcome(outcome, None, reason))
                    continue
                document = orjson.dumps(rec.event, default=str).decode("utf-8")
                candidates.append((op, rec, document, known[1]))
                outcomes.append(EventOutcome("pending", known[1]))
            out.append(outcomes)
        # The candidates' slots come after every unknown or foreign row of the group: those rows are
        # journaled in the loop above, before any applied or duplicate step, and so they stood.
        for op, rec, document, _ in candidates:
            order_no = rec.event["order_no"]
            fresh_rows.append((op.warehouse, rec.event_id, order_no, rec.event.get("status"), document,
                               op.received_at, tx.now, op.flow, op.verified_with, slot(str(order_no))))
        inserted = _insert_events(tx, fresh_rows)
        forwards: list[tuple[str, str]] = []
        results = iter(inserted)
        settled: dict[int, str] = {}
        for op, rec, document, _ in candidates:
            fresh = next(results)
            settled[id(rec)] = "applied" if fresh else "duplicate"
            order_no = str(rec.event["order_no"])
            status = rec.event.get("status")
            if not fresh:
                tx.journal([JournalRow(None, order_no, op.warehouse, op.flow, "feedback", "duplicate", detail={
                    "event_id": rec.event_id, "status": status}).values()])
                continue
            tx.change_order(order_no, status=status if status in RANK or status in FINAL else None,
                            warehouse_order_id=rec.event.get("warehouse_order_id"),
                            waybills=rec.event.get("waybills"))
            # no journal row: the event's row (recorded_at, flow, verified_with) is its `feedback ok`
            # step, which queries.timeline shows as that row was (bench/README.md, branch i10j)
            if op.forward:
                forwards.append((order_no, document))
        if forwards:
            queue_forwards(tx, forwards)
        for op, outcomes in zip(ops, out, strict=True):
            for i, (rec, o) in enumerate(zip(op.records, outcomes, strict=True)):
                if o.outcome == "pending":
                    outcomes[i] = EventOutcome(settled[id(rec)], o.tracking_id)
        return out
