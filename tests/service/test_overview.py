"""The dashboard's overview at bounded cost, on SQLite and PostgreSQL: during a run with 30% 5xx it
shows the retry storm (exchanges by outcome, retries, error rate, exchange time) exactly as the
journal has it; and with a large history every statement it runs reads through an index or a
tiny table — none scans the journal, the jobs or the orders."""

from __future__ import annotations

import asyncio
import copy
import json
import random
from collections import Counter, defaultdict
from typing import Any

import pytest
from test_service import example
from test_ui import READ, TOKENS, bearer, fetch

from dockyard.service import queries, ui
from dockyard.service.counters import ACCEPTED_MS, BUCKET_US, UPSTREAM, percentile_from_buckets, tally
from dockyard.service.db import Database
from dockyard.service.ui import DASHBOARD, _ms, overview
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
            # ingest → accepted comes from the counters, kept as each acceptance commits: the same
            # histogram as the journal's committed rows against their orders' ingest time
            since = await run.service.db.read(lambda c: [int(r[0]) for r in c.execute(
                "SELECT c.at - o.created_at FROM dy_journal c JOIN dy_orders o ON o.order_no = c.order_no "
                "WHERE c.step = 'committed' AND c.flow = 'create'")])
            kept = dict(await run.service.db.read(lambda c: c.execute(
                "SELECT kind, SUM(n) FROM dy_counters WHERE kind LIKE 'i:%' GROUP BY kind")))
            assert {k: int(n) for k, n in kept.items()} == Counter(
                "i:" + str(next((b for b in ACCEPTED_MS if us / 1000 <= b), "inf")) for us in since)
            assert ov["latency_ms"]["p50"] == _ms(percentile_from_buckets({k[2:]: int(n) for k, n in kept.items()}, 50))
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


