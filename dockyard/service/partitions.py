"""The journal's daily partitions on PostgreSQL: making them ahead of time, turning a v2 journal
into a partitioned one, and dropping the ones past retention.

Why this shape:
- One partition per UTC day, `dy_journal_pYYYYMMDD` for [midnight, next midnight) in epoch
  microseconds; `ensure` keeps AHEAD_DAYS of them ready, at start and from the service's hourly
  maintenance, so a day's first insert never waits for DDL.
- A default partition (`dy_journal_default`) means an insert can never fail for want of a
  partition (a clock far ahead, maintenance that did not run). It also holds, past retention, the
  rows of orders that are not final: dropping a day moves them there first, and the bounded purge
  deletes them once their order is final.
- Dropping a day takes an ACCESS EXCLUSIVE lock on the journal for as long as its transaction
  lasts, which stops every journal write (so every group commit). So the rows to keep are copied
  out first, under no more than a share lock on that one partition, and the exclusive part is only
  DETACH + INSERT of the kept rows + DROP, under `lock_timeout` so that a long reader makes the
  drop give up and try at the next run instead of queueing every writer behind it.
- A v2 journal (one table) becomes the first partition of the new table, bounded above by the
  next midnight after its newest row, so its history stays readable and is dropped in one piece
  when it has all passed retention. Its indexes are reused by ATTACH (same definitions), and the
  id sequence passes to the new table so ids go on increasing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from dockyard.service.schema import JOURNAL, JOURNAL_INDEXES

__all__ = ["AHEAD_DAYS", "DAY_US", "FINAL", "Partition", "convert", "drop", "ensure", "listing", "open_orders_sql"]

DAY_US = 86_400 * 1_000_000
AHEAD_DAYS = 3
LOCK_TIMEOUT = "2s"
# An order is final when its delivery is settled this way and it has no job that may still run or
# that an operator must still decide (dead, held). Only final orders, and their rows, are purged.
FINAL = ("delivered", "cancelled", "discarded")
_BOUND = re.compile(r"FROM \((MINVALUE|'?-?\d+'?)\) TO \((MAXVALUE|'?-?\d+'?)\)")


@dataclass(frozen=True)
class Partition:
    name: str
    lo: int | None  # None: MINVALUE
    hi: int | None  # None: MAXVALUE; both None with default=True for the default partition
    default: bool = False


def open_orders_sql(alias: str) -> str:
    """A condition true when the row `alias` (with an order_no column) belongs to an order that is
    not final: such rows are never purged."""
    finals = ", ".join(f"'{f}'" for f in FINAL)
    return (f"EXISTS (SELECT 1 FROM dy_orders o WHERE o.order_no = {alias}.order_no AND (o.delivery NOT IN ({finals}) "
            f"OR EXISTS (SELECT 1 FROM dy_jobs oj WHERE oj.order_no = o.order_no AND oj.state NOT IN "
            f"('done', 'cancelled'))))")


def _day_start(at_us: int) -> int:
    return at_us - at_us % DAY_US


def _name(day_us: int) -> str:
    return "dy_journal_p" + datetime.fromtimestamp(day_us / 1e6, UTC).strftime("%Y%m%d")


def listing(conn: Any) -> list[Partition]:
    """The journal's partitions, oldest first, the default one last."""
    rows = conn.execute("SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i "
                        "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'dy_journal'::regclass")
    out: list[Partition] = []
    for name, bound in rows:
        if bound == "DEFAULT":
            out.append(Partition(name, None, None, default=True))
            continue
        m = _BOUND.search(bound)
        if m is None:
            continue
        lo, hi = (None if v.endswith("VALUE") else int(v.strip("'")) for v in (m[1], m[2]))
        out.append(Partition(name, lo, hi))
    return sorted(out, key=lambda p: (p.default, p.lo if p.lo is not None else -(2**63)))


def is_partitioned(conn: Any) -> bool:
    found = conn.execute("SELECT c.relkind FROM pg_class c WHERE c.oid = to_regclass('dy_journal')")
    return bool(found) and found[0][0] == "p"


