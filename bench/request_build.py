"""Benchmark: `build_request` (transform, serialize, sign) for the demo plan's four create flows,
as the delivery worker calls it, with this tree's runtime against its previous behaviour, in one
process, interleaved.

    python bench/request_build.py [-n 3000] [--rounds 7]

Orders: `dockyard.sample_orders.generate(n, 42)`, routed as `bench/e2e.py` routes them (QIMEN XML,
SF form + JSON, JD JSON, Cainiao form + XML), each read back from its stored JSON first, as
`bench/e2e.py`'s "transform+sign in-process" baseline does. Candidates, on the same orders:

- `before`: percent-encoding by a regular expression with a Python callback per run of unsafe
  characters (what `form_quote`, `url_quote` and `java_urlencode` did), and `json_plain` used for
  JSON targets only, so the fingerprint of an XML or form document walked the whole document;
- `now`: `runtime.percent`'s one `str.translate`, and `json_plain` (generated for every target,
  with the writer's own look at list values only) for every document's fingerprint.

CPU time (`time.process_time`) per order, best of the rounds, the candidates alternating round by
round; every request's bytes must be equal (exit 1 otherwise).
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CLOCK = datetime(2026, 11, 11, 0, 0, 1, tzinfo=UTC)  # one clock for both: the bytes are compared


def regex_percent_encoders() -> dict[str, Callable[[str], str]]:
    """`form_quote`, `url_quote` and `java_urlencode` as they were before `runtime/percent.py`: a
    regular expression with a Python callback per run of unsafe characters (the reference of this
    benchmark and of bench/callback_pieces.py)."""
    unsafe_form, unsafe_java = re.compile(r"[^A-Za-z0-9_.~ -]+"), re.compile(r"[^A-Za-z0-9.*_ -]+")

    def runs(match: re.Match[str]) -> str:
        return "%" + match.group().encode("utf-8").hex("%").upper()

    return {"form_quote": lambda t: unsafe_form.sub(runs, t).replace(" ", "+"),
            "url_quote": lambda t: unsafe_form.sub(runs, t).replace(" ", "%20"),
            "java_urlencode": lambda t: unsafe_java.sub(runs, t).replace(" ", "+")}


def _before() -> dict[str, Any]:
    """The replaced behaviours, as functions to install in place of this tree's."""
    from dockyard.runtime.mapping import CompiledMapping

    def json_plain(self: CompiledMapping, doc: Any) -> bool:
        check = self._json_plain  # JSON targets only
        return check is not None and check(doc) is True

    return {**regex_percent_encoders(), "json_plain": json_plain}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("-n", type=int, default=3000)
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args(argv)

    from dockyard.demo import DemoPlan, build_demo_bundle, free_port
    from dockyard.runtime import request, serialize, signing
    from dockyard.runtime.mapping import CompiledMapping
    from dockyard.sample_orders import generate
    from dockyard.service.config import load_config
    from dockyard.service.context import ServiceContext, dumps, load_order

    work = Path(tempfile.mkdtemp(prefix="dockyard-request-build-"))
    plan = DemoPlan(work, ROOT / "mappings", store=f"sqlite:///{work / 'state.db'}", concurrency=64, workers=1)
    build_demo_bundle(ROOT / "mappings", plan.bundle)
    plan.sim_base = "http://127.0.0.1:9"
    ctx = ServiceContext.build(load_config(plan.write(free_port())))
    routed = []
    for order in generate(args.n, 42):
        wh = ctx.config.warehouses[ctx.router.route(order)]
        routed.append((wh, ctx.mappings[wh.flows["create"].request], dumps(order), uuid.uuid4().hex))

    now = {"form_quote": serialize.form_quote, "url_quote": serialize.url_quote,
           "java_urlencode": signing.java_urlencode, "json_plain": CompiledMapping.json_plain}
    before = _before()

    def install(fns: dict[str, Any]) -> None:
        serialize.form_quote = fns["form_quote"]
        serialize.url_quote = fns["url_quote"]
        request.url_quote = fns["url_quote"]
        signing.java_urlencode = fns["java_urlencode"]
        CompiledMapping.json_plain = fns["json_plain"]  # type: ignore[method-assign]

    def run() -> tuple[float, list[bytes]]:
        wires: list[bytes] = []
        start = time.process_time()
        for wh, mapping, text, request_id in routed:
            try:
                prepared = request.build_request(mapping, load_order(text), context=wh.context, secrets=ctx.secrets,
                                                 request_id=request_id, clock=CLOCK)
            except Exception as exc:  # refused by its mapping, the same in both
                wires.append(repr(exc).encode())
                continue
            wire = prepared.request
            wires.append(wire.body + repr(wire.headers).encode() + wire.url.encode())
        return (time.process_time() - start) / len(routed), wires

    best = {"before": float("inf"), "now": float("inf")}
    outputs: dict[str, list[bytes]] = {}
    for _ in range(args.rounds):
        for name, fns in (("before", before), ("now", now)):
            install(fns)
            took, outputs[name] = run()
            best[name] = min(best[name], took)
    install(now)
    if outputs["before"] != outputs["now"]:
        print("the two candidates built different requests", file=sys.stderr)
        return 1
    print(f"{len(routed)} orders, build_request; CPU per order, best of {args.rounds} rounds")
    print(f"  before   {best['before'] * 1e6:7.1f} µs")
    print(f"  now      {best['now'] * 1e6:7.1f} µs   {best['now'] / best['before']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
