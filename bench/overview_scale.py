"""How long the dashboard's overview, an order's page and the store part of /metrics take with a
large history and a busy window.

    python bench/overview_scale.py -n 1000000 -w 10000 [--store sqlite|postgres] [--against COMMIT]

Writes N orders of history (a day before the window: received, committed and feedback journal
rows, the order, its done job) and W orders in the last five minutes (received; 30% with a retry
after a 503; committed; the dashboard's counters as the service's group commits keep them), plus
2,000 ready jobs. Then times, best of --rounds and interleaved with the same functions as of
COMMIT (read from git) when --against is given:
- the overview (`ui.overview`), wall clock and this process's CPU;
- an order's page (`queries.order_status` + `queries.timeline`: `GET /orders/{no}`);
- the store's part of `/metrics` (`queries.job_counts` + `metrics.read_backlog`);
- `/stats` (`queries.summary`: the store's running totals, where it counted the tables before).
and, for this tree alone, p50/p99 over --samples calls of each.

`--delivery-rate R` (issue 12: the goals hold "with a delivery run going on"): the same, while a
delivery run goes on against the same store — the service (bench/e2e.py's `--serve-child`: what
`dockyard serve` does) in front of the simulated warehouses (with their callbacks), fed R new orders
a second, open loop, by a load generator in a process of its own (one `POST /orders` per order at
fixed arrival times). The 2,000 ready jobs are then due tomorrow (their orders do not exist; the
service must not claim them, the overview still counts them). While it runs, besides the store
reads above (in this process, beside the service), the service's own answers over HTTP:
`GET /ui/api/overview` every 1.05 s (so that each one computes the overview afresh: the worst
case of its one-per-second cache), `GET /metrics` and `GET /orders/{no}` (a history order) every
0.2 s; p50/p99 of each, ingest's p50/p99 and the orders delivered meanwhile.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import Any

from dockyard.service import queries
from dockyard.service.counters import tally, upsert
from dockyard.service.db import Database
from dockyard.service.metrics import read_backlog
from dockyard.service.ui import overview

WAREHOUSES = ("qimen-std", "sf", "jd", "cainiao")
HERE = Path(__file__).resolve().parent
TOKEN = "bench-only-overview-token-0123456789"


def fill(db: Database, n: int, w: int, now: int, later: bool = False) -> None:
    if db.dialect == "postgres":
        series = "SELECT g AS n FROM generate_series(1, {k}) g"
    else:
        series = "WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < {k}) SELECT n FROM s"
    day = 86_400_000_000
    old = f"({now} - {day} - 600000000 + CAST(n AS BIGINT) * {day // max(1, n)})"  # the day before the window
    wh = "CASE n % 4 WHEN 0 THEN 'qimen-std' WHEN 1 THEN 'sf' WHEN 2 THEN 'jd' ELSE 'cainiao' END"

    def history(c: Any) -> None:
        src = series.format(k=n)
        c.execute(f"INSERT INTO dy_orders (order_no, tracking_id, warehouse, fingerprint, payload, status, delivery, "
                  f"created_at, updated_at) SELECT 'H' || n, 't', {wh}, 'f', '{{}}', 'signed', 'delivered', {old}, "
                  f"{old} FROM ({src}) x")
        c.execute(f"INSERT INTO dy_jobs (lane, kind, order_no, warehouse, state, attempts, next_at, created_at, "
                  f"updated_at) SELECT 'wh', 'create', 'H' || n, {wh}, 'done', 1, {old}, {old}, {old} FROM ({src}) x")
        for k, (step, outcome) in enumerate((("received", "ok"), ("committed", "accepted"), ("feedback", "ok"))):
            c.execute(f"INSERT INTO dy_journal (at, order_no, warehouse, flow, step, outcome, elapsed_us) "
                      f"SELECT {old} + {k * 50_000}, 'H' || n, {wh}, 'create', '{step}', '{outcome}', 20000 "
                      f"FROM ({src}) x")

    db.write_sync(history)
    rows: list[tuple[Any, ...]] = []
    for i in range(w):  # the busy window, written as the service writes it (so are the counters)
        at = now - 290_000_000 + i * 280_000_000 // max(1, w)
        order, wh_name = f"W{i}", WAREHOUSES[i % 4]
        rows.append((at, order, wh_name, None, "received", "ok", None, '{"rule":"default"}'))
        if i % 10 < 3:
            rows.append((at + 30_000, order, wh_name, "create", "retry", "scheduled", 25_000,
                         '{"http_status":503,"reason":"HTTP 503"}'))
        rows.append((at + 600_000, order, wh_name, "create", "committed", "accepted", 18_000, '{"http_status":200}'))

    def window(c: Any) -> None:
        c.executemany("INSERT INTO dy_orders (order_no, tracking_id, warehouse, fingerprint, payload, status, "
                      "delivery, created_at, updated_at) VALUES (?, 't', ?, 'f', '{}', 'accepted', 'delivered', ?, ?)",
                      [(r[1], r[2], r[0], r[0]) for r in rows if r[4] == "received"])
        c.executemany("INSERT INTO dy_journal (at, order_no, warehouse, flow, step, outcome, elapsed_us, detail) "
                      "VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
        counts = tally(rows, now)
        for r in rows:  # ingest → accepted, counted as each acceptance commits (as the service counts it)
            if r[4] == "committed":
                for key, (k, us) in tally([], r[0], [(r[2], r[0] - 600_000)]).items():
                    entry = counts.setdefault(key, [0, 0])
                    entry[0], entry[1] = entry[0] + k, entry[1] + us
        upsert(c, counts)
        # With a delivery run going on, the ready backlog is due tomorrow: the service must not
        # claim these jobs (their orders do not exist); the overview still counts them.
        due = now + 86_400_000_000 if later else now
        c.executemany("INSERT INTO dy_jobs (lane, kind, order_no, warehouse, state, next_at, created_at, updated_at) "
                      "VALUES ('wh', 'create', ?, ?, 'ready', ?, ?, ?)",
                      [(f"R{i}", WAREHOUSES[i % 4], due - i * 1000, now, now) for i in range(2000)])

    db.write_sync(window)


# -- a delivery run against the same store (--delivery-rate) -----------------------------------------
def _drive(url: str, rate: float, seed: int, first: int, stop: Any, ready: Any, out: Any) -> None:
    """The load generator's process: new orders at `rate` a second, open loop (order i due at i/rate
    s, latency from its due time), until `stop` is set; puts [latencies in ms, answers by status]."""
    import aiohttp
    import orjson

    from dockyard.sample_orders import OrderFactory

    factory = OrderFactory(seed)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        latencies: list[float] = []
        statuses: dict[str, int] = {}
        tasks: set[asyncio.Task[None]] = set()
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256),
                                         timeout=aiohttp.ClientTimeout(total=120)) as session:
            async def one(body: bytes, due: float) -> None:
                try:
                    async with session.post(f"{url}/orders", data=body,
                                            headers={"Content-Type": "application/json"}) as resp:
                        await resp.read()
                        key = str(resp.status)
                except (aiohttp.ClientError, TimeoutError) as exc:
                    key = type(exc).__name__
                latencies.append((loop.time() - due) * 1000)
                statuses[key] = statuses.get(key, 0) + 1

            ready.set()
            start, i = loop.time(), 0
            while not stop.is_set():
                due = start + i / rate
                body = orjson.dumps(factory.order(first + i + 1))
                await asyncio.sleep(max(0.0, due - loop.time()))
                task = asyncio.create_task(one(body, due))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                i += 1
            if tasks:
                await asyncio.gather(*tasks)
        out.put([latencies, statuses])

    asyncio.run(main())


class DeliveryRun:
    """The service, the simulated warehouses and the load generator, on the store at `store`."""

    def __init__(self, store: str, rate: float, work: Path, python: str = sys.executable, first: int = 0) -> None:
        self.store, self.rate, self.work, self.python, self.first = store, rate, work, python, first
        self.url = ""
        self.child: subprocess.Popen[str] | None = None
        self.sim: Any = None
        self.load: Any = None
        ctx = multiprocessing.get_context("spawn")
        self.ctx, self.stop, self.ready, self.out = ctx, ctx.Event(), ctx.Event(), ctx.Queue()

    def start(self) -> None:
        from dockyard.demo import DemoPlan, SimProcess, build_demo_bundle, free_port

        plan = DemoPlan(self.work, HERE.parent / "mappings", store=self.store, dashboard_token=TOKEN)
        build_demo_bundle(HERE.parent / "mappings", plan.bundle)
        port = free_port()
        self.sim = SimProcess(plan.sim_spec(f"http://127.0.0.1:{port}"), {"step_delay": 0.05})
        plan.sim_base = self.sim.base
        config = plan.write(port)
        self.child = subprocess.Popen([self.python, str(HERE / "e2e.py"), "--serve-child", str(config),
                                       "--report", str(self.work / "report.json")], stdout=subprocess.PIPE,
                                      text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        assert self.child.stdout is not None
        self.url = self.child.stdout.readline().strip()
        if not self.url.startswith("http"):
            raise RuntimeError("the service did not start")
        self.load = self.ctx.Process(target=_drive, args=(self.url, self.rate, 11, self.first, self.stop, self.ready,
                                                                   self.out),
                                     daemon=True)
        self.load.start()
        self.ready.wait(60)
        time.sleep(5.0)  # the run is under way (deliveries, callbacks) before the first sample

    def report(self) -> dict[str, Any]:
        """The service's report so far (bench/e2e.py's serve child writes it at SIGUSR1): its event
        loop's lag since start, and the stalls when DOCKYARD_BENCH_STALLS is set."""
        assert self.child is not None
        path = self.work / "report.json"
        path.unlink(missing_ok=True)
        self.child.send_signal(signal.SIGUSR1)
        for _ in range(100):
            with contextlib.suppress(OSError, ValueError):
                return dict(json.loads(path.read_text(encoding="utf-8")))
            time.sleep(0.1)
        return {}

    def finish(self) -> tuple[list[float], dict[str, int]]:
        self.stop.set()
        answer: tuple[list[float], dict[str, int]] = ([], {})
        if self.load is not None:
            latencies, statuses = self.out.get(timeout=180)
            answer = (latencies, statuses)
            self.load.join(10)
        if self.child is not None:
            self.child.terminate()
            try:
                self.child.wait(60)
            except subprocess.TimeoutExpired:
                self.child.kill()
        if self.sim is not None:
            self.sim.stop()
        shutil.rmtree(self.work, ignore_errors=True)  # the bundle, the config and its test-only secrets
        return answer


