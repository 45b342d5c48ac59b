"""Retention: how long each class of rows is kept, what would go now (`dockyard purge --dry-run`),
and the purge itself (the command, and the service once an hour).

Classes: the journal, finished jobs, callback events, quarantined bodies and final orders, each
with its own number of days (config `retention`; a class without one is kept for ever). Whatever
the settings, nothing of an order that is not final is purged — the order, its jobs, its events
or its journal — so an order held in doubt for weeks keeps its whole history.

How, and why so:
- On PostgreSQL the journal's whole daily partitions past retention are dropped (partitions.py):
  no row-by-row delete, no bloat, no vacuum debt. Rows of orders that are not final move to the
  default partition first; that partition is purged like SQLite's journal.
- Everything else is deleted in bounded batches (BATCH rows, one short write transaction each,
  through the store's writer), each batch found by an index on the row's time, so a purge never
  holds the writer long and ingest goes on between batches.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from dockyard.service import partitions
from dockyard.service.partitions import DAY_US, FINAL, open_orders_sql

if TYPE_CHECKING:
    from dockyard.service.db import Database

__all__ = ["BATCH", "CLASSES", "ClassReport", "RetentionConfig", "maintain", "purge"]

BATCH = 2000
EVERY_S = 3600.0
CLASSES = ("journal", "jobs", "events", "quarantine", "orders")
log = logging.getLogger("dockyard.retention")
_FINALS = ", ".join(f"'{f}'" for f in FINAL)


@dataclass(frozen=True)
class RetentionConfig:
    """Days kept per class; None keeps for ever."""

    journal: int | None = None
    jobs: int | None = None
    events: int | None = None
    quarantine: int | None = None
    orders: int | None = None

    @property
    def any(self) -> bool:
        return any(getattr(self, c) is not None for c in CLASSES)


@dataclass
class ClassReport:
    """What a purge removed (or, in a dry run, would remove) of one class."""

    name: str
    days: int | None
    before: str | None = None  # rows older than this go (ISO, UTC)
    rows: int = 0
    partitions: list[str] = field(default_factory=list)  # dropped daily partitions (PostgreSQL journal)
    kept: int = 0  # rows past retention kept because their order is not final (journal partitions)
    note: str | None = None

    def line(self, dry_run: bool) -> str:
        if self.days is None:
            return f"{self.name:<11} kept for ever (no retention set)"
        verb = "would go" if dry_run else "gone"
        parts = f"; {len(self.partitions)} daily partition(s): {', '.join(self.partitions)}" if self.partitions else ""
        kept = f"; {self.kept} row(s) of open orders kept" if self.kept else ""
        note = f"; {self.note}" if self.note else ""
        return (f"{self.name:<11} older than {self.days} d (before {self.before}): {self.rows} row(s) {verb}"
                f"{parts}{kept}{note}")


# -- one batch of each class: (count SQL for a dry run, select of keys, delete of those keys) ------
def _open(alias: str) -> str:
    return f"({alias}.order_no IS NULL OR NOT {open_orders_sql(alias)})"


_WHERE = {
    "jobs": f"j.state IN ('done', 'cancelled') AND j.updated_at < ? AND {_open('j')}",
    "events": f"e.received_at < ? AND {_open('e')}",
    "quarantine": "q.received_at < ?",
    "orders": (f"o.created_at < ? AND o.updated_at < ? AND o.delivery IN ({_FINALS}) AND NOT EXISTS ("
               f"SELECT 1 FROM dy_jobs oj WHERE oj.order_no = o.order_no AND oj.state NOT IN ('done', 'cancelled'))"),
}
_FROM = {"jobs": "dy_jobs j", "events": "dy_events e", "quarantine": "dy_quarantine q", "orders": "dy_orders o"}


def _journal_where(dialect: str) -> tuple[str, str]:
    table = "dy_journal_default" if dialect == "postgres" else "dy_journal"
    return f"{table} j", f"j.at < ? AND {_open('j')}"


def _params(name: str, cutoff: int) -> tuple[int, ...]:
    return (cutoff, cutoff) if name == "orders" else (cutoff,)


def _count(name: str, source: str, where: str, cutoff: int, conn: Any) -> int:
    return int(conn.execute(f"SELECT COUNT(*) FROM {source} WHERE {where}", _params(name, cutoff))[0][0])


def _delete_batch(conn: Any, *, name: str, source: str, where: str, cutoff: int, limit: int) -> int:
    params = _params(name, cutoff)
    if name == "events":
        keys = conn.execute(f"SELECT e.warehouse, e.event_id FROM {source} WHERE {where} LIMIT ?", (*params, limit))
        conn.executemany("DELETE FROM dy_events WHERE warehouse = ? AND event_id = ?", keys)
        return len(keys)
    if name == "orders":
        keys = [r[0] for r in conn.execute(f"SELECT o.order_no FROM {source} WHERE {where} "
                                           f"ORDER BY o.created_at LIMIT ?", (*params, limit))]
        conn.executemany("DELETE FROM dy_jobs WHERE order_no = ?", [(k,) for k in keys])
        conn.executemany("DELETE FROM dy_orders WHERE order_no = ?", [(k,) for k in keys])
        return len(keys)
    alias = source.split()[1]
    table = source.split()[0]
    ids = [r[0] for r in conn.execute(f"SELECT {alias}.id FROM {source} WHERE {where} LIMIT ?", (*params, limit))]
    conn.executemany(f"DELETE FROM {table} WHERE id = ?", [(i,) for i in ids])
    return len(ids)


def purge(db: Database, config: RetentionConfig, *, dry_run: bool = False, batch: int = BATCH,
          now: int | None = None, stop: Callable[[], bool] = lambda: False) -> list[ClassReport]:
    """Purge (or count, with dry_run) every class past its retention. Synchronous: the command
    calls it, the service runs it in a thread. `stop()` is asked between batches."""
    clock = int(now if now is not None else db.read_sync(lambda c: c.now))
    reports: list[ClassReport] = []
    for name in CLASSES:
        days = getattr(config, name)
        report = ClassReport(name, days)
        reports.append(report)
        if days is None:
            continue
        cutoff = clock - days * DAY_US
        report.before = datetime.fromtimestamp(cutoff / 1e6, UTC).isoformat(timespec="seconds")
        if name == "journal" and db.dialect == "postgres":
            _drop_partitions(db, report, cutoff, dry_run)
            source, where = _journal_where(db.dialect)
        elif name == "journal":
            source, where = _journal_where(db.dialect)
        else:
            source, where = _FROM[name], _WHERE[name]
        if dry_run:
            report.rows += db.read_sync(functools.partial(_count, name, source, where, cutoff))
            continue
        while not stop():
            gone = db.write_sync(functools.partial(_delete_batch, name=name, source=source, where=where,
                                                   cutoff=cutoff, limit=batch))
            report.rows += gone
            if gone < batch:
                break
    return reports


def _drop_partitions(db: Database, report: ClassReport, cutoff: int, dry_run: bool) -> None:
    """Drop (or count) the journal's daily partitions that end before the cutoff."""
    old = [p for p in db.read_sync(partitions.listing) if not p.default and p.hi is not None and p.hi <= cutoff]
    for part in old:
        if dry_run:
            rows, kept = db.read_sync(functools.partial(_partition_counts, part.name))
            report.rows += rows - kept
            report.kept += kept
            report.partitions.append(partitions.day_label(part))
            continue
        try:
            rows = db.read_sync(functools.partial(_partition_counts, part.name))[0]
            kept = db.claim_sync(functools.partial(_drop, part))
        except Exception as exc:  # a lock not had within the timeout: the next run tries again
            if not any(m in str(exc) for m in ("lock timeout", "does not exist", "not a partition")):
                raise
            report.note = f"partition {part.name} busy or gone ({type(exc).__name__}); tried again at the next run"
            continue
        report.rows += rows - kept
        report.kept += kept
        report.partitions.append(partitions.day_label(part))


