"""Benchmark: do open dashboards move ingest's latency? ("ten open dashboards don't move ingest's
p99", issue 12.)

    python bench/dashboard_ingest.py [--rate 150] [--seconds 10] [--pairs 12] [--budget 480]
                                     [--viewers 10] [--store sqlite|postgres] [--pg-url URL]
                                     [--service-python PYTHON]

`--service-python` serves with another tree's interpreter (its venv, with that tree installed
editable: e.g. a worktree of main), so that one script measures both trees the same way.

Three processes as in production — the service (bench/e2e.py's `--serve-child`: what `dockyard
serve` does), the simulated warehouses (with their callbacks) and the load generator (this
process) — plus a fourth for the dashboard viewers, so that their client work is charged to
neither the service nor the load generator.

Each phase drives ingest open loop: one `POST /orders` per order at fixed arrival times (order i
at i/rate s), latency measured from the scheduled time (bench/e2e.py's open_loop), so that a
service that falls behind shows in the figures instead of slowing the arrivals down. A viewer
does what an open page does: it holds the server-sent event stream (/ui/api/stream, an overview
pushed every second) and polls /ui/api/overview once a second; the pages stay in one process for
the whole run and are opened or closed between phases.

On a shared machine a p99 moves by 10-100x between phases of the same setting (another process
takes the cores for a while), so the question is asked many times over, in short pairs: a phase
without viewers and one with, the order flipping every pair (a drift of the machine's load or of
the store favours neither side), at most --pairs pairs and no new pair after --budget seconds.
Reported: every pair's p99 with and without, and the median of the paired differences (with -
without) with how many pairs were higher with viewers and the sign test's p (about 0.5 either
way = no effect this run can see); the same for p50 and for the service's CPU per second (its
event loop's thread and the others, from /proc: what the viewers cost the service, which the
machine's other load disturbs far less than a percentile), the load generator's own lag (a late
client inflates the figures of its phase), and the viewers' own CPU. Then (--idle-rounds) phases
without ingest, pages closed and open in turn, over the window the pairs filled: the service's
CPU per second that the pages alone cost.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
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


def _viewers(url: str, n: int, stop: Any, active: Any, counts: Any) -> None:
    """The viewers' process: n pages, open while `active` is set (each holds the event stream and
    polls the overview once a second), closed while it is not, until `stop` is set; counts[0]
    overview polls answered, counts[1] stream events read, counts[2] errors, counts[3] pages with
    their stream open now."""
    import aiohttp

    async def page(session: aiohttp.ClientSession) -> None:
        async def stream() -> None:
            while not stop.is_set():
                if not active.is_set():
                    await asyncio.sleep(0.05)
                    continue
                try:
                    async with session.get(f"{url}/ui/api/stream") as resp:
                        counts[3] += 1
                        try:
                            async for line in resp.content:
                                if line.startswith(b"event: overview"):
                                    counts[1] += 1
                                if stop.is_set() or not active.is_set():
                                    break  # the page is closed: its connection goes
                        finally:
                            counts[3] -= 1
                except (aiohttp.ClientError, TimeoutError):
                    counts[2] += 1
                    await asyncio.sleep(0.5)

        async def poll() -> None:
            while not stop.is_set():
                if not active.is_set():
                    await asyncio.sleep(0.05)
                    continue
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


class Viewers:
    """One process of N pages for the whole run, opened and closed between phases (no interpreter
    start per phase), so that phases can be short and many."""

    def __init__(self, url: str, n: int) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.stop, self.active, self.counts = ctx.Event(), ctx.Event(), ctx.Array("l", 4)
        self.n = n
        self.proc = ctx.Process(target=_viewers, args=(url, n, self.stop, self.active, self.counts), daemon=True)
        self.proc.start()

    def open(self, settle: float) -> None:
        """Every page open and its stream reading, then `settle` seconds more."""
        self.active.set()
        deadline = time.monotonic() + 15
        while self.counts[3] < self.n and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(settle)

    def close(self, settle: float) -> None:
        """Every page closed (its stream's connection gone), then `settle` seconds more."""
        self.active.clear()
        deadline = time.monotonic() + 15
        while self.counts[3] > 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(settle)

    def cpu(self) -> float:
        """The viewers' own CPU seconds so far (the client: not the service's)."""
        return sum(e2e.thread_cpu(self.proc.pid or 0).values()) if self.proc.is_alive() else 0.0

    def end(self) -> None:
        self.stop.set()
        self.active.clear()
        self.proc.join(10)
        if self.proc.is_alive():
            self.proc.kill()


def cpu(pid: int) -> tuple[float, float]:
    """The service's CPU seconds so far: its event loop's thread (the main thread), and every other
    thread (the store's writer, readers and checkpointer, the executor)."""
    threads = e2e.thread_cpu(pid)
    loop = threads.get(pid, 0.0)
    return loop, sum(threads.values()) - loop


def phase(url: str, bodies: list[bytes], rate: float, viewers: Viewers, on: bool, inflight: int, pid: int,
          settle: float, idle: float = 0.0) -> dict[str, Any]:
    """One phase: `bodies` sent open loop with the pages open (`on`) or closed; or, with `idle`
    seconds, no ingest at all (what the pages alone cost the service)."""
    if on:
        viewers.open(settle)
    else:
        viewers.close(settle)
    polls0, events0, errors0 = viewers.counts[0], viewers.counts[1], viewers.counts[2]
    (loop0, rest0), wall0, client0 = cpu(pid), time.perf_counter(), viewers.cpu()
    if idle:
        time.sleep(idle)
        sent: dict[str, Any] = {"latencies": [0.0], "lags": [0.0], "counts": {}}
    else:
        sent = asyncio.run(e2e.open_loop([url], bodies, rate, inflight))
    (loop1, rest1), wall = cpu(pid), time.perf_counter() - wall0
    lat = sent["latencies"]
    return {"viewers": viewers.n if on else 0, "n": len(lat), "p50": e2e.pct(lat, 50), "p99": e2e.pct(lat, 99),
            "client_lag_p99": e2e.pct(sent["lags"], 99) if sent["lags"] else 0.0,
            "loop_ms_s": (loop1 - loop0) * 1000 / wall, "rest_ms_s": (rest1 - rest0) * 1000 / wall,
            "viewer_client_ms_s": (viewers.cpu() - client0) * 1000 / wall, "counts": sent["counts"],
            "polls": viewers.counts[0] - polls0, "events": viewers.counts[1] - events0,
            "viewer_errors": viewers.counts[2] - errors0}


def sign_test(wins: int, n: int) -> float:
    """Two-sided exact sign test: the chance of a split at least this uneven if either side were
    as likely to be higher."""
    if n == 0:
        return 1.0
    k = min(wins, n - wins)
    return min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / float(2 ** n))


