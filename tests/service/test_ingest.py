"""Ingest checks without a server: the two-speed order validator agrees with jsonschema, limits,
and the fingerprint."""

from __future__ import annotations

import copy
import json
from decimal import Decimal
from typing import Any

import fastjsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dockyard.runtime import safe_json
from dockyard.runtime.mapping import _format_checker, _message, _path_text, schema_problems
from dockyard.runtime.schema_patterns import validator_class
from dockyard.sample_orders import generate
from dockyard.service.config import LimitsConfig
from dockyard.service.ingest import (
    BodyError,
    OrderValidator,
    _cut,
    _is_datetime,
    _is_decimal,
    _is_decimal_read,
    _json_fingerprint,
    fingerprint,
    inline_refs,
    order_schema,
    parse_json_body,
    read_body,
)

SCHEMA = order_schema()
FAST = OrderValidator(SCHEMA)
# jsonschema as every validator of ours sets it up: `$` in a pattern read as ECMA-262 reads it
FULL = validator_class()(SCHEMA, format_checker=_format_checker())
ORDERS = [json.loads(json.dumps(o), parse_float=Decimal) for o in generate(60, seed=9)]

# Values that break or keep a field: wrong types, formats, enums, empties, nulls.
VALUES = st.sampled_from([None, "", "x", "12.5", "1e3", "12,5", 0, -1, 1.5, True, [], {}, "2023-11-11T00:00:00+08:00",
                          "2023-11-11 00:00:00", "yesterday", "TM", "sale", "SF", {"nick": "n"}, [{"sku": 1}]])


def _mutated(which: int, data: st.DataObject, value: Any, delete: bool) -> dict[str, Any]:
    """A copy of ORDERS[which] with `value` (a copy) put at a path drawn from it, or that path's
    key deleted."""
    order: dict[str, Any] = copy.deepcopy(ORDERS[which])
    path = data.draw(st.sampled_from(_paths(order)))
    parent: Any = order
    for part in path[:-1]:
        parent = parent[part]
    if delete and isinstance(parent, dict):
        del parent[path[-1]]
    else:
        parent[path[-1]] = copy.deepcopy(value)
    return order


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _paths(v, (*prefix, i))
    return out


@settings(database=None, max_examples=400, deadline=None)
@given(st.integers(0, len(ORDERS) - 1), st.data(), VALUES, st.booleans())
def test_the_fast_verdict_agrees_with_jsonschema(which: int, data: st.DataObject, value: Any, delete: bool) -> None:
    order = _mutated(which, data, value, delete)
    assert FAST.valid(order) == FULL.is_valid(order)
    assert (FAST.reasons(order) == []) == FULL.is_valid(order)


GENERIC = "the order does not match the order schema"


