"""Benchmark: how far the flat shape's generated code is from what it cannot do without.

    python bench/flat_floor.py --shared ../shared/bench [-n 20000] [--rounds 9]

Issue 13 asks `transform(order, context=…)` of bench/specs/flat.yaml to take at most 0.90× the
time of its hand-written twin (bench/corpus_baselines.flat). This script takes the mapping's
compiled `transform()` apart to say where the floor is: it times, interleaved against the
baseline, best of the rounds, CPU time,

- `transform()` as compiled (the call: its checks of the order, the context and the options,
  then the statements);
- `bind(context)` (the statements behind a bound context's checks);
- the generated `transform` function alone (no checks of the call, context passed as a dict);
- that function without any of its ten "is None → MissingValue" checks (what spec-located
  errors for missing values cost: the lower bound of a function that still does the same work).

Each variant is checked for equal output on every order before it is timed (exit 1 otherwise).
The last variant is not a candidate for the product (a missing value would then pass as None):
it only shows how much of the gap is left once the checks are gone.

Two more rows take pieces out of the hand-written function itself (they give other documents, so
they are timed, not compared): without its money (the Decimal quantize), and without its money
and its `skus` join. What each piece costs by hand is what a compiler could at most win there.
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

HERE = Path(__file__).resolve().parent
CTX = {"ownerCode": "OWNER-01", "warehouseCode": "WH-HZ-01"}


def _load(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _function(source: str, without_none_checks: bool) -> Callable[..., Any]:
    """The module's trace-free `transform(_src, _ctx, _clock)`, compiled on its own in a namespace
    made by running the whole module (its imports and constants)."""
    namespace: dict[str, Any] = {}
    exec(compile(source, "<flat module>", "exec"), namespace)  # noqa: S102 - the compiler's own output
    if without_none_checks:
        text = source[source.index("def transform(_src"):source.index("def transform_entry")]
        text, n = re.subn(r"\n    if _v\d+ is None:\n        raise MissingValue\(\d+\)", "", text)
        assert n > 0, "the generated function has no None checks to take out: update this script"
        exec(compile(text, "<flat transform>", "exec"), namespace)  # noqa: S102 - the same, less its checks
    return namespace["transform"]  # type: ignore[no-any-return]


def _hand_less(o: dict[str, Any], ctx: dict[str, str], *, join: bool) -> dict[str, Any]:
    """bench/corpus_baselines.flat with its amount a constant, and without the skus join unless `join`."""
    r = o["receiver"]
    remark = o.get("remark")
    return {
        "orderCode": o["order_no"],
        "ownerCode": ctx["ownerCode"],
        "warehouseCode": ctx["warehouseCode"],
        "shop": o["shop_code"],
        "buyer": o["buyer"]["nick"],
        "receiverName": r["name"],
        "receiverMobile": r["mobile"],
        "province": r["province"],
        "city": r["city"],
        "district": r["district"],
        "address": r["address"].strip(),
        "amount": "0.00",
        "remark": "" if remark is None else remark,
        "skus": ",".join([i["sku"] for i in o["items"] if i["qty"] > 0]) if join else "",
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--shared", type=Path, default=HERE.parent.parent / "shared" / "bench")
    args = parser.parse_args()

    import dockyard

    sys.path.insert(0, str(HERE))
    from transform import _cpu as timed  # the corpus' own timing: CPU time of one pass, GC off

    orders = _load(args.shared / "gen_orders.py", "shared_gen_orders").generate(args.n, args.seed)
    base = _load(HERE / "corpus_baselines.py", "bench_corpus_baselines")
    flat = dockyard.compile_file(HERE / "specs" / "flat.yaml")
    bound = flat.bind(CTX)
    function = _function(flat.source, without_none_checks=False)
    bare = _function(flat.source, without_none_checks=True)
    candidates: dict[str, Callable[[Any], Any]] = {
        "baseline (hand-written)": lambda o: base.flat(o, CTX),
        "transform(order, context=…)": lambda o: flat.transform(o, CTX),
        "bind(context)": bound,
        "generated function alone": lambda o: function(o, CTX, None),
        "… without its None checks": lambda o: bare(o, CTX, None),
    }
    pieces: dict[str, Callable[[Any], Any]] = {
        "hand-written less its money": lambda o: _hand_less(o, CTX, join=True),
        "… and less its skus join": lambda o: _hand_less(o, CTX, join=False),
    }
    for name, fn in candidates.items():
        wrong = sum(1 for o in orders if fn(o) != base.flat(o, CTX))
        if wrong:
            print(f"{name}: {wrong} mismatches against the baseline")
            return 1
    timed_all = {**candidates, **pieces}
    best = dict.fromkeys(timed_all, float("inf"))
    for _ in range(args.rounds):
        for name, fn in timed_all.items():
            best[name] = min(best[name], timed(fn, orders))
    print(f"{args.n} orders (seed {args.seed}), best of {args.rounds} rounds, CPU time, "
          f"Python {sys.version.split()[0]}; 0 mismatches")
    print(f"  {'':34s} {'µs each':>8s}   ratio")
    for name, seconds in best.items():
        print(f"  {name:34s} {seconds / args.n * 1e6:8.2f}   {seconds / best['baseline (hand-written)']:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
