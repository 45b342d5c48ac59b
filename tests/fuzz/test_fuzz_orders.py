"""Fuzz: order JSON, as the service reads it (no server: the same functions, many more examples).
Mutations of generated orders: hostile values at any path, numbers of any size and form, any
code point (lone surrogates and controls as escapes), repeated keys, deep nesting, byte-level
damage. For every body: a clear refusal (BodyError) or a verdict per order; a refused order can be
stored and shown; an accepted order is stored exactly (its stored JSON reads back equal) and every
warehouse's create mapping renders it or refuses it with a Dockyard error."""

from __future__ import annotations

import contextlib
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from fuzzkit import Bounds, fuzz_settings, run
from hypothesis import given
from hypothesis import strategies as st

from dockyard.demo import WAREHOUSES, build_demo_bundle
from dockyard.runtime import safe_json
from dockyard.runtime.bundle import load_bundle
from dockyard.runtime.errors import DockyardError
from dockyard.runtime.mapping import CompiledMapping
from dockyard.sample_orders import generate
from dockyard.service.config import LimitsConfig, Route
from dockyard.service.context import dumps, load_order
from dockyard.service.ingest import BodyError, OrderChecker, read_body, storable_order
from dockyard.service.routing import Router

ROOT = Path(__file__).resolve().parents[2]
ORDERS = [json.loads(json.dumps(o), parse_float=Decimal) for o in generate(8, seed=3)]
LIMITS = LimitsConfig()
CHECKER = OrderChecker(Router((Route("qimen-std", default=True),)), LIMITS)
HOLE = '"@@HOLE@@"'

JSON_NUMBER = st.from_regex(r"-?(0|[1-9][0-9]{0,60})(\.[0-9]{1,60})?([eE][+-]?[0-9]{1,12})?", fullmatch=True)
ANY_CHAR_TEXT = st.lists(st.integers(0, 0x10FFFF), max_size=12).map(
    lambda cs: '"' + "".join(f"\\u{c:04x}" if c < 0x10000 else json.dumps(chr(c))[1:-1] for c in cs) + '"')
RAW = st.one_of(
    JSON_NUMBER, ANY_CHAR_TEXT,
    st.sampled_from(["NaN", "Infinity", "-Infinity", "null", "true", "[]", "{}", '""', '" "', '"\\b"', '"\\f"',
                     '{"a": 1, "a": 2}', "[" * 50 + "]" * 50, '"' + "x" * 70 + '"', '"a/b?c#d"', "1e-999999",
                     '"12.50"', '"1e3"', '"1,000.00"', '" 12.5 "', '"-0.00"', "-0", "0.0", '"\\ud83d\\ude00"']),
    st.text(max_size=8).map(lambda s: json.dumps(s)),
)


def _paths(doc: Any, prefix: str = "") -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += [(k,), *[(k, *p) for p in _paths(v)]]
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += [(i,), *[(i, *p) for p in _paths(v)]]
    return out


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    batch = [json.loads(json.dumps(o, default=str)) for o in draw(st.lists(st.sampled_from(ORDERS), min_size=1,
                                                                          max_size=3))]
    raws: list[str] = []
    for order in batch:
        for _ in range(draw(st.integers(0, 3))):
            path = draw(st.sampled_from([*_paths(order), ("extra_field",)]))
            parent: Any = order
            for part in path[:-1]:
                parent = parent[part]
            if isinstance(parent, dict) or (isinstance(parent, list) and path[-1] < len(parent)):
                if draw(st.booleans()) and isinstance(parent, dict) and path[-1] in parent:
                    del parent[path[-1]]
                else:
                    parent[path[-1]] = "@@HOLE@@"
                    raws.append(draw(RAW))
    text = json.dumps(batch if draw(st.booleans()) else {"orders": batch}, ensure_ascii=draw(st.booleans()))
    for raw in raws:
        text = text.replace(HOLE, raw, 1)
    data = text.encode("utf-8", "surrogatepass")
    if draw(st.integers(0, 9)) == 0:  # byte-level damage
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(st.binary(max_size=4)) + data[at + draw(st.integers(0, 4)):]
    return data


@pytest.fixture(scope="module")
def creates(tmp_path_factory: pytest.TempPathFactory) -> list[CompiledMapping]:
    out = tmp_path_factory.mktemp("bundle") / "bundle"
    build_demo_bundle(ROOT / "mappings", out)
    bundle = load_bundle(out)
    return [bundle[w["flows"]["create"]["request"]] for w in WAREHOUSES.values()]


def test_order_bodies_get_a_verdict_and_what_is_accepted_is_stored_and_sent_exactly(
        creates: list[CompiledMapping]) -> None:
    bounds = Bounds()
    contexts = {m.name: {} for m in creates}
    from dockyard.demo import account

    for name, w in WAREHOUSES.items():
        contexts[w["flows"]["create"]["request"]] = account(ROOT / "mappings", name)

    @fuzz_settings(ci_examples=400)
    @given(bodies())
    def target(body: bytes) -> None:
        with bounds.example(body[:200]):
            try:
                parsed = read_body(body, LIMITS)
            except BodyError as exc:
                assert str(exc).startswith("the body ")
                return
            data = parsed.value
            orders = data.get("orders") if isinstance(data, dict) else data
            if not isinstance(orders, list):
                return
            for order in orders:
                checked = CHECKER.check(order, suspect=parsed.suspect)
                if checked.order is None:
                    assert checked.reasons and all(len(r) <= 400 for r in checked.reasons)
                    assert safe_json.bad_text(storable_order(order)) is None
                    assert safe_json.bad_text(" ".join(checked.reasons)) is None
                    assert checked.order_no is None or safe_json.bad_text(checked.order_no) is None
                    continue
                stored = dumps(checked.order)
                assert load_order(stored) == checked.order  # accepted is exactly what is stored
                assert len(stored) < 2 * len(body) + 1000  # and nothing in it expanded
                for mapping in creates:
                    with contextlib.suppress(DockyardError):
                        mapping.render(checked.order, contexts[mapping.name])

    run(target, share=0.25)