async def http_samples(url: str, samples: int, order_no: str) -> dict[str, list[float]]:
    """The service's answers, timed here: the overview every 1.05 s (each one computed afresh), an
    order's page and /metrics every 0.2 s, until the overview has `samples`."""
    import aiohttp

    out: dict[str, list[float]] = {"GET /ui/api/overview": [], "GET /orders/{no}": [], "GET /metrics": []}
    paths = {"GET /ui/api/overview": "/ui/api/overview", "GET /orders/{no}": f"/orders/{order_no}",
             "GET /metrics": "/metrics"}
    done = asyncio.Event()
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"},
                                     timeout=aiohttp.ClientTimeout(total=60)) as session:
        async def sample(name: str, every: float) -> None:
            loop = asyncio.get_running_loop()
            while not done.is_set():
                t0 = loop.time()
                async with session.get(url + paths[name]) as resp:
                    await resp.read()
                    if resp.status != 200:
                        raise RuntimeError(f"{name}: HTTP {resp.status}")
                out[name].append((loop.time() - t0) * 1000)
                if name == "GET /ui/api/overview" and len(out[name]) >= samples:
                    done.set()
                await asyncio.sleep(max(0.0, every - (loop.time() - t0)))

        await asyncio.gather(sample("GET /ui/api/overview", 1.05), sample("GET /orders/{no}", 0.2),
                             sample("GET /metrics", 0.2))
    return out


