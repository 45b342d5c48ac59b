"""Specialised code agrees with the general code it stands in for, on inputs chosen to break it:
timestamps of every offset, Z, fractions, leap days and invalid dates; money of every scale,
negative zero and huge values; the trace-free function; a bound mapping."""

from __future__ import annotations

import re
import types
from datetime import UTC, datetime, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation, localcontext
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dockyard.compiler.api import compile_file
from dockyard.runtime.dates import iso_formatter
from dockyard.runtime.errors import DockyardError
from dockyard.runtime.mapping import _DECIMAL_CONTEXT

ROOT = Path(__file__).resolve().parents[2]
PROPERTY = settings(max_examples=400, deadline=None, database=None)
PATTERNS = ["yyyy-MM-dd HH:mm:ss", "yyyyMMddHHmmss", "dd/MM/yyyy", "yyyy-MM-dd'T'HH:mm:ss.SSSXXX", "HH:mm"]
ZONES = [None, "Asia/Shanghai", "UTC", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata", "Europe/London"]


def _outcome(fn: Any, text: Any) -> str:
    try:
        return "ok " + fn(text)
    except (ValueError, TypeError, OverflowError) as exc:
        return f"error {type(exc).__name__} {exc}"


_offsets = st.integers(-14 * 60, 14 * 60).map(
    lambda m: ("+" if m >= 0 else "-") + f"{abs(m) // 60:02d}:{abs(m) % 60:02d}")
_stamps = st.one_of(
    st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)).map(lambda d: d.isoformat()),
    st.tuples(st.integers(1900, 2100), st.integers(0, 13), st.integers(0, 32), st.integers(0, 25),
              st.integers(0, 61), st.integers(0, 61)).map(lambda t: "-".join(f"{n:02d}" for n in t[:3]) + "T"
                                                          + ":".join(f"{n:02d}" for n in t[3:])),
    st.sampled_from(["2024-02-29T23:59:59", "2023-02-29T10:00:00", "2023-11-11T00:01:23", "1991-09-15T01:30:00",
                     "2023-03-12T02:30:00", "2023-11-05T01:30:00", "2023-11-11 00:01:23"]),
)
_suffix = st.one_of(_offsets, st.just("Z"), st.just(""), st.sampled_from(["+0800", "+08", "+08:00:00", "+8:00"]))
_fraction = st.one_of(st.just(""), st.integers(0, 999999).map(lambda f: f".{f:06d}"),
                      st.text(alphabet="0123456789", min_size=0, max_size=9).map(lambda f: "." + f),
                      st.sampled_from([".5", ",5", ".٣", ".12a", ". 1", "..1"]))


@PROPERTY
@given(st.sampled_from(PATTERNS), st.sampled_from(ZONES),
       st.lists(st.tuples(_stamps, _fraction, _suffix), min_size=1, max_size=6), st.data())
def test_fixed_offset_timestamps_match_the_general_path(pattern: str, zone: str | None,
                                                        stamps: list[tuple[str, str, str]],
                                                        data: st.DataObject) -> None:
    fast = iso_formatter(pattern, zone)
    general = getattr(fast, "general", fast)  # a pattern without a fast path is the general path
    texts = [s + f + o for s, f, o in stamps]
    # The same hour with other minutes and seconds, so that the fast path's cache is hit.
    # (And of a time in Z, with a fraction or none: the fast path in Z writes the zone's hour.)
    texts += [t[:14] + data.draw(st.sampled_from(["00:00", "59:59", "60:00", "5x:00", "30:61"]))
              + data.draw(st.sampled_from(["", ".5", ".123456", ".1234567", ".", ".٣", "z"])) * (len(t) == 20)
              + t[19:] for t in texts if len(t) == 25 or (len(t) == 20 and t.endswith("Z"))]
    for text in texts + texts:
        assert _outcome(fast, text) == _outcome(general, text), text


