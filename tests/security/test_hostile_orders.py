"""Orders: what is accepted is exactly what is stored and sent. Every hostile value (NaN and
Infinity, numbers too long or with a huge exponent, money written with an exponent, lone
surrogates, control characters, repeated keys, an order number that cannot be a URL segment) is
refused at ingest as a reason naming the field, for that order alone; the order is kept in
quarantine; the good orders beside it in the batch go through, on every retry; nothing of the
bad ones reaches a warehouse; the service still answers. On SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import copy
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from seckit import Env, example, no_internals, service

from dockyard.runtime import safe_json
from dockyard.service.config import LimitsConfig, Route
from dockyard.service.ingest import OrderChecker, read_body, storable_order
from dockyard.service.routing import Router

HOLE = '"@@HOSTILE@@"'

# (name, path in the order, raw JSON put there, words the reason must hold)
CASES: list[tuple[str, str, str, str]] = [
    ("nan", "amounts.paid_total", "NaN", "NaN is not a number"),
    ("infinity", "amounts.paid_total", "Infinity", "Infinity is not a number"),
    ("minus-infinity", "items[0].unit_price", "-Infinity", "-Infinity is not a number"),
    ("1e400", "amounts.paid_total", "1e400", "exponent beyond"),
    ("9e99", "amounts.goods_total", "9e99", "exponent beyond"),
    ("1e-999999", "amounts.freight", "1e-999999", "exponent beyond"),
    ("1e49999999", "amounts.paid_total", "1e49999999", "exponent beyond"),
    ("40-digits", "amounts.paid_total", "1" * 40, "40 digits"),
    ("40-digit-fraction", "items[0].discount", "0." + "1" * 39, "40 digits"),
    ("money-with-exponent", "amounts.paid_total", "1.59e2", "written with an exponent"),
    ("qty-with-exponent", "items[0].qty", "2e0", "is not of type"),
    ("surrogate-remark", "remark", '"note \\ud800"', "lone surrogate"),
    ("surrogate-order-no", "order_no", '"TM\\udfff01"', "lone surrogate"),
    ("nul", "remark", '"a\\u0000b"', "U+0000"),
    ("bell", "receiver.name", '"x\\u0007y"', "U+0007"),
    ("non-character", "buyer.nick", '"\\uffff"', "U+FFFF"),
    ("raw-control", "receiver.address", '"a\x01b"', "U+0001"),
    ("key-nul", "extend_props", '{"k\\u0000": "v"}', "the key contains"),
    ("order-no-1mb", "order_no", '"' + "A" * 1_000_000 + '"', "at most 64"),
    ("order-no-slash", "order_no", '"TM/../admin"', "may hold only"),
    ("order-no-space", "order_no", '"TM 1"', "may hold only"),
]


def _order_text(order: dict[str, Any], path: str, raw: str) -> str:
    """The order's JSON with `raw` (JSON text, possibly not valid for json.dumps) at `path`."""
    doc = copy.deepcopy(order)
    parts = path.replace("[", ".").replace("]", "").split(".")
    parent: Any = doc
    for part in parts[:-1]:
        parent = parent[int(part)] if part.isdigit() else parent[part]
    last = parts[-1]
    if last.isdigit():
        parent[int(last)] = "@@HOSTILE@@"
    else:
        parent[last] = "@@HOSTILE@@"
    return json.dumps(doc, ensure_ascii=False).replace(HOLE, raw)


def _good(n: int) -> dict[str, Any]:
    order = example()
    order["order_no"] = f"TM2023111100{n:04d}"
    return order


def _batch() -> tuple[str, list[str], list[tuple[str, str, str]]]:
    """(batch JSON text, good order numbers, [(name, path, words)] of the bad ones in order)."""
    parts, good, bad = [], [], []
    for i, (name, path, raw, words) in enumerate(CASES):
        order = _good(1000 + i)
        parts.append(_order_text(order, path, raw))
        bad.append((name, path, words))
        if i % 5 == 0:
            g = _good(i)
            parts.append(json.dumps(g))
            good.append(g["order_no"])
            bad.append(("good", "", ""))
    dup = _good(2000)
    parts.append(json.dumps(dup).replace('"channel": "tmall"', '"channel": "tmall", "channel": "jd"'))
    bad.append(("repeated-key", "(the order)", "repeats the key(s) 'channel'"))
    return "[" + ",\n".join(parts) + "]", good, bad


async def _check_batch(env: Env, text: str, good: list[str], expected: list[tuple[str, str, str]],
                       first: bool) -> None:
    status, answer = await env.post_json("/orders/batch", text)
    assert status == 207, answer
    results = answer["results"]
    assert len(results) == len(expected)
    for result, (name, path, words) in zip(results, expected, strict=True):
        if name == "good":
            assert result["status"] == ("accepted" if first else "duplicate"), result
            continue
        assert result["status"] == "quarantined", (name, result)
        reasons = " | ".join(result["reasons"])
        assert words in reasons and reasons.startswith(path.split("[")[0] if path else ""), (name, reasons)
        assert path in reasons or name == "repeated-key", (name, reasons)
    assert answer["counts"] == {("accepted" if first else "duplicate"): len(good),
                                "quarantined": len(expected) - len(good)}


