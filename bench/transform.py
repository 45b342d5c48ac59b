"""Benchmark: the compiled reference mapping against a hand-written Python baseline, same run.

    python bench/transform.py [-n 20000] [--seed 42] [--rounds 7] [--shared ../shared/bench]

Generates orders with the project's own seeded generator (bench/orders.py), compiles
mappings/reference/deliveryorder.yaml, checks that the compiled mapping and bench/baseline.py give
equal output on every order, then times both on the same orders, interleaved round by round, and
prints orders/s for each and the CPU-time ratio (compiled / baseline; below 1.0 means faster than
the hand-written code). With --shared, it also checks the compiled output against the shared
reference implementation on orders from the shared generator (both are read from that folder, not
copied), and times against that reference on those orders.
Only transform (dict → dict) is timed, as in the shared benchmark; serialization is timed apart.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def _load(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def _best_time(fn: Callable[[dict[str, Any]], Any], orders: list[dict[str, Any]]) -> float:
    gc.collect()
    gc.disable()
    try:
        start = time.process_time()  # CPU time: the machine is shared, wall time says little
        for order in orders:
            fn(order)
        return time.process_time() - start
    finally:
        gc.enable()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("-n", type=int, default=20000)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--shared", type=Path, default=None, help="folder holding gen_orders.py and reference_hand.py")
    args = ap.parse_args(argv)

    import dockyard
    from dockyard.runtime.serialize import to_json_bytes

    orders_mod = _load(HERE / "orders.py", "bench_orders")
    baseline = _load(HERE / "baseline.py", "bench_baseline")
    mapping = dockyard.compile_file(REPO / "mappings" / "reference" / "deliveryorder.yaml")
    orders = orders_mod.generate(args.n, args.seed)

    mismatches = [o["order_no"] for o in orders if mapping.transform(o) != baseline.transform(o)]
    print(f"equality: {len(orders) - len(mismatches)}/{len(orders)} orders equal, {len(mismatches)} mismatches")
    if mismatches:
        print("  first mismatches:", ", ".join(mismatches[:5]))

    if args.shared is not None:
        gen = _load(args.shared / "gen_orders.py", "shared_gen_orders")
        ref = _load(args.shared / "reference_hand.py", "shared_reference_hand")
        shared_orders = gen.generate(args.n, args.seed)
        bad = sum(1 for o in shared_orders if mapping.transform(o) != ref.transform(o))
        print(f"shared reference: {len(shared_orders) - bad}/{len(shared_orders)} orders equal, {bad} mismatches")
        mismatches.extend(["shared"] * bad)

    # The generated function is what a service calls per order; CompiledMapping.transform adds the
    # context check, the decimal context and error translation around it. Time both.
    raw = mapping.module.transform
    ctx = mapping.check_context(None)
    from dockyard.runtime.mapping import system_clock

    candidates: dict[str, Callable[[dict[str, Any]], Any]] = {
        "baseline (hand-written)": baseline.transform,
        "dockyard transform()": mapping.transform,
        "dockyard bind()": mapping.bind(),
        "dockyard generated function": lambda o: raw(o, ctx, system_clock),
    }
    timed = orders
    if args.shared is not None:
        # The shared figures: the shared hand-written reference on the shared generator's orders.
        candidates["baseline (hand-written)"] = ref.transform
        timed = shared_orders
    best = {name: float("inf") for name in candidates}
    for _ in range(args.rounds):
        for name, fn in candidates.items():
            best[name] = min(best[name], _best_time(fn, timed))
    base = best["baseline (hand-written)"]
    print(f"\n{len(orders)} orders, best of {args.rounds} rounds, Python {platform.python_version()}, "
          f"{platform.machine()}")
    print(f"{'':30} {'orders/s':>10} {'time ratio':>11}")
    for name, seconds in best.items():
        print(f"{name:30} {len(orders) / seconds:10.0f} {seconds / base:10.2f}x")

    docs = [mapping.transform(o) for o in orders]
    ser = min(_best_time(to_json_bytes, docs) for _ in range(3))
    print(f"\nserialize (JSON, orjson + checks): {len(docs) / ser:.0f} documents/s")
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
