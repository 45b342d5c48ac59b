"""The store's running totals, what `/stats` answers from: jobs per warehouse and state (with
their attempts), orders per delivery state and per status, recorded callback events and
quarantined bodies. Kept by triggers in the store (`dy_totals`), in the same transaction as the
change they count, so a total is always exactly what the tables hold (a purge takes its rows out
of them too) — and `/stats` reads a table of a few dozen rows instead of counting the history.

Why triggers, not the writer: jobs change state in several places (the group commit, claims in
their own short transactions, triage, retention, `dockyard` commands run against the store), and
a total kept by hand in each would drift the first time one is missed. Why not `dy_counters`:
those rows are per 5-second bucket and deleted after an hour (the overview's window); these are
totals since the beginning.

Why a `shard`: on PostgreSQL several connections write at once (each node's writer, the claim
connections, other nodes). A single row per total would make every one of those transactions wait
for the others' row locks until they commit — the claim would wait for a group commit, which
db.py is built to avoid. So each connection adds to its own rows (shard = its backend pid, as
`dy_counters` has a row per node), and the reader sums them. The hourly maintenance folds the
rows of connections that are gone into shard 0 (`fold`), so the table stays a few dozen rows.
SQLite has one writer: shard 0 only.

PostgreSQL counts per statement (transition tables), so a group commit's batch update costs one
upsert per (warehouse, state) it touched, not one per row.
"""

from __future__ import annotations

from typing import Any

__all__ = ["BACKFILL", "fold", "read", "trigger_ddl"]

TABLE = """CREATE TABLE IF NOT EXISTS dy_totals (
    kind TEXT NOT NULL,
    k1 TEXT NOT NULL,
    k2 TEXT NOT NULL DEFAULT '',
    shard BIGINT NOT NULL DEFAULT 0,
    n BIGINT NOT NULL DEFAULT 0,
    total BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (kind, k1, k2, shard)
)"""

# what is counted: (kind, table, the key columns k1 and k2, the summed column)
_COUNTED = (
    ("job", "dy_jobs", "warehouse", "state", "attempts"),
    ("delivery", "dy_orders", "delivery", "''", "0"),
    ("status", "dy_orders", "status", "''", "0"),
    ("events", "dy_events", "''", "''", "0"),
    ("quarantine", "dy_quarantine", "''", "''", "0"),
)
_WATCHED = {"dy_jobs": ("warehouse", "state", "attempts"), "dy_orders": ("delivery", "status"),
            "dy_events": (), "dy_quarantine": ()}

_UPSERT_TAIL = ("ON CONFLICT (kind, k1, k2, shard) DO UPDATE SET n = dy_totals.n + excluded.n, "
                "total = dy_totals.total + excluded.total")

# A store that predates the totals (schema v3 or older) counts its tables once, at the migration
# (after the older steps, whose changes the new triggers already counted: hence the DELETE first).
BACKFILL = ("DELETE FROM dy_totals", *(
    f"INSERT INTO dy_totals (kind, k1, k2, shard, n, total) SELECT '{kind}', {k1}, {k2}, 0, COUNT(*), "
    f"COALESCE(SUM({col}), 0) FROM {table} WHERE true GROUP BY 2, 3 HAVING COUNT(*) > 0 {_UPSERT_TAIL}"
    for kind, table, k1, k2, col in _COUNTED))


def _col(row: str, expr: str) -> str:
    return expr if expr in ("''", "0") else f"{row}.{expr}"


# The SQLite triggers of schema v4, dropped by v5's (one statement per trigger, one trigger per kind).
_SQLITE_V4 = tuple(f"DROP TRIGGER IF EXISTS {table}_totals_{suffix}" for table in _WATCHED
                   for suffix in ("ins", "del", "upd"))


def _sqlite() -> list[str]:
    """Row triggers, each one upsert statement over VALUES rows (in a trigger, SQLite's cost is
    mostly per statement: two rows in one statement cost little more than one), and an UPDATE
    trigger per kind, firing only when that kind's own columns change: an order's status changes
    four or five times in its life, its delivery state twice, and each change counts only its kind."""
    out = list(_SQLITE_V4)
    for table, _watched in _WATCHED.items():
        counted = [c for c in _COUNTED if c[1] == table]

        def rows(row: str, sign: str, kinds: Any) -> str:
            return ", ".join(f"('{kind}', {_col(row, k1)}, {_col(row, k2)}, 0, {sign}1, {sign}{_col(row, col)})"
                             for kind, _t, k1, k2, col in kinds)

        def upsert(values: str) -> str:
            return f"INSERT INTO dy_totals (kind, k1, k2, shard, n, total) VALUES {values} {_UPSERT_TAIL};"

        out.append(f"CREATE TRIGGER IF NOT EXISTS {table}_tot_ins AFTER INSERT ON {table} BEGIN "
                   f"{upsert(rows('NEW', '+', counted))} END")
        out.append(f"CREATE TRIGGER IF NOT EXISTS {table}_tot_del AFTER DELETE ON {table} BEGIN "
                   f"{upsert(rows('OLD', '-', counted))} END")
        for kind in counted:
            columns = [c for c in kind[2:] if c not in ("''", "0")]
            if not columns:
                continue
            changed = " OR ".join(f"OLD.{c} IS NOT NEW.{c}" for c in columns)
            out.append(f"CREATE TRIGGER IF NOT EXISTS {table}_tot_upd_{kind[0]} AFTER UPDATE OF {', '.join(columns)} "
                       f"ON {table} WHEN {changed} BEGIN "
                       f"{upsert(rows('OLD', '-', [kind]) + ', ' + rows('NEW', '+', [kind]))} END")
    return out


