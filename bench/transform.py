"""Benchmark corpus: compiled mappings against hand-written Python, each shape in the same run.

    python bench/transform.py [-n 20000] [--seed 42] [--rounds 7] [--shared ../shared/bench] [--only NAME]

Orders come from the shared generator (`gen_orders.py` in --shared, default ../shared/bench). Every
shape first checks that the compiled mapping and its baseline give equal output on every order
(exit 1 on any mismatch), then times the candidates on the same inputs, interleaved round by round,
best of --rounds, CPU time (`time.process_time`, GC off during a round: the machine is shared, and
CPU time is what a ratio of two candidates in one process means). Ratios are candidate / baseline;
below 1.0 is faster than the hand-written code.

Shapes (baselines in parentheses):
- reference: mappings/reference/deliveryorder.yaml (the shared reference_hand.py);
- json-render: the reference mapping's render() (transform() + orjson.dumps with a Decimal hook);
- flat: bench/specs/flat.yaml, 14 fields with context values, one filter, one join
  (corpus_baselines.flat);
- list-heavy: the reference mapping on the same orders grown to 20 lines each (reference_hand.py);
- xml-render: mappings/qimen/deliveryorder.create.yaml, render() (transform() + a plain lxml writer
  of the same tree, corpus_baselines.xml_bytes; equal bytes);
- inbound: mappings/qimen/deliveryorder.confirm.yaml, a warehouse's XML confirm → status event,
  parse_input() + transform() (corpus_baselines.confirm_event: lxml and dict building).
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import ModuleType
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
CTX = {"ownerCode": "OWNER-01", "warehouseCode": "WH-HZ-01"}
NOW = datetime(2023, 11, 12, tzinfo=timezone(timedelta(hours=8)))


def _load(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def _cpu(fn: Callable[[Any], Any], inputs: Sequence[Any]) -> float:
    gc.collect()
    gc.disable()
    try:
        start = time.process_time()
        for item in inputs:
            fn(item)
        return time.process_time() - start
    finally:
        gc.enable()


@dataclass
class Shape:
    name: str
    inputs: list[Any]
    baseline: Callable[[Any], Any]
    candidates: dict[str, Callable[[Any], Any]]
    equal: Callable[[Any], bool]  # one input: the compiled output equals the baseline's


def _grow(order: dict[str, Any], lines: int = 20) -> dict[str, Any]:
    """The order with its items repeated (skus made distinct) up to `lines` items."""
    items = order["items"] or [{"sku": "SKU-X", "name": "x", "qty": 1, "unit_price": "1.00", "discount": "0",
                                "is_gift": False}]
    grown = [dict(item, sku=f"{item['sku']}-{k}") for k in range(lines) for item in items][:lines]
    return dict(order, items=grown)


def shapes(n: int, seed: int, shared: Path) -> list[Shape]:
    import dockyard

    gen = _load(shared / "gen_orders.py", "shared_gen_orders")
    ref = _load(shared / "reference_hand.py", "shared_reference_hand")
    base = _load(HERE / "corpus_baselines.py", "bench_corpus_baselines")
    orders = gen.generate(n, seed)
    out: list[Shape] = []

    reference = dockyard.compile_file(REPO / "mappings" / "reference" / "deliveryorder.yaml")
    bound = reference.bind()
    out.append(Shape("reference", orders, ref.transform,
                     {"transform()": reference.transform, "bind()": bound,
                      "generated function": _raw(reference)},
                     lambda o: reference.transform(o) == ref.transform(o)))

    flat = dockyard.compile_file(HERE / "specs" / "flat.yaml")
    flat_bound = flat.bind(CTX)
    out.append(Shape("flat", orders, lambda o: base.flat(o, CTX),
                     {"transform(order, context=…)": lambda o: flat.transform(o, CTX), "bind(context)": flat_bound},
                     lambda o: flat.transform(o, CTX) == base.flat(o, CTX)))

    from dockyard.runtime.serialize import _json_default

    def json_plain(o: dict[str, Any]) -> bytes:
        # What a caller would write by hand: transform() and orjson with a hook for Decimal.
        import orjson

        return orjson.dumps(reference.transform(o), default=_json_default, option=orjson.OPT_PASSTHROUGH_DATETIME)

    out.append(Shape("json-render", orders, json_plain, {"render()": reference.render},
                     lambda o: reference.render(o) == json_plain(o)))

    heavy = [_grow(o) for o in orders]
    out.append(Shape("list-heavy", heavy, ref.transform,
                     {"transform()": reference.transform, "bind()": bound},
                     lambda o: reference.transform(o) == ref.transform(o)))

    qimen = dockyard.compile_file(REPO / "mappings" / "qimen" / "deliveryorder.create.yaml")
    qctx = dict(qimen.meta["examples"])
    # A fixed clock: the document carries the time it was made. The baseline is transform() and a
    # plain lxml writer of the same tree (no checks), as the goal states it.
    out.append(Shape("xml-render", orders, lambda o: base.xml_bytes(qimen.transform(o, qctx, NOW)),
                     {"render()": lambda o: qimen.render(o, qctx, NOW)},
                     lambda o: qimen.render(o, qctx, NOW) == base.xml_bytes(qimen.transform(o, qctx, NOW))))

    confirm = dockyard.compile_file(REPO / "mappings" / "qimen" / "deliveryorder.confirm.yaml")
    messages = [base.confirm_xml(o, i) for i, o in enumerate(orders)]
    cbound = confirm.bind(CTX, NOW)
    out.append(Shape("inbound", messages, lambda m: base.confirm_event(m, CTX),
                     {"parse_input() + transform()": lambda m: confirm.transform(confirm.parse_input(m), CTX, NOW),
                      "parse_input() + bind()": lambda m: cbound(confirm.parse_input(m))},
                     lambda m: confirm.transform(confirm.parse_input(m), CTX, NOW) == base.confirm_event(m, CTX)))
    return out


def _raw(mapping: Any) -> Callable[[Any], Any]:
    from dockyard.runtime.mapping import system_clock

    fn, ctx = mapping.module.transform, mapping.check_context(None)
    return lambda o: fn(o, ctx, system_clock)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("-n", type=int, default=20000)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "bench",
                    help="folder holding gen_orders.py and reference_hand.py")
    ap.add_argument("--only", action="append", default=None, help="run only this shape (repeatable)")
    args = ap.parse_args(argv)

    mismatches = 0
    print(f"{args.n} orders (seed {args.seed}), best of {args.rounds} rounds, CPU time, "
          f"Python {platform.python_version()}, {platform.machine()}")
    for shape in shapes(args.n, args.seed, args.shared):
        if args.only and shape.name not in args.only:
            continue
        bad = sum(1 for item in shape.inputs if not shape.equal(item))
        mismatches += bad
        timed = {"baseline (hand-written)": shape.baseline, **shape.candidates}
        best = {name: float("inf") for name in timed}
        for _ in range(args.rounds):
            for name, fn in timed.items():
                best[name] = min(best[name], _cpu(fn, shape.inputs))
        base = best["baseline (hand-written)"]
        print(f"\n{shape.name}: {len(shape.inputs) - bad}/{len(shape.inputs)} equal, {bad} mismatches")
        print(f"  {'':32} {'µs each':>9} {'ratio':>7}")
        for name, seconds in best.items():
            print(f"  {name:32} {seconds / len(shape.inputs) * 1e6:9.2f} {seconds / base:6.2f}x")
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