def test_hostile_values_are_refused_one_order_at_a_time(tmp_path: Path, store_url: str, bundle_dir: Path) -> None:
    async def main() -> None:
        async with service(tmp_path, store_url, bundle_dir) as env:
            text, good, expected = _batch()
            await _check_batch(env, text, good, expected, first=True)
            for order_no in good:
                await env.delivered(order_no)
            await _check_batch(env, text, good, expected, first=False)  # a retry: the same verdicts
            stored = sorted(r[0] for r in await env.rows("SELECT order_no FROM dy_orders"))
            assert stored == sorted(good)
            assert sorted(env.sim.received("qimen-std")) == sorted(good)  # only the good ones were sent
            kept = await env.rows("SELECT order_no, reasons, body FROM dy_quarantine ORDER BY id")
            bad = len(expected) - len(good)
            assert len(kept) == 2 * bad
            for order_no, reasons, body in kept:
                assert order_no is None or (safe_json.bad_text(order_no) is None and len(order_no) <= 64)
                assert json.loads(reasons) and "\x00" not in body
            # one order at a time, too: 422 with the reason
            for name, path, raw, words in CASES[:6] + CASES[11:14] + CASES[-3:]:
                status, answer = await env.post_json("/orders", _order_text(_good(3000), path, raw))
                assert status == 422 and any(words in r for r in answer["reasons"]), (name, answer)
            await env.alive()
            assert await env.upstream_after(0.2) == []  # no status event was made of anything

    asyncio.run(main())


def test_a_body_that_is_not_json_at_all_is_refused_and_kept(tmp_path: Path, store_url: str, bundle_dir: Path) -> None:
    async def main() -> None:
        async with service(tmp_path, store_url, bundle_dir) as env:
            for body, words in ((b"\xff\xfe{", "not UTF-8"), (b"[" * 100_000, "nests deeper"),
                                (b'{"a": 1,}', "not valid JSON"), (b"\x00\x01{", "not valid JSON")):
                status, raw, _ = await env.request("POST", "/orders/batch", body=body)
                no_internals(raw)
                assert status == 400 and words in json.loads(raw)["reasons"][0], raw[:200]
            kept = await env.rows("SELECT body FROM dy_quarantine")
            assert len(kept) == 4 and all("\x00" not in b for (b,) in kept)
            status, answer = await env.post_json("/orders/batch", json.dumps([_good(1)]))
            assert status == 202 and answer["results"][0]["status"] == "accepted"
            await env.alive()

    asyncio.run(main())


# -- the class, without a server: any hostile value anywhere in an order ---------------------

CHECKER = OrderChecker(Router((Route("qimen-std", default=True),)), LimitsConfig())
BASE = json.loads(json.dumps(example()), parse_float=Decimal)
HOSTILE_RAW = st.one_of(
    st.sampled_from(["NaN", "Infinity", "-Infinity", "1e400", "-9e99", "1e-999999", "1e49999999", "7" * 35,
                     "0." + "0" * 40 + "1"]),
    st.builds(lambda e: f"1e{e}", st.integers(41, 10**9)),
    st.builds(lambda c: json.dumps(f"x{c}y", ensure_ascii=True),
              st.sampled_from([chr(c) for c in [*range(0, 9), 11, 12, *range(14, 32), 0xFFFE, 0xFFFF]]
                              + [chr(c) for c in (0xD800, 0xDBFF, 0xDC00, 0xDFFF)])),
)


def _paths(doc: Any, prefix: str = "") -> list[str]:
    out = []
    if isinstance(doc, dict):
        for k, v in doc.items():
            p = f"{prefix}.{k}" if prefix else k
            out += [p, *_paths(v, p)]
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            p = f"{prefix}[{i}]"
            out += [p, *_paths(v, p)]
    return out


LEAVES = [p for p in _paths(BASE) if p.split(".")[0] != "items" or p.startswith("items[0]")]


@settings(database=None, max_examples=300, deadline=None)
@given(st.sampled_from(LEAVES), HOSTILE_RAW)
def test_any_hostile_value_anywhere_refuses_that_order_only(path: str, raw: str) -> None:
    good = copy.deepcopy(BASE)
    good["order_no"] = "GOOD1"
    text = "[" + json.dumps(good, default=str) + "," + _order_text(BASE, path, raw) + "]"
    parsed = read_body(text.encode("utf-8", "surrogatepass"), LimitsConfig())
    ok, bad = (CHECKER.check(o, suspect=parsed.suspect) for o in parsed.value)
    assert ok.order is not None and ok.reasons == ()
    assert bad.order is None
    assert any(r.startswith(path) for r in bad.reasons), (path, raw, bad.reasons)
    kept = storable_order(parsed.value[1])
    assert safe_json.bad_text(kept) is None  # it can be stored and shown
    assert bad.order_no is None or (len(bad.order_no) <= 64 and safe_json.bad_text(bad.order_no) is None)