def _by_the_rows(rows: list[tuple[int, str, str, str, int]], now: int) -> dict[str, Any]:
    """The overview's counter figures as their definition says, row by row: what ui.overview showed
    when it read every counter row of the window into Python (before the store summed the
    histograms), kept here as the reference."""
    buckets, width = ui.WINDOW_S // ui.BUCKET_S, ui.BUCKET_S * 1_000_000
    end = (now // width + 1) * width
    start = end - ui.WINDOW_S * 1_000_000
    series: dict[str, dict[str, Any]] = {}
    latency: dict[str, Counter[str]] = defaultdict(Counter)
    accepted: Counter[str] = Counter()
    for bucket, warehouse, kind, _node, n in rows:
        if not start <= bucket < end:
            continue
        s = series.setdefault(warehouse, ui._empty_series(buckets))
        i = (bucket - start) // width
        if kind in ("received", "delivered", "failed"):
            s[kind][i] += n
            s["total"][kind] += n
        elif kind.startswith("a:"):
            s["attempts"][kind[2:]] = s["attempts"].get(kind[2:], 0) + n
            s["attempt_series"].setdefault(kind[2:], [0] * buckets)[i] += n
        elif kind == "retry":
            s["retries"][i] += n
            s["retries_total"] += n
        elif kind.startswith("l:"):
            latency[warehouse][kind[2:]] += n
        elif kind.startswith("i:") and warehouse != UPSTREAM:
            accepted[kind[2:]] += n
    # what is made of these sums (rates, percentiles) is the overview's own; the sums are the point
    ui.finish_series(series, latency, buckets)
    series.pop(UPSTREAM, None)
    return {"warehouses": series, "retries": sum(s["retries_total"] for s in series.values()),
            "attempts": sum(sum(s["attempts"].values()) for s in series.values()),
            "latency_ms": ui.histogram_summary(accepted)}


def test_the_overview_shows_every_counter_of_the_window_as_the_rows_say(db: Database) -> None:
    """The overview reads the per-bucket series row by row and has the store add up the two
    histograms (exchange times, ingest → accepted) over the window: for counters of several
    nodes, warehouses and kinds, inside the window, just before it and just after it, every figure
    is the one the rows give one by one. A warehouse with nothing but exchange times still shows."""
    width = ui.BUCKET_S * 1_000_000
    now = 1_800_000_000 * 1_000_000 + 1_234_567
    end = (now // width + 1) * width
    start = end - ui.WINDOW_S * 1_000_000
    rng = random.Random(12)
    kinds = ["received", "delivered", "failed", "retry", "a:2xx", "a:4xx", "a:5xx", "a:timeout", "a:reset",
             "l:5", "l:10", "l:250", "l:inf", "i:1", "i:20", "i:700", "i:7200000", "i:inf"]
    rows: dict[tuple[int, str, str, str], int] = {}
    for _ in range(3000):
        bucket = start + rng.randrange(-3, ui.WINDOW_S // ui.BUCKET_S + 3) * width
        key = (bucket, rng.choice(["qimen-std", "sf", "jd", UPSTREAM]), rng.choice(kinds), rng.choice(["", "n2"]))
        rows[key] = rows.get(key, 0) + rng.randrange(1, 50)
    rows[(start, "cainiao", "l:25", "")] = 3  # only exchange times
    listed = [(*key, n) for key, n in rows.items()]
    db.write_sync(lambda c: c.executemany(
        "INSERT INTO dy_counters (bucket, warehouse, kind, node, n, sum_us) VALUES (?, ?, ?, ?, ?, 0)", listed))
    got = db.read_sync(lambda c: overview(c, now))
    want = _by_the_rows(listed, now)
    assert set(got["warehouses"]) == set(want["warehouses"]) == {"qimen-std", "sf", "jd", "cainiao"}
    for name, series in want["warehouses"].items():
        shown = {k: got["warehouses"][name][k] for k in series}
        assert shown == series, name
    for key in ("retries", "attempts", "latency_ms"):
        assert got[key] == want[key], key
    only_times = got["warehouses"]["cainiao"]["exchange_ms"]
    assert only_times["count"] == 3 and only_times["p50"] == 12.5  # 25 ms × 1.5 of 3 (interpolated)
    assert got["latency_ms"]["count"] == sum(n for (b, w, k, _), n in rows.items()
                                             if k.startswith("i:") and w != UPSTREAM and start <= b < end) > 0


def test_ingest_to_accepted_is_counted_in_the_commits_bucket() -> None:
    now = 7 * BUCKET_US + 1234
    counted = tally([], now, [("sf", now - 40_000), ("sf", now - 41_000), ("jd", now - 2_000_000),
                              (UPSTREAM, now - 5), ("sf", now + 10)])
    bucket = 7 * BUCKET_US
    assert counted == {(bucket, "sf", "i:50"): [2, 81_000], (bucket, "jd", "i:2000"): [1, 2_000_000],
                       (bucket, "sf", "i:1"): [1, 0]}  # a clock step back counts as no time, never as negative


def test_viewers_share_one_overview_per_interval(env: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ten polls and three streams at once: one computation (one reader), and every one of them is
    sent the same bytes. (CACHE_S is made long, so that the interval cannot end during the test.)"""
    monkeypatch.setattr(ui, "CACHE_S", 3600.0)

    async def main() -> None:
        async with env(overrides=TOKENS) as run:
            await run.post("/orders", example())
            dashboard = run.service.runner.app[DASHBOARD]
            before = dashboard.computed

            async def poll() -> bytes:
                async with run.session.get(run.url + "/ui/api/overview", headers=bearer(READ)) as resp:
                    assert resp.status == 200
                    return await resp.read()

            async def stream() -> bytes:
                async with run.session.get(run.url + "/ui/api/stream", headers=bearer(READ)) as resp:
                    async for line in resp.content:
                        if line.startswith(b"data: "):
                            return line[6:].rstrip(b"\n")
                raise AssertionError("the stream ended without an event")

            bodies = await asyncio.gather(*(poll() for _ in range(10)), *(stream() for _ in range(3)))
            assert dashboard.computed - before == 1
            assert len(set(bodies)) == 1 and json.loads(bodies[0])["warehouses"]["qimen-std"]["total"]["received"] == 1

    asyncio.run(asyncio.wait_for(main(), 60))


def test_a_poll_is_answered_304_while_the_overview_is_unchanged(env: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ui, "CACHE_S", 3600.0)

    async def get(run: Any, tag: str | None = None, token: str = READ) -> tuple[int, str, bytes]:
        headers = bearer(token) | ({"If-None-Match": tag} if tag else {})
        async with run.session.get(run.url + "/ui/api/overview", headers=headers) as resp:
            return resp.status, resp.headers.get("ETag", ""), await resp.read()

    async def main() -> None:
        async with env(overrides=TOKENS) as run:
            status, tag, body = await get(run)
            assert status == 200 and tag.startswith('"') and json.loads(body)["warehouses"]
            assert await get(run, tag) == (304, tag, b"")
            assert await get(run, f'"x", W/{tag}') == (304, tag, b"")
            assert (await get(run, '"something else"'))[0] == 200
            assert (await get(run, tag, token="not-a-token"))[0] == 401  # a tag is no way around the token

            order = example()
            await run.post("/orders", order)
            await run.until(order["order_no"], lambda d: d["delivery"] == "delivered")
            monkeypatch.setattr(ui, "CACHE_S", 0.0)  # the next poll computes the overview again
            status, changed, body = await get(run, tag)
            assert status == 200 and changed != tag
            assert json.loads(body)["warehouses"]["qimen-std"]["total"]["received"] == 1

            # what changes every second on a quiet service (the time of computing) is not in the tag
            calls = iter(range(1000))

            def quiet(conn: Any, now: int) -> dict[str, Any]:
                return {"at": f"t{next(calls)}", "buckets": 1, "warehouses": {}}

            monkeypatch.setattr(ui, "overview", quiet)
            first, second = await get(run), await get(run)
            assert first[0] == second[0] == 200 and first[2] != second[2] and first[1] == second[1]
            assert await get(run, first[1]) == (304, first[1], b"")

    asyncio.run(asyncio.wait_for(main(), 60))
