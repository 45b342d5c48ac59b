"""`/stats` at bounded cost, on SQLite and PostgreSQL: with a large history every statement it
runs reads the running totals (a table of a few dozen rows) or an index over open jobs — none
scans the journal, the jobs, the orders, the events or the quarantine — and its answer is exactly
what counting those tables says, after inserts, state changes and a purge's deletes alike."""

from __future__ import annotations

from typing import Any

from test_overview import _Recorder

from dockyard.service import queries, totals
from dockyard.service.db import Database

HISTORY = ("dy_journal", "dy_jobs", "dy_orders", "dy_events", "dy_quarantine")


def _counted(conn: Any) -> dict[str, Any]:
    """The answer as the old /stats computed it: by counting the tables (the reference)."""
    jobs: dict[str, dict[str, int]] = {}
    for warehouse, state, n, attempts in conn.execute(
            "SELECT warehouse, state, COUNT(*), SUM(attempts) FROM dy_jobs GROUP BY warehouse, state"):
        entry = jobs.setdefault(warehouse, {})
        entry[state] = int(n)
        entry["attempts"] = entry.get("attempts", 0) + int(attempts or 0)
    return {"jobs": jobs,
            "orders_by_delivery": {k: int(n) for k, n in conn.execute(
                "SELECT delivery, COUNT(*) FROM dy_orders GROUP BY delivery")},
            "orders_by_status": {k: int(n) for k, n in conn.execute(
                "SELECT status, COUNT(*) FROM dy_orders GROUP BY status")},
            "events": int(conn.execute("SELECT COUNT(*) FROM dy_events")[0][0]),
            "quarantined": int(conn.execute("SELECT COUNT(*) FROM dy_quarantine")[0][0]),
            "upstream_outbox": _outbox_events(conn),
            "outbox_depth": _counted_jobs(conn)["outbox"], "in_doubt": queries.in_doubt(conn)}


def _outbox_events(conn: Any) -> int:
    return int(conn.execute("SELECT COUNT(*) FROM dy_forwards")[0][0])


def _counted_jobs(conn: Any) -> dict[str, int]:
    """`job_counts` as it was computed before the totals: by counting the jobs (the reference)."""
    out = {"outbox_wh": 0, "outbox_up": 0, "dead": 0, "held": 0}
    for lane, state, n in conn.execute("SELECT lane, state, COUNT(*) FROM dy_jobs WHERE state IN ('ready', "
                                       "'waiting', 'claimed', 'sending', 'dead', 'held') GROUP BY lane, state"):
        key = f"outbox_{lane}" if state in ("ready", "waiting", "claimed", "sending") else state
        out[key] += int(n)
    out["outbox_up"] += _outbox_events(conn)
    out["outbox"] = out["outbox_wh"] + out["outbox_up"]
    out["in_doubt"] = queries.in_doubt(conn)
    return out


