"""`json_plain` (generated for every target) only ever vouches for a document the JSON writer would
write the same way without its own look: whatever the order, broken or not, the JSON form of a
document it calls plain (a JSON body; for every target, the request's fingerprint) is the same
bytes, or the same refusal, with the writer's check skipped as with it."""

from __future__ import annotations

import copy
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dockyard.compiler.api import compile_file
from dockyard.runtime.errors import DockyardError
from dockyard.runtime.mapping import CompiledMapping
from dockyard.runtime.serialize import to_json_bytes, writes_wrongly
from dockyard.sample_orders import generate

ROOT = Path(__file__).resolve().parents[2]
# Every library mapping that maps an order (the outbound requests, of every target format).
SPECS = sorted(p for p in (ROOT / "mappings").glob("*/*.yaml")
               if not p.name.endswith(".test.yaml") and "source:\n  schema: order" in p.read_text(encoding="utf-8"))
ORDERS = generate(40, 7)
ODD = [None, 1.5, float("nan"), Decimal("NaN"), Decimal("-0"), Decimal("1E+3"), 0, -1, 2**70, True, "",
       " x ", "\u00e9\u4e2d", [], {}, [None], {"a": None}]


@cache
def _mapping(spec: Path) -> CompiledMapping:
    return compile_file(spec)


def _context(mapping: CompiledMapping) -> dict[str, Any]:
    return dict(mapping.meta.get("examples") or {})


def _paths(value: Any, at: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [at] if at else []
    if isinstance(value, dict):
        for key, item in value.items():
            out += _paths(item, (*at, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            out += _paths(item, (*at, index))
    return out


def _set(order: dict[str, Any], path: tuple[Any, ...], value: Any) -> None:
    node: Any = order
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value


def _json(doc: Any, plain: bool) -> tuple[str, Any]:
    try:
        return "ok", to_json_bytes(doc, plain=plain)
    except DockyardError as exc:
        return "error", f"{type(exc).__name__}: {exc}"


def test_every_target_format_has_a_json_plain() -> None:
    formats = {_mapping(spec).target.format for spec in SPECS}
    assert {"json", "xml"} <= formats, formats  # the library's order mappings write both
    for spec in SPECS:
        assert callable(getattr(_mapping(spec).module, "json_plain", None)), spec


@pytest.mark.parametrize("spec", SPECS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_sample_orders_are_plain_and_their_fingerprint_is_unchanged(spec: Path) -> None:
    mapping = _mapping(spec)
    plain = 0
    for order in ORDERS:
        try:
            doc = mapping.transform(copy.deepcopy(order), _context(mapping))
        except DockyardError:
            continue
        if mapping.json_plain(doc):
            plain += 1
            assert not writes_wrongly(doc)
            assert _json(doc, True) == _json(doc, False)
    assert plain, f"{spec.name}: no sample order's document was called plain"


@settings(max_examples=300, deadline=None, database=None)
@given(st.sampled_from(SPECS), st.sampled_from(ORDERS), st.data())
def test_a_document_called_plain_is_written_alike_with_and_without_the_check(spec: Path, order: dict[str, Any],
                                                                              data: st.DataObject) -> None:
    mapping = _mapping(spec)
    broken = copy.deepcopy(order)
    paths = _paths(broken)
    for _ in range(data.draw(st.integers(1, 4))):
        path = data.draw(st.sampled_from(paths))
        try:
            _set(broken, path, copy.deepcopy(data.draw(st.sampled_from(ODD))))
        except (KeyError, IndexError, TypeError):
            continue  # a parent was replaced by an earlier draw
    try:
        doc = mapping.transform(broken, _context(mapping))
    except (DockyardError, ArithmeticError):
        # Refused before anything is written. (ArithmeticError: explaining a NaN decimal's schema
        # problems fails inside jsonschema; see test_specialised.py.)
        return
    if mapping.json_plain(doc):
        # A non-finite decimal may be in it: orjson's hook refuses it, and the walk then names it,
        # exactly as when the writer looks first.
        assert _json(doc, True) == _json(doc, False)