def ensure(conn: Any, now_us: int, ahead: int = AHEAD_DAYS) -> list[str]:
    """Make the default partition and the daily partitions from today to `ahead` days on, where no
    partition covers them yet. Returns the names made."""
    parts = listing(conn)
    made: list[str] = []
    made_default = False
    if not any(p.default for p in parts):
        conn.execute("CREATE TABLE IF NOT EXISTS dy_journal_default PARTITION OF dy_journal DEFAULT")
        made.append("dy_journal_default")
        made_default = True
    covered = [(p.lo, p.hi) for p in parts if not p.default]
    today = _day_start(now_us)
    for n in range(ahead + 1):
        lo, hi = today + n * DAY_US, today + (n + 1) * DAY_US
        if any((a is None or a < hi) and (b is None or b > lo) for a, b in covered):
            continue  # (part of) this day is in a partition already (the converted v2 journal's)
        if made_default is False and conn.execute(
                "SELECT 1 FROM dy_journal_default WHERE at >= ? AND at < ? LIMIT 1", (lo, hi)):
            # rows of that day went to the default partition already (maintenance did not run in
            # time): creating the day would fail; the day stays in the default partition, which
            # the bounded purge handles like SQLite's journal
            continue
        name = _name(lo)
        # lo and hi are integers computed here, not input: they may be part of the statement
        conn.execute(f"CREATE TABLE IF NOT EXISTS {name} PARTITION OF dy_journal FOR VALUES FROM ({int(lo)}) "
                     f"TO ({int(hi)})")
        made.append(name)
    return made


def convert(conn: Any, now_us: int) -> bool:
    """Turn a v2 journal (a plain table) into the partitioned one, in the caller's transaction
    (the schema migration's, under its lock). False when it is partitioned already."""
    if is_partitioned(conn) or not conn.execute("SELECT to_regclass('dy_journal')")[0][0]:
        return False
    newest = conn.execute("SELECT MAX(at) FROM dy_journal")[0][0]
    boundary = _day_start(max(int(newest or 0), now_us)) + DAY_US
    conn.execute("ALTER TABLE dy_journal RENAME TO dy_journal_v2")
    for stmt in JOURNAL_INDEXES:  # the old indexes keep their names: free them for the new table
        index = stmt.split(" ON ")[0].rsplit(" ", 1)[1]
        conn.execute(f"ALTER INDEX IF EXISTS {index} RENAME TO {index.replace('dy_journal', 'dy_journal_v2', 1)}")
    conn.execute("ALTER TABLE dy_journal_v2 DROP CONSTRAINT IF EXISTS dy_journal_pkey")
    conn.execute("ALTER TABLE dy_journal_v2 ALTER COLUMN id DROP DEFAULT")
    conn.execute(JOURNAL.format(id="BIGINT NOT NULL DEFAULT nextval('dy_journal_id_seq')",
                                partitioned=" PARTITION BY RANGE (at)"))
    # the sequence belonged to the old table's column: a DROP of that partition must not take it along
    conn.execute("ALTER SEQUENCE dy_journal_id_seq OWNED BY dy_journal.id")
    for stmt in JOURNAL_INDEXES:
        conn.execute(stmt)
    # the check lets ATTACH skip its own validating scan (this one scans once)
    conn.execute(f"ALTER TABLE dy_journal_v2 ADD CONSTRAINT dy_journal_v2_range CHECK (at < {int(boundary)})")
    conn.execute(f"ALTER TABLE dy_journal ATTACH PARTITION dy_journal_v2 FOR VALUES FROM (MINVALUE) "
                 f"TO ({int(boundary)})")
    ensure(conn, now_us)
    return True


def drop(conn: Any, part: Partition) -> int:
    """Drop one partition past retention, keeping the rows of orders that are not final (they move
    to the default partition). Returns how many rows were kept. Runs in the caller's transaction."""
    conn.execute(f"CREATE TEMP TABLE dy_keep ON COMMIT DROP AS SELECT * FROM {part.name} j "
                 f"WHERE j.order_no IS NOT NULL AND {open_orders_sql('j')}")
    conn.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
    conn.execute(f"ALTER TABLE dy_journal DETACH PARTITION {part.name}")
    kept = conn.execute("WITH moved AS (INSERT INTO dy_journal SELECT * FROM dy_keep RETURNING 1) "
                        "SELECT COUNT(*) FROM moved")[0][0]
    conn.execute(f"DROP TABLE {part.name}")
    return int(kept)


def day_label(part: Partition) -> str:
    """`2026-11-01` for a day's partition; the range in days otherwise."""
    def day(us: int | None, empty: str) -> str:
        return empty if us is None else (datetime.fromtimestamp(0, UTC) + timedelta(microseconds=us)).date().isoformat()

    if part.default:
        return "default"
    if part.lo is not None and part.hi is not None and part.hi - part.lo == DAY_US:
        return day(part.lo, "")
    return f"{day(part.lo, 'the beginning')} … {day(part.hi, 'the end')}"
