"""Benchmark: what one warehouse callback costs the service, through its real HTTP path.

    python bench/callbacks.py [-n 1500] [--rounds 5] [--against-python /path/to/other/venv/bin/python]
    python bench/callbacks.py -n 2000 --rounds 3 --switch-ab 0.001    # the GIL switch interval, A/B in one run

The service of `bench/e2e.py` (the demo plan: QIMEN, SF, JD and Cainiao warehouses, the library's
mappings, SQLite) serves in this process, without its deliverer: `n` orders are stored first
(spread over the warehouses as routing spreads them), then a client process pushes every
callback of every order's life, as the simulator signs them (QIMEN process reports and the
delivery confirm, SF route pushes, Cainiao status uploads and the consign confirm; JD pushes
none), 32 orders at a time, each order's callbacks in turn. Every callback is verified, mapped,
recorded with its forward job and acknowledged; none is forwarded (no deliverer runs), so what is
measured is the callback path alone.

Figure: CPU µs per callback of the service's event loop thread (`time.thread_time` around the
client's run: HTTP parsing, guard, verification, reading, mapping, the ack) and of its other
threads (the writer's group commits), best of the rounds. The client's CPU is its own process's
and is not counted. With --against-python, the same script runs under another interpreter (a
venv with another checkout of Dockyard installed), round by round in alternate subprocesses, and
the ratio is printed: both candidates see the same machine noise. With --as-serve, each round sets
up the collector as `serve` does once it is up (gc.freeze, and the tree's SERVE_GC_THRESHOLDS
where it has them); without it, the process collects with Python's defaults, as before.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
MAPPINGS = HERE.parent / "mappings"


def _pushes(plan: Any, orders: list[tuple[str, str]]) -> list[list[dict[str, str]]]:
    """Per order, its callbacks as the simulator would push them: [{path, query, type, body}]."""
    from dockyard.simulate.feedback import STEPS, build_push
    from dockyard.simulate.warehouses import OrderState, SimWarehouse, WarehouseState

    spec = plan.sim_spec("http://127.0.0.1:9")
    states = {w["name"]: WarehouseState(SimWarehouse(w["name"], w["kind"], w["secret"], w["callback_base"],
                                                     context=w["context"]), i)
              for i, w in enumerate(spec["warehouses"])}
    out: list[list[dict[str, str]]] = []
    for i, (order_no, warehouse) in enumerate(orders):
        ws = states[warehouse]
        order = OrderState(order_no, f"WO{i:08d}", f"SF{7000000000 + i}", "SF", None, [("1", "SKU-1", 1)])
        pushes = []
        for _stage, code in STEPS[ws.spec.kind]:
            push = build_push(ws, order, code)
            if push is None:
                continue
            pushes.append({"path": f"/callbacks/{warehouse}/{push.flow}", "query": push.query or {},
                           "type": push.content_type, "body": base64.b64encode(push.body).decode("ascii")})
        if pushes:
            out.append(pushes)
    return out


def client_child(argv: list[str]) -> int:
    """Post every order's callbacks (from the JSON file argv[1]) to argv[0], 32 orders at a time."""
    import aiohttp

    base, path = argv
    work: list[list[dict[str, str]]] = json.loads(Path(path).read_text())
    statuses: dict[int, int] = {}

    async def main() -> None:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as session:
            queue = list(reversed(work))

            async def worker() -> None:
                while queue:
                    for push in queue.pop():
                        async with session.post(base + push["path"], params=push["query"],
                                                data=base64.b64decode(push["body"]),
                                                headers={"Content-Type": push["type"]}) as resp:
                            await resp.read()
                            statuses[resp.status] = statuses.get(resp.status, 0) + 1

            await asyncio.gather(*(worker() for _ in range(32)))

    asyncio.run(main())
    sys.stdout.write(json.dumps(statuses) + "\n")
    return 0


def _thread_cpu() -> float:
    return time.thread_time()