def test_offsets_around_a_transition_are_not_taken_for_the_zone_s() -> None:
    fast = iso_formatter("yyyy-MM-dd HH:mm:ss", "America/New_York")
    for text in ["2023-11-05T01:10:00-04:00", "2023-11-05T01:50:00-04:00", "2023-11-05T01:10:00-05:00",
                 "2023-03-12T01:59:59-05:00", "2023-03-12T03:00:00-04:00"] * 2:
        assert fast(text) == fast.general(text)  # type: ignore[attr-defined]


def test_non_text_takes_the_general_path() -> None:
    fast = iso_formatter("yyyy-MM-dd HH:mm:ss", "Asia/Shanghai")
    assert _outcome(fast, 20231111) == _outcome(fast.general, 20231111)  # type: ignore[attr-defined]


_money = st.one_of(
    st.decimals(allow_nan=False, allow_infinity=False, places=None),
    st.integers(-(10**30), 10**30).flatmap(lambda i: st.integers(-12, 12).map(lambda e: Decimal(i).scaleb(e))),
    st.sampled_from([Decimal("-0"), Decimal("-0.000"), Decimal("-0.004"), Decimal("-0.005"), Decimal("0E+5"),
                     Decimal("-1E-20"), Decimal("99999999999999999999.995")]),
)


@PROPERTY
@given(_money, st.integers(0, 12))
def test_money_without_the_added_zero_is_the_same_text(value: Decimal, places: int) -> None:
    quantum = Decimal(1).scaleb(-places)
    with localcontext(_DECIMAL_CONTEXT):
        try:
            general = str(value.quantize(quantum, ROUND_HALF_UP) + Decimal(0))
        except ArithmeticError as exc:
            general = type(exc).__name__
        try:
            rounded = value.quantize(quantum, ROUND_HALF_UP)
            fast = str(rounded if rounded else rounded.copy_abs())
        except ArithmeticError as exc:
            fast = type(exc).__name__
    assert fast == general


# --- whole mappings: specialised module vs general module, traced vs trace-free, bound vs not ---

def _general_module(spec: Path) -> Any:
    from dockyard.compiler.api import check_file
    from dockyard.compiler.codegen import generate_module
    from dockyard.runtime.mapping import CompiledMapping, load_module

    report = check_file(spec)
    assert report.spec is not None and report.checked is not None
    source = generate_module(report.spec, report.checked, specialise=False)
    module = load_module(source, f"<general {spec}>", "general")
    return CompiledMapping(module, source, report.spec.source_schema)


@pytest.fixture(scope="module")
def reference() -> tuple[Any, Any]:
    spec = ROOT / "mappings" / "reference" / "deliveryorder.yaml"
    return compile_file(spec), _general_module(spec)


_order_stamp = st.one_of(st.tuples(_stamps, _fraction, _suffix).map("".join), st.just("2023-11-11T00:01:23+08:00"))


def _result(fn: Any, order: dict[str, Any]) -> Any:
    try:
        return fn(order)
    except DockyardError as exc:
        return f"error {type(exc).__name__} {exc}"


@settings(max_examples=150, deadline=None, database=None)
@given(st.lists(_order_stamp, min_size=1, max_size=5), st.lists(st.tuples(st.integers(-1, 3), _money, _money),
                                                                  max_size=4))
