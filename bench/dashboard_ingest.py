"""Benchmark: do open dashboards move ingest's latency? ("ten open dashboards don't move ingest's
p99", issue 12.)

    python bench/dashboard_ingest.py [--rate 150] [--seconds 20] [--rounds 3] [--viewers 10]
                                     [--store sqlite|postgres] [--pg-url URL]

Three processes as in production — the service (bench/e2e.py's `--serve-child`: what `dockyard
serve` does), the simulated warehouses (with their callbacks) and the load generator (this
process) — plus a fourth for the dashboard viewers, so that their client work is charged to
neither the service nor the load generator.

Each phase drives ingest open loop: one `POST /orders` per order at fixed arrival times (order i
at i/rate s), latency measured from the scheduled time (bench/e2e.py's open_loop), so that a
service that falls behind shows in the figures instead of slowing the arrivals down. The phases
alternate 0 viewers and --viewers viewers, interleaved (the order flips each round, so the store's
growing history does not favour one side), every round on the same service and store. A viewer
does what an open page does: it holds the server-sent event stream (/ui/api/stream, an overview
pushed every second) and polls /ui/api/overview once a second. Reported per setting: ingest p50
and p99 of the best round (lowest p99), every round's p99, the viewers' overview answers, and the
ratio of the p99s; and the service's CPU per second of each phase (its event loop's thread and the
others, from /proc), median over the rounds: what the viewers cost the service, a figure that the
machine's other load disturbs much less than a latency percentile. Then (--idle-rounds) phases
without ingest, 0 and N viewers in turn, over the window the rounds filled: the service's CPU per
second that the pages alone cost.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import e2e  # noqa: E402  (bench/e2e.py: the service child, open loop, percentiles, fresh PostgreSQL)

TOKEN = "bench-only-dashboard-token-0123456789"


def _viewers(url: str, n: int, stop: Any, counts: Any) -> None:
    """The viewers' process: n open pages until `stop` is set; counts[0] overview polls answered,
    counts[1] stream events read, counts[2] errors."""
    import aiohttp

    async def page(session: aiohttp.ClientSession) -> None:
        async def stream() -> None:
            while not stop.is_set():
                try:
                    async with session.get(f"{url}/ui/api/stream") as resp:
                        async for line in resp.content:
                            if line.startswith(b"event: overview"):
                                counts[1] += 1
                            if stop.is_set():
                                return
                except (aiohttp.ClientError, TimeoutError):
                    counts[2] += 1
                    await asyncio.sleep(0.5)

        async def poll() -> None:
            while not stop.is_set():
                try:
                    async with session.get(f"{url}/ui/api/overview") as resp:
                        await resp.read()
                        counts[0 if resp.status == 200 else 2] += 1
                except (aiohttp.ClientError, TimeoutError):
                    counts[2] += 1
                await asyncio.sleep(1.0)

        await asyncio.gather(stream(), poll())

    async def main() -> None:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with aiohttp.ClientSession(headers=headers, timeout=aiohttp.ClientTimeout(total=None, sock_read=30),
                                         connector=aiohttp.TCPConnector(limit=0)) as session:
            tasks = [asyncio.create_task(page(session)) for _ in range(n)]
            while not stop.is_set():
                await asyncio.sleep(0.1)
            for t in tasks:
                t.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(main())


def cpu(pid: int) -> tuple[float, float]:
    """The service's CPU seconds so far: its event loop's thread (the main thread), and every other
    thread (the store's writer, readers and checkpointer, the executor)."""
    threads = e2e.thread_cpu(pid)
    loop = threads.get(pid, 0.0)
    return loop, sum(threads.values()) - loop


def phase(url: str, bodies: list[bytes], rate: float, viewers: int, inflight: int, pid: int,
          idle: float = 0.0) -> dict[str, Any]:
    """One phase: `bodies` sent open loop with `viewers` pages open; or, with `idle` seconds, no
    ingest at all (what the pages alone cost the service)."""
    ctx = multiprocessing.get_context("spawn")
    stop, counts = ctx.Event(), ctx.Array("l", 3)
    proc = None
    if viewers:
        proc = ctx.Process(target=_viewers, args=(url, viewers, stop, counts), daemon=True)
        proc.start()
        time.sleep(3.0)  # the pages are open and streaming before the first order
    try:
        (loop0, rest0), wall0 = cpu(pid), time.perf_counter()
        if idle:
            time.sleep(idle)
            sent: dict[str, Any] = {"latencies": [0.0], "counts": {}}
        else:
            sent = asyncio.run(e2e.open_loop([url], bodies, rate, inflight))
        (loop1, rest1), wall = cpu(pid), time.perf_counter() - wall0
    finally:
        stop.set()
        if proc is not None:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
    lat = sent["latencies"]
    return {"viewers": viewers, "n": len(lat), "p50": e2e.pct(lat, 50), "p99": e2e.pct(lat, 99),
            "loop_ms_s": (loop1 - loop0) * 1000 / wall, "rest_ms_s": (rest1 - rest0) * 1000 / wall,
            "counts": sent["counts"], "polls": counts[0], "events": counts[1], "viewer_errors": counts[2]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rate", type=float, default=150.0, help="orders per second, open loop")
    ap.add_argument("--seconds", type=float, default=20.0, help="length of one phase")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--viewers", type=int, default=10)
    ap.add_argument("--inflight", type=int, default=256)
    ap.add_argument("--store", choices=("sqlite", "postgres"), default="sqlite")
    ap.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/test")
    ap.add_argument("--mappings", type=Path, default=e2e.REPO / "mappings")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--workdir", type=Path)
    ap.add_argument("--idle-rounds", type=int, default=3,
                    help="after the rounds: phases without ingest, 0 and N viewers in turn, the service's CPU")
    ap.add_argument("--idle-seconds", type=float, default=10.0)
    args = ap.parse_args(argv)

    import orjson

    from dockyard.demo import DemoPlan, SimProcess, build_demo_bundle, free_port
    from dockyard.sample_orders import generate

    work = args.workdir or Path(tempfile.mkdtemp(prefix="dockyard-dash-"))
    work.mkdir(parents=True, exist_ok=True)
    store = e2e.fresh_postgres(args.pg_url, "dockyard_dash_bench") if args.store == "postgres" else \
        f"sqlite:///{(work / 'state.db').resolve()}"
    plan = DemoPlan(work, args.mappings, store=store, dashboard_token=TOKEN)
    build_demo_bundle(args.mappings, plan.bundle)
    per_phase = int(args.rate * args.seconds)
    orders = generate(per_phase * 2 * args.rounds + 200, args.seed)
    singles = [orjson.dumps(o) for o in orders]
    port = free_port()
    sim = SimProcess(plan.sim_spec(f"http://127.0.0.1:{port}"), {"step_delay": 0.05})
    child: subprocess.Popen[str] | None = None
    try:
        plan.sim_base = sim.base
        config = plan.write(port)
        child = subprocess.Popen([sys.executable, str(HERE / "e2e.py"), "--serve-child", str(config),
                                  "--report", str(work / "report.json")], stdout=subprocess.PIPE, text=True,
                                 env={**os.environ, "PYTHONUNBUFFERED": "1"})
        assert child.stdout is not None
        url = child.stdout.readline().strip()
        if not url.startswith("http"):
            raise RuntimeError("the service did not start")
        asyncio.run(e2e.open_loop([url], singles[:200], 100.0, args.inflight))  # warm-up
        results: dict[int, list[dict[str, Any]]] = {0: [], args.viewers: []}
        at = 200
        for r in range(args.rounds):
            order = (0, args.viewers) if r % 2 == 0 else (args.viewers, 0)
            for viewers in order:
                res = phase(url, singles[at:at + per_phase], args.rate, viewers, args.inflight, child.pid)
                at += per_phase
                results[viewers].append(res)
                print(f"round {r + 1} viewers {viewers:2d}: ingest p50 {res['p50']:.1f} ms p99 {res['p99']:.1f} ms "
                      f"({res['n']} orders, {res['counts']}; overview polls {res['polls']}, stream events "
                      f"{res['events']}, viewer errors {res['viewer_errors']}); service CPU ms/s: event loop "
                      f"{res['loop_ms_s']:.0f}, other threads {res['rest_ms_s']:.0f}", file=sys.stderr)
        # The viewers alone: no ingest, the five-minute window as the rounds filled it (what the
        # overview reads), the service settled; its CPU per second with 0 and with N pages open.
        idle: dict[int, list[dict[str, Any]]] = {0: [], args.viewers: []}
        if args.idle_rounds:  # settled: the deliveries and callbacks of the rounds are done
            deadline, busy = time.monotonic() + 300, float("inf")
            while busy > 60 and time.monotonic() < deadline:
                before = sum(cpu(child.pid))
                time.sleep(2.0)
                busy = (sum(cpu(child.pid)) - before) * 500  # ms of CPU per second
            print(f"settled: service CPU {busy:.0f} ms/s without ingest or viewers", file=sys.stderr)
        for r in range(args.idle_rounds):
            for viewers in ((0, args.viewers) if r % 2 == 0 else (args.viewers, 0)):
                res = phase(url, [], args.rate, viewers, args.inflight, child.pid, idle=args.idle_seconds)
                idle[viewers].append(res)
                print(f"idle round {r + 1} viewers {viewers:2d}: service CPU ms/s: event loop {res['loop_ms_s']:.1f}, "
                      f"other threads {res['rest_ms_s']:.1f} (overview polls {res['polls']}, stream events "
                      f"{res['events']})", file=sys.stderr)
    finally:
        if child is not None:
            e2e._stop(child)
        sim.stop()
        if args.workdir is None:  # a store of some hundred MB, a bundle and test-only secrets
            shutil.rmtree(work, ignore_errors=True)
    best = {v: min(rs, key=lambda x: x["p99"]) for v, rs in results.items()}
    print(f"\n{args.store}, {args.rate:g} orders/s open loop, {args.seconds:g} s per phase, best of {args.rounds} "
          f"(lowest p99), interleaved")
    print("| viewers | ingest p50 | ingest p99 | p99 of every round | overview polls + stream events per phase |")
    print("| ---: | ---: | ---: | --- | ---: |")
    for v, b in best.items():
        rounds = ", ".join(f"{x['p99']:.1f}" for x in results[v])
        print(f"| {v} | {b['p50']:.1f} ms | {b['p99']:.1f} ms | {rounds} | {b['polls']} + {b['events']} |")
    ratio = best[args.viewers]["p99"] / max(1e-9, best[0]["p99"])
    print(f"p99 with {args.viewers} viewers / without: {ratio:.2f}")
    # What the viewers cost the service, in CPU: less disturbed by the machine's other load than a
    # latency percentile (a process waiting for a core uses none). Median over the rounds.
    print("| viewers | service CPU ms/s: event loop | other threads (store) | total | median over rounds |")
    print("| ---: | ---: | ---: | ---: | --- |")
    med = {}
    for v, rs in results.items():
        loop, rest = (statistics.median(x[k] for x in rs) for k in ("loop_ms_s", "rest_ms_s"))
        med[v] = loop + rest
        every = ", ".join(f"{x['loop_ms_s'] + x['rest_ms_s']:.0f}" for x in rs)
        print(f"| {v} | {loop:.0f} | {rest:.0f} | {loop + rest:.0f} | {every} |")
    print(f"service CPU with {args.viewers} viewers - without: {med[args.viewers] - med[0]:+.0f} ms/s "
          f"(median of rounds)")
    if args.idle_rounds:
        print(f"\nno ingest, {args.idle_seconds:g} s phases, the window as the rounds left it; median of "
              f"{args.idle_rounds} rounds")
        print("| viewers | service CPU ms/s: event loop | other threads (store) | total | every round |")
        print("| ---: | ---: | ---: | ---: | --- |")
        for v, rs in idle.items():
            loop, rest = (statistics.median(x[k] for x in rs) for k in ("loop_ms_s", "rest_ms_s"))
            med[v] = loop + rest
            every = ", ".join(f"{x['loop_ms_s'] + x['rest_ms_s']:.1f}" for x in rs)
            print(f"| {v} | {loop:.1f} | {rest:.1f} | {loop + rest:.1f} | {every} |")
        print(f"idle: service CPU with {args.viewers} viewers - without: {med[args.viewers] - med[0]:+.1f} ms/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