class _SwitchAB:
    """Alternates the interpreter's GIL switch interval between two values every `period` s while
    the callbacks run, and files what happens under each: how late a 5 ms timer fires on the event
    loop, how long a store write takes from submit to answer (what a request waits for), how long
    the writer's group commits take, and the CPU (whole process) per write. One run, interleaved in
    time, so that the machine's noise falls on both alike."""

    def __init__(self, values: tuple[float, float], period: float = 0.25) -> None:
        self.values, self.period = values, period
        self.current = 0
        self.lags: dict[int, list[float]] = {0: [], 1: []}
        self.writes: dict[int, list[float]] = {0: [], 1: []}
        self.groups: dict[int, list[float]] = {0: [], 1: []}
        self.cpu: dict[int, float] = {0: 0.0, 1: 0.0}
        self.done = False

    def wrap(self, db: Any) -> None:
        write, commit_group = db.write, db._commit_group

        async def timed_write(op: Any) -> Any:
            side, t0 = self.current, time.perf_counter()
            try:
                return await write(op)
            finally:
                if side == self.current:
                    self.writes[side].append((time.perf_counter() - t0) * 1e3)

        def timed_group(batch: Any) -> None:
            side, t0 = self.current, time.perf_counter()
            try:
                commit_group(batch)
            finally:
                if side == self.current:
                    self.groups[side].append((time.perf_counter() - t0) * 1e3)

        db.write, db._commit_group = timed_write, timed_group

    async def alternate(self) -> None:
        while not self.done:
            sys.setswitchinterval(self.values[self.current])
            cpu0 = time.process_time()
            await asyncio.sleep(self.period)
            self.cpu[self.current] += time.process_time() - cpu0
            self.current = 1 - self.current

    async def probe(self) -> None:
        while not self.done:
            side, t0 = self.current, time.perf_counter()
            await asyncio.sleep(0.005)
            if side == self.current:
                self.lags[side].append((time.perf_counter() - t0 - 0.005) * 1e3)

    def report(self) -> dict[str, Any]:
        from dockyard.demo import percentile as pct  # nearest rank, NaN when empty, as e2e.py reports

        out = {}
        for side, value in enumerate(self.values):
            w = self.writes[side]
            out[f"{value:g}"] = {
                "lag_p50_ms": pct(self.lags[side], 50), "lag_p99_ms": pct(self.lags[side], 99),
                "write_p50_ms": pct(w, 50), "write_p99_ms": pct(w, 99), "writes": len(w),
                "group_p50_ms": pct(self.groups[side], 50), "group_p99_ms": pct(self.groups[side], 99),
                "cpu_us_per_write": self.cpu[side] / max(1, len(w)) * 1e6}
        return out


def _as_serve() -> None:
    """What `serve` (app.run_forever) does to the collector once the service is up, in the tree
    under test: everything loaded so far frozen, and the tree's thresholds for serving if it has
    any (SERVE_GC_THRESHOLDS; Python's own otherwise)."""
    import gc

    from dockyard.service import app

    gc.freeze()
    thresholds = getattr(app, "SERVE_GC_THRESHOLDS", None)
    if thresholds:
        gc.set_threshold(*thresholds)


