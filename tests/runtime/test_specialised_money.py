"""Money specialisations agree with the general code they stand in for, errors included: a money text
written back as it is (`format_decimal` of a text already in its form) and values of a `$each`
memoised by their input texts. Inputs are chosen to break them: every number of places, signs,
exponents, spaces, leading zeros, non-ASCII digits, 30 to 40 digits, NaN and Infinity, numbers
that are not text, str subclasses that claim to equal anything; values repeat, so the memo is hit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dockyard.compiler.api import compile_file
from dockyard.runtime import functions
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
    """A str subclass equal to every text, hashing as "1.00": only an exact str is a money text,
    and a memo keyed by equality would take it for a text it has stored."""

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
    for order in orders + orders:  # the second time round, the memo has what the first stored
        expected = _outcome(general.transform, order)
        assert _outcome(fast.transform, order) == expected
        assert _outcome(fast.bind(), order) == expected
        assert _outcome(lambda o: fast.explain(o)[0], order) == expected


@settings(max_examples=200, deadline=None, database=None)
@given(st.lists(st.tuples(_texts, _texts), min_size=1, max_size=12))
def test_a_full_memo_still_agrees_and_fills_again(money: tuple[Any, Any], lines: list[tuple[str, str]]) -> None:
    fast, general = money
    memos = [v for v in vars(fast.module).values() if isinstance(v, functions.Memo)]
    assert len(memos) == 5
    for memo in memos:  # what earlier examples stored
        memo.clear()
        memo.size = memo.misses = 0
    limit, refresh = functions.MEMO_LIMIT, functions.MEMO_REFRESH
    functions.MEMO_LIMIT, functions.MEMO_REFRESH = 3, 4
    try:
        for order in [_order("1.00", None, lines[:i + 1]) for i in range(len(lines))]:
            assert _outcome(fast.transform, order) == _outcome(general.transform, order)
        assert all(m.size <= 3 and m.misses < 4 for m in memos)
    finally:
        functions.MEMO_LIMIT, functions.MEMO_REFRESH = limit, refresh


def test_the_specialisations_are_in_the_trace_free_function(money: tuple[Any, Any]) -> None:
    fast, general = money
    body = fast.source.split("def transform(")[1].split("\ndef ")[0]
    traced = fast.source.split("def transform_traced(")[1].split("\ndef ")[0]
    # Five values of a line memoised (sku is a plain read), each with a memo of its own.
    assert body.count("memo_put(") == 5 and fast.source.count("= Memo()") == 5
    assert "memo_put(" not in traced and "memo_put(" not in general.source
    assert ".strip('0123456789')" not in traced  # explain's function keeps the general code
    # The money text test for each format_decimal of a read: seven of the header, one of a line
    # (in the general code of its memo).
    assert body.count(".strip('0123456789') == '.'") == 8
    assert ".strip('0123456789')" not in general.source


def test_a_str_subclass_is_never_served_from_the_memo(money: tuple[Any, Any]) -> None:
    fast, general = money
    fast.transform(_order("1.00", None, [("1.00", "0.10")]))
    for price in [_Claims("1.00"), _Claims("x"), _Claims(" 2.5")]:
        order = _order("1.00", None, [(price, "0.10")])
        assert _outcome(fast.transform, order) == _outcome(general.transform, order)


def test_a_failing_text_fails_every_time_and_is_not_stored(money: tuple[Any, Any]) -> None:
    fast, general = money
    order = _order("1.00", None, [("x1", "0.10"), ("1.00", "0.10")])
    first = _outcome(fast.transform, order)
    assert first.startswith("error ") and "orderLines" not in first
    assert first == _outcome(fast.transform, order) == _outcome(general.transform, order)
    missing = {"order_no": "T1", "amounts": {"paid_total": "1.00"}, "items": [{"sku": "S", "unit_price": "x"}]}
    assert _outcome(fast.transform, missing) == _outcome(general.transform, missing)


def test_a_full_memo_stores_nothing_until_it_is_emptied(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(functions, "MEMO_LIMIT", 2)
    monkeypatch.setattr(functions, "MEMO_REFRESH", 3)
    memo = functions.Memo()
    for text in ["1", "2", "3", "4"]:
        assert functions.memo_put(memo, text + "!", text) == text + "!"
    assert memo == {"1": "1!", "2": "2!"} and memo.misses == 2  # full: 3 and 4 were not stored
    functions.memo_put(memo, "5!", "5")  # the third miss since it was full: emptied, then stored
    assert memo == {"5": "5!"} and memo.size == 1 and memo.misses == 0


def test_memo_put_stores_only_exact_texts_and_nests_by_read() -> None:
    memo = functions.Memo()
    assert functions.memo_put(memo, "0.90", "1.00", "0.10") == "0.90"
    assert memo == {"1.00": {"0.10": "0.90"}} and memo.size == 1
    assert functions.memo_put(memo, "9", "1.00", _Claims("0.10")) == "9"
    assert functions.memo_put(memo, "9", 1, "0.10") == "9"
    assert memo == {"1.00": {"0.10": "0.90"}} and memo.size == 1
    functions.memo_put(memo, "0.80", "1.00", "0.20")
    assert memo == {"1.00": {"0.10": "0.90", "0.20": "0.80"}} and memo.size == 2


def test_the_reference_mapping_memoises_line_prices_and_writes_its_total_as_read() -> None:
    fast = compile_file(ROOT / "mappings" / "reference" / "deliveryorder.yaml")
    body = fast.source.split("def transform(")[1].split("\ndef ")[0]
    assert body.count("memo_put(") == 1 and ".strip('0123456789') == '.'" in body