def _at(doc: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        doc = doc[part]
    return doc


@settings(database=None, max_examples=400, deadline=None)
@given(st.integers(0, len(ORDERS) - 1), st.data(),
       st.sampled_from(["\n", "\n\n", "\r\n", "\r", " ", "\t", "\u2028", "\x85", "\u00a0"]))
def test_a_text_with_a_line_break_or_a_space_appended_is_judged_alike_everywhere(
        which: int, data: st.DataObject, suffix: str) -> None:
    """Any text of an order with a line break or a space after it. Python's `$` matches before a
    final newline, so jsonschema took "1.5\\n" for money and "TM1\\n" for an order number while
    fastjsonschema refused them: ingest refused such an order with no reason to give, and a dry run
    (`transform(validate=True)`, the same schema through jsonschema) accepted it. Now the verdicts
    agree, and every refusal names the field."""
    order = copy.deepcopy(ORDERS[which])
    path = data.draw(st.sampled_from([p for p in _paths(order) if isinstance(_at(order, p), str)]))
    _at(order, path[:-1])[path[-1]] += suffix
    valid = FAST.valid(order)
    assert FULL.is_valid(order) is valid
    reasons = FAST.reasons(order)
    assert (reasons == []) is valid
    assert GENERIC not in reasons
    if not valid:
        assert any(r.startswith(_path_text(path) + ":") for r in reasons), reasons
    # the dry run's check (runtime.mapping.schema_problems) and the service's give one verdict
    assert (schema_problems(SCHEMA, order) == ()) is valid


def test_money_and_order_numbers_ending_in_a_newline_are_refused_by_name() -> None:
    order = copy.deepcopy(ORDERS[0])
    order["amounts"]["paid_total"] = "1.5\n"
    order["order_no"] = order["order_no"] + "\n"
    reasons = FAST.reasons(order)
    assert [r.split(":")[0] for r in reasons] == ["amounts.paid_total", "order_no"]
    assert "is not a decimal number" in reasons[0]


def test_generated_orders_pass_and_reasons_name_every_problem() -> None:
    assert all(FAST.valid(o) for o in ORDERS)
    bad = copy.deepcopy(ORDERS[0])
    bad["items"][0]["qty"] = "two"
    del bad["buyer"]
    reasons = FAST.reasons(bad)
    assert any(r.startswith("items[0].qty") for r in reasons) and any("buyer" in r for r in reasons)


def test_body_limits_and_exact_decimals() -> None:
    limits = LimitsConfig(max_depth=4)
    assert parse_json_body(b'{"a": 1.10}', limits) == {"a": Decimal("1.10")}
    with pytest.raises(BodyError, match="deeper than 4"):
        parse_json_body(b'{"a": [[[[1]]]]}', limits)
    with pytest.raises(BodyError, match="not UTF-8"):
        parse_json_body(b'{"a": "\xff"}', limits)
    with pytest.raises(BodyError, match="nests deeper"):
        parse_json_body(b"[" * 100_000 + b"]" * 100_000, LimitsConfig())


def test_the_fingerprint_ignores_key_order_but_not_values() -> None:
    a = {"order_no": "1", "amounts": {"paid_total": Decimal("1.10"), "freight": "0"}}
    b = {"amounts": {"freight": "0", "paid_total": Decimal("1.10")}, "order_no": "1"}
    assert fingerprint(a) == fingerprint(b)
    assert fingerprint(a) != fingerprint({**a, "order_no": "2"})


def test_callback_fields_are_decrypted_before_the_mapping_reads_them() -> None:
    """`decrypt:` of a callback: every value at the path (lists included) is decrypted with the
    named cipher and secret, a missing optional field is left out."""
    from dockyard.runtime.fieldcrypto import get_cipher
    from dockyard.runtime.secrets import MappingSecrets, Secrets
    from dockyard.service.config import CallbackConfig
    from dockyard.service.context import ServiceContext
    from dockyard.service.feedback import _decrypt
    from dockyard.service.routing import Router

    key = "TEST-ONLY-16bytes"[:16]
    secrets = Secrets([MappingSecrets({"SM4_KEY": key})])
    cipher = get_cipher("sm4-ecb")
    secret = secrets.get("SM4_KEY")
    doc = {"receiver": {"mobile": cipher.encrypt("13800000000", secret)},
           "lines": [{"sn": cipher.encrypt("SN-1", secret)}, {"sn": cipher.encrypt("SN-2", secret)}, {}]}
    cfg = CallbackConfig("x", "m", decrypt=({"path": "receiver.mobile", "scheme": "sm4-ecb", "key": "SM4_KEY"},
                                            {"path": "lines[].sn", "scheme": "sm4-ecb", "key": "SM4_KEY"}))
    ctx = ServiceContext(config=None, mappings={}, secrets=secrets, router=Router(()))  # type: ignore[arg-type]
    _decrypt(doc, cfg, ctx)
    assert doc == {"receiver": {"mobile": "13800000000"}, "lines": [{"sn": "SN-1"}, {"sn": "SN-2"}, {}]}


# -- issue 10: the cheaper checks give the same answers as the ones they replace -------------------

# The fast validator as it was compiled before (its `$ref`s as functions, the old decimal check).
OLD_FAST = fastjsonschema.compile(copy.deepcopy(SCHEMA),
                                  formats={"decimal": _is_decimal_read, "date-time": _is_datetime})

DECIMAL_TEXTS = st.one_of(
    st.from_regex(r"\A[-+ ]?[0-9]{0,40}(\.[0-9]{0,40})?([eE][-+]?[0-9]{1,3})?[ \n]?\Z"),
    st.builds(lambda z, d, f: f"{'0' * z}{d}.{f}", st.integers(0, 40), st.integers(0, 10**40),
              st.text("0123456789", max_size=40)),
    st.text(alphabet=st.sampled_from("0123456789.-+eE \n\t٣١NaInfity_,"), max_size=50),
    st.text(max_size=20),
)
DECIMAL_VALUES = st.one_of(
    DECIMAL_TEXTS,
    st.decimals(allow_nan=True, allow_infinity=True),
    st.builds(safe_json.ExponentDecimal, st.decimals(allow_nan=False, allow_infinity=False).map(str)),
    st.floats(), st.integers(), st.booleans(), st.none(),
    st.just(safe_json.Refused("1e99", "has an exponent beyond ±40")),
    st.sampled_from(["0", "-0", "00.000", "1" * 34, "1" * 35, "0." + "0" * 40 + "1" * 34, "0." + "0" * 40 + "1" * 35,
                     "-" + "9" * 34 + ".0", "1.5\n", " 1.5", "+1.5", "1.", ".5", "١٢٣", "1_000"]),
)


@settings(database=None, max_examples=3000, deadline=None)
@given(DECIMAL_VALUES)
def test_the_decimal_check_agrees_with_to_decimal(value: Any) -> None:
    assert _outcome(_is_decimal, value) == _outcome(_is_decimal_read, value)


def _outcome(check: Any, value: Any) -> Any:
    try:
        return check(value)
    except (ArithmeticError, UnicodeEncodeError) as exc:  # Decimal('sNaN') == itself signals; a lone
        return type(exc)  # surrogate has no UTF-8: before and after


@settings(database=None, max_examples=600, deadline=None)
@given(st.integers(0, len(ORDERS) - 1), st.data(), st.one_of(VALUES, DECIMAL_VALUES), st.booleans())
def test_the_fast_verdict_is_the_one_before_refs_were_inlined(which: int, data: st.DataObject, value: Any,
                                                            delete: bool) -> None:
    """The validator compiled from the inlined schema, without details, says what the one
    compiled from the schema as written said, on any value in any place of an order."""
    order = _mutated(which, data, value, delete)
    try:
        OLD_FAST(copy.deepcopy(order))
        old = True
    except fastjsonschema.JsonSchemaException:
        old = False
    assert FAST.valid(order) == old


def test_inline_refs_writes_local_refs_in_place_and_leaves_the_rest() -> None:
    inlined = inline_refs(SCHEMA)
    assert "$ref" not in json.dumps({k: v for k, v in inlined.items() if k != "$defs"})
    paid = inlined["properties"]["amounts"]["properties"]["paid_total"]
    assert paid["pattern"] == SCHEMA["$defs"]["decimal"]["pattern"] and paid["description"].startswith("实付金额")
    schema = {"$defs": {"list": {"type": "array", "items": {"$ref": "#/$defs/list"}}, "n": {"type": "integer"}},
              "properties": {"a": {"$ref": "#/$defs/list"}, "b": {"$ref": "#/$defs/n", "minimum": 3},
                             "c": {"$ref": "#/$defs/n"}, "d": {"enum": [{"$ref": "#/$defs/n"}]}}}
    out = inline_refs(schema)["properties"]
    assert out["a"] == {"type": "array", "items": {"$ref": "#/$defs/list"}}  # recursive: once, then the ref
    assert out["b"] == {"$ref": "#/$defs/n", "minimum": 3}  # a validation keyword beside it
    assert out["c"] == {"type": "integer"} and out["d"] == {"enum": [{"$ref": "#/$defs/n"}]}
    scoped = {"$defs": {"n": {"$id": "other", "type": "integer"}}, "properties": {"c": {"$ref": "#/$defs/n"}}}
    assert inline_refs(scoped) == scoped


JSON_LEAVES = st.one_of(st.none(), st.booleans(), st.integers(), st.integers(-(2**70), 2**70), st.text(),
                        st.decimals(allow_nan=False, allow_infinity=False),
                        st.builds(safe_json.ExponentDecimal, st.sampled_from(["1e5", "-2.5E-3", "0e0"])),
                        st.floats(), st.sampled_from([1e16, 1e-5, float("nan"), float("inf"), -0.0]))
ORDERISH = st.recursive(JSON_LEAVES,
                        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
                        max_leaves=30)


@settings(database=None, max_examples=1500, deadline=None)
@given(ORDERISH)
def test_the_fingerprint_is_the_one_json_dumps_gave(order: Any) -> None:
    """Stored fingerprints stay valid: the same bytes as before on anything, floats (which
    orjson writes otherwise), ints beyond 64 bits and lone surrogates (which it cannot) included."""
    assert _outcome(fingerprint, order) == _outcome(_json_fingerprint, order)


JSON_TEXT_LEAVES = st.one_of(
    st.sampled_from(["null", "true", "false", "NaN", "-Infinity"]),
    st.from_regex(r"\A-?(0|[1-9][0-9]{0,40})(\.[0-9]{1,40})?([eE][-+]?[0-9]{1,3})?\Z"),
    st.builds(lambda text, ascii: json.dumps(text, ensure_ascii=ascii), st.text(), st.booleans()))
JSON_TEXTS = st.recursive(
    JSON_TEXT_LEAVES,
    lambda inner: (st.lists(inner, max_size=4).map(lambda items: "[" + ",".join(items) + "]")
                   | st.lists(st.tuples(st.text(max_size=3) | st.sampled_from(["a", "b"]), inner), max_size=4).map(
                       lambda pairs: "{" + ",".join(f"{json.dumps(k)}:{v}" for k, v in pairs) + "}")),
    max_leaves=30)


@settings(database=None, max_examples=800, deadline=None)
@given(JSON_TEXTS)
def test_the_fingerprint_of_what_safe_json_reads_is_unchanged(text: str) -> None:
    """Orders as ingest reads them: JSON text through `read_body`, numbers as ints and Decimals,
    repeated keys and refused literals as their markers, escapes of any character."""
    value = read_body(text.encode("utf-8", errors="surrogatepass"), LimitsConfig(max_depth=64)).value
    assert _outcome(fingerprint, {"v": value}) == _outcome(_json_fingerprint, {"v": value})


@pytest.mark.parametrize("text", ['{"a": 1, "a": 2, "b": [NaN, 1e99, 1.50, 2e3, 123456789012345678901234]}',
                                  '{"k": "\\u00e9\\ud83d\\ude00\\u0001", "n": -0.0}'])
def test_the_fingerprint_of_markers_is_unchanged(text: str) -> None:
    value = read_body(text.encode(), LimitsConfig()).value
    assert fingerprint(value) == _json_fingerprint(value)


def test_the_fingerprint_of_values_orjson_writes_its_own_way_is_unchanged() -> None:
    import datetime
    import enum
    import uuid

    class Colour(enum.Enum):
        RED = "red"

    class Level(enum.IntEnum):
        HIGH = 3

    class Text(str):
        pass

    when = datetime.datetime(2023, 11, 11, 8, 0, tzinfo=datetime.UTC)
    for value in [when, when.date(), Colour.RED, Level.HIGH, uuid.UUID(int=7), (1, "a"), Text("t"), {1: "a"},
                  b"x", frozenset(), 2**64, -(2**63) - 1, 1.5]:
        assert fingerprint({"v": value}) == _json_fingerprint({"v": value}), value


# What a lenient read leaves in an order of a suspect body: markers, repeated keys, text no format
# can carry, numbers written with an exponent (Decimals from a plain literal too).
MARKERS = st.sampled_from([
    safe_json.Refused("NaN", "NaN is not a number"), safe_json.Refused("1e99", "has an exponent beyond ±40"),
    safe_json.ExponentDecimal("1.5e2"), safe_json.ExponentDecimal("1E+1"), safe_json.ExponentDecimal("-0e0"),
    Decimal("12.50"), Decimal("1.0"), Decimal("-3"), "a\x00b", "\ud800", "\ufffe", "1.5\u0001",
    safe_json.DuplicateKeys({"nick": "n"}), safe_json.DuplicateKeys({"sku": "S", "name": "x", "qty": 1}),
    [safe_json.ExponentDecimal("2e1")], {"x": safe_json.ExponentDecimal("3e0")}, {"x": safe_json.Refused("NaN", "")},
])


def _full_reasons(validator: OrderValidator, order: Any) -> list[str]:
    """`reasons(suspect=True)` as it was: jsonschema's verdict on every order of a suspect body."""
    reasons = []
    for err in sorted(validator.full.iter_errors(order), key=lambda e: [str(p) for p in e.absolute_path]):
        if isinstance(err.instance, safe_json.ExponentDecimal) and err.validator == "format":
            message = f"{err.instance} is written with an exponent; a plain decimal is expected (such as 159.00)"
        else:
            message = _message(err)
        reasons.append(_cut(f"{_path_text(err.absolute_path) or '(the order)'}: {message}"))
    if reasons or validator.valid(order):
        return reasons[:50] + (["… (more problems not listed)"] if len(reasons) > 50 else [])
    return ["the order does not match the order schema"]


@settings(database=None, max_examples=1500, deadline=None)
@given(st.integers(0, len(ORDERS) - 1), st.data(), st.lists(st.one_of(MARKERS, VALUES, DECIMAL_TEXTS), min_size=1,
                                                            max_size=3))
def test_an_order_of_a_suspect_body_without_an_exponent_is_judged_as_before(which: int, data: st.DataObject,
                                                                            values: list[Any]) -> None:
    """jsonschema is asked only about an order holding a number written with an exponent; on
    any other, with any marker anywhere, fastjsonschema's verdict is jsonschema's."""
    order = copy.deepcopy(ORDERS[which])
    for value in values:
        path = data.draw(st.sampled_from(_paths(order) or [("extra",)]))
        parent = order
        for part in path[:-1]:
            parent = parent[part]
        parent[path[-1]] = copy.deepcopy(value)  # the strategies share their containers
    assert FAST.reasons(order, suspect=True) == _full_reasons(FAST, order)


def test_orjson_escapes_every_character_as_json_dumps_does() -> None:
    """The fingerprint's bytes on any text: every code point but the surrogates, in a value and as keys."""
    text = "".join(chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF)
    assert fingerprint({"v": text}) == _json_fingerprint({"v": text})
    keys = {text[i:i + 3]: i for i in range(0, len(text), 997)}
    assert fingerprint(keys) == _json_fingerprint(keys)