def test_reference_mapping_specialised_traced_and_bound_agree(reference: tuple[Any, Any], stamps: list[str],
                                                             lines: list[tuple[int, Decimal, Decimal]]) -> None:
    fast, general = reference
    bound = fast.bind()
    clock = datetime(2023, 11, 11, tzinfo=timezone(timedelta(hours=8)))
    for stamp in stamps:
        order = {
            "order_no": "T1", "shop_code": "TM-FLAG-001", "created_at": stamp, "buyer": {"nick": "n"},
            "receiver": {"name": "a", "mobile": "1", "province": "p", "city": "c", "district": "d", "address": " x "},
            "amounts": {"paid_total": str(lines[0][1]) if lines else "0"},
            "items": [{"sku": f"S{i}", "name": "i", "qty": q, "unit_price": str(p), "discount": str(d),
                       "is_gift": False} for i, (q, p, d) in enumerate(lines)],
        }
        expected = _result(lambda o: general.transform(o, clock=clock), order)
        # The fused loop builds the lines before the header fields, so of an order with several
        # faults it may name another one first; each is located in the spec, and the input's
        # problems listed are the same. The traced function (explain) is not fused: exact order.
        assert _same(_result(lambda o: fast.transform(o, clock=clock), order), expected)
        assert _same(_result(bound, order), expected)
        assert _result(lambda o: fast.explain(o, clock=clock)[0], order) == expected


def _same(got: Any, expected: Any) -> bool:
    if isinstance(expected, str) and isinstance(got, str) and expected.startswith("error "):
        located = re.compile(r"\S+\.yaml:\d+:\d+: .+; field \S+; order T1")
        return got.split("\n")[1:] == expected.split("\n")[1:] and bool(located.search(got.split("\n")[0]))
    return bool(got == expected)


_raw = st.one_of(st.none(), st.floats(allow_nan=True), st.decimals(allow_nan=True), st.text(max_size=3),
                 st.integers(-(2**70), 2**70), st.booleans(), st.lists(st.integers(), max_size=2),
                 st.dictionaries(st.text(max_size=2), st.none() | st.floats(), max_size=2))


@settings(max_examples=300, deadline=None, database=None)
@given(st.sampled_from(["order_no", "nick", "name", "sku", "qty"]), _raw)
def test_json_render_trusts_the_compiler_only_where_it_may(reference: tuple[Any, Any], where: str,
                                                           value: Any) -> None:
    """A raw input value of any type at a field the mapping copies: render() writes or refuses
    exactly as the writer that checks every value does."""
    from dockyard.runtime.serialize import serialize

    fast, _general = reference
    order = {
        "order_no": "T1", "shop_code": "X", "created_at": "2023-11-11T00:01:23+08:00", "buyer": {"nick": "n"},
        "receiver": {"name": "a", "mobile": "1", "province": "p", "city": "c", "district": "d", "address": " x "},
        "amounts": {"paid_total": "1"},
        "items": [{"sku": "S", "name": "i", "qty": 1, "unit_price": "1", "discount": "0", "is_gift": False}],
    }
    if where in ("order_no",):
        order[where] = value
    elif where == "nick":
        order["buyer"]["nick"] = value
    elif where == "name":
        order["receiver"]["name"] = value
    else:
        order["items"][0][where] = value
    # The instance's render (one call around transform and orjson) and the method, which goes
    # through _render and to_json_bytes: the same bytes or the same error, refusals included.
    from dockyard.runtime.mapping import CompiledMapping

    assert "render" in vars(fast)
    def outcome(fn: Any) -> Any:
        try:
            return fn(order)
        except Exception as exc:
            return ("error", type(exc).__name__, str(exc), type(exc.__cause__).__name__)

    assert outcome(fast.render) == outcome(lambda o: CompiledMapping.render(fast, o))
    try:
        doc = fast.transform(order)
    except (DockyardError, ArithmeticError):
        # Refused before any writing. (ArithmeticError: explaining a NaN decimal's schema problems
        # fails inside jsonschema, a separate bug left as it is here.)
        return
    expected = _result(lambda d: serialize(d, fast.target), doc)
    assert _result(lambda o: fast.render(o), order) == expected