def paired(pairs: list[tuple[dict[str, Any], dict[str, Any]]], key: str) -> tuple[float, int, int, float]:
    """Median of (with viewers - without) over the pairs, how many pairs are higher with viewers,
    of how many (ties left out), and the sign test's p."""
    diffs = [on[key] - off[key] for off, on in pairs]
    higher, lower = sum(d > 0 for d in diffs), sum(d < 0 for d in diffs)
    return statistics.median(diffs), higher, higher + lower, sign_test(higher, higher + lower)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rate", type=float, default=150.0, help="orders per second, open loop")
    ap.add_argument("--seconds", type=float, default=10.0, help="length of one phase")
    ap.add_argument("--pairs", type=int, default=12, help="at most this many pairs of phases (0 and N viewers)")
    ap.add_argument("--budget", type=float, default=480.0,
                    help="no new pair is started after this many seconds of pairs")
    ap.add_argument("--settle", type=float, default=2.0, help="seconds after pages open or close, before a phase")
    ap.add_argument("--viewers", type=int, default=10)
    ap.add_argument("--inflight", type=int, default=256)
    ap.add_argument("--store", choices=("sqlite", "postgres"), default="sqlite")
    ap.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/test")
    ap.add_argument("--pg-db", default="dockyard_dash_bench",
                    help="the database the run makes afresh (dropped first) on the server of --pg-url")
    ap.add_argument("--mappings", type=Path, default=e2e.REPO / "mappings")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--workdir", type=Path)
    ap.add_argument("--idle-rounds", type=int, default=3,
                    help="after the pairs: phases without ingest, 0 and N viewers in turn, the service's CPU")
    ap.add_argument("--idle-seconds", type=float, default=10.0)
    ap.add_argument("--service-python", default=sys.executable, metavar="PYTHON",
                    help="serve with this interpreter (another tree's venv, e.g. /work/base/.venv/bin/python): "
                         "the service is that tree's code, the rest of the run this script's")
    args = ap.parse_args(argv)

    import orjson

    from dockyard.demo import DemoPlan, SimProcess, build_demo_bundle, free_port
    from dockyard.sample_orders import generate

    work = args.workdir or Path(tempfile.mkdtemp(prefix="dockyard-dash-"))
    work.mkdir(parents=True, exist_ok=True)
    store = e2e.fresh_postgres(args.pg_url, args.pg_db) if args.store == "postgres" else \
        f"sqlite:///{(work / 'state.db').resolve()}"
    plan = DemoPlan(work, args.mappings, store=store, dashboard_token=TOKEN)
    build_demo_bundle(args.mappings, plan.bundle)
    per_phase = int(args.rate * args.seconds)
    orders = generate(per_phase * 2 * args.pairs + 200, args.seed)
    singles = [orjson.dumps(o) for o in orders]
    port = free_port()
    sim = SimProcess(plan.sim_spec(f"http://127.0.0.1:{port}"), {"step_delay": 0.05})
    child: subprocess.Popen[str] | None = None
    viewers: Viewers | None = None
    pairs: list[tuple[dict[str, Any], dict[str, Any]]] = []
    idle: dict[int, list[dict[str, Any]]] = {0: [], args.viewers: []}
    try:
        plan.sim_base = sim.base
        config = plan.write(port)
        child = subprocess.Popen([args.service_python, str(HERE / "e2e.py"), "--serve-child", str(config),
                                  "--report", str(work / "report.json")], stdout=subprocess.PIPE, text=True,
                                 env={**os.environ, "PYTHONUNBUFFERED": "1"})
        assert child.stdout is not None
        url = child.stdout.readline().strip()
        if not url.startswith("http"):
            raise RuntimeError("the service did not start")
        asyncio.run(e2e.open_loop([url], singles[:200], 100.0, args.inflight))  # warm-up
        viewers = Viewers(url, args.viewers)
        at, started = 200, time.monotonic()
        # Pairs of phases, 0 and N viewers, the order flipping every pair (ABBA: a drift in the
        # machine's load or the store's size favours neither), until --pairs or --budget.
        for k in range(args.pairs):
            if k and time.monotonic() - started > args.budget:
                print(f"the budget of {args.budget:g} s is spent after {k} pairs", file=sys.stderr)
                break
            got: dict[bool, dict[str, Any]] = {}
            for on in ((False, True) if k % 2 == 0 else (True, False)):
                got[on] = res = phase(url, singles[at:at + per_phase], args.rate, viewers, on, args.inflight,
                                      child.pid, args.settle)
                at += per_phase
                print(f"pair {k + 1} viewers {res['viewers']:2d}: ingest p50 {res['p50']:.1f} ms p99 "
                      f"{res['p99']:.1f} ms (client lag p99 {res['client_lag_p99']:.1f} ms; {res['n']} orders, "
                      f"{res['counts']}; overview polls {res['polls']}, stream events {res['events']}, viewer "
                      f"errors {res['viewer_errors']}); service CPU ms/s: event loop {res['loop_ms_s']:.0f}, "
                      f"other threads {res['rest_ms_s']:.0f}", file=sys.stderr)
            pairs.append((got[False], got[True]))
        # The viewers alone: no ingest, the five-minute window as the pairs filled it (what the
        # overview reads), the service settled; its CPU per second with the pages closed and open.
        if args.idle_rounds:  # settled: the deliveries and callbacks of the pairs are done
            deadline, busy = time.monotonic() + 300, float("inf")
            while busy > 60 and time.monotonic() < deadline:
                before = sum(cpu(child.pid))
                time.sleep(2.0)
                busy = (sum(cpu(child.pid)) - before) * 500  # ms of CPU per second
            print(f"settled: service CPU {busy:.0f} ms/s without ingest or viewers", file=sys.stderr)
        for r in range(args.idle_rounds):
            for on in ((False, True) if r % 2 == 0 else (True, False)):
                res = phase(url, [], args.rate, viewers, on, args.inflight, child.pid, args.settle,
                            idle=args.idle_seconds)
                idle[res["viewers"]].append(res)
                print(f"idle round {r + 1} viewers {res['viewers']:2d}: service CPU ms/s: event loop "
                      f"{res['loop_ms_s']:.1f}, other threads {res['rest_ms_s']:.1f} (overview polls {res['polls']}, "
                      f"stream events {res['events']})", file=sys.stderr)
    finally:
        if viewers is not None:
            viewers.end()
        if child is not None:
            e2e._stop(child)
        sim.stop()
        if args.workdir is None:  # a store of some hundred MB, a bundle and test-only secrets
            shutil.rmtree(work, ignore_errors=True)
    n = args.viewers
    print(f"\nservice: {args.service_python}")
    print(f"\n{args.store}, {args.rate:g} orders/s open loop, {len(pairs)} pairs of {args.seconds:g} s phases "
          f"(0 and {n} viewers, the order flipping each pair)")
    print(f"| pair | ingest p99, 0 viewers | ingest p99, {n} viewers | difference | p50, 0 / {n} | "
          f"client lag p99, 0 / {n} | service CPU ms/s, 0 / {n} |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for k, (closed, opened) in enumerate(pairs):
        print(f"| {k + 1} | {closed['p99']:.1f} ms | {opened['p99']:.1f} ms | "
              f"{opened['p99'] - closed['p99']:+.1f} ms | "
              f"{closed['p50']:.1f} / {opened['p50']:.1f} ms | {closed['client_lag_p99']:.1f} / "
              f"{opened['client_lag_p99']:.1f} ms | {closed['loop_ms_s'] + closed['rest_ms_s']:.0f} / "
              f"{opened['loop_ms_s'] + opened['rest_ms_s']:.0f} |")
    if pairs:
        for pair in pairs:
            for x in pair:
                x["cpu_ms_s"] = x["loop_ms_s"] + x["rest_ms_s"]
        print(f"median p99: {statistics.median(x['p99'] for x, _ in pairs):.1f} ms without, "
              f"{statistics.median(x['p99'] for _, x in pairs):.1f} ms with {n} viewers")
        for key, what, unit in (("p99", "ingest p99", "ms"), ("p50", "ingest p50", "ms"), ("cpu_ms_s", "service CPU",
                                "ms/s"), ("loop_ms_s", "  of which the event loop", "ms/s")):
            med, higher, counted, p = paired(pairs, key)
            print(f"{what}, with {n} viewers - without, median of paired differences: {med:+.1f} {unit} "
                  f"(higher with viewers in {higher} of {counted} pairs; sign test p = {p:.2f})")
        print(f"the viewers' own process (the client, not the service): "
              f"{statistics.median(opened['viewer_client_ms_s'] for _, opened in pairs):.0f} ms/s of CPU")
    if args.idle_rounds:
        settled: dict[int, float] = {}
        print(f"\nno ingest, {args.idle_seconds:g} s phases, the window as the pairs left it; median of "
              f"{args.idle_rounds} rounds")
        print("| viewers | service CPU ms/s: event loop | other threads (store) | total | every round |")
        print("| ---: | ---: | ---: | ---: | --- |")
        for v, rs in idle.items():
            loop, rest = (statistics.median(x[k] for x in rs) for k in ("loop_ms_s", "rest_ms_s"))
            settled[v] = loop + rest
            every = ", ".join(f"{x['loop_ms_s'] + x['rest_ms_s']:.1f}" for x in rs)
            print(f"| {v} | {loop:.1f} | {rest:.1f} | {loop + rest:.1f} | {every} |")
        print(f"idle: service CPU with {n} viewers - without: {settled[n] - settled[0]:+.1f} ms/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