def _partition_counts(name: str, conn: Any) -> tuple[int, int]:
    """Rows of a partition, and how many of them belong to orders that are not final."""
    rows, kept = conn.execute(f"SELECT COUNT(*), COUNT(*) FILTER (WHERE j.order_no IS NOT NULL AND "
                              f"{open_orders_sql('j')}) FROM {name} j")[0]
    return int(rows), int(kept)


def _drop(part: partitions.Partition, conn: Any) -> int:
    return partitions.drop(conn, part)


def maintain_once(db: Database, config: RetentionConfig, stop: Callable[[], bool]) -> list[ClassReport]:
    """One maintenance run: the journal's partitions ahead (PostgreSQL), the dashboard's counters
    past an hour, then the purge."""
    if db.dialect == "postgres":
        parts = db.read_sync(partitions.listing)
        today = db.read_sync(lambda c: c.now)
        wanted = {today - today % DAY_US + n * DAY_US for n in range(partitions.AHEAD_DAYS + 1)}
        covered = any(p.default for p in parts) and all(
            any((p.lo is None or p.lo <= d) and (p.hi is None or p.hi > d) for p in parts if not p.default)
            for d in wanted)
        if not covered:  # DDL only when something is missing: it locks the journal for a moment
            db.claim_sync(lambda c: (c.execute(f"SET LOCAL lock_timeout = '{partitions.LOCK_TIMEOUT}'"),
                                     partitions.ensure(c, c.now)))
    _drop_old_counters(db, stop)
    if db.dialect == "postgres":  # the running totals of connections that are gone, into one row each
        from dockyard.service import totals

        db.write_sync(totals.fold)
    return purge(db, config, stop=stop) if config.any else []


def _drop_old_counters(db: Database, stop: Callable[[], bool]) -> None:
    """The dashboard's counters older than counters.KEEP_US, five minutes of buckets per write
    (by the primary key, bucket first) so that the writer is never held long."""
    from dockyard.service.counters import KEEP_US

    oldest = db.read_sync(lambda c: c.execute("SELECT MIN(bucket) FROM dy_counters")[0][0])
    if oldest is None:
        return
    cutoff = db.read_sync(lambda c: c.now) - KEEP_US
    step = 300 * 1_000_000
    for edge in range(int(oldest) + step, cutoff + step, step):
        if stop():
            return
        db.write_sync(functools.partial(_delete_counters, min(edge, cutoff)))


def _delete_counters(before: int, conn: Any) -> None:
    conn.execute("DELETE FROM dy_counters WHERE bucket < ?", (before,))


async def maintain(db: Database, config: RetentionConfig, stopping: asyncio.Event) -> None:
    """The service's hourly maintenance (first run a minute or so after start, then every hour,
    with jitter so that several nodes do not all start at once)."""
    delay = 30.0 + random.uniform(0, 60)
    while not stopping.is_set():
        try:
            await asyncio.wait_for(stopping.wait(), delay)
            return
        except TimeoutError:
            pass
        delay = EVERY_S * random.uniform(0.9, 1.1)
        try:
            reports = await asyncio.to_thread(maintain_once, db, config, stopping.is_set)
        except Exception as exc:  # a store away, a lock not had: the next run tries again
            log.warning("retention: maintenance failed (%s: %s); tried again in an hour", type(exc).__name__, exc)
            continue
        for r in reports:
            if r.rows or r.partitions:
                log.info("retention: %s", r.line(dry_run=False))
