"""Money specialisations agree with the general code they stand in for, errors included: a money text
written back as it is (`format_decimal` of a text already in its form). Inputs are chosen to break
it: every number of places, signs, exponents, spaces, leading zeros, non-ASCII digits, 30 to 40
digits, NaN and Infinity, numbers that are not text, str subclasses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dockyard.compiler.api import compile_file
from dockyard.runtime.errors import DockyardError

ROOT = Path(__file__).resolve().parents[2]

_SPEC = """\
dockyard: 1
name: t.money
version: "1.0.0"
source: {schema: order, key: order_no}
target: {format: json}
output:
  p1: format_decimal(amounts.paid_total, 1)
  p2: format_decimal(amounts.paid_total, 2)
  p6: format_decimal(amounts.paid_total, 6)
  p7: format_decimal(amounts.paid_total, 7)
  p12: format_decimal(amounts.paid_total, 12)
  even: format_decimal(amounts.paid_total, 2, "HALF_EVEN")
  freight?: format_decimal(amounts.freight, 3)
  lines:
    $each: items
    $as: l
    $emit:
      net: format_decimal($l.unit_price - $l.discount, 2)
      text: format_decimal($l.unit_price, 2)
      rounded: round($l.unit_price * 3 - $l.discount, 3)
      mixed: format_decimal(-$l.discount + $l.unit_price - amounts.paid_total, 4)
      twice: format_decimal($l.unit_price * $l.unit_price, 1)
      sku: $l.sku
"""


class _Claims(str):
    """A str subclass equal to every text, hashing as "1.00": only an exact str is a money text."""

    def __eq__(self, other: object) -> bool:
        return True

    def __hash__(self) -> int:
        return hash("1.00")


@pytest.fixture(scope="module")
def money(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any]:
    from dockyard.compiler.api import check_file
    from dockyard.compiler.codegen import generate_module
    from dockyard.runtime.mapping import CompiledMapping, load_module

    path = tmp_path_factory.mktemp("money") / "money.yaml"
    path.write_text(_SPEC, encoding="utf-8")
    report = check_file(path)
    assert report.spec is not None and report.checked is not None
    source = generate_module(report.spec, report.checked, specialise=False)
    general = CompiledMapping(load_module(source, "<general money>", "general_money"), source,
                              report.spec.source_schema)
    return compile_file(path), general


_texts = st.one_of(
    # plain texts of every number of places, some with leading zeros or a sign
    st.tuples(st.integers(0, 10**36), st.integers(0, 13), st.sampled_from(["", "", "-", "0", "00", "+"])).map(
        lambda t: t[2] + (f"{str(t[0])[:-t[1]] or '0'}.{str(t[0]).zfill(t[1])[-t[1]:]}" if t[1] else str(t[0]))),
    st.decimals(allow_nan=True, allow_infinity=True).map(str),
    st.decimals(allow_nan=False, allow_infinity=False, places=2).map(lambda d: format(d, "f")),
    st.sampled_from(["0.00", "-0.00", "0.0", "00.10", "0.10", "1.2", "1.", ".50", "1.005", "1e2", "1E-2", " 1.00",
                     "1.00 ", "1.00\n", "١.٥٠", "１.00", "1.٥0", "NaN", "-Infinity", "sNaN", "", "+1.00",
                     "1_000.00", "9" * 32 + ".99", "9" * 33 + ".99", "9" * 34 + ".9", "0." + "0" * 12,
                     "1.00.00", "1..00", "12.3.45", "0.0000000", "59.90", "100"]),
)
_values = st.one_of(
    _texts, _texts, _texts,
    st.integers(-(10**20), 10**20), st.floats(allow_nan=True, allow_infinity=True), st.decimals(allow_nan=True),
    st.none(), st.booleans(), st.just([1]), _texts.map(_Claims),
)


def _outcome(fn: Any, order: dict[str, Any]) -> str:
    try:
        return repr(fn(order))
    except DockyardError as exc:
        return f"error {type(exc).__name__} {exc} from {type(exc.__cause__).__name__}"


def _order(total: Any, freight: Any, lines: list[tuple[Any, Any]]) -> dict[str, Any]:
    order: dict[str, Any] = {
        "order_no": "T1", "amounts": {"paid_total": total},
        "items": [{"sku": f"S{i}", "unit_price": price, "discount": discount} for i, (price, discount) in
                  enumerate(lines)]}
    if freight is not None:
        order["amounts"]["freight"] = freight
    return order


@settings(max_examples=600, deadline=None, database=None)
@given(st.lists(_values, min_size=1, max_size=4), st.data())
def test_money_specialisations_agree_with_the_general_code(money: tuple[Any, Any], pool: list[Any],
                                                          data: st.DataObject) -> None:
    fast, general = money
    pick = st.sampled_from(pool)
    orders = [_order(data.draw(pick), data.draw(st.one_of(st.none(), pick)),
                     data.draw(st.lists(st.tuples(pick, pick), max_size=4))) for _ in range(3)]
    for order in orders + orders:
        expected = _outcome(general.transform, order)
        assert _outcome(fast.transform, order) == expected
        assert _outcome(fast.bind(), order) == expected
        assert _outcome(lambda o: fast.explain(o)[0], order) == expected


def test_the_specialisations_are_in_the_module(money: tuple[Any, Any]) -> None:
    fast, general = money
    body = fast.source.split("def transform(")[1].split("\ndef ")[0]
    traced = fast.source.split("def transform_traced(")[1].split("\ndef ")[0]
    # The money text test for each format_decimal of a read: seven of the header, one of a line.
    assert body.count(".strip('0123456789') == '.'") == 8 and traced.count(".strip('0123456789')") == 8
    assert ".strip('0123456789')" not in general.source


def test_the_reference_mapping_writes_its_total_as_read() -> None:
    fast = compile_file(ROOT / "mappings" / "reference" / "deliveryorder.yaml")
    body = fast.source.split("def transform(")[1].split("\ndef ")[0]
    assert body.count(".strip('0123456789') == '.'") == 1