def as_of(commit: str, path: str, names: tuple[str, ...]) -> types.ModuleType:
    root = Path(__file__).resolve().parents[1]
    source = subprocess.run(["git", "-C", str(root), "show", f"{commit}:{path}"], capture_output=True, text=True,
                            check=True).stdout
    module = types.ModuleType(f"{Path(path).stem}_{commit}")
    module.__file__ = str(root / path)  # (ui.py finds its static files beside it)
    exec(compile(source, f"{commit}:{path}", "exec"), module.__dict__)  # noqa: S102 - our own file
    assert all(hasattr(module, n) for n in names)
    return module


def timed(db: Database, fn: Any) -> tuple[float, float]:
    t0, c0 = time.perf_counter(), time.process_time()
    db.read_sync(fn)
    return time.perf_counter() - t0, time.process_time() - c0


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def _finish(run: DeliveryRun, db: Database, since: int) -> float:
    """End the run; its ingest p99 (ms)."""
    delivered = db.read_sync(lambda c: c.execute(
        "SELECT COUNT(*) FROM dy_journal WHERE step = 'committed' AND flow = 'create' AND at >= ?",
        (since,))[0][0])
    took = (db.read_sync(lambda c: c.now) - since) / 1e6
    latencies, statuses = run.finish()
    print(f"    the delivery run meanwhile: {delivered:,} orders delivered in {took:.0f} s "
          f"({delivered / took:.0f}/s); ingest p50 {pct(latencies, 50):.1f} ms, "
          f"p99 {pct(latencies, 99):.1f} ms over {len(latencies):,} orders, answers {statuses}")
    return pct(latencies, 99) if latencies else 0.0


