"""Benchmark: N orders end to end through `dockyard serve` into the simulated warehouses on loopback.

    python bench/e2e.py [-n 20000] [--store sqlite|postgres] [--pg-url URL] [--feedback|--no-feedback]
                        [--batch 200] [--parallel 4] [--profile] [--json FILE]

Three processes, as in production: the service (this file re-run as `--serve-child`, which does what
`dockyard serve` does and nothing more unless --profile is given), the simulated warehouses
(dockyard.demo.SimProcess: QIMEN, SF, JD LOP, Cainiao and the upstream webhook) and the load
generator (this process), each on its own CPU clock.

Measured (every figure from the same run):
- accepted/s: the orders over the time until every batch has its answer (POST /orders/batch);
- delivered/s: orders committed as accepted by their warehouse (journal step `committed`, flow
  `create`) over the time from the first `received` to the last `committed` in the journal;
- latency ingest → ack (client side, per batch request) and ingest → warehouse-accepted (per
  order, journal `received` → `committed`), p50/p95/p99;
- feedback: status events recorded per second, and forwarded upstream;
- CPU µs per order of the service (main thread = event loop, writer thread, readers), the
  PostgreSQL server (when used), the simulator and the load generator, from /proc and getrusage;
- with --profile: the service's CPU split by stage: its stage functions are wrapped inside the
  service process and each call's thread CPU is charged to its stage (see instrument()).

Baselines, measured first in the same run:
- transform+sign: `build_request` (the order read back from its stored JSON, mapped, serialized,
  signed) in-process, for the same orders, routed the same way: the pure mapping ceiling;
- simulator round trip: the same signed requests sent straight to a fresh simulator process with
  the same per-warehouse concurrency and no service in between: the loopback HTTP ceiling.
delivered/s is printed as a ratio of both.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
TICK = os.sysconf("SC_CLK_TCK")


# -- CPU clocks ---------------------------------------------------------------------------------
def _stat_cpu(path: str) -> float:
    """utime + stime of a /proc stat file, in seconds."""
    with open(path, "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def proc_cpu(pid: int) -> float:
    return _stat_cpu(f"/proc/{pid}/stat")


def thread_cpu(pid: int) -> dict[int, float]:
    out: dict[int, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            out[int(task.name)] = _stat_cpu(f"{task}/stat")
    return out


def tree_cpu(pid: int) -> dict[int, float]:
    """CPU of every thread of a process and of its children (the workers of `serve`)."""
    out = thread_cpu(pid)
    with contextlib.suppress(OSError):
        for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
            out.update(thread_cpu(int(child)))
    return out


def postgres_cpu() -> float:
    """CPU of every process named postgres (the server and the service's backends)."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        name = entry.name
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/comm", "rb") as f:
                if not f.read().startswith(b"postgres"):
                    continue
            total += proc_cpu(int(name))
        except OSError:
            continue
    return total


def self_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def pct(values: list[float], q: float) -> float:
    from dockyard.demo import percentile

    return percentile(values, q)


# -- the stage profiler (runs inside the service process, with --profile) ------------------------
# The service's own functions are wrapped (in the service process only; no file of dockyard/ is
# touched) and each call's *thread CPU time* is charged to its stage, exclusive of the wrapped calls
# it makes: a stack per thread. Coroutines are timed step by step (only while they run, not while
# they wait), so an async handler's figure is its own CPU, not its wall time. Whatever a thread
# spends outside every wrapped call (the event loop, uvloop's I/O, aiohttp's task machinery, the
# writer's queue) is what remains of its /proc CPU, reported by the parent as the remainder.
# An in-process stack *sampler* was tried first and dropped: it needs the GIL to look, so it
# only ever looks when the service releases the GIL (file reads, os.urandom, sqlite) and charges
# everything before to those points.
_TL = threading.local()
_TOTALS: dict[tuple[str, str], list[int]] = {}


def _enter(label: str, nested: bool) -> None:
    stack = _TL.__dict__.get("stack")
    if stack is None:
        stack = _TL.stack = []
        _TL.thread = threading.current_thread().name
    if nested and stack:
        label = stack[-1][0].split(" › ")[0] + " › " + label
    stack.append([label, time.thread_time_ns(), 0])


def _leave() -> None:
    now = time.thread_time_ns()
    stack = _TL.stack
    label, t0, inner = stack.pop()
    spent = now - t0
    entry = _TOTALS.get((_TL.thread, label))
    if entry is None:
        entry = _TOTALS[(_TL.thread, label)] = [0, 0]
    entry[0] += spent - inner
    entry[1] += 1
    if stack:
        stack[-1][2] += spent


def _timed(fn: Any, label: str, nested: bool = False) -> Any:
    import functools

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        _enter(label, nested)
        try:
            return fn(*args, **kwargs)
        finally:
            _leave()
    return wrapper


def _timed_async(fn: Any, label: str) -> Any:
    import functools
    import types

    @types.coroutine
    def drive(coro: Any) -> Any:
        value: Any = None
        error: BaseException | None = None
        while True:
            _enter(label, False)
            try:
                step = coro.send(value) if error is None else coro.throw(error)
            except StopIteration as stop:
                _leave()
                return stop.value
            except BaseException:
                _leave()
                raise
            _leave()
            try:
                value, error = (yield step), None
            except BaseException as exc:  # handed to the coroutine, as a Task would
                value, error = None, exc

    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        return await drive(fn(*args, **kwargs))
    return wrapper


def instrument() -> None:
    """Wrap the stage functions of the service (attribute patches in this process only)."""
    from aiohttp import client_proto, web_protocol

    from dockyard.runtime import mapping as rt_mapping
    from dockyard.runtime import request as rt_request
    from dockyard.runtime import secrets as rt_secrets
    from dockyard.service import app, db, delivery, feedback, ingest, store

    def patch(owner: Any, name: str, label: str, *, nested: bool = False, coro: bool = False) -> None:
        fn = getattr(owner, name)
        setattr(owner, name, _timed_async(fn, label) if coro else _timed(fn, label, nested))

    # ingest (event loop)
    patch(app.Service, "post_batch", "ingest: handler glue (per-order results)", coro=True)
    patch(app, "read_body", "ingest: JSON parse (Decimal, bounded) + depth check")
    patch(ingest.OrderChecker, "check", "ingest: validate (jsonschema) + route + ids")
    patch(ingest, "fingerprint", "ingest: fingerprint (sorted JSON + sha256)")
    patch(app, "dumps", "ingest: payload JSON for the store")
    patch(app, "_json", "HTTP answers: orjson")
    # delivery (event loop)
    patch(delivery.Deliverer, "_warehouse_loop", "deliver: claim loop (ids, tasks)", coro=True)
    patch(delivery.Deliverer, "_run", "deliver: attempt glue", coro=True)
    patch(delivery.Deliverer, "_http", "deliver: HTTP client request/response", coro=True)
    patch(delivery, "load_order", "deliver: stored order json.loads")
    patch(delivery, "build_request", "deliver: transform+sign (build_request)")
    patch(rt_request, "serialize", "serialize body", nested=True)
    patch(rt_request, "to_json_bytes", "document fingerprint", nested=True)
    patch(delivery.Deliverer, "_outcome", "deliver: response mapping")
    patch(delivery.Deliverer, "_request_summary", "deliver: journal detail (sha256, excerpt, redact)")
    patch(delivery.Deliverer, "_answer_summary", "deliver: journal detail (sha256, excerpt, redact)")
    patch(delivery.Deliverer, "_upstream_loop", "upstream: forward loop", coro=True)
    # callbacks (event loop)
    patch(app.Service, "post_callback", "callback: handler glue", coro=True)
    patch(feedback, "verify", "callback: verify signature")
    patch(feedback, "_decrypt", "callback: decrypt fields")
    patch(feedback, "_ack_or_error", "callback: ack render")
    patch(rt_mapping.CompiledMapping, "parse_input", "parse input (XML/JSON/form)", nested=True)
    patch(rt_mapping.CompiledMapping, "transform", "mapping transform", nested=True)
    patch(rt_secrets.Secrets, "get", "secret lookup (file read)", nested=True)
    patch(rt_secrets.Secrets, "redact", "redact", nested=True)
    # HTTP framing (event loop)
    patch(web_protocol.RequestHandler, "data_received", "HTTP server: parse requests")
    patch(client_proto.ResponseHandler, "data_received", "HTTP client: parse responses")
    patch(db, "_settle", "store hand-off: resolve futures")
    # the writer thread
    patch(store, "ingest", "store: ingest orders")
    patch(store, "claim", "store: claim")
    patch(store, "finish", "store: finish delivery")
    patch(store, "record_event", "store: record callback event")
    patch(store, "quarantine", "store: quarantine")
    patch(store, "journal", "journal rows", nested=True)
    patch(store, "update_order", "update order", nested=True)
    patch(store, "_queue", "outbox insert", nested=True)
    patch(db.Database, "_commit_group", "store: group (savepoints, callbacks)")
    for conn in (db._SqliteConn, db._PostgresConn):
        patch(conn, "commit", "store: COMMIT")
        patch(conn, "begin", "store: BEGIN")


def serve_child(argv: list[str]) -> int:
    """The service process: what `dockyard serve --config` does, plus (with --profile) the stage
    profiler. SIGUSR1 ends the measured interval: thread names and stage totals go to --report."""
    ap = argparse.ArgumentParser()
    ap.add_argument("config")
    ap.add_argument("--report", required=True)
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args(argv)
    from dockyard.service.app import Service, install_uvloop, run_forever
    from dockyard.service.config import load_config
    from dockyard.service.context import ServiceContext

    if args.profile:
        instrument()
    service = Service(ServiceContext.build(load_config(args.config)))
    install_uvloop()

    def dump(*_: Any) -> None:
        report = {"threads": {str(t.native_id): t.name for t in threading.enumerate()},
                  "stages": [[t, s, v[0] / 1e9, v[1]] for (t, s), v in list(_TOTALS.items())]}
        Path(args.report).write_text(json.dumps(report), encoding="utf-8")

    signal.signal(signal.SIGUSR1, dump)

    def ready(url: str) -> None:
        sys.stdout.write(url + "\n")
        sys.stdout.flush()

    asyncio.run(run_forever(service, ready))
    return 0


# -- the load generator ---------------------------------------------------------------------------
async def send_orders(url: str, bodies: list[tuple[int, bytes]], parallel: int) -> dict[str, Any]:
    import aiohttp
    import orjson

    counts: Counter[str] = Counter()
    accepted: list[str] = []
    latencies: list[float] = []
    queue = list(reversed(bodies))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=parallel),
                                     timeout=aiohttp.ClientTimeout(total=300)) as session:
        async def worker() -> None:
            while queue:
                _, body = queue.pop()
                t0 = time.perf_counter()
                async with session.post(f"{url}/orders/batch", data=body,
                                        headers={"Content-Type": "application/json"}) as resp:
                    data = orjson.loads(await resp.read())
                latencies.append((time.perf_counter() - t0) * 1000)
                for r in data["results"]:
                    counts[r["status"]] += 1
                    if r["status"] in ("accepted", "duplicate"):
                        accepted.append(r["order_no"])

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(parallel)))
        took = time.perf_counter() - start
    return {"counts": dict(counts), "accepted": accepted, "latencies": latencies, "seconds": took}