_FUSED_SPEC = """\
dockyard: 1
name: test.fused
version: "1.0.0"
source:
  schema: order
  key: order_no
target:
  format: json
output:
  skus: join(map(filter(items, $i => $i.qty > 0), $j => $j.sku), ",")
  qty: sum(filter(items, $i => $i.qty > 0 and not $i.is_gift), $l => $l.qty)
  money: format_decimal(sum(filter(items, $i => $i.qty > 1), $l => $l.unit_price - $l.discount), 2)
  names?: map(filter(items, $i => $i.is_gift), $g => $g.name)
  sizes: >-
    map(filter(items ?? [], $i => $i.qty >= 0), $s => {sku: $s.sku, n: $s.qty * 2})
  kept_qty: sum($kept, $k => $k.qty)
  kept_money: sum($kept, $k => $k.unit_price)
  lines:
    $each: $kept
    $as: line
    $where: $line.is_gift != true
    $emit:
      n: string($position)
      sku: $line.sku
let:
  kept: filter(items, $i => $i.qty > 0)
"""


def _fast_and_general(tmp_path_factory: pytest.TempPathFactory, name: str, spec: str) -> tuple[Any, Any]:
    """A spec compiled as it ships and as the general code (no specialisation) would run it."""
    path = tmp_path_factory.mktemp(name) / f"{name}.yaml"
    path.write_text(spec, encoding="utf-8")
    return compile_file(path), _general_module(path)


@pytest.fixture(scope="module")
def fused(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any]:
    return _fast_and_general(tmp_path_factory, "fused", _FUSED_SPEC)


_items = st.lists(st.fixed_dictionaries({
    "sku": st.sampled_from(["A", "B", "名"]), "name": st.sampled_from(["x", "y"]),
    "qty": st.one_of(st.integers(-2, 4), st.none(), st.just(1.5)),
    "unit_price": st.sampled_from(["1.005", "0", "-2.5", "99999999999999999999.995", "x"]),
    "discount": st.sampled_from(["0", "0.004", "-0.005"]), "is_gift": st.one_of(st.booleans(), st.none())}),
    max_size=6)


@settings(max_examples=300, deadline=None, database=None)
@given(_items)
def test_fused_filter_map_sum_agree_with_the_general_code(fused: tuple[Any, Any], items: list[dict[str, Any]]) -> None:
    fast, general = fused
    order = {"order_no": "T1", "items": items}
    assert _same(_result(fast.transform, order), _result(general.transform, order))


def test_the_fused_spec_is_fused(fused: tuple[Any, Any]) -> None:
    fast, general = fused
    body = fast.source.split("def transform(")[1]
    assert "if (_a" in body and body.count(" for ") < general.source.split("def transform(")[1].count(" for ")
    # The let `kept` is one loop with its two sums and its $each; no list of it is built.
    assert "_v2 += " in body or body.count("+= ") >= 2
    assert "= [_a1 for _a1 in _src['items'] if" not in body


_lits = st.one_of(st.integers(-(10**30), 10**30).map(str),
                  st.decimals(allow_nan=False, allow_infinity=False, places=4).map(lambda d: format(d, "f")),
                  st.sampled_from(['"a"', '"名"', "true", "false", "0", "0.0", "-0.00", "1e3"]))


def _exprs() -> st.SearchStrategy[str]:
    return st.recursive(_lits, lambda inner: st.one_of(
        st.tuples(inner, st.sampled_from(["+", "-", "*", "/", "%", "==", "<", ">=", "and", "??"]), inner).map(
            lambda t: f"({t[0]} {t[1]} {t[2]})"),
        inner.map(lambda e: f"(-{e})"), inner.map(lambda e: f"(not {e})"),
        st.tuples(inner, inner, inner).map(lambda t: f"(if {t[0]} then {t[1]} else {t[2]})")), max_leaves=6)


