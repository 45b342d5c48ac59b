"""What tracing costs an order when no exporter is configured (`opentelemetry` installed, no SDK).

An order's path opens four spans: ingest, the delivery attempt, its HTTP exchange and the
callback. This times those four call sites, as the service makes them, per order, for:

  * baseline — `dockyard/service/tracing.py` as it was at commit 8f3c533 (read from git): the
    no-op OpenTelemetry API runs in full (tracer lookup, a non-recording span, context attach
    and detach) whenever `opentelemetry` can be imported;
  * current  — this tree's `tracing`, which looks at the tracer provider once and then hands
    out one shared null context.

CPU time (time.process_time), candidates interleaved, GC off during a round, best of 7 rounds.

    python bench/tracing_overhead.py            # 50,000 orders per round
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BASELINE_COMMIT = "8f3c533"


def _baseline_module() -> ModuleType:
    source = subprocess.run(["git", "-C", str(ROOT), "show", f"{BASELINE_COMMIT}:dockyard/service/tracing.py"],
                            capture_output=True, text=True, check=True).stdout
    spec = importlib.util.spec_from_loader("tracing_baseline", loader=None)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    exec(compile(source, f"{BASELINE_COMMIT}:tracing.py", "exec"), module.__dict__)  # noqa: S102 - our own file
    return module


def _order(tracing: Any, n: int) -> float:
    """CPU seconds for n orders' span call sites."""
    tracking = "4bf92f3577b34da6a3ce929d0e0e4736"
    started = time.process_time()
    for i in range(n):
        if tracing.enabled():
            with tracing.span("dockyard.ingest", tracking, {"dockyard.order_no": "T-1", "dockyard.warehouse": "jd",
                                                            "dockyard.outcome": "accepted"}, start_us=i):
                pass
        with tracing.span("dockyard.deliver", tracking, {"dockyard.order_no": "T-1", "dockyard.warehouse": "jd",
                                                         "dockyard.flow": "create", "dockyard.attempt": 1}), \
                tracing.span("POST", None, {"http.request.method": "POST"}):
            pass
        with tracing.span("dockyard.feedback", tracking, {"dockyard.order_no": "T-1", "dockyard.warehouse": "jd",
                                                          "dockyard.flow": "confirm"}, start_us=i):
            pass
    return time.process_time() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orders", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from dockyard.service import tracing

    candidates = {"baseline (8f3c533)": _baseline_module(), "current": tracing}
    assert not tracing.enabled(), "configure no OpenTelemetry SDK for this benchmark"
    best = {name: float("inf") for name in candidates}
    for _ in range(args.rounds):
        for name, module in candidates.items():
            gc.disable()
            try:
                best[name] = min(best[name], _order(module, args.orders))
            finally:
                gc.enable()
    base = best["baseline (8f3c533)"]
    print(f"{args.orders:,} orders, best of {args.rounds} rounds, CPU time")
    print(f"{'candidate':<22} {'µs/order':>10} {'vs baseline':>12}")
    for name, seconds in best.items():
        print(f"{name:<22} {seconds / args.orders * 1e6:>10.3f} {seconds / base:>11.3f}×")


if __name__ == "__main__":
    main()