# -- baselines ------------------------------------------------------------------------------------
def transform_baseline(ctx: Any, orders: list[dict[str, Any]]) -> tuple[float, list[tuple[str, Any]]]:
    """build_request for every order as the delivery worker calls it; returns (orders/s, wires)."""
    import uuid

    from dockyard.runtime.errors import DockyardError
    from dockyard.runtime.request import build_request
    from dockyard.service.context import dumps, load_order, rewrite_url

    routed = []
    for order in orders:
        name = ctx.router.route(order)
        wh = ctx.config.warehouses[name]
        routed.append((wh, ctx.mappings[wh.flows["create"].request], dumps(order), uuid.uuid4().hex))
    wires: list[tuple[str, Any]] = []
    start = time.perf_counter()
    for wh, mapping, text, request_id in routed:
        try:
            prepared = build_request(mapping, load_order(text), context=wh.context, secrets=ctx.secrets,
                                     request_id=request_id)
        except DockyardError:
            continue
        wires.append((wh.name, prepared.request))
    took = time.perf_counter() - start
    for i, (name, wire) in enumerate(wires):
        wires[i] = (name, (wire.method, rewrite_url(wire.url, ctx.config.warehouses[name].endpoint), wire.headers,
                           wire.body))
    return len(routed) / took, wires