def test_stats_reads_totals_not_history_and_agrees_with_counting(store_url: str) -> None:
    db = Database(store_url, readers=1)
    n = 200_000
    try:
        if db.dialect == "postgres":
            series = f"SELECT g AS n FROM generate_series(1, {n}) g"
        else:
            series = f"WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < {n}) SELECT n FROM s"
        old = "(n * 1000)"
        states = "CASE WHEN n % 50 = 0 THEN 'dead' WHEN n % 70 = 0 THEN 'held' WHEN n % 90 = 0 THEN 'ready' " \
                 "ELSE 'done' END"

        def fill(conn: Any) -> None:
            conn.execute(f"INSERT INTO dy_orders (order_no, tracking_id, warehouse, fingerprint, payload, status, "
                         f"delivery, created_at, updated_at) SELECT 'H-' || n, 't', 'wh' || (n % 4), 'f', '{{}}', "
                         f"CASE WHEN n % 3 = 0 THEN 'created' ELSE 'shipped' END, "
                         f"CASE WHEN n % 50 = 0 THEN 'dlq' ELSE 'delivered' END, {old}, {old} FROM ({series}) x")
            conn.execute(f"INSERT INTO dy_jobs (lane, kind, order_no, warehouse, state, attempts, doubt, next_at, "
                         f"created_at, updated_at) SELECT 'wh', 'create', 'H-' || n, 'wh' || (n % 4), {states}, "
                         f"1 + n % 3, CASE WHEN n % 90 = 0 AND n % 180 = 0 THEN 1 ELSE 0 END, {old}, {old}, {old} "
                         f"FROM ({series}) x")
            conn.execute(f"INSERT INTO dy_events (warehouse, event_id, order_no, status, document, received_at) "
                         f"SELECT 'wh' || (n % 4), 'E-' || n, 'H-' || n, 'shipped', '{{}}', {old} FROM ({series}) x")
            conn.execute(f"INSERT INTO dy_quarantine (received_at, source, reasons, body) "
                         f"SELECT {old}, 'ingest', '[]', 'x' FROM ({series}) x WHERE n % 100 = 0")
            for step in ("received", "committed"):
                conn.execute(f"INSERT INTO dy_journal (at, order_no, warehouse, flow, step, outcome) "
                             f"SELECT {old}, 'H-' || n, 'wh' || (n % 4), 'create', '{step}', 'ok' FROM ({series}) x")
            # the upstream lane's jobs (status events to forward), in its own outbox
            conn.execute(f"INSERT INTO dy_jobs (lane, kind, order_no, warehouse, state, next_at, created_at, "
                         f"updated_at) SELECT 'up', 'forward', 'H-' || n, '_upstream', CASE n % 4 WHEN 0 THEN "
                         f"'ready' WHEN 1 THEN 'waiting' WHEN 2 THEN 'dead' ELSE 'done' END, {old}, {old}, {old} "
                         f"FROM ({series}) x WHERE n % 13 = 0")
            # and the events waiting in the upstream outbox (schema v7 on): what /stats adds to it
            conn.execute(f"INSERT INTO dy_forwards (part, order_no, document, created_at) SELECT n % 16, 'H-' || n, "
                         f"'{{}}', {old} FROM ({series}) x WHERE n % 17 = 0")

        db.write_sync(fill)
        if db.dialect == "postgres":
            db.claim_sync(lambda c: c.execute("ANALYZE"))
        assert db.read_sync(queries.summary) == db.read_sync(_counted)
        counted = db.read_sync(queries.job_counts)
        assert counted == db.read_sync(_counted_jobs) and counted["outbox_up"] > 0 and counted["outbox_wh"] > 0
        recorder: list[_Recorder] = []

        def run(conn: Any) -> dict[str, Any]:
            rec = _Recorder(conn)
            recorder.append(rec)
            queries.job_counts(rec)  # what /metrics and the overview read of the jobs: the totals too
            return queries.summary(rec)

        answer = db.read_sync(run)
        assert answer["events"] == n and answer["jobs"]["wh2"]["dead"] > 0 and answer["in_doubt"] > 0
        assert answer["upstream_outbox"] == n // 17
        explain = "EXPLAIN QUERY PLAN " if db.dialect == "sqlite" else "EXPLAIN "
        plans = []
        for sql, params in recorder[0].statements:
            rows = db.read_sync(lambda c, s=sql, p=params: c.execute(explain + s, p))
            plans.append((sql, "\n".join(" ".join(str(x) for x in r) for r in rows)))
        for sql, plan in plans:
            for table in HISTORY:
                assert f"SCAN {table}" not in plan and f"Seq Scan on {table}" not in plan, (sql, plan)
        assert any("dy_totals" in sql for sql, _ in plans)

        # state changes (as claims, deliveries and triage make them), and a purge's deletes
        def change(conn: Any) -> None:
            conn.execute("UPDATE dy_jobs SET state = 'claimed', attempts = attempts + 1 WHERE state = 'ready' "
                         "AND id % 2 = 0")
            conn.execute("UPDATE dy_jobs SET state = 'done' WHERE state = 'dead' AND id % 3 = 0")
            conn.execute("UPDATE dy_jobs SET owner = 'x' WHERE id % 7 = 0")  # a change the totals ignore
            conn.execute("UPDATE dy_orders SET delivery = 'delivered', status = 'shipped' WHERE delivery = 'dlq' "
                         "AND created_at % 3000 = 0")
            conn.execute("DELETE FROM dy_jobs WHERE state = 'done' AND id % 5 = 0")
            conn.execute("DELETE FROM dy_events WHERE received_at < 50000000")
            conn.execute("DELETE FROM dy_orders WHERE created_at < 20000000")
            conn.execute("DELETE FROM dy_quarantine WHERE id % 2 = 0")

        db.write_sync(change)
        assert db.read_sync(queries.summary) == db.read_sync(_counted)
        assert db.read_sync(queries.job_counts) == db.read_sync(_counted_jobs)
        if db.dialect == "postgres":
            # the rows of a connection that is gone fold into shard 0, and the answer stays the same
            db.write_sync(lambda c: c.execute("UPDATE dy_totals SET shard = 2147483000 WHERE shard = "
                                              "(SELECT MAX(shard) FROM dy_totals)"))
            assert db.write_sync(totals.fold) >= 1
            assert db.read_sync(lambda c: c.execute("SELECT COUNT(*) FROM dy_totals WHERE shard = 2147483000")) \
                == [(0,)]
            assert db.read_sync(queries.summary) == db.read_sync(_counted)
    finally:
        db.close()


