"""The upstream outbox: recorded status events on their way to the order middle-platform's webhook.

Why not a job per event (as before schema v7): a forward job cost five writes on `dy_jobs` and its
five indexes (queued, made ready, claimed, sent, ended) for what is one POST of many events, and
it was more than half of the store's work per order with feedback on (bench/store_writer.py
--forward-cost). Here an event is one insert, appended in the commit that records it (the outbox
still commits with the event), and one delete when the webhook took it.

Order. An order's events must reach the webhook in the order they were recorded. Orders are
hashed to FORWARD_PARTS partitions (`store.part_of`, stable across processes and versions), and a
partition is forwarded by one node at a time (its lease in `dy_forward_parts`, in the database's
clock), oldest `id` first, one batch in flight per node. A failed batch holds its partitions back
(`next_at`) and is sent again, head first; the other partitions go on.

Leases. A node takes its share of the partitions (all of them when it is alone; about 1/N of
them with N live nodes in `dy_nodes`), renews them while it runs, and gives back what is above its
share when another node arrives. A partition whose owner's lease ran out, or whose owner is gone
(Database.owner_gone: its session ended and it stopped beating), is free. A node that dies with a
batch on the wire leaves its rows in place: the next owner sends them again (the webhook gets
them at least once, as with jobs), and only the delete that removes a row journals it as
`forwarded`, so the journal holds one such row per event however often it went.

Dead letters. Rows that run out of attempts become one dead forward job per order (its events in
order, `store.forward_events`), which the DLQ shows, and replays or discards, as before.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar

from dockyard.service.db import GONE_AFTER_US, BatchOp, Conn, Tx
from dockyard.service.schema import FORWARD_PARTS
from dockyard.service.store import EVENT_SEPARATOR, UPSTREAM, JournalRow, journal
from dockyard.service.store import _chunks as chunks
from dockyard.service.store import _in as in_list

__all__ = ["DEPTH_CAP", "FailedBatch", "FinishForwardsOp", "LogEvent", "depth", "lease",
           "read_batch", "release"]

DEPTH_CAP = 100_000  # `depth` counts at most this many rows (a bounded read on every scrape)


# -- leases ---------------------------------------------------------------------------------------
def lease(conn: Conn, me: str, lease_us: int, gone: Callable[[Conn, str], bool]) -> dict[int, str | None]:
    """Take, renew and give back partitions (in a short transaction of its own): this node keeps
    its share — the partitions divided by the live nodes, rounded up — taking free ones (never
    leased, lease run out, owner gone) when below it and giving back its highest when above it.
    Returns the partitions it now holds, each with the reason its last batch failed (None after a
    success: FinishForwardsOp's `clear`)."""
    now = conn.now
    lock = " FOR UPDATE" if conn.dialect == "postgres" else ""  # two nodes never take the same partition
    rows = conn.execute(f"SELECT part, owner, lease_until, reason FROM dy_forward_parts ORDER BY part{lock}")
    live = int(conn.execute("SELECT COUNT(*) FROM dy_nodes WHERE heartbeat_at >= ?",
                            (now - GONE_AFTER_US,))[0][0])
    share = -(-FORWARD_PARTS // max(1, live))
    mine = [int(r[0]) for r in rows if r[1] == me]
    if len(mine) < share:
        verdict: dict[str, bool] = {}

        def free(owner: str | None, until: int) -> bool:
            if owner is None or until < now:
                return True
            if owner not in verdict:
                verdict[owner] = gone(conn, owner)
            return verdict[owner]
        mine += [int(r[0]) for r in rows if r[1] != me and free(r[1], int(r[2]))][:share - len(mine)]
    mine.sort()
    given_back = mine[share:]
    mine = mine[:share]
    if given_back:
        where, params = in_list(conn, given_back)
        conn.execute(f"UPDATE dy_forward_parts SET owner = NULL, lease_until = 0 WHERE part {where} AND owner = ?",
                     (*params, me))
    if mine:
        where, params = in_list(conn, mine)
        conn.execute(f"UPDATE dy_forward_parts SET owner = ?, lease_until = ? WHERE part {where}",
                     (me, now + lease_us, *params))
    held = set(mine)
    return {int(r[0]): r[3] for r in rows if int(r[0]) in held}


# -- forwarding -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LogEvent:
    id: int
    part: int
    order_no: str
    document: str
    attempts: int  # failed attempts so far


def read_batch(conn: Conn, parts: Sequence[int], limit: int) -> tuple[list[LogEvent], int | None]:
    """The oldest `limit` events of these partitions that are due (not backing off); when there
    are none, also how many microseconds until the first of them is due again (None: none backs
    off). The log is read in `id` order through its primary key (no other index: nothing to choose
    between, so the plan holds without statistics), and holds only what is still to be sent."""
    if not parts:
        return [], None
    where, params = in_list(conn, list(parts))
    now = conn.now
    due: list[int] = []  # partitions
    later: list[int] = []  # when the others are due again
    for part, next_at in conn.execute(f"SELECT part, next_at FROM dy_forward_parts WHERE part {where}", params):
        if int(next_at) <= now:
            due.append(int(part))
        else:
            later.append(int(next_at))
    if not due:
        return [], (min(later) - now if later else None)
    if len(due) < FORWARD_PARTS:
        where, params = in_list(conn, due)
        filter_, args = f"WHERE part {where} ", params
    else:
        filter_, args = "", ()
    batch = [LogEvent(int(i), int(p), o, d, int(a)) for i, p, o, d, a in conn.execute(
        f"SELECT id, part, order_no, document, attempts FROM dy_forwards {filter_}ORDER BY id LIMIT ?",
        (*args, limit))]
    return batch, (None if batch or not later else min(later) - now)


def depth(conn: Conn) -> int:
    """Events waiting in the log, counted up to DEPTH_CAP (an upstream outage may leave millions:
    a scrape must not count them all)."""
    return int(conn.execute("SELECT COUNT(*) FROM (SELECT 1 FROM dy_forwards LIMIT ?) t", (DEPTH_CAP,))[0][0])


@dataclass(frozen=True)
class FailedBatch:
    why: str
    delay_us: int  # how long its partitions back off
    max_attempts: int  # a row that has made this many attempts is dead-lettered
    # False: the rows were not what failed (they were left over when a refused batch's culprits were
    # being isolated), so their partitions back off but they count no attempt and are not journaled
    counts: bool = True


class FinishForwardsOp(BatchOp):
    """What became of one sent batch. Sent: its rows are deleted, and each row this delete removed
    gets its `forwarded` journal row (a row another node already removed was journaled there).
    Failed: each row counts the attempt; rows out of attempts become one dead forward job per
    order; the batch's partitions back off by `delay_us`. `clear`: partitions whose back-off
    reason this batch's success ends."""

    phase: ClassVar[int] = 30

    def __init__(self, events: Sequence[LogEvent], failed: FailedBatch | None, clear: Sequence[int] = ()) -> None:
        self.events = events
        self.failed = failed
        self.clear = clear

    @classmethod
    def run(cls, tx: Tx, ops: Sequence[FinishForwardsOp]) -> list[int]:
        return [_finish(tx, op) for op in ops]


def _finish(conn: Tx, op: FinishForwardsOp) -> int:
    events = sorted(op.events, key=lambda e: e.id)
    ids = [e.id for e in events]
    rows: list[JournalRow] = []
    if op.failed is None:
        removed: set[int] = set()
        for chunk in chunks(ids):
            where, params = in_list(conn, chunk)
            removed.update(int(r[0]) for r in conn.execute(f"DELETE FROM dy_forwards WHERE id {where} RETURNING id",
                                                           params))
        rows += [JournalRow(None, e.order_no, UPSTREAM, "forward", "forwarded", "ok", detail={"batch": len(events)})
                 for e in events if e.id in removed]
        if op.clear:
            where, params = in_list(conn, list(op.clear))
            conn.execute(f"UPDATE dy_forward_parts SET next_at = 0, reason = NULL WHERE part {where}", params)
        journal(conn, rows)
        return len(removed)
    failed = op.failed
    if not failed.counts:
        _back_off(conn, events, failed)
        return 0
    dead = [e for e in events if e.attempts + 1 >= failed.max_attempts]
    retried = [e for e in events if e.attempts + 1 < failed.max_attempts]
    for chunk in chunks([e.id for e in retried]):
        where, params = in_list(conn, chunk)
        conn.execute(f"UPDATE dy_forwards SET attempts = attempts + 1 WHERE id {where}", params)
    attempt_of = {e.order_no: e.attempts + 1 for e in retried}
    rows += [JournalRow(None, order_no, UPSTREAM, "forward", "forward-failed", "retry",
                        detail={"reason": failed.why, "attempt": attempt})
             for order_no, attempt in attempt_of.items()]
    if dead:
        rows += _dead_letter(conn, dead, failed)
    _back_off(conn, events, failed)
    journal(conn, rows)
    return 0


def _back_off(conn: Tx, events: Sequence[LogEvent], failed: FailedBatch) -> None:
    where, params = in_list(conn, sorted({e.part for e in events}))
    conn.execute(f"UPDATE dy_forward_parts SET next_at = ?, reason = ? WHERE part {where}",
                 (conn.now + failed.delay_us, failed.why, *params))


def _dead_letter(conn: Tx, dead: Sequence[LogEvent], failed: FailedBatch) -> list[JournalRow]:
    """Rows out of attempts: one dead forward job per order (its events in `id` order), journaled,
    and gone from the log — but only the rows still there (another node may have sent them)."""
    still: set[int] = set()
    for chunk in chunks([e.id for e in dead]):
        where, params = in_list(conn, chunk)
        still.update(int(r[0]) for r in conn.execute(f"DELETE FROM dy_forwards WHERE id {where} RETURNING id", params))
    by_order: dict[str, list[LogEvent]] = {}
    for e in dead:
        if e.id in still:
            by_order.setdefault(e.order_no, []).append(e)
    rows: list[JournalRow] = []
    reason = f"upstream: out of attempts; last: {failed.why}"
    now = conn.now
    for order_no, events in by_order.items():
        payload = EVENT_SEPARATOR.join(e.document for e in events)
        job = conn.execute(
            "INSERT INTO dy_jobs (lane, kind, order_no, warehouse, state, attempts, next_at, payload, reason, "
            "created_at, updated_at) VALUES ('up', 'forward', ?, ?, 'dead', ?, ?, ?, ?, ?, ?) RETURNING id",
            (order_no, UPSTREAM, max(e.attempts + 1 for e in events), now, payload, reason, now, now))[0][0]
        rows.append(JournalRow(None, order_no, UPSTREAM, "forward", "dead-lettered", "dlq",
                               detail={"reason": failed.why, "job": int(job)}))
    return rows


def release(conn: Conn, me: str) -> int:
    """A node that stops gives its partitions back, so that another takes them at once rather than
    when the lease runs out."""
    return len(conn.execute("UPDATE dy_forward_parts SET owner = NULL, lease_until = 0 WHERE owner = ? RETURNING part",
                            (me,)))