def _evaluate(text: str, specialise: bool) -> str:
    from dockyard.compiler.api import compile_expression
    from dockyard.compiler.checks import check_expression
    from dockyard.compiler.codegen import generate_expression_module
    from dockyard.dsl.diagnostics import DiagnosticsError
    from dockyard.dsl.parser import parse_expression
    from dockyard.runtime.mapping import load_module

    try:
        compile_expression(text)  # the checks: a text they refuse is not compiled at all
    except DiagnosticsError:
        return "refused"
    expr = parse_expression(text)
    checked, _t = check_expression(expr, None, {}, None)
    module = load_module(generate_expression_module(expr, checked, {}, specialise=specialise), "<e>", "e")
    try:
        with localcontext(_DECIMAL_CONTEXT):
            value = module.evaluate({}, {}, None)
        return f"{type(value).__name__} {value!r}"
    except Exception as exc:
        return f"error {type(exc).__name__}"


@settings(max_examples=800, deadline=None, database=None)  # the checker refuses many; ~200 run
@given(_exprs())
def test_constant_folding_gives_what_the_general_code_computes(text: str) -> None:
    assert _evaluate(text, True) == _evaluate(text, False)


_CONTEXT_SPEC = """\
dockyard: 1
name: t.context
version: "1.0.0"
source: {schema: order, key: order_no}
target: {format: json}
context:
  owner: {type: string}
  count: {type: int, required: false}
  rate: {type: decimal}
  flag: {type: bool, required: false}
output:
  orderCode: order_no
  owner: $ctx.owner
  rate: string($ctx.rate)
  count: $ctx.count ?? -1
  flag?: $ctx.flag
"""


class _Str(str):
    pass


_context_values = st.one_of(st.none(), st.text(max_size=3), st.integers(-3, 3), st.booleans(),
                            st.decimals(allow_nan=False, allow_infinity=False, places=2), st.just(_Str("s")),
                            st.just(1.5), st.just(["x"]))


@pytest.fixture(scope="module")
def with_context(tmp_path_factory: pytest.TempPathFactory) -> Any:
    path = tmp_path_factory.mktemp("context") / "context.yaml"
    path.write_text(_CONTEXT_SPEC, encoding="utf-8")
    return compile_file(path)


def _checked(fn: Any, context: Any) -> Any:
    try:
        return ("ok", dict(fn(context)))
    except (DockyardError, ValueError, TypeError) as exc:  # a bad decimal: to_decimal raises these as they are
        return ("error", type(exc).__name__, str(exc))


@settings(max_examples=400, deadline=None, database=None)
@given(st.dictionaries(st.sampled_from(["owner", "count", "rate", "flag", "other"]), _context_values, max_size=5))
def test_context_check_fast_path_agrees_with_check_context(with_context: Any, context: dict[str, Any]) -> None:
    # The fast path hands the caller's dict back only where check_context would hand it back unchanged.
    fast = _checked(with_context._checked_context, context)
    assert fast == _checked(with_context.check_context, context)
    if fast[0] == "ok":
        order = {"order_no": "T1"}
        assert with_context.transform(order, context) == with_context.transform(order, dict(fast[1]))
    for other in (None, types.MappingProxyType(context)):
        assert _checked(with_context._checked_context, other) == _checked(with_context.check_context, other)


@settings(max_examples=200, deadline=None, database=None)
@given(st.dictionaries(st.sampled_from(["owner", "count", "rate", "flag", "other"]), _context_values, max_size=5),
       st.dictionaries(st.sampled_from(["owner", "count", "rate", "flag", "other"]), _context_values, max_size=5))
def test_bind_checks_the_context_once_and_keeps_what_it_checked(with_context: Any, context: dict[str, Any],
                                                              later: dict[str, Any]) -> None:
    # What the caller does to its dict after bind() changes nothing: the bound mapping runs on the
    # values it checked (a None or another class set later would otherwise pass unchecked).
    order = {"order_no": "T1"}
    try:
        bound = with_context.bind(context)
    except (DockyardError, ValueError, TypeError) as exc:  # as check_context refuses it (see _checked)
        assert _checked(with_context.check_context, context) == ("error", type(exc).__name__, str(exc))
        return
    expected = with_context.transform(order, dict(context))
    context.clear()
    context.update(later)
    assert bound(order) == expected