async def blast(wires: list[tuple[str, Any]], concurrency: int) -> tuple[float, dict[int, int]]:
    """The signed requests straight to the simulator, `concurrency` at a time per warehouse."""
    import aiohttp
    from yarl import URL

    by: dict[str, list[Any]] = defaultdict(list)
    for name, wire in wires:
        by[name].append(wire)
    statuses: Counter[int] = Counter()

    async def lane(items: list[Any]) -> None:
        items = list(reversed(items))
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency,
                                                                         limit_per_host=concurrency)) as session:
            async def worker() -> None:
                while items:
                    method, url, headers, body = items.pop()
                    async with session.request(method, URL(url, encoded=True), data=body,
                                               headers=dict(headers)) as resp:
                        await resp.read()
                        statuses[resp.status] += 1

            await asyncio.gather(*(worker() for _ in range(concurrency)))

    start = time.perf_counter()
    await asyncio.gather(*(lane(items) for items in by.values()))
    return len(wires) / (time.perf_counter() - start), dict(statuses)


# -- the run --------------------------------------------------------------------------------------
def fresh_postgres(url: str, name: str = "dockyard_e2e_bench") -> str:
    """A new, empty database `name` on the server of `url` (dropped first if it exists), so that
    the run neither sees nor disturbs another user of that server; returns its URL."""
    from urllib.parse import urlsplit, urlunsplit

    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {name}")
    return urlunsplit(urlsplit(url)._replace(path="/" + name))


