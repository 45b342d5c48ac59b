"""The state store's schema (one text for SQLite and PostgreSQL) and its migrations.

Why the job table looks the way it does:
- A job's `state` is the whole truth about where its request is: `ready` (due at `next_at`),
  `waiting` (an earlier job of the same order and lane is still open: a cancel never overtakes
  its create, an order's events are forwarded in order), `claimed` (a worker took it and has not
  written a byte yet: a crash here is not in doubt), `sending` (durably marked just before the
  request is written: a crash here is in doubt), `done`, `dead` (the dead-letter queue), `held`
  (in doubt, and the warehouse gives no way to ask: an operator decides), `cancelled`.
- The claim reads only `ready` rows through a partial index ordered by `next_at`, so it costs the
  same with a hundred or a million jobs waiting, and the plan does not depend on statistics: the
  index holds only what a claim may take, in the order it takes it.
- The jobs in flight (`claimed`, `sending`) have a partial index by warehouse alone: what the
  claim's concurrency count and recovery read. It held the owner too (schema v7 and before), and
  without statistics PostgreSQL then chose it for the finish and mark-sending updates (`owner = ?`
  looked selective): every row of a group's update walked the owner's whole in-flight list, dead
  entries included, instead of one primary-key probe (bench/README.md, branch i10p).
- `dy_limits` holds what every node must agree on about a warehouse: its circuit, its rate-limit
  bucket and a `Retry-After` pause. Claims lock that one row, so the limits hold across nodes.
- `dy_counters` holds what the dashboard shows, counted as the journal is written (counters.py):
  per 5-second bucket, warehouse, kind (orders received, delivered, failed; attempts by outcome
  class; retries; exchange times in histogram buckets) and writing process: each process adds to
  its own rows, so that two nodes' group commits never wait for each other's row locks. The
  overview reads a window of it by its primary key, so its cost does not grow with the history.
- `dy_totals` holds running totals (jobs per warehouse and state, orders per delivery state and
  status, events, quarantined bodies), kept by triggers in the same transactions: what `/stats`
  reads instead of counting the history (totals.py).
- `dy_nodes` is the list of live service processes (heartbeats in the database's clock).
- `dy_forwards` is the upstream outbox: one row per recorded event to forward, appended in the
  callback's commit and deleted when the upstream webhook took it. An event was a forward job of
  its order (five writes on `dy_jobs` and its five indexes); a row here is one insert and one
  delete on a narrow table. Orders are hashed to FORWARD_PARTS partitions (`part`), and each
  partition is forwarded by one node at a time in `id` order, which keeps an order's events in
  order across nodes (forward_log.py). `dy_forward_parts` holds each partition's lease (owner,
  in the database's clock) and its back-off after a failed batch. A batch that runs out of
  attempts becomes dead forward jobs in `dy_jobs`, one per order, which the DLQ shows and
  replays as before.
- `dy_events` holds each status event once (its warehouse and event id are its key). An applied
  event's row is also its `feedback ok` step (schema v9): when it was recorded (`recorded_at`, the
  commit's time), the callback's flow, which secret verified it, and its `slot` among its order's
  steps of that commit. That step was a journal row of its own, an insert with three index entries
  for what the event's insert already held (3.6 of an order's 9.2 journal rows with feedback on:
  bench/README.md, branch i10p); queries.timeline shows the row as that step. Events recorded
  before v9 keep their journal rows. The unusual outcomes (duplicate, unknown or foreign order)
  are journaled as before.
- `dy_journal` is split by time on PostgreSQL: declarative range partitions of `at`, one per UTC
  day (`dy_journal_pYYYYMMDD`), made a few days ahead, plus a default partition that catches
  anything outside them and keeps, past retention, the rows of orders that are not final (see
  partitions.py and retention.py). A partitioned table's unique keys must hold the partition key,
  and nothing needs `id` unique on its own, so the journal has no primary key there; ids still come
  from one sequence and stay in commit order per order. On SQLite it is one table, purged in
  bounded batches.

Times are integers: microseconds since the epoch, UTC. On PostgreSQL they come from the database's
clock (see db.py), so that nodes with skewed clocks still agree on leases and due times.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from dockyard.service import totals

__all__ = ["DDL", "FORWARD_PARTS", "JOURNAL", "JOURNAL_INDEXES", "MIGRATIONS", "SCHEMA_VERSION", "ddl"]

SCHEMA_VERSION = 9

# Partitions of the upstream outbox (dy_forwards): how many nodes can forward at once. Fixed: an
# order's partition must not change while its events wait (forward_log.part_of).
FORWARD_PARTS = 16

OPEN_STATES = ("ready", "claimed", "sending", "held")  # a job in one of these blocks the next of its order

DDL = """
CREATE TABLE IF NOT EXISTS dy_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS dy_orders (
    order_no TEXT PRIMARY KEY,
    tracking_id TEXT NOT NULL,
    warehouse TEXT NOT NULL,
    shop_code TEXT,
    channel TEXT,
    fingerprint TEXT NOT NULL,
    payload TEXT NOT NULL,
    status TEXT NOT NULL,
    delivery TEXT NOT NULL,
    warehouse_order_id TEXT,
    waybills TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS dy_orders_created ON dy_orders (created_at);
CREATE TABLE IF NOT EXISTS dy_jobs (
    id {serial} PRIMARY KEY,
    lane TEXT NOT NULL,
    kind TEXT NOT NULL,
    order_no TEXT,
    warehouse TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at BIGINT NOT NULL,
    owner TEXT,
    lease_until BIGINT,
    request_id TEXT,
    doubt INTEGER NOT NULL DEFAULT 0,
    payload TEXT,
    reason TEXT,
    outcome TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS dy_jobs_due ON dy_jobs (lane, warehouse, next_at) WHERE state = 'ready';
CREATE INDEX IF NOT EXISTS dy_jobs_inflight ON dy_jobs (warehouse) WHERE state IN ('claimed', 'sending');
CREATE INDEX IF NOT EXISTS dy_jobs_waiting ON dy_jobs (id) WHERE state = 'waiting';
CREATE INDEX IF NOT EXISTS dy_jobs_order ON dy_jobs (order_no, lane, id);
CREATE INDEX IF NOT EXISTS dy_jobs_state ON dy_jobs (state, updated_at);
CREATE TABLE IF NOT EXISTS dy_events (
    warehouse TEXT NOT NULL,
    event_id TEXT NOT NULL,
    order_no TEXT,
    status TEXT,
    document TEXT NOT NULL,
    received_at BIGINT NOT NULL,
    recorded_at BIGINT,
    flow TEXT,
    verified_with TEXT,
    slot INTEGER,
    PRIMARY KEY (warehouse, event_id)
);
CREATE INDEX IF NOT EXISTS dy_events_order ON dy_events (order_no, received_at);
CREATE INDEX IF NOT EXISTS dy_events_at ON dy_events (received_at);
CREATE TABLE IF NOT EXISTS dy_quarantine (
    id {serial} PRIMARY KEY,
    received_at BIGINT NOT NULL,
    source TEXT NOT NULL,
    order_no TEXT,
    reasons TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS dy_quarantine_at ON dy_quarantine (received_at);
{journal};
CREATE TABLE IF NOT EXISTS dy_counters (
    bucket BIGINT NOT NULL,
    warehouse TEXT NOT NULL,
    kind TEXT NOT NULL,
    node TEXT NOT NULL DEFAULT '',
    n BIGINT NOT NULL,
    sum_us BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (bucket, warehouse, kind, node)
);
CREATE TABLE IF NOT EXISTS dy_nodes (
    owner TEXT PRIMARY KEY,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    started_at BIGINT NOT NULL,
    heartbeat_at BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS dy_forwards (
    id {serial} PRIMARY KEY,
    part INTEGER NOT NULL,
    order_no TEXT NOT NULL,
    document TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS dy_forward_parts (
    part INTEGER PRIMARY KEY,
    owner TEXT,
    lease_until BIGINT NOT NULL DEFAULT 0,
    next_at BIGINT NOT NULL DEFAULT 0,
    reason TEXT
);
CREATE TABLE IF NOT EXISTS dy_limits (
    warehouse TEXT PRIMARY KEY,
    tokens DOUBLE PRECISION,
    refilled_at BIGINT,
    paused_until BIGINT NOT NULL DEFAULT 0,
    pause_reason TEXT,
    opened_until BIGINT NOT NULL DEFAULT 0,
    opened_by TEXT,
    probe_owner TEXT,
    probe_until BIGINT NOT NULL DEFAULT 0
)
"""

JOURNAL = """CREATE TABLE IF NOT EXISTS dy_journal (
    id {id},
    at BIGINT NOT NULL,
    order_no TEXT,
    warehouse TEXT,
    flow TEXT,
    step TEXT NOT NULL,
    outcome TEXT NOT NULL,
    elapsed_us BIGINT,
    detail TEXT
){partitioned}"""

JOURNAL_INDEXES = (
    "CREATE INDEX IF NOT EXISTS dy_journal_order ON dy_journal (order_no, id)",
    "CREATE INDEX IF NOT EXISTS dy_journal_at ON dy_journal (at)",
    "CREATE INDEX IF NOT EXISTS dy_journal_step_at ON dy_journal (step, at)",
)


def ddl(dialect: str) -> list[str]:
    """The schema's statements for one dialect (the journal is partitioned on PostgreSQL)."""
    if dialect == "postgres":
        journal = JOURNAL.format(id="BIGINT NOT NULL DEFAULT nextval('dy_journal_id_seq')",
                                 partitioned=" PARTITION BY RANGE (at)")
        journal = "CREATE SEQUENCE IF NOT EXISTS dy_journal_id_seq;\n" + journal
        serial = "BIGSERIAL"
    else:
        journal, serial = JOURNAL.format(id="INTEGER PRIMARY KEY", partitioned=""), "INTEGER"
    text = DDL.replace("{journal}", journal + ";\n" + ";\n".join(JOURNAL_INDEXES))
    # the totals' triggers hold `;` in their bodies: added whole, after the tables they watch
    tuning = [FORWARD_VACUUM, ORDERS_FILLFACTOR] if dialect == "postgres" else []
    return ([stmt for stmt in text.format(serial=serial).split(";") if stmt.strip()] + [FORWARD_PARTS_ROWS]
            + tuning + totals.trigger_ddl(dialect))


# The upstream outbox is a queue (a row lives seconds): vacuumed by a fixed number of dead rows,
# not a share of a table that is nearly empty, so the dead rows its oldest-first read walks past
# stay few (docs/operations.md, Autovacuum).
FORWARD_VACUUM = ("ALTER TABLE dy_forwards SET (autovacuum_vacuum_scale_factor = 0, "
                  "autovacuum_vacuum_threshold = 20000, autovacuum_vacuum_cost_limit = 2000)")


# An order's row is updated four or five times in its life (delivered, then each status event), and
# none of those updates touches an indexed column: with room left on its page the new version goes
# there (a HOT update: no index entry, and a WAL record of only the changed bytes). Inserted pages
# are otherwise filled to the brim, and each update moved the row (about 1 kB with its document)
# to another page, with a new entry in both indexes.
ORDERS_FILLFACTOR = "ALTER TABLE dy_orders SET (fillfactor = 80)"


# Every partition of the upstream outbox has its row from the start: a lease only updates rows.
FORWARD_PARTS_ROWS = ("INSERT INTO dy_forward_parts (part) VALUES " + ", ".join(
    f"({part})" for part in range(FORWARD_PARTS)) + " ON CONFLICT (part) DO NOTHING")


# Columns added by v9 (see MIGRATIONS), each with its type.
_V9_COLUMNS = (("dy_events", "recorded_at", "BIGINT"), ("dy_events", "flow", "TEXT"),
               ("dy_events", "verified_with", "TEXT"), ("dy_events", "slot", "INTEGER"))


def _add_v9_columns(conn: Any) -> None:
    """v9's columns, added where they are missing: a store older than dy_events got the table
    from the DDL above, columns included, in this same migration, and SQLite's ALTER TABLE has no
    IF NOT EXISTS."""
    for table, column, kind in _V9_COLUMNS:
        if conn.dialect == "postgres":
            conn.execute(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {column} {kind}")
        elif column not in {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")


# Version n -> the statements that bring a store at version n to n + 1 (a function is called with
# the connection, for what one statement cannot say on both dialects). Each runs in the same
# transaction as the DDL above (which creates what is new), under the migration lock.
MIGRATIONS: dict[int, tuple[str | Callable[[Any], None], ...]] = {
    1: (
        # v1 claimed ready jobs behind an open predecessor by a NOT EXISTS at claim time; v2 keeps
        # such jobs `waiting` and promotes them when the predecessor ends.
        "DROP INDEX IF EXISTS dy_jobs_ready",
        "UPDATE dy_jobs SET state = 'waiting' WHERE state = 'ready' AND order_no IS NOT NULL AND EXISTS ("
        "SELECT 1 FROM dy_jobs p WHERE p.order_no = dy_jobs.order_no AND p.lane = dy_jobs.lane "
        "AND p.id < dy_jobs.id AND p.state IN ('ready', 'sending', 'held'))",
    ),
    # v3: retention. The purge finds old events and orders by index (created by the DDL above);
    # on PostgreSQL the journal becomes partitioned by day (partitions.convert, run after these).
    2: (),
    # v4: the running totals `/stats` reads (totals.py): the DDL above made the table and its
    # triggers; what the store already holds is counted once, here.
    3: totals.BACKFILL,
    # v5: the same totals, counted by fewer, narrower SQLite triggers (one statement each, one
    # UPDATE trigger per kind): the DDL above dropped v4's by name and made them. PostgreSQL's
    # statement triggers are made again as they were.
    4: (),
    # v6: the journal's (warehouse, at) index goes: no query reads the journal by warehouse first
    # (per-warehouse figures come from dy_counters, windows from the `at` and `(step, at)`
    # indexes); each journal row paid for a fifth B-tree entry (about 2% of the writer's CPU on
    # SQLite in bench/store_writer.py). On PostgreSQL, dropping the partitioned index drops each
    # partition's.
    5: ("DROP INDEX IF EXISTS dy_journal_warehouse_at",),
    # v7: the upstream outbox (dy_forwards, dy_forward_parts and its partitions' rows, made by the
    # DDL above). Forward jobs already queued stay jobs and are forwarded as before; an order
    # with one open keeps its later events behind it (store.queue_forwards).
    6: (),
    # v8: the in-flight index loses its owner column (see the module text); the DDL above made
    # dy_jobs_inflight. The fill factor of dy_orders (ddl, PostgreSQL) applies to pages written
    # from now on.
    7: ("DROP INDEX IF EXISTS dy_jobs_active",),
    # v9: an applied status event is its own `feedback ok` step (see the module text): its row
    # gains what that journal row held beyond the event (recorded_at, flow, verified_with, slot).
    # Events recorded before keep their journal rows, which queries.timeline shows as before.
    8: (_add_v9_columns,),
}
