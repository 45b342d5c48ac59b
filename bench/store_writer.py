"""Benchmark: the state store's writes of an order's whole life, in-process, without HTTP.

    python bench/store_writer.py [-n 4000] [--rounds 5] [--store sqlite|postgres]
                                 [--against-python /path/to/other/venv/bin/python | --forward-cost]

What the service's writer thread does per order with feedback on, through the real store
operations and the real group commit (`Database.write`, many operations in flight so that groups
form as they do in the service): the order is ingested (IngestOp, batches of 200), its create job
claimed, marked sending and finished as accepted (claim, MarkSendingOp, FinishOp with the journal
row of a 200 answer), then four status events arrive one callback at a time (RecordEventsOp with
forwarding) and are forwarded upstream as the tree under test does it: from the upstream outbox
(schema v7 on: forward_log.lease once, then read_batch of 100 and FinishForwardsOp, one batch at a
time as the service's loop does), or, in an older tree, as upstream jobs (each queued behind the
order's previous one; claim, MarkSendingOp, FinishOp done, which promotes the next waiting event).

Figure: CPU µs per order of the process less its main thread (`time.process_time` less
`time.thread_time` of the thread that drives the coroutines): what the writer and reader threads
spent, best of the rounds. On PostgreSQL also the server's: the CPU of the backends serving the
benchmark's database (from /proc, the same machine), read when the run starts and when it ends
(the store's connections live for the whole run). With --against-python, the same script runs
under another interpreter (a venv with another checkout of Dockyard installed) in alternate
subprocesses, round by round, and the ratio is printed: both candidates see the same machine noise.
With --forward-cost, this tree runs alternately as it is and with the events recorded but not
forwarded (no forward jobs, no upstream lane): the difference is what forwarding costs the store.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

EVENTS = ("accepted", "picking", "shipped", "signed")


async def _life(db: Any, store: Any, orders: list[str], warehouse: str, forward: bool = True,
                payloads: dict[str, str] | None = None, inflight: int = 0) -> None:
    ids = (uuid.uuid4().hex for _ in itertools.repeat(None))

    def payload(no: str) -> str:
        if payloads is not None:
            return payloads[no]
        return json.dumps({"order_no": no, "lines": [{"sku": "A", "qty": 1}]})

    async def ingest(chunk: list[str]) -> None:
        items = [store.IngestItem(no, uuid.uuid4().hex, warehouse, "shop", "tmall", "fp-" + no,
                                  payload(no), 0, "default", False) for no in chunk]
        await db.write(store.IngestOp(items))

    await asyncio.gather(*(ingest(orders[i:i + 200]) for i in range(0, len(orders), 200)))

    async def run_lane(lane: str, wh: str, finish: Any) -> int:
        """Claim every ready job of the lane (64 at a time), mark each sending, finish each."""
        total = 0
        while True:
            out = await db.claim(lambda c: store.claim(c, lane, wh, 64, db.owner, 60_000_000, ids))
            if not out.jobs:
                return total
            total += len(out.jobs)

            async def one(job: Any) -> None:
                await db.write(store.MarkSendingOp(job.id, db.owner))
                await db.write(store.FinishOp([finish(job)]))
            await asyncio.gather(*(one(j) for j in out.jobs))

    def delivered(job: Any) -> Any:
        return store.JobResult(job.id, db.owner, "done", order_no=job.order_no, warehouse=warehouse,
                               order_status="accepted", delivery="delivered", warehouse_order_id="W" + job.order_no,
                               rows=[store.JournalRow(None, job.order_no, warehouse, "create", "committed", "ok",
                                                      12_000, {"http_status": 200, "request_id": job.request_id,
                                                               "answer": "<response><flag>success</flag></response>"})])

    def forwarded(job: Any) -> Any:
        return store.JobResult(job.id, db.owner, "done", order_no=job.order_no, lane="up", warehouse="_upstream",
                               rows=[store.JournalRow(None, job.order_no, "_upstream", "forward", "forwarded", "ok",
                                                      3_000, {"http_status": 200})])

    try:
        from dockyard.service import forward_log
    except ImportError:  # a tree before the upstream outbox: forward jobs
        forward_log = None

    async def run_outbox() -> None:
        """Forward the upstream outbox as the service's loop does: one batch of 100 at a time."""
        parts = sorted(await db.claim(lambda c: forward_log.lease(c, db.owner, 60_000_000, lambda _c, _o: False)))
        while True:
            batch, _ = await db.read(lambda c: forward_log.read_batch(c, parts, 100))
            if not batch:
                return
            await db.write(forward_log.FinishForwardsOp(batch, None))

    async def forward_all() -> None:
        if forward_log is not None:
            await run_outbox()
        else:
            await run_lane("up", "_upstream", forwarded)

    async def run_warehouse(concurrency: int) -> None:
        """As the service's warehouse loop: the shared limits (concurrency across nodes), a claim
        of the free slots whenever some are free, each job marked sending, then finished on its own
        with its answer (an outcome of its own: the finish's statement over arrays)."""
        limits = store.WarehouseLimits(concurrency=concurrency)
        running: set[asyncio.Task[None]] = set()
        freed = asyncio.Event()

        async def one(job: Any) -> None:
            await db.write(store.MarkSendingOp(job.id, db.owner))
            await asyncio.sleep(0.002)  # the exchange
            result = delivered(job)
            result.outcome = {"result": "accepted", "warehouse_order_id": "W" + job.order_no}
            result.ingested_at = 0
            await db.write(store.FinishOp([result]))
            freed.set()

        while True:
            free = concurrency - len(running)
            if free > 0:
                out = await db.claim(lambda c, free=free: store.claim(c, "wh", warehouse, free, db.owner,
                                                                      60_000_000, ids, limits))
                for job in out.jobs:
                    task = asyncio.create_task(one(job))
                    running.add(task)
                    task.add_done_callback(running.discard)
                if not out.jobs and not running:
                    return
            freed.clear()
            if running:
                await asyncio.wait([asyncio.ensure_future(freed.wait())], timeout=0.05)

    if inflight:
        await run_warehouse(inflight)
    else:
        await run_lane("wh", warehouse, delivered)
    for step, status in enumerate(EVENTS):
        async def callback(no: str, status: str = status, step: int = step) -> None:
            event = {"order_no": no, "status": status, "raw_status": status.upper(),
                     "waybills": [{"carrier_code": "SF", "waybill_no": "SF" + no}] if status == "shipped" else None}
            await db.write(store.RecordEventsOp(warehouse, "confirm", [store.EventRecord(event, f"{no}-{step}")],
                                                forward=forward, received_at=0))
        await asyncio.gather(*(callback(no) for no in orders))
        if step % 2 and forward:  # forwards lag behind the callbacks: events wait behind their order's previous one
            await forward_all()
    if forward:
        await forward_all()