def journal_figures(url: str) -> dict[str, Any]:
    from dockyard.service.db import Database

    db = Database(url, readers=1)

    def read(conn: Any) -> dict[str, Any]:
        received = dict(conn.execute("SELECT order_no, at FROM dy_journal WHERE step = 'received' AND outcome = 'ok'"))
        committed = conn.execute("SELECT order_no, at FROM dy_journal WHERE step = 'committed' AND flow = 'create'")
        settled = conn.execute("SELECT MAX(at) FROM dy_journal WHERE step IN ('committed', 'dead-lettered', 'held')")
        events = conn.execute("SELECT COUNT(*), MIN(received_at), MAX(received_at) FROM dy_events")[0]
        fwd = conn.execute("SELECT COUNT(*), MAX(at) FROM dy_journal WHERE step = 'forwarded'")[0]
        by = dict(conn.execute("SELECT delivery, COUNT(*) FROM dy_orders GROUP BY delivery"))
        dup = conn.execute("SELECT COUNT(*) FROM dy_journal WHERE step = 'feedback' AND outcome = 'duplicate'")[0][0]
        last = conn.execute("SELECT MAX(at) FROM dy_journal")[0][0]
        return {"received": received, "committed": committed, "settled_at": settled[0][0], "events": events,
                "forwarded": fwd, "by_delivery": by, "dup_events": dup, "last_at": last}

    try:
        return db.read_sync(read)
    finally:
        db.close()


