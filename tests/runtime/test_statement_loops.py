"""`join(map(filter(list, keep), each), sep)` written as a loop statement (codegen's `loop_value`)
agrees with the comprehension it stands in for, exactly: the same document, the same error with the
same message, spec location and field, and the same reads of the list's elements in the same
order. Inputs are chosen to break it: lists that are not lists, elements that are not objects,
missing keys, null, quantities of the wrong type, str subclasses, and a failure in a value before
or after the loop in the same object (which must still be the one reported first)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from dockyard.compiler.api import compile_file

ROOT = Path(__file__).resolve().parents[2]

_SPEC = """\
dockyard: 1
name: t.loops
version: "1.0.0"
source: {schema: order, key: order_no}
target: {format: json}
output:
  first: join(map(filter(items, $i => $i.qty > 0), $i => $i.sku), ",")
  name: trim(receiver.name)
  mid: join(map(filter(items, $i => $i.is_gift), $i => $i.name), "|")
  shop: shop_code
  tail: concat(shop_code, "-")
  remark?: remark
  late: join(map(filter(items, $i => $i.is_gift), $i => $i.name), "")
  nested:
    nick: buyer.nick
    inner: join(map(filter(items, $i => $i.qty >= 0), $i => $i.sku), ";")
    maybe: join(map(filter(items ?? [], $i => $i.qty >= 0), $i => $i.sku), ";")
  lines:
    $each: items
    $as: l
    $emit:
      sku: $l.sku
      all: join(map(filter(items, $i => $i.qty > 0), $i => $i.sku), ",")
"""

READS: list[tuple[int, str]] = []


class _Spy(dict):  # type: ignore[type-arg]
    """An element that logs every read of it (by its id in the order and the key)."""

    def __getitem__(self, key: Any) -> Any:
        READS.append((id(self), key))
        return super().__getitem__(key)

    def get(self, key: Any, default: Any = None) -> Any:
        READS.append((id(self), key))
        return super().get(key, default)


class _Text(str):
    pass


def _compile(path: Path, loops: bool) -> Any:
    from dockyard.compiler import codegen
    from dockyard.compiler.api import check_file
    from dockyard.runtime.mapping import CompiledMapping, load_module

    if loops:
        return compile_file(path)
    report = check_file(path)
    assert report.spec is not None and report.checked is not None
    original = codegen._TreeWriter.loop_value
    codegen._TreeWriter.loop_value = lambda self, e, index: None  # type: ignore[method-assign]
    try:
        source = codegen.generate_module(report.spec, report.checked)
    finally:
        codegen._TreeWriter.loop_value = original  # type: ignore[method-assign]
    return CompiledMapping(load_module(source, f"<comprehensions {path.name}>", "comprehensions"), source,
                           report.spec.source_schema)


@pytest.fixture(scope="module")
def mappings(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Any, Any]]:
    path = tmp_path_factory.mktemp("loops") / "loops.yaml"
    path.write_text(_SPEC, encoding="utf-8")
    flat = ROOT / "bench" / "specs" / "flat.yaml"
    return {"loops": (_compile(path, True), _compile(path, False)),
            "flat": (_compile(flat, True), _compile(flat, False))}


def test_the_loops_are_statements_where_they_may_be(mappings: dict[str, tuple[Any, Any]]) -> None:
    fast, comprehensions = mappings["loops"]
    body = fast.source.split("def transform(")[1].split("\ndef ")[0]
    # first, mid, late, nested.inner, nested.maybe and lines[].all
    assert body.count(".append(_a") == 6
    assert "for _a" in comprehensions.source and ".append(_a" not in comprehensions.source
    traced = fast.source.split("def transform_traced(")[1].split("\ndef ")[0]
    assert ".append(_a" not in traced  # explain's function keeps the comprehensions
    flat_body = mappings["flat"][0].source.split("def transform(")[1].split("\ndef ")[0]
    assert ".append(_a1['sku'])" in flat_body and "'skus': ','.join(_e" in flat_body


_text = st.one_of(st.sampled_from(["A", "B", " 名 ", ""]), st.sampled_from(["S1", "x"]).map(_Text))
_any = st.one_of(st.none(), st.integers(-2, 3), st.booleans(), st.floats(allow_nan=True), _text,
                 st.just([1]), st.just({"a": 1}))
_element = st.one_of(
    st.fixed_dictionaries({}, optional={"sku": st.one_of(_text, _any), "qty": st.one_of(st.integers(-1, 3), _any),
                                        "name": st.one_of(_text, _any), "is_gift": st.one_of(st.booleans(), _any)}),
    _any)
_items = st.one_of(st.lists(_element, max_size=5), _any)
_maybe = st.one_of(_text, _text, _any)


@st.composite
def _orders(draw: st.DrawFn) -> dict[str, Any]:
    order: dict[str, Any] = {"order_no": "T1"}
    for key, value in [("items", _items), ("shop_code", _maybe), ("remark", _maybe),
                       ("receiver", st.fixed_dictionaries({}, optional={"name": _maybe}) | _any),
                       ("buyer", st.fixed_dictionaries({}, optional={"nick": _maybe}) | _any),
                       ("amounts", st.fixed_dictionaries({}, optional={"paid_total": _maybe}) | _any)]:
        if draw(st.integers(0, 5)):
            order[key] = draw(value)
    if isinstance(order.get("items"), list) and draw(st.booleans()):
        order["items"] = [_Spy(e) if isinstance(e, dict) else e for e in order["items"]]
    return order


def _outcome(fn: Any, order: dict[str, Any]) -> tuple[Any, ...]:
    READS.clear()
    try:
        result: tuple[Any, ...] = ("ok", repr(fn(order)))
    except Exception as exc:  # the generated function's own errors are compared too
        result = ("error", type(exc).__name__, str(exc), getattr(exc, "location", None), getattr(exc, "field", None),
                  type(exc.__cause__).__name__)
    items = order.get("items")
    ids = {id(e): i for i, e in enumerate(items)} if isinstance(items, list) else {}
    return (*result, [(ids.get(who), key) for who, key in READS])


_CTX = {"ownerCode": "O", "warehouseCode": "W"}


@settings(max_examples=500, deadline=None, database=None)
@given(_orders())
# a value before a loop fails (no receiver) and so does the loop (no is_gift): the first is reported
@example({"order_no": "T1", "shop_code": "S", "buyer": {"nick": "n"}, "items": [{"qty": 0, "sku": "A"}]})
@example({"order_no": "T1", "shop_code": "S", "receiver": {"name": 1}, "items": [{"qty": 0, "sku": "A"}]})
@example({"order_no": "T1", "shop_code": None, "receiver": {"name": "r"}, "items": [{"qty": "x"}]})
def test_loop_statements_agree_with_the_comprehensions(mappings: dict[str, tuple[Any, Any]],
                                                       order: dict[str, Any]) -> None:
    fast, comprehensions = mappings["loops"]
    expected = _outcome(comprehensions.transform, order)
    assert _outcome(fast.transform, order) == expected
    assert _outcome(fast.bind(), order) == expected
    assert (_outcome(lambda o: fast.module.transform(o, {}, None), order)
            == _outcome(lambda o: comprehensions.module.transform(o, {}, None), order))
    assert _outcome(lambda o: fast.explain(o)[0], order)[:-1] == expected[:-1]
    flat, flat_comprehensions = mappings["flat"]
    expected = _outcome(lambda o: flat_comprehensions.transform(o, _CTX), order)
    assert _outcome(lambda o: flat.transform(o, _CTX), order) == expected
    assert _outcome(flat.bind(_CTX), order) == expected
