"""Money is computed in the runtime's own decimal context (MONEY: precision 34, HALF_EVEN beyond
that, InvalidOperation/DivisionByZero/Overflow trapped), never the calling thread's: a mapping's
result, or its error, is the same under any `decimal.getcontext()` as under the default one."""

from __future__ import annotations

import decimal
import types
from decimal import Decimal, localcontext
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dockyard.compiler.api import compile_file
from dockyard.runtime.functions import MONEY

# Every decimal operator and function the language has, on required and optional values, in a
# fused loop, a $each, a comprehension sum, comparisons, a folded constant (1 / 3) and context.
MONEY_SPEC = """\
dockyard: 1
name: t.money
version: "1.0.0"
source: {schema: order, key: order_no}
target: {format: json}
context:
  rate: {type: decimal}
let:
  lines: filter(items, $i => $i.qty > 0)
output:
  orderCode: order_no
  paid: amounts.paid_total
  net: amounts.paid_total - (amounts.freight ?? 0)
  gross: amounts.paid_total + amounts.paid_total * $ctx.rate
  share: format_decimal(amounts.paid_total / 3, 2)
  third: amounts.paid_total * (1 / 3)
  ratio: round(amounts.paid_total / (amounts.goods_total ?? 1), 4, "HALF_EVEN")
  rest: amounts.paid_total % 7
  neg: -amounts.paid_total
  absolute: abs(amounts.paid_total - 100)
  big: amounts.paid_total > 100
  small: (amounts.freight ?? 0) < $ctx.rate
  same: amounts.freight == 0
  other: amounts.freight != amounts.discount_total
  fine: format_decimal(amounts.freight ?? 0, 9)
  text: string(amounts.paid_total * 2)
  lineTotal: sum($lines, $l => $l.unit_price * $l.qty - $l.discount)
  allTotal: sum(items, $i => $i.unit_price)
  qty: sum($lines, $l => $l.qty)
  highest: max(items, $i => $i.unit_price) ?? 0
  lowest: min(map(items, $i => $i.discount)) ?? 0
  lines:
    $each: $lines
    $as: line
    $emit:
      price: format_decimal($line.unit_price - $line.discount, 2)
      cheap: $line.unit_price <= 10
"""


def _general_module(spec: Path) -> Any:
    from dockyard.compiler.api import check_file
    from dockyard.compiler.codegen import generate_module
    from dockyard.runtime.mapping import CompiledMapping, load_module

    report = check_file(spec)
    assert report.spec is not None and report.checked is not None
    source = generate_module(report.spec, report.checked, specialise=False)
    return CompiledMapping(load_module(source, f"<general {spec}>", "general_money"), source,
                           report.spec.source_schema)


@pytest.fixture(scope="module")
def money(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any]:
    path = tmp_path_factory.mktemp("money") / "money.yaml"
    path.write_text(MONEY_SPEC, encoding="utf-8")
    return compile_file(path), _general_module(path)