def _backend_cpu(admin: Any, name: str) -> dict[int, float]:
    """CPU seconds so far of each backend serving database `name` (utime + stime from /proc)."""
    import os

    out: dict[int, float] = {}
    for (pid,) in admin.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s", (name,)).fetchall():
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[pid] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return out


def _sample_payloads(orders: list[str]) -> dict[str, str]:
    """Each order as the service stores a `bench/e2e.py` order (dockyard.sample_orders: about 1 kB
    of JSON with Chinese names and addresses), under the benchmark's order number."""
    from dockyard.sample_orders import generate

    return {no: json.dumps({**order, "order_no": no}, ensure_ascii=False)
            for no, order in zip(orders, generate(len(orders), 42), strict=True)}


def child(n: int, store_kind: str, pg_url: str, forward: bool = True, db_name: str = "dockyard_store_writer_bench",
          statements: bool = False, sample_orders: bool = False, setup_sql: list[str] | None = None,
          inflight: int = 0) -> dict[str, Any]:
    from pg_profile import StatementProfile  # bench/, beside this script

    from dockyard.service import store
    from dockyard.service.db import Database

    profile = StatementProfile() if statements and store_kind == "postgres" else None
    with tempfile.TemporaryDirectory() as tmp:
        if store_kind == "postgres":
            import psycopg

            name = db_name
            with psycopg.connect(pg_url, autocommit=True) as admin:
                admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
                admin.execute(f"CREATE DATABASE {name}")
            url = pg_url.rsplit("/", 1)[0] + "/" + name
        else:
            url = f"sqlite:///{tmp}/state.db"
        db = Database(url, readers=1)
        admin = None
        try:
            orders = [f"SW{i:07d}" for i in range(n)]
            payloads = _sample_payloads(orders) if sample_orders else None
            for sql in setup_sql or ():  # an experiment: e.g. a storage parameter on the fresh store
                db.write_sync(lambda c, sql=sql: c.execute(sql))
            if profile is not None:
                profile.stats.clear()  # the run's statements only, not the store's creation
            if store_kind == "postgres":
                admin = psycopg.connect(pg_url, autocommit=True)
                pg0 = _backend_cpu(admin, name)
            c0, t0, main0 = time.process_time(), time.perf_counter(), time.thread_time()
            asyncio.run(_life(db, store, orders, "qimen", forward, payloads, inflight))
            cpu, wall = time.process_time() - c0, time.perf_counter() - t0
            cpu -= time.thread_time() - main0  # the driving coroutines' share: the other threads remain
            server = None
            if admin is not None:
                pg1 = _backend_cpu(admin, name)
                server = sum(t - pg0.get(pid, 0.0) for pid, t in pg1.items())
            left = db.read_sync(lambda c: c.execute("SELECT state, COUNT(*) FROM dy_jobs GROUP BY state"))
            payloads = db.read_sync(lambda c: c.execute("SELECT payload FROM dy_jobs WHERE lane = 'up'"))
            # the upstream outbox (schema v7 on): one `forwarded` journal row per event it sent, none left
            outbox = db.read_sync(lambda c: c.execute(
                "SELECT (SELECT COUNT(*) FROM dy_journal WHERE step = 'forwarded' AND warehouse = '_upstream'), "
                "(SELECT COUNT(*) FROM dy_forwards)") if int(c.execute(
                "SELECT value FROM dy_meta WHERE name = 'schema_version'")[0][0]) >= 7 else [(0, 0)])
        finally:
            db.close()
            if admin is not None:
                admin.close()
    # every job done; every event forwarded once (an order's events may share a job: store.queue_forwards)
    forwarded = sum(len(store.forward_events(p)) for (p,) in payloads) + int(outbox[0][0])
    if set(dict(left)) != {"done"} or int(outbox[0][1]) or forwarded != (n * len(EVENTS) if forward else 0):
        raise SystemExit(f"the run did not end with every job done and every event forwarded: {left}, "
                         f"{forwarded} events forwarded")
    out: dict[str, Any] = {"cpu_us_per_order": cpu / n * 1e6, "wall_s": wall,
                           "jobs_per_order": sum(k for _, k in left) / n,
                           "server_us_per_order": None if server is None else server / n * 1e6}
    if profile is not None:
        out["statements"] = {k: [calls, ns / 1000 / n] for k, (calls, ns) in profile.stats.items()}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=4000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--store", choices=("sqlite", "postgres"), default="sqlite")
    ap.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    ap.add_argument("--against-python", help="another venv's python, run alternately as the baseline")
    ap.add_argument("--forward-cost", action="store_true",
                    help="this tree twice, alternately: events forwarded upstream (jobs) and recorded only")
    ap.add_argument("--db-name", default="dockyard_store_writer_bench",
                    help="the PostgreSQL database the run makes (and drops first)")
    ap.add_argument("--statements", action="store_true",
                    help="PostgreSQL: print the server's CPU per order of each statement (backend schedstat)")
    ap.add_argument("--sample-orders", action="store_true",
                    help="orders as bench/e2e.py sends them (about 1 kB of JSON each), not a one-line stub")
    ap.add_argument("--inflight", type=int, default=0,
                    help="deliver as the service does: this many jobs in flight under the shared limits, each "
                         "marked and finished on its own with its own answer (default: claims of 64, finished alike)")
    ap.add_argument("--setup-sql", action="append", default=[],
                    help="an experiment: SQL run on the fresh store before the run (repeatable)")
    ap.add_argument("--no-forward", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.n, args.store, args.pg_url, not args.no_forward, args.db_name, args.statements,
                               args.sample_orders, args.setup_sql, args.inflight)))
        return 0
    candidates: list[tuple[str, str, list[str]]] = [("this tree", sys.executable, [])]
    if args.against_python:
        candidates.insert(0, ("baseline", args.against_python, []))
    if args.forward_cost:  # the baseline is the full life; "this tree" records events without forwarding
        candidates = [("baseline", sys.executable, []), ("no forward", sys.executable, ["--no-forward"])]
    best: dict[str, float] = {}
    best_server: dict[str, float] = {}
    for r in range(args.rounds):
        for label, python, extra in candidates:
            out = subprocess.run([python, str(Path(__file__).resolve()), "--child", "-n", str(args.n), "--store",
                                  args.store, "--pg-url", args.pg_url, "--db-name", args.db_name,
                                  *(["--statements"] if args.statements else []),
                                  *(["--sample-orders"] if args.sample_orders else []),
                                  *([f"--inflight={args.inflight}"] if args.inflight else []),
                                  *(f"--setup-sql={sql}" for sql in args.setup_sql), *extra],
                                 capture_output=True, text=True, check=True,
                                 cwd=tempfile.gettempdir())
            res = json.loads(out.stdout.strip().splitlines()[-1])
            best[label] = min(best.get(label, float("inf")), res["cpu_us_per_order"])
            server = res.get("server_us_per_order")
            if server is not None:
                best_server[label] = min(best_server.get(label, float("inf")), server)
            shown = "" if server is None else f", PostgreSQL {server:6.0f} µs CPU/order"
            print(f"round {r + 1} {label:9s} {res['cpu_us_per_order']:8.0f} µs CPU/order{shown} "
                  f"({res['wall_s']:.1f} s)", flush=True)
            if res.get("statements"):
                ranked = sorted(res["statements"].items(), key=lambda kv: -kv[1][1])
                print(f"  server CPU per statement ({sum(v[1] for _, v in ranked):.0f} µs/order of "
                      f"{server or 0:.0f} measured at statements):")
                for sql, (calls, us) in ranked:
                    if us >= 1:
                        print(f"  {us:7.1f} µs/order {calls:7d} calls  {sql}")
    print(f"\n{args.n} orders x {1 + len(EVENTS)} jobs, {len(EVENTS)} events each, store {args.store}; best of "
          f"{args.rounds}:")
    for label, _, _ in candidates:
        ratio = f"  {best[label] / best['baseline']:.2f}x the baseline" if "baseline" in best else ""
        print(f"  {label:9s} {best[label]:8.0f} µs CPU/order{ratio}")
        if label in best_server:
            ratio = (f"  {best_server[label] / best_server['baseline']:.2f}x the baseline"
                     if "baseline" in best_server else "")
            print(f"  {'':9s} {best_server[label]:8.0f} µs PostgreSQL CPU/order{ratio}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
