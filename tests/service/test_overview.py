"""The dashboard's overview at bounded cost, on SQLite and PostgreSQL: during a run with 30% 5xx it
shows the retry storm (exchanges by outcome, retries, error rate, exchange time) exactly as the
journal has it; and with a large history every statement it runs reads through an index or a
tiny table — none scans the journal, the jobs or the orders."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

from test_service import example
from test_ui import READ, TOKENS, fetch

from dockyard.service import queries
from dockyard.service.db import Database
from dockyard.service.ui import overview
from dockyard.simulate import Faults

FAST_RETRY = {"max_attempts": 20, "base_delay": 0.02, "max_delay": 0.05, "jitter": 0}


def test_a_retry_storm_shows_on_the_overview(env: Any) -> None:
    async def main() -> None:
        async with env(faults={"qimen-std": Faults(error_rate=0.3)}, retry=FAST_RETRY, overrides=TOKENS) as run:
            orders = []
            for n in range(40):
                order = copy.deepcopy(example())
                order["order_no"] = f"{order['order_no']}-S{n:03d}"
                orders.append(order)
            await run.post("/orders/batch", orders)
            for order in orders:
                await run.until(order["order_no"], lambda d: d["delivery"] == "delivered")
            status, ov = await fetch(run, "/ui/api/overview", READ)
            assert status == 200
            wh = ov["warehouses"]["qimen-std"]
            steps = dict(await run.service.db.read(lambda c: c.execute(
                "SELECT step, COUNT(*) FROM dy_journal WHERE warehouse = 'qimen-std' AND flow = 'create' "
                "GROUP BY step")))
            assert wh["attempts"].get("2xx") == steps["committed"] == 40
            assert wh["attempts"].get("5xx", 0) == steps.get("retry", 0) == wh["retries_total"] > 0
            assert sum(wh["retries"]) == wh["retries_total"] and ov["retries"] == wh["retries_total"]
            tried = sum(wh["attempts"].values())
            assert wh["error_rate"] == round(wh["attempts"]["5xx"] / tried, 4)
            assert ov["attempt_success_rate"] == round(40 / tried, 4) < ov["success_rate"] == 1.0
            assert wh["exchange_ms"]["count"] == tried and 0 < wh["exchange_ms"]["p50"] <= wh["exchange_ms"]["p99"]
            assert ov["latency_ms"]["count"] == 40 and ov["latency_ms"]["p50"] > 0
            assert wh["backlog"] == 0 and ov["time_zone"] == "UTC"

    asyncio.run(main())


class _Recorder:
    """A connection that remembers every statement run through it."""

    def __init__(self, conn: Any) -> None:
        self.conn, self.dialect, self.now, self.statements = conn, conn.dialect, conn.now, []

    def execute(self, sql: str, params: Any = ()) -> Any:
        self.statements.append((sql, tuple(params)))
        return self.conn.execute(sql, params)


def test_no_statement_of_the_overview_scans_history(store_url: str) -> None:
    db = Database(store_url, readers=1)
    n = 200_000
    try:
        if db.dialect == "postgres":
            series = f"SELECT g AS n FROM generate_series(1, {n}) g"
        else:
            series = f"WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < {n}) SELECT n FROM s"
        old = "(n * 1000)"  # history: long before the overview's window

        def fill(conn: Any) -> None:
            conn.execute(f"INSERT INTO dy_orders (order_no, tracking_id, warehouse, fingerprint, payload, status, "
                         f"delivery, created_at, updated_at) SELECT 'H-' || n, 't', 'wh' || (n % 4), 'f', '{{}}', "
                         f"'shipped', 'delivered', {old}, {old} FROM ({series}) x")
            conn.execute(f"INSERT INTO dy_jobs (lane, kind, order_no, warehouse, state, next_at, created_at, "
                         f"updated_at) SELECT 'wh', 'create', 'H-' || n, 'wh' || (n % 4), 'done', {old}, {old}, {old} "
                         f"FROM ({series}) x")
            conn.execute(f"INSERT INTO dy_counters (bucket, warehouse, kind, n) SELECT CAST(n AS BIGINT) * 5000000, "
                         f"'wh' || (n % 4), 'received', 1 FROM ({series}) x")
            for step in ("received", "committed", "feedback"):
                conn.execute(f"INSERT INTO dy_journal (at, order_no, warehouse, flow, step, outcome) "
                             f"SELECT {old}, 'H-' || n, 'wh' || (n % 4), 'create', '{step}', 'ok' FROM ({series}) x")

        db.write_sync(fill)
        if db.dialect == "postgres":
            db.claim_sync(lambda c: c.execute("ANALYZE"))
        recorder: list[_Recorder] = []

        def run(conn: Any) -> dict[str, Any]:
            rec = _Recorder(conn)
            recorder.append(rec)
            return overview(rec, conn.now)

        data = db.read_sync(run)
        assert data["outbox_depth"] == 0 and data["latency_ms"]["count"] == 0
        plans = []
        explain = "EXPLAIN QUERY PLAN " if db.dialect == "sqlite" else "EXPLAIN "
        for sql, params in recorder[0].statements:
            rows = db.read_sync(lambda c, s=sql, p=params: c.execute(explain + s, p))
            plans.append((sql, "\n".join(" ".join(str(x) for x in r) for r in rows)))
        for sql, plan in plans:
            # PostgreSQL: the window's day partitions are empty here, and a scan of an empty table
            # costs nothing (the planner rightly skips the index); the older days are pruned, and the
            # default partition (which may hold any day) is read through its index on `at`.
            plan = "\n".join(line for line in plan.splitlines() if "Seq Scan on dy_journal_p" not in line)
            for table in ("dy_journal", "dy_jobs", "dy_orders", "dy_counters"):
                assert f"SCAN {table}" not in plan and f"Seq Scan on {table}" not in plan, (sql, plan)
            assert "SCAN c" not in plan and "SCAN o" not in plan, (sql, plan)
        assert any("dy_counters" in sql for sql, _ in plans)
        counted = db.read_sync(queries.job_counts)
        assert counted["in_doubt"] == 0 and counted["outbox"] == 0
    finally:
        db.close()