def _exactly(value: Any) -> Any:
    """A value with each Decimal as its digits and exponent (a NaN is not equal to itself, and its
    repr follows the thread's `capitals`)."""
    if isinstance(value, Decimal):
        return ("Decimal", value.as_tuple())
    if isinstance(value, dict):
        return {k: _exactly(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_exactly(v) for v in value]
    return value


def _outcome(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """A result (JSON bytes for render), or everything a caller sees of the error."""
    try:
        return ("ok", _exactly(fn(*args, **kwargs)))
    except Exception as exc:
        cause = exc.__cause__
        # (Lower case: a message may quote the caller's input, whose Decimals repr() writes with the
        # thread's `capitals`, 1e+30 or 1E+30; that is the caller's object, not a computed value.)
        return ("error", type(exc).__name__, str(exc).lower(), getattr(exc, "location", None),
                getattr(exc, "field", None),
                type(cause).__name__ if cause is not None else None)


# Decimals of every scale and size: 29 to 40 digits (beyond the default context's 28 and MONEY's
# 34), negative zero, tiny exponents, zero divisors, and what Decimal() reads that to_decimal does
# not (a NaN, an infinity) as text and as Decimal objects.
_digits = st.integers(-(10**40), 10**40).flatmap(lambda i: st.integers(-20, 6).map(lambda e: Decimal(i).scaleb(e)))
_decimals = st.one_of(
    st.decimals(allow_nan=False, allow_infinity=False, places=None), _digits,
    st.sampled_from([Decimal("-0"), Decimal("0"), Decimal("0E-9"), Decimal("-0.005"), Decimal("1E+30"),
                     Decimal("12345678901234567890123456789.125"), Decimal("99999999999999999999999999999999.995"),
                     Decimal("1E+999990"), Decimal("1E-999990")]),
)
_values = st.one_of(_decimals, _decimals.map(str), _decimals.map(lambda d: format(d, "f")),
                    st.sampled_from(["NaN", "sNaN", "-Infinity", Decimal("NaN"), Decimal("sNaN"), Decimal("Inf"),
                                     "12.5x", 3, 0, 1.5]))
_orders = st.fixed_dictionaries({
    "order_no": st.just("T1"),
    "amounts": st.fixed_dictionaries({"paid_total": _values}, optional={
        "freight": st.one_of(st.none(), _values), "goods_total": st.one_of(st.none(), _values),
        "discount_total": st.one_of(st.none(), _values)}),
    "items": st.lists(st.fixed_dictionaries({"qty": st.integers(-1, 3), "unit_price": _values,
                                             "discount": _values}), max_size=3),
})
_signals = [decimal.Clamped, decimal.DivisionByZero, decimal.Inexact, decimal.InvalidOperation, decimal.Overflow,
            decimal.Rounded, decimal.Subnormal, decimal.Underflow, decimal.FloatOperation]
_rounding = st.sampled_from([decimal.ROUND_HALF_UP, decimal.ROUND_HALF_EVEN, decimal.ROUND_HALF_DOWN, decimal.ROUND_UP,
                             decimal.ROUND_DOWN, decimal.ROUND_CEILING, decimal.ROUND_FLOOR, decimal.ROUND_05UP])
_thread_contexts = st.builds(
    lambda prec, rounding, traps, emax, emin, capitals, clamp: decimal.Context(
        prec=prec, rounding=rounding, traps=traps, Emax=emax, Emin=emin, capitals=capitals, clamp=clamp),
    st.integers(1, 60), _rounding, st.lists(st.sampled_from(_signals), unique=True),
    st.sampled_from([2, 30, 999999, decimal.MAX_EMAX]), st.sampled_from([-2, -30, -999999, decimal.MIN_EMIN]),
    st.integers(0, 1), st.integers(0, 1))


def _all_ways(mapping: Any, general: Any, order: dict[str, Any], context: dict[str, Any]) -> list[Any]:
    return [
        _outcome(mapping.transform, order, context),  # the generated entry
        _outcome(mapping.transform, types.MappingProxyType(order), context),  # the runtime's method
        _outcome(mapping.bind(context), order),
        _outcome(mapping.render, order, context),
        _outcome(lambda: mapping.explain(order, context)[0]),  # the traced function
        _outcome(general.transform, order, context),  # general code (specialise=False)
    ]


@settings(max_examples=300, deadline=None, database=None)
@given(_orders, _decimals, _thread_contexts)
def test_the_result_does_not_depend_on_the_thread_decimal_context(money: tuple[Any, Any], order: dict[str, Any],
                                                                   rate: Decimal, thread: decimal.Context) -> None:
    mapping, general = money
    context = {"rate": rate}
    with localcontext(decimal.Context()):  # the default context
        expected = _all_ways(mapping, general, order, context)
    with localcontext(thread):
        assert _all_ways(mapping, general, order, context) == expected


def test_money_is_computed_with_34_digits_under_the_default_context(money: tuple[Any, Any]) -> None:
    # 29 and more digits: the default context (28) would round these; MONEY keeps 34 and rounds
    # HALF_EVEN beyond, whatever the thread's context says (before, a thread context with 28 digits
    # computed in its own, so these depended on the caller).
    mapping, _general = money
    paid, rate = Decimal("12345678901234567890123456789.125"), Decimal("0.1")
    order = {"order_no": "T1", "amounts": {"paid_total": str(paid), "freight": "0.001"},
             "items": [{"qty": 2, "unit_price": "1234567890123456789012345678.5", "discount": "0"}]}
    for thread in (decimal.Context(), decimal.Context(prec=5, rounding=decimal.ROUND_DOWN),
                   decimal.Context(prec=60, traps=[decimal.Inexact, decimal.Rounded])):
        with localcontext(thread):
            doc = mapping.transform(order, {"rate": rate})
        assert doc["net"] == Decimal("12345678901234567890123456789.124")
        assert doc["gross"] == Decimal("13580246791358024679135802468.0375")  # 33 digits, exact
        third = MONEY.multiply(paid, MONEY.divide(1, 3))  # 34 digits, HALF_EVEN
        assert doc["third"] == third and len(third.as_tuple().digits) == 34
        assert doc["lineTotal"] == Decimal("2469135780246913578024691357.0")
    with localcontext(decimal.Context()):
        assert paid - Decimal("0.001") != doc["net"]  # what the default context would have given


def test_format_decimal_beyond_six_places_is_never_in_exponent_form(money: tuple[Any, Any]) -> None:
    mapping, general = money
    for freight in ("0", "-0", "0.000000001", "0.0000000004", "1E-30"):
        order = {"order_no": "T1", "amounts": {"paid_total": "1", "freight": freight}, "items": []}
        for m in (mapping, general):
            fine = m.transform(order, {"rate": Decimal(1)})["fine"]
            assert "E" not in fine and "e" not in fine and len(fine.split(".")[1]) == 9, fine


# A module of an older compiler: Python's operators in the thread's context, and (i13e's) an entry
# that checks that context itself. The runtime still makes the context safe around its calls.
_OLD_MODULE = '''\
from dockyard.runtime.api import Decimal, Target

__dockyard_mapping__ = {'name': 't.old', 'version': '1.0.0', 'description': '', 'spec': 'old.yaml',
                        'compiler': '0.1.0', 'key': ('order_no',), 'source_schema': None, 'source_format': 'json',
                        'source_root': None, 'context': (), 'examples': {}, 'request': None, 'constant': False}
TARGET = Target('json')


def transform(_src, _ctx, _clock, _trace=None):
    return {'third': Decimal(_src['n']) / 3}


def transform_entry(_general, _translate, _refused, _system_clock, _getcontext, _invalid, _by_zero, _overflow):
    def entry(order, context=None, clock=None, *, validate=False, _trace=None):
        _c = _getcontext()
        _traps = _c.traps
        if (order.__class__ is not dict or clock is not None or validate or _trace is not None
                or not (_c.prec >= 28 and _c.Emax >= 999999 and _traps[_invalid] and _traps[_by_zero]
                        and _traps[_overflow])):
            return _general(order, context, clock, validate=validate, _trace=_trace)
        return transform(order, context, _system_clock)
    return entry


__dockyard_fields__ = (('old.yaml', 1, 1, 'third'),)
__dockyard_sourcemap__ = {}
__dockyard_lineage__ = {}
__dockyard_loops__ = {}
'''


@pytest.mark.parametrize("with_entry", [True, False])
def test_a_module_of_an_older_compiler_still_computes_in_a_money_safe_context(with_entry: bool) -> None:
    from dockyard.runtime.mapping import CompiledMapping, load_module

    source = _OLD_MODULE if with_entry else _OLD_MODULE[:_OLD_MODULE.index("def transform_entry")] + \
        _OLD_MODULE[_OLD_MODULE.index("__dockyard_fields__"):]
    mapping = CompiledMapping(load_module(source, "<old>", f"old_{with_entry}"), source, None)
    assert ("transform" in vars(mapping)) is with_entry
    order = {"order_no": "T1", "n": "1"}
    with localcontext(decimal.Context(prec=5, traps=[])):  # unsafe: the runtime enters MONEY's copy
        for run in (mapping.transform, mapping.bind()):
            assert run(order)["third"] == MONEY.divide(1, 3)
    with localcontext(decimal.Context(prec=30)):  # safe: as before, such a module computes in it
        assert mapping.transform(order)["third"] == Decimal(1) / 3 != MONEY.divide(1, 3)