def one_round(n: int, switch: float | None = None) -> dict[str, Any]:
    """Serve, store n orders, let the client push their callbacks; CPU per callback (and, with
    `switch`, the switch-interval comparison of _SwitchAB)."""
    from aiohttp import web

    import dockyard
    from dockyard.demo import DemoPlan, build_demo_bundle, free_port
    from dockyard.service import store
    from dockyard.service.app import Service
    from dockyard.service.config import load_config
    from dockyard.service.context import ServiceContext

    # the candidate's own library (a baseline venv's checkout compiles its own specs)
    own = Path(dockyard.__file__).resolve().parent.parent / "mappings"
    mappings = own if own.is_dir() else MAPPINGS
    work = Path(tempfile.mkdtemp(prefix="dockyard-cb-"))
    plan = DemoPlan(work, mappings, store=f"sqlite:///{(work / 'state.db').resolve()}")
    build_demo_bundle(mappings, plan.bundle)
    port = free_port()
    plan.sim_base = "http://127.0.0.1:9"  # no deliverer runs: nothing is ever sent there
    ctx = ServiceContext.build(load_config(plan.write(port)))
    pushing = [w for w in ctx.config.warehouses.values() if w.callbacks]
    orders = [(f"CB{i:08d}", pushing[i % len(pushing)].name) for i in range(n)]
    pushes = _pushes(plan, orders)
    total = sum(len(p) for p in pushes)
    (work / "pushes.json").write_text(json.dumps(pushes))

    async def main() -> dict[str, Any]:
        service = Service(ctx)
        items = [store.IngestItem(no, f"t{no}", wh, "shop", "tmall", "fp-" + no,
                                  json.dumps({"order_no": no}), 0, "default", False) for no, wh in orders]
        for i in range(0, len(items), 200):
            await service.db.write(store.IngestOp(items[i:i + 200]))
        runner = web.AppRunner(service.app(), access_log=None, handle_signals=False)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        if os.environ.get("DOCKYARD_BENCH_AS_SERVE"):  # --as-serve: the collector as `serve` sets it up
            _as_serve()
        ab = _SwitchAB((sys.getswitchinterval(), switch)) if switch else None
        tasks = []
        if ab is not None:
            ab.wrap(service.db)
            tasks = [asyncio.create_task(ab.alternate()), asyncio.create_task(ab.probe())]
        loop0, all0 = _thread_cpu(), time.process_time()
        client = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--client-child", f"http://127.0.0.1:{port}", str(work / "pushes.json"),
            stdout=subprocess.PIPE)
        out, _ = await client.communicate()
        if ab is not None:
            ab.done = True
            await asyncio.gather(*tasks)
        # the writer may still be finishing the last group: wait for its answers to be in the store
        loop1, all1 = _thread_cpu(), time.process_time()
        recorded = await service.db.read(lambda c: c.execute("SELECT COUNT(*) FROM dy_events")[0][0])
        await runner.cleanup()
        service.db.close()
        return {"statuses": json.loads(out), "recorded": int(recorded),
                "loop_us": (loop1 - loop0) / total * 1e6, "other_us": ((all1 - all0) - (loop1 - loop0)) / total * 1e6,
                **({"switch": ab.report()} if ab is not None else {})}

    from dockyard.service.app import install_uvloop

    install_uvloop()
    result = asyncio.run(main())
    result.update(callbacks=total, orders=n)
    return result


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--client-child":
        return client_child(argv[1:])
    if argv and argv[0] == "--round-child":
        switch = float(argv[2]) if len(argv) > 2 else None
        sys.stdout.write(json.dumps(one_round(int(argv[1]), switch)) + "\n")
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=1500, help="orders (each pushes 4-5 callbacks, JD none)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--against-python", help="another venv's python, run alternately as the baseline")
    ap.add_argument("--as-serve", action="store_true",
                    help="set up the collector as `serve` does once it is up (gc.freeze, and the tree's "
                         "SERVE_GC_THRESHOLDS where it has them); without it, Python's defaults as before")
    ap.add_argument("--switch-ab", type=float, metavar="S",
                    help="this tree only: alternate the GIL switch interval between Python's and S seconds "
                         "during each round, and compare loop lag, store-write latency and group commits")
    args = ap.parse_args(argv)
    if args.switch_ab:
        return _switch_rounds(args.n, args.rounds, args.switch_ab)
    candidates = {"this tree": sys.executable}
    if args.against_python:
        candidates = {"baseline": args.against_python, "this tree": sys.executable}
    best: dict[str, dict[str, Any]] = {}
    for r in range(args.rounds):
        for name, python in candidates.items():
            env = {**os.environ, **({"DOCKYARD_BENCH_AS_SERVE": "1"} if args.as_serve else {})}
            run = subprocess.run([python, __file__, "--round-child", str(args.n)], capture_output=True, text=True,
                                 check=False, timeout=600, env=env)
            if run.returncode != 0:
                sys.stderr.write(run.stderr)
                return 1
            res = json.loads(run.stdout.strip().splitlines()[-1])
            ok = res["statuses"].get("200", 0)
            print(f"round {r + 1} {name:10} {res['callbacks']} callbacks ({ok} answered 200, {res['recorded']} "
                  f"recorded): loop {res['loop_us']:.0f} + other threads {res['other_us']:.0f} µs CPU/callback",
                  file=sys.stderr)
            if ok != res["callbacks"] or res["recorded"] < res["callbacks"]:
                print(f"  not every callback was applied: {res['statuses']}", file=sys.stderr)
                return 1
            total = res["loop_us"] + res["other_us"]
            if name not in best or total < best[name]["loop_us"] + best[name]["other_us"]:
                best[name] = res
    print(f"{args.n} orders' callbacks, best of {args.rounds} (µs CPU per callback: loop + other threads = total):")
    for name, res in best.items():
        print(f"  {name:10} {res['loop_us']:6.0f} + {res['other_us']:5.0f} = {res['loop_us'] + res['other_us']:6.0f}")
    if len(best) == 2:
        b, t = best["baseline"], best["this tree"]
        print(f"  ratio      loop {t['loop_us'] / b['loop_us']:.2f}x, other {t['other_us'] / b['other_us']:.2f}x, "
              f"total {(t['loop_us'] + t['other_us']) / (b['loop_us'] + b['other_us']):.2f}x")
    return 0


def _switch_rounds(n: int, rounds: int, value: float) -> int:
    keys = ("lag_p50_ms", "lag_p99_ms", "write_p50_ms", "write_p99_ms", "group_p50_ms", "group_p99_ms",
            "cpu_us_per_write")
    print(f"{'round':5} {'interval':>8} " + " ".join(f"{k:>16}" for k in keys))
    for r in range(rounds):
        run = subprocess.run([sys.executable, __file__, "--round-child", str(n), str(value)], capture_output=True,
                             text=True, check=False, timeout=600)
        if run.returncode != 0:
            sys.stderr.write(run.stderr)
            return 1
        for interval, figures in json.loads(run.stdout.strip().splitlines()[-1])["switch"].items():
            print(f"{r + 1:5} {interval:>8} " + " ".join(f"{figures[k]:16.1f}" for k in keys))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
