"""In-process A/B of generated code: another commit's modules against this tree's, in one process.

    python bench/transform_ab.py --against /tmp/i13base/.venv/bin/python [--rounds 21] [--shared ../shared/bench]

`--against` is the Python of another worktree (with its own venv): it compiles the reference and flat
specs of *its* tree, and this process loads those module sources with this tree's runtime. A module
without `transform_entry` is run by `CompiledMapping.transform`, the method, so for a branch point
whose runtime method is this tree's, "theirs" is exactly what that commit runs. Both versions and
the hand-written baselines are then timed interleaved on the same orders, in chunks of 2,000, best of
--rounds per chunk, CPU time, GC off: on a shared, loaded machine this moves far less than two runs
of bench/transform.py (a chunk is short, so a burst of load rarely spoils the best of every round).
Output must be equal on every order first (exit 1 otherwise). The JSON rows run both modules through
this runtime; `render() method` is `CompiledMapping.render` (what `render()` was before the
instance's one-call render of i13f), `render()` what a caller gets now.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import transform as bench  # noqa: E402 - the corpus' loaders, orders and timer

_DUMP = """
import json, dockyard
print(json.dumps({name: dockyard.compile_file(path).source for name, path in
                  [("flat", "bench/specs/flat.yaml"), ("reference", "mappings/reference/deliveryorder.yaml")]}))
"""


def their_sources(python: Path) -> dict[str, str]:
    # The worktree holding the venv (not resolved: a venv's python is a link to the base install).
    python = python.absolute()
    tree = python.parents[2] if python.parents[1].name == ".venv" else Path.cwd()
    done = subprocess.run([str(python), "-c", _DUMP], cwd=tree, check=True, capture_output=True, text=True)
    sources: dict[str, str] = json.loads(done.stdout)
    return sources


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--against", type=Path, required=True, help="the Python of the other worktree's venv")
    ap.add_argument("-n", type=int, default=20000)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--rounds", type=int, default=21)
    ap.add_argument("--shared", type=Path, default=bench.REPO.parent / "shared" / "bench")
    args = ap.parse_args(argv)

    import orjson

    import dockyard
    from dockyard.runtime.mapping import CompiledMapping, load_module, system_clock
    from dockyard.runtime.serialize import _json_default

    gen = bench._load(args.shared / "gen_orders.py", "shared_gen_orders")
    ref = bench._load(args.shared / "reference_hand.py", "shared_reference_hand")
    base = bench._load(HERE / "corpus_baselines.py", "bench_corpus_baselines")
    orders = gen.generate(args.n, args.seed)
    ctx = bench.CTX
    ours = {"flat": dockyard.compile_file(HERE / "specs" / "flat.yaml"),
            "reference": dockyard.compile_file(bench.REPO / "mappings" / "reference" / "deliveryorder.yaml")}
    theirs = {name: CompiledMapping(load_module(source, f"<theirs {name}>", f"theirs_{name}"), source,
                                    ours[name].source_schema)
              for name, source in their_sources(args.against).items()}

    def function(m: Any, context: Any) -> Callable[[Any], Any]:
        fn, checked = m.module.transform, m.check_context(context)
        return lambda o: fn(o, checked, system_clock)

    def json_plain(m: Any) -> Callable[[Any], bytes]:
        return lambda o: orjson.dumps(m.transform(o), default=_json_default, option=orjson.OPT_PASSTHROUGH_DATETIME)

    timed: dict[str, Callable[[Any], Any]] = {"reference hand-written": ref.transform,
                                             "flat hand-written": lambda o: base.flat(o, ctx)}
    for who, ms in (("theirs", theirs), ("ours", ours)):
        r, f = ms["reference"], ms["flat"]
        timed |= {f"reference {who} transform()": r.transform, f"reference {who} function": function(r, None),
                  f"flat {who} transform(order, context)": (lambda m: lambda o: m.transform(o, ctx))(f),
                  f"flat {who} function": function(f, ctx),
                  f"flat {who} bind(context)": f.bind(ctx),
                  f"json {who} transform()+orjson": json_plain(r), f"json {who} render()": r.render,
                  # CompiledMapping.render, the method: what render() was before the instance's
                  # one-call render (i13f); the same method on main.
                  f"json {who} render() method": (lambda m: lambda o: CompiledMapping.render(m, o))(r)}
    bad = 0
    for o in orders:
        bad += not (theirs["reference"].transform(o) == ours["reference"].transform(o) == ref.transform(o))
        bad += not (theirs["flat"].transform(o, ctx) == ours["flat"].transform(o, ctx) == base.flat(o, ctx))
        bad += not (theirs["reference"].render(o) == ours["reference"].render(o)
                    == CompiledMapping.render(ours["reference"], o))
    print(f"{args.n} orders (seed {args.seed}), {bad} mismatches; chunks of 2,000, best of {args.rounds}, CPU time")
    chunks = [orders[i:i + 2000] for i in range(0, len(orders), 2000)]
    best = {(name, c): float("inf") for name in timed for c in range(len(chunks))}
    for _ in range(args.rounds):
        for c, chunk in enumerate(chunks):
            for name, fn in timed.items():
                best[(name, c)] = min(best[(name, c)], bench._cpu(fn, chunk))
    total = {name: sum(best[(name, c)] for c in range(len(chunks))) for name in timed}
    for name, seconds in total.items():
        shape, who = name.split()[:2]
        base_name = f"json {who} transform()+orjson" if shape == "json" else f"{shape} hand-written"
        print(f"  {name:38} {seconds / len(orders) * 1e6:7.2f} µs {seconds / total[base_name]:6.3f}x")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
