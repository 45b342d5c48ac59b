"""Benchmark: the CPU ingest spends per order (issue 10), each piece as it was and as it is, in one
run: interleaved (every round runs every candidate), best of N rounds, CPU time
(time.process_time), GC off during a round.

Pieces, on generated orders sent the way bench/e2e.py sends them (orjson, batches of 200):
- nesting bound: `safe_json.depth` (what `loads` walked) against `safe_json.deeper_than`;
- decimal check: the order's money texts through `_is_decimal` as it was (to_decimal, as_tuple)
  and as it is (one regex);
- verdict: fastjsonschema compiled from the schema as written (a function per `$ref`, called with
  a path built by `.format(**locals())`) against the compile `OrderValidator` makes now;
- fingerprint: `json.dumps(sort_keys=True)` + sha256 against orjson's same bytes + sha256;
- whole: `read_body` + `OrderChecker.check` for every order, with the old pieces patched back in,
  against the code as it is;
- suspect body: `check(suspect=True)` for every order, as for a batch in which something (one
  emoji escaped as a surrogate pair, one number with an exponent) made the body suspect: before,
  jsonschema judged every order of it; now only an order holding an exponent.

    python bench/ingest_cpu.py                 # 3,000 orders, batches of 200, 7 rounds
    python bench/ingest_cpu.py --rounds 11 --orders 6000
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import sys
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

from ingest_bounds import best_interleaved  # the same timer (bench/ is the script's folder)


def old_is_decimal(value: object) -> bool:
    """`ingest._is_decimal` before issue 10, kept as it was: its imports inside, run on every call,
    were part of its cost (`ingest._is_decimal_read` is the same verdict without them)."""
    from dockyard.runtime import safe_json
    from dockyard.runtime.errors import DockyardError
    from dockyard.runtime.functions import to_decimal

    if isinstance(value, str):
        try:
            number = to_decimal(value)
        except (ValueError, ArithmeticError, DockyardError):
            return False
        return len(number.as_tuple().digits) <= safe_json.MAX_DIGITS
    if isinstance(value, safe_json.ExponentDecimal):
        return False
    if isinstance(value, Decimal | float):
        return bool(value == value and value not in (Decimal("Infinity"), Decimal("-Infinity")))
    return not isinstance(value, safe_json.Refused)


def old_is_datetime(value: object) -> bool:
    """`ingest._is_datetime` before issue 10 (its import inside)."""
    from dockyard.runtime.errors import DockyardError

    if isinstance(value, str):
        from dockyard.runtime.dates import parse_datetime

        try:
            parse_datetime(value)
        except (ValueError, DockyardError):
            return False
    return True


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--orders", type=int, default=3000)
    ap.add_argument("--batch", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args(argv)

    import fastjsonschema
    import orjson

    from dockyard.runtime import safe_json
    from dockyard.sample_orders import generate
    from dockyard.service import ingest
    from dockyard.service.config import LimitsConfig, Route
    from dockyard.service.routing import Router

    orders = list(generate(args.orders, seed=42))
    bodies = [orjson.dumps(orders[i:i + args.batch]) for i in range(0, len(orders), args.batch)]
    limits = LimitsConfig()
    checker = ingest.OrderChecker(Router((Route("wh", default=True),)), limits)
    parsed = [ingest.read_body(body, limits) for body in bodies]
    assert not any(p.suspect for p in parsed), "generated orders hold nothing to refuse"
    read = [order for p in parsed for order in p.value]
    schema = ingest.order_schema()
    old_fast = fastjsonschema.compile(copy.deepcopy(schema), formats={"decimal": old_is_decimal,
                                                                      "date-time": old_is_datetime})
    new_fast = checker.validator.fast
    money = [v for o in read for v in [*(line[k] for line in o["items"] for k in ("unit_price", "discount")
                                         if k in line), *o["amounts"].values()]]

    # Same answers first: a benchmark of different work would mean nothing.
    assert [old_is_decimal(v) for v in money] == [ingest._is_decimal(v) for v in money]
    assert [ingest._json_fingerprint(o) for o in read] == [ingest.fingerprint(o) for o in read]
    assert all(not safe_json.deeper_than(p.value, limits.max_depth) for p in parsed)
    for o in read:
        old_fast(o)
        new_fast(o)

    @contextlib.contextmanager
    def as_before() -> Iterator[None]:
        saved = (safe_json.deeper_than, checker.validator.fast, ingest.fingerprint, ingest._holds_exponent)
        safe_json.deeper_than = lambda value, bound: safe_json.depth(value, bound + 1) > bound  # type: ignore[assignment]
        checker.validator.fast = old_fast
        ingest.fingerprint = ingest._json_fingerprint  # type: ignore[assignment]
        ingest._holds_exponent = lambda value: True  # type: ignore[assignment]  # jsonschema on every suspect order
        try:
            yield
        finally:
            (safe_json.deeper_than, checker.validator.fast, ingest.fingerprint,
             ingest._holds_exponent) = saved  # type: ignore[assignment]

    def whole() -> None:
        for body in bodies:
            p = ingest.read_body(body, limits)
            for order in p.value:
                checker.check(order, suspect=p.suspect)

    def whole_before() -> None:
        with as_before():
            whole()

    def suspect() -> None:
        for order in read:
            checker.check(order, suspect=True)

    def suspect_before() -> None:
        with as_before():
            suspect()

    values = [p.value for p in parsed]
    pieces = {
        "nesting bound": (lambda: [safe_json.depth(v, limits.max_depth + 1) for v in values],
                          lambda: [safe_json.deeper_than(v, limits.max_depth) for v in values]),
        "decimal check": (lambda: [old_is_decimal(v) for v in money], lambda: [ingest._is_decimal(v) for v in money]),
        "verdict": (lambda: [old_fast(o) for o in read], lambda: [new_fast(o) for o in read]),
        "fingerprint": (lambda: [ingest._json_fingerprint(o) for o in read],
                        lambda: [ingest.fingerprint(o) for o in read]),
        "read_body + check": (whole_before, whole),
        "check, suspect body": (suspect_before, suspect),
    }
    candidates: dict[str, Callable[[], Any]] = {}
    for name, (before, now) in pieces.items():
        candidates[f"{name} (before)"] = before
        candidates[f"{name} (now)"] = now
    times = best_interleaved(candidates, args.rounds)
    n = len(read)
    print(f"{n} orders in batches of {args.batch} ({len(money) / n:.1f} money values per order), "
          f"best of {args.rounds} rounds, CPU µs per order")
    print(f"  {'piece':<20} {'before':>8} {'now':>8} {'now/before':>11}")
    for name in pieces:
        before, now = times[f"{name} (before)"], times[f"{name} (now)"]
        print(f"  {name:<20} {before / n * 1e6:8.1f} {now / n * 1e6:8.1f} {now / before:10.2f}×")
    return 0


if __name__ == "__main__":
    sys.exit(main())
