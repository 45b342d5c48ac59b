"""Benchmark: pieces of a warehouse callback's path (and of an outbound request's), each against what
it replaced, in one run.

    python bench/callback_pieces.py [--rounds 7] [--number 2000]

- Reading a Cainiao push's form body (`runtime.inputs.read_form`): the C-speed percent-decoding
  against urllib's `parse_qsl`, which read every form before and still reads those the fast
  reading cannot take (the same function with the codec switched off).
- Percent-encoding a form document the size of an SF create's msgData, as `form_quote` (the body)
  and `java_urlencode` (SF's digest, on every SF request and every SF callback verified) do it:
  one `str.translate` through a 256-entry table (`runtime.percent`, now) against a regular
  expression with a Python callback per run of unsafe characters (before; kept here as the
  reference).
- Counting an answered callback in the metrics (`Metrics.observe_callback`): the kept labelled
  children against `labels()` on every call (the same registry's series, looked up each time).

CPU time per call (`time.process_time` around `number` calls), best of `rounds`, the candidates
interleaved round by round.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from urllib.parse import urlencode

from request_build import regex_percent_encoders  # bench/ is the script's folder


def _cpu(fn: Callable[[], object], number: int) -> float:
    start = time.process_time()
    for _ in range(number):
        fn()
    return (time.process_time() - start) / number


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--number", type=int, default=2000)
    args = ap.parse_args(argv)

    from dockyard.runtime import inputs
    from dockyard.service.metrics import Metrics
    from dockyard.simulate.protocols import cainiao_callback

    message = {"orderCode": "DY20261111000123", "orderType": "JYCK", "warehouseCode": "WH-CN-01",
               "status": "WMS_CONSIGN", "operateTime": "2026-11-11 10:00:00",
               "packages": [{"logisticsCode": "SF", "mailNo": "SF7000000123",
                             "items": [{"itemCode": "SKU-1", "quantity": 1}, {"itemCode": "SKU-2", "quantity": 2}]}],
               "operator": "张三", "remark": "备注 text"}
    body = urlencode(cainiao_callback("WMS_CONSIGN_ORDER_CONFIRM", message, secret="TEST-ONLY-bench", hex_digest=False,
                                      provider="CN-P", to_code="DOCKYARD", msg_id="m1")).encode("ascii")
    codec = inputs._escape_decode

    def read(fast: bool) -> Callable[[], object]:
        def run() -> object:
            inputs._LAST_FORM = (None, {})  # no kept reading: each call reads the body
            inputs._escape_decode = codec if fast else None
            return inputs.read_form(body)
        return run

    metrics = Metrics()
    metrics._callback_flows = frozenset({("cainiao", "consign")})

    def counted(kept: bool) -> Callable[[], object]:
        def run() -> None:
            if not kept:
                metrics._children.clear()  # as before: labels() on every call
            metrics.observe_callback("cainiao", "consign", "applied", 0.0123)
        return run

    import orjson

    from dockyard.runtime.serialize import form_quote
    from dockyard.runtime.signing import java_urlencode

    document = orjson.dumps({"orderId": "DY20261111000123", "contactInfoList": [
        {"contactType": 2, "contact": "张三", "mobile": "139****0366", "province": "浙江省", "city": "杭州市",
         "county": "西湖区", "address": "文三路 100 号 A 座 1201"}] * 2, "cargoDetails": [
        {"name": f"商品 {i}", "count": i, "unit": "件", "weight": "0.35", "amount": "199.00"} for i in range(1, 4)],
        "payMethod": 1, "expressTypeId": 1, "remark": "不要发票 *~"}).decode("utf-8")
    before = regex_percent_encoders()

    def encoded(now: bool) -> Callable[[], object]:
        def run() -> object:
            if now:
                return form_quote(document), java_urlencode(document)
            return before["form_quote"](document), before["java_urlencode"](document)
        return run

    assert read(True)() == read(False)()
    assert encoded(True)() == encoded(False)()
    candidates = {"percent: regex runs + callback (before)": encoded(False),
                  "percent: str.translate table (now)": encoded(True),
                  "form: urllib parse_qsl (before)": read(False), "form: C-speed decoding (now)": read(True),
                  "metrics: labels() each call (before)": counted(False), "metrics: kept children (now)": counted(True)}
    best = dict.fromkeys(candidates, float("inf"))
    for _ in range(args.rounds):
        for name, fn in candidates.items():
            best[name] = min(best[name], _cpu(fn, args.number))
    inputs._escape_decode = codec
    print(f"a {len(body)}-byte Cainiao push, a {len(document)}-character form document encoded both ways; "
          f"CPU per call, best of {args.rounds} rounds of {args.number}")
    names = list(best)
    for before, now in zip(names[::2], names[1::2], strict=True):
        print(f"  {before:40} {best[before] * 1e6:7.2f} µs")
        print(f"  {now:40} {best[now] * 1e6:7.2f} µs   {best[now] / best[before]:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