def _older_store(url: str, version: int, status: str, delivery: str, then: Any) -> None:
    """A store made by this Dockyard, turned into one of an older schema: an order (with `status`
    and `delivery`), every trigger dropped, `then(conn)` for what that version had instead, and the
    version's number."""
    db = Database(url, readers=1)
    try:
        def downgrade(conn: Any) -> None:
            conn.execute("INSERT INTO dy_orders (order_no, tracking_id, warehouse, fingerprint, payload, status, "
                         "delivery, created_at, updated_at) VALUES ('A', 't', 'wh', 'f', '{}', ?, ?, 1, 1)",
                         (status, delivery))
            for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'"):
                conn.execute(f"DROP TRIGGER {name}")
            then(conn)
            conn.execute("UPDATE dy_meta SET value = ? WHERE name = 'schema_version'", (str(version),))

        db.write_sync(downgrade)
    finally:
        db.close()


def test_a_store_from_before_the_totals_is_counted_at_the_migration(tmp_path: Any) -> None:
    """A v3 store (no totals) with history: the migration counts it once, then the triggers keep it."""
    url = f"sqlite:///{tmp_path / 'old.db'}"

    def v3(conn: Any) -> None:
        conn.execute("INSERT INTO dy_jobs (lane, kind, order_no, warehouse, state, attempts, next_at, created_at, "
                     "updated_at) VALUES ('wh', 'create', 'A', 'wh', 'done', 2, 1, 1, 1)")
        conn.execute("DROP TABLE dy_totals")

    _older_store(url, 3, "shipped", "delivered", v3)
    db = Database(url, readers=1)
    try:
        assert db.read_sync(queries.summary) == db.read_sync(_counted)
        assert db.read_sync(queries.summary)["jobs"] == {"wh": {"done": 1, "attempts": 2}}
    finally:
        db.close()


def test_a_v4_store_gets_the_v5_triggers_and_its_totals_stay_right(tmp_path: Any) -> None:
    """v4 counted with one statement per kind and per row in three triggers per table; v5 drops
    them (by name) for its own. Nothing is counted twice or lost across the change."""
    url = f"sqlite:///{tmp_path / 'v4.db'}"

    def v4(conn: Any) -> None:  # v4's names, counting something v5 never writes, so that one left behind shows
        for table in ("dy_jobs", "dy_orders", "dy_events", "dy_quarantine"):
            for suffix, event in (("ins", "INSERT"), ("del", "DELETE"), ("upd", "UPDATE")):
                conn.execute(f"CREATE TRIGGER {table}_totals_{suffix} AFTER {event} ON {table} BEGIN "
                             "INSERT INTO dy_totals (kind, k1, k2, shard, n, total) VALUES ('v4', 'left', '', 0, "
                             "1, 0) ON CONFLICT (kind, k1, k2, shard) DO UPDATE SET n = dy_totals.n + 1; END")

    _older_store(url, 4, "received", "pending", v4)
    db = Database(url, readers=1)
    try:
        names = {n for (n,) in db.read_sync(lambda c: c.execute(
            "SELECT name FROM sqlite_master WHERE type = 'trigger'"))}
        assert names and not any("_totals_" in n for n in names)

        def life(conn: Any) -> None:  # an order's changes of both kinds, a job's states, an event
            conn.execute("UPDATE dy_orders SET status = 'accepted', delivery = 'delivered' WHERE order_no = 'A'")
            conn.execute("UPDATE dy_orders SET status = 'shipped' WHERE order_no = 'A'")
            conn.execute("INSERT INTO dy_jobs (lane, kind, order_no, warehouse, state, attempts, next_at, created_at, "
                         "updated_at) VALUES ('wh', 'create', 'A', 'wh', 'ready', 0, 1, 1, 1)")
            conn.execute("UPDATE dy_jobs SET state = 'sending', attempts = 1 WHERE order_no = 'A'")
            conn.execute("UPDATE dy_jobs SET attempts = 2 WHERE order_no = 'A'")  # the state stays: one key
            conn.execute("UPDATE dy_jobs SET state = 'done' WHERE order_no = 'A'")
            conn.execute("INSERT INTO dy_events (warehouse, event_id, order_no, status, document, received_at) "
                         "VALUES ('wh', 'e1', 'A', 'shipped', '{}', 1)")

        db.write_sync(life)
        assert db.read_sync(queries.summary) == db.read_sync(_counted)
        assert db.read_sync(queries.summary)["jobs"] == {"wh": {"done": 1, "attempts": 2}}
        assert db.read_sync(lambda c: c.execute("SELECT COUNT(*) FROM dy_totals WHERE kind = 'v4'")) == [(0,)]
    finally:
        db.close()