def _tree(python: str) -> str:
    """The tree a venv's python serves from (the folder that holds its venv), or the path itself."""
    parts = Path(python).parts
    return str(Path(*parts[:parts.index(".venv")])) if ".venv" in parts else python


def _compare(figures: dict[str, dict[str, list[float]]], pythons: list[str]) -> None:
    """Per tree, every run's p99 and their median; with two trees, the median of the paired
    differences (run k of one against run k of the other, neighbours in time)."""
    print("\n  p99 of every run (ms), median; the trees' runs interleaved")
    names = list(figures[pythons[0]])
    for name in names:
        for py in pythons:
            values = figures[py].get(name, [])
            print(f"    {name:<22} {_tree(py):<20} {', '.join(f'{v:.1f}' for v in values)}   "
                  f"median {statistics.median(values):.1f}")
        if len(pythons) == 2:
            a, b = figures[pythons[0]].get(name, []), figures[pythons[1]].get(name, [])
            diffs = [y - x for x, y in zip(a, b, strict=False)]
            if diffs:
                print(f"    {name:<22} {'second - first':<20} median of paired differences "
                      f"{statistics.median(diffs):+.1f} ms ({sum(d < 0 for d in diffs)} of {len(diffs)} lower)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("-n", type=int, default=1_000_000, help="orders of history")
    ap.add_argument("-w", type=int, default=10_000, help="orders in the five-minute window")
    ap.add_argument("--store", choices=("sqlite", "postgres"), default="sqlite")
    ap.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    ap.add_argument("--pg-database", default="dockyard_overview_bench",
                    help="the database made afresh for the run (dropped first: never name one in use)")
    ap.add_argument("--against", metavar="COMMIT")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--samples", type=int, default=50)
    ap.add_argument("--delivery-rate", type=float, default=0.0, metavar="R",
                    help="sample while the service delivers R new orders a second against the same store")
    ap.add_argument("--service-python", action="append", metavar="PYTHON",
                    help="with --delivery-rate: serve with this interpreter (a tree's venv, e.g. /tmp/base/.venv/"
                         "bin/python); given twice, the two trees' services in turn on the same store")
    ap.add_argument("--service-rounds", type=int, default=1,
                    help="with --delivery-rate: delivery runs per service, interleaved (a new service each)")
    args = ap.parse_args(argv)
    if args.store == "postgres":
        import psycopg

        with psycopg.connect(args.pg_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{args.pg_database}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{args.pg_database}"')
        url = args.pg_url.rsplit("/", 1)[0] + "/" + args.pg_database
    else:
        url = f"sqlite:///{Path(tempfile.mkdtemp(prefix='dockyard-overview-')) / 'state.db'}"
    db = Database(url, readers=1)
    run: DeliveryRun | None = None
    try:
        now = db.read_sync(lambda c: c.now)
        t0 = time.perf_counter()
        fill(db, args.n, args.w, now, later=args.delivery_rate > 0)
        if db.dialect == "postgres":
            db.claim_sync(lambda c: c.execute("ANALYZE"))
        filled = time.perf_counter() - t0
        journal = db.read_sync(lambda c: c.execute("SELECT COUNT(*) FROM dy_journal")[0][0])
        print(f"{args.store}: {args.n:,} orders of history, {args.w:,} in the window, {journal:,} journal rows "
              f"(written in {filled:.0f} s)")
        if args.delivery_rate > 0:
            # --service-python: the service of each tree in turn on this store (each run a new service
            # process with fresh orders), the order flipping every round; the last run goes on while
            # the store reads below are timed.
            pythons = args.service_python or [sys.executable]
            runs = [(r, py) for r in range(args.service_rounds)
                    for py in (pythons if r % 2 == 0 else pythons[::-1])]
            figures: dict[str, dict[str, list[float]]] = {py: {} for py in pythons}
            for k, (r, py) in enumerate(runs):
                run = DeliveryRun(url, args.delivery_rate, Path(tempfile.mkdtemp(prefix="dockyard-overview-run-")),
                                  py, first=k * 1_000_000)
                run.start()
                since = db.read_sync(lambda c: c.now)
                before = run.report().get("loop_schedstat", {})
                tree = _tree(py)
                print(f"  run {k + 1}/{len(runs)} (round {r + 1}), service of {tree}: a delivery run is going on "
                      f"at {run.url}, {args.delivery_rate:g} new orders/s")
                for name, values in asyncio.run(http_samples(run.url, args.samples,
                                                             f"H{max(1, args.n // 2)}")).items():
                    print(f"    service, {name:<22} p50 {pct(values, 50):8.1f} ms   p99 {pct(values, 99):8.1f} ms "
                          f"({len(values)} requests)")
                    figures[py].setdefault(name, []).append(pct(values, 99))
                report = run.report()
                lag = report.get("loop_lag_ms", {})
                figures[py].setdefault("event loop lag", []).append(lag.get("p99", 0.0))
                after = report.get("loop_schedstat", {})
                if before and after:  # how long the loop's thread waited for a core (the machine's load)
                    took = after["at"] - before["at"]
                    waited = (after["run_queue_s"] - before["run_queue_s"]) / took * 1000
                    figures[py].setdefault("loop's run-queue wait", []).append(waited)
                    busy = (after["on_cpu_s"] - before["on_cpu_s"]) / took * 1000
                    print(f"    service, the event loop's thread: on a core {busy:.0f} ms/s, waiting for one "
                          f"{waited:.0f} ms/s")
                print(f"    service, event loop lag (a 10 ms timer, late by): p50 {lag.get('p50', 0):.1f} ms, "
                      f"p99 {lag.get('p99', 0):.1f} ms, max {lag.get('max', 0):.1f} ms")
                if report.get("stalls"):  # DOCKYARD_BENCH_STALLS=MS (bench/e2e.py): what held the loop
                    stalls = report["stalls"]
                    print(f"    stalls of the event loop over {stalls['threshold_ms']:g} ms: {stalls['stalls']} "
                          f"{stalls['by_length_ms']}; garbage collections {stalls.get('gc')}; the main thread's "
                          f"stack, by samples of ~2 ms:")
                    for n, stack in stalls["top"][:25]:
                        print(f"      {n:5d}  {stack}")
                if k < len(runs) - 1:
                    figures[py].setdefault("ingest (load generator)", []).append(_finish(run, db, since))
                    run = None
                else:
                    last = figures[py]
        probe = f"H{max(1, args.n // 2)}"  # a history order
        probes: dict[str, Any] = {
            "overview": lambda c: overview(c, c.now),
            "GET /orders/{no}": lambda c: (queries.order_status(c, probe), queries.timeline(c, probe)),
            "/metrics (store)": lambda c: (queries.job_counts(c), read_backlog(c, c.now)),
            "/stats": queries.summary,
        }
        for name, fn in probes.items():
            samples = [timed(db, fn)[0] * 1000 for _ in range(args.samples)]
            print(f"  this tree, {name:<17} p50 {pct(samples, 50):8.1f} ms   p99 {pct(samples, 99):8.1f} ms "
                  f"({args.samples} calls)")
        if args.against:
            ui_old = as_of(args.against, "dockyard/service/ui.py", ("overview",))
            q_old = as_of(args.against, "dockyard/service/queries.py", ("job_counts", "summary"))
            pairs = {"overview": (ui_old.overview, overview),
                     "job_counts": (q_old.job_counts, queries.job_counts),
                     "/stats": (q_old.summary, queries.summary)}
            for name, (older, newer) in pairs.items():
                best = {"old": (float("inf"), float("inf")), "new": (float("inf"), float("inf"))}
                for _ in range(args.rounds):
                    for key, fn in (("old", older), ("new", newer)):
                        wall, cpu = timed(db, (lambda c, f=fn: f(c, c.now)) if name == "overview" else fn)
                        best[key] = (min(best[key][0], wall), min(best[key][1], cpu))
                (ow, oc), (nw, nc) = best["old"], best["new"]
                print(f"  {name}: as of {args.against} {ow * 1000:.1f} ms (CPU {oc * 1000:.1f} ms); this tree "
                      f"{nw * 1000:.1f} ms (CPU {nc * 1000:.1f} ms); CPU ratio {nc / oc if oc else float('nan'):.3f} "
                      f"(best of {args.rounds}, interleaved)")
        if run is not None:
            last.setdefault("ingest (load generator)", []).append(_finish(run, db, since))
            run = None
            if len(runs) > 1:
                _compare(figures, pythons)
    finally:
        if run is not None:
            run.finish()
        db.close()
        if args.store == "sqlite":
            shutil.rmtree(Path(url[len("sqlite:///"):]).parent, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