def run(args: argparse.Namespace) -> dict[str, Any]:
    from dockyard.demo import DemoPlan, SimProcess, build_demo_bundle, free_port
    from dockyard.sample_orders import generate
    from dockyard.service.config import load_config
    from dockyard.service.context import ServiceContext

    work = Path(args.workdir or tempfile.mkdtemp(prefix="dockyard-e2e-"))
    work.mkdir(parents=True, exist_ok=True)
    store = fresh_postgres(args.pg_url) if args.store == "postgres" else f"sqlite:///{(work / 'state.db').resolve()}"
    for p in work.glob("state.db*"):
        p.unlink()
    plan = DemoPlan(work, args.mappings, store=store, concurrency=args.concurrency, workers=args.workers)
    t0 = time.perf_counter()
    build_demo_bundle(args.mappings, plan.bundle)
    orders = generate(args.n, args.seed)
    print(f"bundle + {len(orders)} orders generated in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    import orjson

    bodies = [(len(orders[i:i + args.batch]), orjson.dumps(orders[i:i + args.batch]))
              for i in range(0, len(orders), args.batch)]
    out: dict[str, Any] = {"n": len(orders), "store": args.store, "feedback": args.feedback,
                           "workers": args.workers, "batch": args.batch,
                           "parallel": args.parallel, "concurrency": args.concurrency, "cpus": os.cpu_count(),
                           "python": platform.python_version(), "command": " ".join(sys.argv)}

    # Baseline 1: transform + sign in-process.
    plan.sim_base = "http://127.0.0.1:9"  # replaced below; the wires are re-pointed at the real simulator
    ctx = ServiceContext.build(load_config(plan.write(free_port())))
    base_orders = orders[:args.baseline_n]
    transform_rate, wires = transform_baseline(ctx, base_orders)
    out["transform_sign_per_s"] = transform_rate

    # Baseline 2: the same signed requests straight to a fresh simulator (no feedback, no service).
    sim = SimProcess(plan.sim_spec("http://127.0.0.1:9"), {"enabled": False})
    try:
        wires = [(name, (m, sim.base + u[len("http://127.0.0.1:9"):], h, b)) for name, (m, u, h, b) in wires]
        c_sim, c_self = proc_cpu(sim.process.pid), self_cpu()
        rate, statuses = asyncio.run(blast(wires, args.concurrency))
        out["sim_roundtrip_per_s"] = rate
        out["sim_roundtrip_cpu_us"] = {"simulator": (proc_cpu(sim.process.pid) - c_sim) / len(wires) * 1e6,
                                       "client": (self_cpu() - c_self) / len(wires) * 1e6}
        out["sim_roundtrip_statuses"] = statuses
    finally:
        sim.stop()
    print(f"baselines: transform+sign {transform_rate:,.0f}/s, simulator round trip {rate:,.0f}/s", file=sys.stderr)

    # The end-to-end run.
    port = free_port()
    feedback = {"step_delay": args.step_delay} if args.feedback else {"enabled": False}
    sim = SimProcess(plan.sim_spec(f"http://127.0.0.1:{port}"), feedback)
    plan.sim_base = sim.base
    config_path = plan.write(port)
    report_path = work / "service-report.json"
    if args.workers > 1:  # the real `dockyard serve` with its workers (no stage profile)
        child = subprocess.Popen([sys.executable, "-m", "dockyard.cli", "serve", "--config", str(config_path)],
                                 stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    else:
        child = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--serve-child", str(config_path),
                                  "--report", str(report_path)] + (["--profile"] if args.profile else []),
                                 stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        if args.workers > 1:
            assert child.stderr is not None
            line = child.stderr.readline()
            url = line.split("serving on ", 1)[1].split()[0] if "serving on " in line else ""
            for _ in range(args.workers):  # each worker says when it is ready
                child.stderr.readline()
        else:
            assert child.stdout is not None
            url = child.stdout.readline().strip()
        if not url.startswith("http"):
            raise RuntimeError("the service did not start")
        from dockyard.demo import Harness

        harness = Harness(url, sim.base)
        pg0 = postgres_cpu() if args.store == "postgres" else 0.0
        svc0, sim0, me0 = tree_cpu(child.pid), proc_cpu(sim.process.pid), self_cpu()
        wall0 = time.perf_counter()
        sent = asyncio.run(send_orders(url, bodies, args.parallel))
        me_send = self_cpu() - me0
        accepted = len(sent["accepted"])
        stats = asyncio.run(harness.settle(accepted, args.timeout, feedback=args.feedback))
        wall = time.perf_counter() - wall0
        svc1, sim1, me1 = tree_cpu(child.pid), proc_cpu(sim.process.pid), self_cpu()
        pg1 = postgres_cpu() if args.store == "postgres" else 0.0
        if args.workers > 1:
            report_path.write_text(json.dumps({"threads": {}, "stages": []}), encoding="utf-8")
        else:
            child.send_signal(signal.SIGUSR1)
        for _ in range(100):
            if report_path.exists():
                break
            time.sleep(0.05)
        time.sleep(0.2)
        child.send_signal(signal.SIGTERM)
        child.wait(60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        sim.stop()
    report = json.loads(report_path.read_text("utf-8"))
    names = report["threads"]
    per_thread: Counter[str] = Counter()
    for tid, cpu in svc1.items():
        name = names.get(str(tid), "?")
        kind = ("main (event loop)" if name == "MainThread" else "writer" if name == "dockyard-writer"
                else "readers" if name.startswith("dockyard-read") else "other")
        if args.workers > 1:
            kind = f"{args.workers} workers (all threads)"
        per_thread[kind] += cpu - svc0.get(tid, 0.0)
    j = journal_figures(store)
    received, committed = j["received"], j["committed"]
    first = min(received.values())
    last_commit = max(at for _, at in committed)
    lat = [(at - received[o]) / 1000 for o, at in committed if o in received]
    n = len(orders)
    out.update({
        "counts": sent["counts"], "accepted": accepted, "delivered": len(committed),
        "by_delivery": j["by_delivery"], "outbox_left": stats["service"]["outbox_depth"],
        "accept_seconds": sent["seconds"], "accepted_per_s": n / sent["seconds"],
        "delivered_per_s": len(committed) / ((last_commit - first) / 1e6),
        "settled_seconds": (j["settled_at"] - first) / 1e6, "all_done_seconds": (j["last_at"] - first) / 1e6,
        "wall_seconds": wall,
        "ack_ms": {q: pct(sent["latencies"], q) for q in (50, 95, 99)},
        "wh_accepted_ms": {q: pct(lat, q) for q in (50, 95, 99)},
        "events": j["events"][0], "dup_events": j["dup_events"],
        "events_per_s": j["events"][0] / max(1e-9, (j["events"][2] - j["events"][1]) / 1e6) if j["events"][0] else 0,
        "forwarded": j["forwarded"][0],
        "cpu_us_per_order": {"service": sum(per_thread.values()) / n * 1e6,
                             **{f"service {k}": v / n * 1e6 for k, v in sorted(per_thread.items())},
                             "postgres": (pg1 - pg0) / n * 1e6, "simulator": (sim1 - sim0) / n * 1e6,
                             "client": (me1 - me0) / n * 1e6, "client (sending)": me_send / n * 1e6},
        "profile": {"on": args.profile, "stages": report["stages"], "threads_cpu": dict(per_thread)},
    })
    return out


def show(r: dict[str, Any]) -> None:
    n = r["n"]
    print(f"\n{n} orders, store {r['store']}, feedback {'on' if r['feedback'] else 'off'}, batch {r['batch']} x "
          f"{r['parallel']} parallel, warehouse concurrency {r['concurrency']}, {r['cpus']} CPUs, "
          f"Python {r['python']}")
    print(f"results: {r['counts']}; delivery: {r['by_delivery']}; outbox left: {r['outbox_left']}")
    print(f"\n{'':34} {'per s':>10} {'vs sim RTT':>11} {'vs transform':>13}")
    sim, tr = r["sim_roundtrip_per_s"], r["transform_sign_per_s"]
    rows = [("baseline: transform+sign in-process", tr), ("baseline: simulator round trip", sim),
            ("accepted (all 202s back)", r["accepted_per_s"]), ("delivered (warehouse accepted)", r["delivered_per_s"]),
            ("settled incl. feedback+forwarding", n / r["all_done_seconds"])]
    for name, value in rows:
        print(f"{name:34} {value:10,.0f} {value / sim:10.2f}x {value / tr:12.3f}x")
    print(f"\nfirst received → last delivered {r['delivered'] / r['delivered_per_s']:.2f}s; → last journal entry "
          f"(feedback forwarded) {r['all_done_seconds']:.2f}s; wall incl. settle polling {r['wall_seconds']:.1f}s")
    a, w = r["ack_ms"], r["wh_accepted_ms"]
    print(f"latency ingest → ack (per batch of {r['batch']}):   p50 {a[50]:8.1f} ms  p95 {a[95]:8.1f} ms  "
          f"p99 {a[99]:8.1f} ms")
    print(f"latency ingest → warehouse accepted: p50 {w[50]:8.1f} ms  p95 {w[95]:8.1f} ms  p99 {w[99]:8.1f} ms")
    print(f"feedback: {r['events']} events recorded ({r['events'] / n:.2f}/order, {r['dup_events']} duplicates), "
          f"{r['events_per_s']:,.0f} events/s; {r['forwarded']} forwarded upstream")
    print("\nCPU µs per order:")
    for k, v in r["cpu_us_per_order"].items():
        print(f"  {k:26} {v:8.0f}")
    rt = r["sim_roundtrip_cpu_us"]
    print(f"  (baseline round trip, per request: simulator {rt['simulator']:.0f}, client {rt['client']:.0f})")
    prof = r["profile"]
    if prof["on"]:
        threads = {"MainThread": "main (event loop)", "dockyard-writer": "writer"}
        by_thread: Counter[str] = Counter()
        rows = []
        for thread, stage, seconds, calls in prof["stages"]:
            kind = threads.get(thread, "readers" if thread.startswith("dockyard-read") else "other")
            by_thread[kind] += seconds
            rows.append((kind, stage, seconds, calls))
        for kind, cpu in prof["threads_cpu"].items():
            rest = cpu - by_thread.get(kind, 0.0)
            label = {"main (event loop)": "event loop, uvloop I/O, aiohttp tasks (not wrapped)",
                     "writer": "store: writer queue + sqlite/psycopg outside the wrapped calls",
                     "readers": "reads: /stats polling (settle)"}.get(kind, "other")
            rows.append((kind, label, rest, 0))
        total = sum(prof["threads_cpu"].values())
        print(f"\nservice CPU by stage (--profile: exclusive thread CPU of wrapped calls; total {total / n * 1e6:.0f} "
              f"µs/order):")
        for kind, stage, seconds, calls in sorted(rows, key=lambda x: -x[2]):
            if abs(seconds) / total < 0.002:
                continue
            per_call = f"{seconds / calls * 1e6:7.1f} µs/call" if calls else ""
            print(f"  {kind:18} {stage:62} {seconds / n * 1e6:6.0f} µs/order {seconds / total:6.1%} {per_call}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--serve-child"]:
        return serve_child(argv[1:])
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("-n", type=int, default=20000)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--store", choices=("sqlite", "postgres"), default="sqlite")
    ap.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/test",
                    help="a PostgreSQL server the benchmark may use: it runs in a new database "
                         "dockyard_e2e_bench there (dropped and created for each run)")
    ap.add_argument("--feedback", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--step-delay", type=float, default=0.05, help="simulator feedback: seconds between steps")
    ap.add_argument("--batch", type=int, default=200, help="orders per POST /orders/batch")
    ap.add_argument("--parallel", type=int, default=4, help="batch requests in flight")
    ap.add_argument("--concurrency", type=int, default=64, help="requests in flight per warehouse (service config)")
    ap.add_argument("--workers", type=int, default=1, help="service processes (`workers:` in the config)")
    ap.add_argument("--baseline-n", type=int, default=5000, help="orders for the two baselines")
    ap.add_argument("--profile", action="store_true",
                    help="split the service's CPU by stage (wraps its stage functions; costs some CPU itself)")
    ap.add_argument("--timeout", type=float, default=600.0)
    ap.add_argument("--mappings", type=Path, default=REPO / "mappings")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=None, help="also write every figure as JSON")
    args = ap.parse_args(argv)
    result = run(args)
    show(result)
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=1, default=str), encoding="utf-8")
    lost = result["accepted"] - sum(result["by_delivery"].get(k, 0) for k in ("delivered", "dlq", "in_doubt"))
    return 0 if lost == 0 and result["outbox_left"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