def test_transform_and_bind_with_a_thread_context_unsafe_for_money(reference: tuple[Any, Any]) -> None:
    # Money is computed in MONEY whatever the thread's context: transform() and bind() give the same document.
    fast, _general = reference
    order = {"order_no": "T1", "created_at": "2023-11-11T00:00:00+08:00", "buyer": {"nick": "n"},
             "receiver": {k: "x" for k in ("name", "mobile", "province", "city", "district", "address")},
             "shop_code": "S", "amounts": {"paid_total": "12345678901234567890.125"},
             "items": [{"sku": "A", "name": "a", "qty": 1, "unit_price": "99999999999999999999.995",
                        "discount": "0.001", "is_gift": False}]}
    expected = fast.transform(order)
    for prec, traps in ((5, True), (28, False)):
        with localcontext() as c:
            c.prec = prec
            c.traps[InvalidOperation] = traps
            assert fast.transform(order) == expected
            assert fast.bind()(order) == expected


# --- transform() as one call: the generated transform_entry against CompiledMapping.transform ---

def _outcome_of(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """A result, or everything a caller can see of the error: class, text, fields, cause."""
    try:
        return ("ok", fn(*args, **kwargs))
    except Exception as exc:
        cause = exc.__cause__
        return ("error", type(exc).__name__, str(exc), getattr(exc, "location", None), getattr(exc, "field", None),
                type(cause).__name__ if cause is not None else None, exc.__suppress_context__)


def _general_transform(mapping: Any) -> Any:
    from dockyard.runtime.mapping import CompiledMapping

    return lambda *args, **kwargs: CompiledMapping.transform(mapping, *args, **kwargs)


def test_transform_is_the_generated_entry(reference: tuple[Any, Any], with_context: Any) -> None:
    from dockyard.runtime.mapping import CompiledMapping

    fast, general = reference
    for mapping in (fast, with_context):
        assert "transform" in vars(mapping) and mapping.transform.__module__ == mapping.module.__name__
    assert "transform" not in vars(general)  # a module without specialised code: the method itself
    assert general.transform.__func__ is CompiledMapping.transform


_orders = st.fixed_dictionaries({"order_no": st.one_of(st.just("T1"), st.none(), st.integers(0, 3))})
_order_shapes = st.sampled_from(["dict", "proxy", "list"])


@settings(max_examples=400, deadline=None, database=None)
@given(st.one_of(st.none(), st.dictionaries(st.sampled_from(["owner", "count", "rate", "flag", "other"]),
                                            _context_values, max_size=5)),
       _orders, _order_shapes, st.sampled_from([None, "fixed", "naive"]), st.booleans(),
       st.sampled_from([(28, True), (5, True), (28, False), (40, True)]))
def test_transform_entry_agrees_with_the_general_method(with_context: Any, context: dict[str, Any] | None,
                                                        order: dict[str, Any], shape: str, clock: str | None,
                                                        validate: bool, decimal: tuple[int, bool]) -> None:
    wrapped: Any = {"dict": order, "proxy": types.MappingProxyType(order), "list": [order]}[shape]
    when = {None: None, "fixed": datetime(2023, 11, 11, tzinfo=UTC), "naive": datetime(2023, 11, 11)}[clock]
    general = _general_transform(with_context)
    with localcontext() as c:
        c.prec, c.traps[InvalidOperation] = decimal
        for args in ((wrapped,), (wrapped, context), (wrapped, context, when)):
            assert _outcome_of(with_context.transform, *args) == _outcome_of(general, *args)
        assert (_outcome_of(with_context.transform, wrapped, context=context, clock=when, validate=validate)
                == _outcome_of(general, wrapped, context=context, clock=when, validate=validate))


_faulty = st.fixed_dictionaries({
    "order_no": st.one_of(st.just("T1"), st.none()), "shop_code": st.sampled_from(["TM-FLAG-001", "X", None]),
    "created_at": st.sampled_from(["2023-11-11T00:01:23+08:00", "2023-11-11T00:01:23Z", "bad", None]),
    "buyer": st.one_of(st.just({"nick": "n"}), st.just({"nick": None}), st.none()),
    "receiver": st.one_of(st.just({"name": "a", "mobile": "1", "province": "p", "city": "c", "district": "d",
                                   "address": " x "}), st.just({"name": "a"}), st.none()),
    "amounts": st.fixed_dictionaries({"paid_total": st.one_of(st.sampled_from(["1.005", "x", "-0.004"]), _raw)}),
    "items": st.lists(st.fixed_dictionaries({
        "sku": st.sampled_from(["A", None]), "name": st.just("i"), "qty": st.one_of(st.integers(-1, 3), _raw),
        "unit_price": st.sampled_from(["1.005", "x", "2"]), "discount": st.sampled_from(["0", None]),
        "is_gift": st.booleans()}), max_size=3),
})


@settings(max_examples=300, deadline=None, database=None)
@given(_faulty)
def test_transform_entry_fails_exactly_as_the_general_method(reference: tuple[Any, Any],
                                                             order: dict[str, Any]) -> None:
    # The same statements run in both: every error is the same, spec location, field and cause included.
    fast, _general = reference
    clock = datetime(2023, 11, 11, tzinfo=timezone(timedelta(hours=8)))
    assert _outcome_of(fast.transform, order, clock=clock) == _outcome_of(_general_transform(fast), order, clock=clock)
    assert _outcome_of(fast.transform, order) == _outcome_of(_general_transform(fast), order)


# --- input values read once: a parent object, a loop element's field ---

_READS_SPEC = """\
dockyard: 1
name: test.reads
version: "1.0.0"
source: {schema: order, key: order_no}
target: {format: json}
output:
  code: order_no
  first?: if buyer.nick == "x" then receiver.name else receiver.city
  note: remark ?? receiver.address
  inner:
    $when: receiver.province == "p"
    name: receiver.name
    city: receiver.city
  name: receiver.name
  mobile: receiver.mobile
  trimmed: trim(receiver.address)
  amount: format_decimal(amounts.paid_total, 2)
  twice: format_decimal(amounts.paid_total + amounts.paid_total, 2)
  lines:
    $each: items
    $as: line
    $where: $line.qty > 0 and $line.qty != 2
    $emit:
      sku: $line.sku
      qty: $line.qty
      again: $line.qty
      gift: if $line.is_gift then $line.sku else $line.name
      city: receiver.city
  kept:
    $each: $kept
    $as: k
    $emit:
      sku: $k.sku
      qty: $k.qty
      price: format_decimal($k.unit_price - $k.discount, 2)
  kept_qty: sum($kept, $k => $k.qty)
let:
  kept: filter(items, $i => $i.qty > 1)
"""


@pytest.fixture(scope="module")
def reads(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any]:
    return _fast_and_general(tmp_path_factory, "reads", _READS_SPEC)


def test_the_reads_spec_reads_once(reads: tuple[Any, Any]) -> None:
    fast, general = reads
    body = fast.source.split("def transform(")[1].split("\n\n\n")[0]
    assert "(_r" in body and ":= _src['receiver'])" in body  # bound at its first statement-level read
    assert body.count("_src['receiver']") < general.source.split("def transform(")[1].split("\n\n\n")[0].count(
        "_src['receiver']")
    assert "(_r" not in general.source  # the general code reads every value where it is used


_receivers = st.one_of(
    st.fixed_dictionaries({"name": st.sampled_from(["a", None]), "mobile": st.sampled_from(["1", None]),
                           "province": st.sampled_from(["p", "q"]), "city": st.sampled_from(["c", None, 3]),
                           "address": st.sampled_from([" x ", None])}),
    st.just({"province": "p"}), st.just({}), st.none(), st.just("r"))


@settings(max_examples=400, deadline=None, database=None)
@given(st.fixed_dictionaries({"order_no": st.sampled_from(["T1", None]),
                              "buyer": st.one_of(st.just({"nick": "x"}), st.just({"nick": "y"}), st.none()),
                              "receiver": _receivers,
                              "amounts": st.one_of(st.fixed_dictionaries(
                                  {"paid_total": st.sampled_from(["1.005", "x", "-0.004", None])}), st.none()),
                              "items": _items},
                             optional={"remark": st.sampled_from(["r", None])}), st.sets(st.sampled_from(
                                 ["order_no", "buyer", "receiver", "amounts", "items"]), max_size=2))
def test_values_read_once_agree_with_the_general_code(reads: tuple[Any, Any], order: dict[str, Any],
                                                     drop: set[str]) -> None:
    # Every outcome is the same, each error's spec location and field included: a read bound to a
    # local stays on the line of the first field that reads it, and never runs where it did not.
    fast, general = reads
    order = {k: v for k, v in order.items() if k not in drop}
    assert _outcome_of(fast.transform, order) == _outcome_of(general.transform, order) or _fused_order(
        _outcome_of(fast.transform, order), _outcome_of(general.transform, order))
    # explain's function is not fused: there the first fault found is the same one, exactly.
    assert _outcome_of(lambda o: fast.explain(o)[0], order) == _outcome_of(lambda o: general.explain(o)[0], order)


def _fused_order(got: Any, expected: Any) -> bool:
    """The fused loop of `kept` runs before the fields above it: of an order with several faults, it
    may name another (spec-located) one first, as in the reference mapping's test."""
    return (got[0] == expected[0] == "error" and got[1] == expected[1]
            and got[2].split("\n")[1:] == expected[2].split("\n")[1:])


def test_a_literal_that_looks_like_a_bound_read_is_left_as_it_is(tmp_path: Path) -> None:
    # A user literal holding the very text of the module's binding (repr() writes it verbatim: it has
    # no double quote) is data: only the compiler's own marks are settled into bindings.
    spec = tmp_path / "lit.yaml"
    fields = "  a: receiver.name\n  b: receiver.city\n"
    spec.write_text(_CONTEXT_SPEC.replace("rate: string($ctx.rate)\n", "rate: string($ctx.rate)\n" + fields),
                    encoding="utf-8")
    found = re.search(r"\(_r\d+ := _src\['receiver'\]\)", compile_file(spec).source)
    assert found is not None
    text = f"{found.group(0)}['name'] {found.group(0)[1:4]}"
    spec.write_text(_CONTEXT_SPEC.replace("rate: string($ctx.rate)\n", f'rate: string($ctx.rate)\n  text: "{text}"\n'
                                          + fields), encoding="utf-8")
    mapping = compile_file(spec)
    assert repr(text) in mapping.source and repr(text).startswith('"')
    doc = mapping.transform({"order_no": "T1", "receiver": {"name": "n", "city": "c"}},
                            {"owner": "o", "rate": Decimal("1.5")})
    assert (doc["text"], doc["a"], doc["b"]) == (text, "n", "c")
    # Read once only: the same name's mark becomes a plain read, and the literal still stays as it is.
    spec.write_text(_CONTEXT_SPEC.replace("rate: string($ctx.rate)\n", f'rate: string($ctx.rate)\n  text: "{text}"\n'
                                          "  a: receiver.name\n"), encoding="utf-8")
    mapping = compile_file(spec)
    assert ":= _src['receiver'])['name']\n" not in mapping.source
    assert mapping.transform({"order_no": "T1", "receiver": {"name": "n"}}, {"owner": "o", "rate": Decimal(1)})[
        "text"] == text