def _postgres() -> list[str]:
    out = []
    for table, watched in _WATCHED.items():
        counted = [c for c in _COUNTED if c[1] == table]

        def delta(source: str, sign: str, counted: Any = counted) -> str:
            return " UNION ALL ".join(
                f"SELECT '{kind}' AS kind, {_col('r', k1)}::text AS k1, {_col('r', k2)}::text AS k2, "
                f"{sign}1 AS n, {sign}{_col('r', col)}::bigint AS total FROM {source} r"
                for kind, _t, k1, k2, col in counted)

        def apply(parts: str) -> str:
            return (f"INSERT INTO dy_totals (kind, k1, k2, shard, n, total) SELECT kind, k1, k2, pg_backend_pid(), "
                    f"SUM(n), SUM(total) FROM ({parts}) d GROUP BY kind, k1, k2 "
                    f"HAVING SUM(n) <> 0 OR SUM(total) <> 0 {_UPSERT_TAIL};")

        fn = f"{table}_totals"
        body = (f"BEGIN IF TG_OP = 'INSERT' THEN {apply(delta('new_rows', ''))} "
                f"ELSIF TG_OP = 'DELETE' THEN {apply(delta('old_rows', '-'))} "
                f"ELSE {apply(delta('old_rows', '-') + ' UNION ALL ' + delta('new_rows', ''))} END IF; "
                f"RETURN NULL; END")
        out.append(f"CREATE OR REPLACE FUNCTION {fn}() RETURNS trigger LANGUAGE plpgsql AS $fn$ {body} $fn$")
        events = [("ins", "INSERT", "NEW TABLE AS new_rows"), ("del", "DELETE", "OLD TABLE AS old_rows")]
        if watched:
            events.append(("upd", "UPDATE", "OLD TABLE AS old_rows NEW TABLE AS new_rows"))
        for suffix, event, referencing in events:
            out.append(f"DROP TRIGGER IF EXISTS {fn}_{suffix} ON {table}")
            out.append(f"CREATE TRIGGER {fn}_{suffix} AFTER {event} ON {table} REFERENCING {referencing} "
                       f"FOR EACH STATEMENT EXECUTE FUNCTION {fn}()")
    return out


def trigger_ddl(dialect: str) -> list[str]:
    """The table and its triggers (statements that contain `;`: run one by one, never split)."""
    return [TABLE, *(_postgres() if dialect == "postgres" else _sqlite())]


def read(conn: Any) -> dict[str, dict[tuple[str, str], tuple[int, int]]]:
    """kind -> {(k1, k2): (count, summed)}, the shards added up: one read of a small table."""
    out: dict[str, dict[tuple[str, str], tuple[int, int]]] = {}
    for kind, k1, k2, n, total in conn.execute(
            "SELECT kind, k1, k2, SUM(n), SUM(total) FROM dy_totals GROUP BY kind, k1, k2"):
        if int(n) or int(total):
            out.setdefault(kind, {})[(k1, k2)] = (int(n), int(total))
    return out


def fold(conn: Any) -> int:
    """PostgreSQL: move the rows of connections that are gone into shard 0 (one statement, so a
    total is never seen twice or not at all); returns how many rows were folded."""
    if conn.dialect != "postgres":
        return 0
    rows = conn.execute(
        "WITH gone AS (DELETE FROM dy_totals WHERE shard <> 0 AND shard NOT IN (SELECT pid FROM pg_stat_activity) "
        "RETURNING kind, k1, k2, n, total), merged AS (INSERT INTO dy_totals (kind, k1, k2, shard, n, total) "
        "SELECT kind, k1, k2, 0, SUM(n), SUM(total) FROM gone GROUP BY kind, k1, k2 " + _UPSERT_TAIL +
        " RETURNING 1) SELECT (SELECT COUNT(*) FROM gone)")
    return int(rows[0][0]) if rows else 0
