"""Benchmark: what reading orders with bounds (runtime.safe_json) costs at ingest, and what the
signed-content dedupe identity costs per callback.

Candidates, interleaved, best of N rounds, CPU time (time.process_time), GC off during a round:
- parse: `json.loads(parse_float=Decimal)` + the depth walk (what ingest did) against
  `ingest.read_body` (number hooks, repeated-key hook, the suspect scan of the text);
- parse + check: the same, each followed by `OrderChecker.check` (schema, routing, fingerprint);
- callback identity: the old key (the mapping's event id, else sha256 of the body) against
  `replay.dedupe_identity`, on a signed QIMEN confirm and a signed Cainiao status upload.

    python bench/ingest_bounds.py            # 2,000 generated orders in batches of 200, 7 rounds
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import sys
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parents[1]


def best_interleaved(candidates: dict[str, Callable[[], Any]], rounds: int) -> dict[str, float]:
    best = {name: float("inf") for name in candidates}
    for _ in range(rounds):
        for name, fn in candidates.items():  # interleaved: every round runs every candidate
            gc.collect()
            gc.disable()
            started = time.process_time()
            fn()
            took = time.process_time() - started
            gc.enable()
            best[name] = min(best[name], took)
    return best


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--orders", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args(argv)

    from dockyard.compiler.api import compile_file
    from dockyard.runtime import safe_json
    from dockyard.sample_orders import generate
    from dockyard.service.config import CallbackConfig, LimitsConfig, Route, VerifyConfig
    from dockyard.service.ingest import OrderChecker, read_body
    from dockyard.service.replay import dedupe_identity
    from dockyard.service.routing import Router
    from dockyard.simulate.protocols import cainiao_callback, qimen_callback_query, qimen_confirm_xml

    orders = list(generate(args.orders, seed=42))
    bodies = [json.dumps(orders[i:i + args.batch], ensure_ascii=False).encode()
              for i in range(0, len(orders), args.batch)]
    limits = LimitsConfig()
    checker = OrderChecker(Router((Route("wh", default=True),)), limits)

    def old_parse() -> list[Any]:
        out = []
        for body in bodies:
            data = json.loads(body.decode("utf-8"), parse_float=Decimal)
            safe_json.depth(data, limits.max_depth + 1)
            out.append(data)
        return out

    def new_parse() -> list[Any]:
        return [read_body(body, limits) for body in bodies]

    def old_full() -> None:
        for data in old_parse():
            for order in data:
                checker.check(order, suspect=False)

    def new_full() -> None:
        for parsed in new_parse():
            for order in parsed.value:
                checker.check(order, suspect=parsed.suspect)

    assert all(not p.suspect for p in new_parse()), "generated orders hold nothing to refuse"
    times = best_interleaved({"parse (before)": old_parse, "parse (bounded)": new_parse,
                   "parse+check (before)": old_full, "parse+check (bounded)": new_full}, args.rounds)
    n = len(orders)
    print(f"{n} orders in batches of {args.batch}, best of {args.rounds} rounds, CPU time")
    for kind in ("parse", "parse+check"):
        before, after = times[f"{kind} (before)"], times[f"{kind} (bounded)"]
        print(f"  {kind:<12} before {before / n * 1e6:7.1f} µs/order   bounded {after / n * 1e6:7.1f} µs/order"
              f"   {after / before:.2f}×")

    # callbacks
    qimen = compile_file(ROOT / "mappings/qimen/deliveryorder.confirm.yaml")
    cainiao = compile_file(ROOT / "mappings/cainiao/order-status-upload.yaml")
    xml = qimen_confirm_xml(order_no="TM1", order_id="W1", warehouse_code="H", out_biz_code="OBC-1",
                            when="2023-11-11 10:00:00", carrier="SF", waybill="SF1", weight="1.0",
                            lines=[("1", "SKU-1", 1)])
    query = qimen_callback_query("deliveryorder.confirm", {"appKey": "1"}, xml, "s")
    form = urlencode(cainiao_callback("WMS_ORDER_STATUS_UPLOAD", {"orderCode": "MP1", "status": "WMS_ACCEPT"},
                                      secret="s", hex_digest=False, provider="P", to_code="T", msg_id="M-1")).encode()
    cases = [(CallbackConfig("c", "m", verify=VerifyConfig("qimen-md5", "S", params="query")), qimen, query,
              xml.encode(), {"event_id": "OBC-1"}),
             (CallbackConfig("u", "m", verify=VerifyConfig("cainiao-link", "S", params="form",
                                                           body="form.logistics_interface")), cainiao, {}, form,
              {"event_id": "M-1"})]
    reps = 2000

    def old_id() -> None:
        for _ in range(reps):
            for _cfg, _m, _q, body, event in cases:
                _ = str(event.get("event_id") or "sha256:" + hashlib.sha256(body).hexdigest())

    def new_id() -> None:
        for _ in range(reps):
            for cfg, m, q, body, event in cases:
                dedupe_identity(cfg, m, q, {}, body, event)

    ids = best_interleaved({"id (before)": old_id, "id (signed content)": new_id}, args.rounds)
    per = reps * len(cases)
    print(f"  callback id  before {ids['id (before)'] / per * 1e6:7.1f} µs/callback   signed content "
          f"{ids['id (signed content)'] / per * 1e6:7.1f} µs/callback")
    return 0


if __name__ == "__main__":
    sys.exit(main())
