"""JSON from outside, read with bounds (runtime.safe_json): strict mode refuses each class at once,
lenient mode marks it where it is so that one order's problem does not refuse its neighbours, and
the text check finds every character no format can carry, however it was written."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dockyard.runtime import safe_json
from dockyard.runtime.errors import InputError
from dockyard.runtime.functions import parse_json
from dockyard.runtime.inputs import parse_input

REFUSED = [("NaN", "NaN is not a number"), ("-Infinity", "-Infinity is not a number"),
           ("1e41", "exponent beyond"), ("1E-41", "exponent beyond"), ("1e49999999", "exponent beyond"),
           ("1" * 35, "35 digits"), ("0." + "0" * 34 + "1", "36 digits"), ("-" + "9" * 5000, "5000 digits")]


@pytest.mark.parametrize(("literal", "why"), REFUSED)
def test_numbers_are_bounded_on_their_text(literal: str, why: str) -> None:
    with pytest.raises(safe_json.JsonProblem, match=why):
        safe_json.loads(f'{{"a": {literal}}}')
    parsed = safe_json.loads(f'[{{"a": {literal}}}, {{"b": 1.10}}]', strict=False)
    assert parsed.suspect and isinstance(parsed.value[0]["a"], safe_json.Refused)
    assert safe_json.problems(parsed.value[0]) == [("a", parsed.value[0]["a"].reason)]
    assert safe_json.problems(parsed.value[1]) == [] and parsed.value[1]["b"] == Decimal("1.10")


def test_plain_numbers_stay_exact_and_exponents_are_marked() -> None:
    value = safe_json.loads('{"a": 12.50, "b": 7, "c": 1.5e2, "d": -0.001}')
    assert value == {"a": Decimal("12.50"), "b": 7, "c": Decimal("150"), "d": Decimal("-0.001")}
    assert str(value["a"]) == "12.50" and type(value["b"]) is int
    assert isinstance(value["c"], safe_json.ExponentDecimal) and not isinstance(value["a"], safe_json.ExponentDecimal)


@pytest.mark.parametrize("text", ['"\\ud800"', '"a\\udfffb"', '"\\u0000"', '"\\b"', '"\\f"', '"\\u001f"',
                                  '"\\uffff"', '"\\ufffe"', '{"k\\u0001": 1}'])
def test_text_no_format_can_carry_is_refused_however_it_is_written(text: str) -> None:
    with pytest.raises(safe_json.JsonProblem, match="contains"):
        safe_json.loads(text)
    assert safe_json.loads(text, strict=False).suspect


def test_tab_newline_and_any_other_character_are_fine() -> None:
    assert safe_json.loads('"a\\tb\\nc\\r\\u00e9\\ud83d\\ude00中\\u007f"') == "a\tb\nc\ré😀中\x7f"


def test_repeated_keys_and_depth() -> None:
    with pytest.raises(safe_json.JsonProblem, match="'a' is given more than once"):
        safe_json.loads('{"a": 1, "b": {"c": 1}, "a": 2}')
    lenient = safe_json.loads('{"a": 1, "a": 2}', strict=False).value
    assert isinstance(lenient, safe_json.DuplicateKeys) and lenient == {"a": 1} and lenient.duplicates == ("a",)
    with pytest.raises(safe_json.JsonProblem, match="deeper than 3"):
        safe_json.loads("[[[[1]]]]", max_depth=3)
    with pytest.raises(safe_json.JsonProblem, match="deeper than 64"):
        safe_json.loads("[" * 200_000 + "]" * 200_000)


@given(st.integers(0, 6), st.integers(1, 6), st.integers(0, 40))
def test_nesting_is_refused_by_depth_not_by_how_many_brackets_the_text_holds(depth: int, bound: int,
                                                                            in_text: int) -> None:
    """The nesting walk is skipped for a text with no more brackets than the bound; brackets inside
    strings only ever make it walk, and the verdict is the depth's alone, as before."""
    value: object = {"s": "[{" * in_text}
    for level in range(depth):
        value = [value] if level % 2 else {"k": value, "t": "]}" * in_text}
    text = json.dumps(value)
    levels = safe_json.depth(json.loads(text), 1_000)
    if levels > bound:
        with pytest.raises(safe_json.JsonProblem, match=f"deeper than {bound}"):
            safe_json.loads(text, max_depth=bound)
    else:
        assert safe_json.loads(text, max_depth=bound) == json.loads(text)


def test_callback_readers_use_the_bounds() -> None:
    for body in (b'{"a": NaN}', b'{"a": 1, "a": 2}', b'"\\ud800"', b"[" * 100_000):
        with pytest.raises(InputError):
            parse_input(body, "json")
    for form in (b"a=%00", b"a=1&a=2", b"a=%ZZ", b"a=%E4%B8", b"a=%ED%A0%80"):
        with pytest.raises(InputError):
            parse_input(form, "form")
    assert parse_input(b"a=1&b=%E4%B8%AD", "form") == {"a": "1", "b": "中"}
    with pytest.raises(ValueError, match="not valid JSON text"):
        parse_json('{"weight": 1e99999999}')


@settings(database=None, max_examples=300, deadline=None)
@given(st.text())
def test_every_string_round_trips_or_is_refused_with_its_reason(text: str) -> None:
    encoded = json.dumps(text)  # ASCII escapes, lone surrogates included
    why = safe_json.bad_text(text)
    if why is None:
        assert safe_json.loads(encoded) == text
    else:
        with pytest.raises(safe_json.JsonProblem, match="contains"):
            safe_json.loads(encoded)
        assert safe_json.bad_text(safe_json.escape_bad(text)) is None


def _nested(leaf: st.SearchStrategy[object]) -> st.SearchStrategy[object]:
    def duplicate_keys(d: dict[str, object]) -> safe_json.DuplicateKeys:
        out = safe_json.DuplicateKeys(d)
        out.duplicates = tuple(d)[:1]
        return out

    return st.recursive(leaf, lambda inner: st.lists(inner, max_size=3)
                        | st.dictionaries(st.text(max_size=2), inner, max_size=3)
                        | st.dictionaries(st.text(max_size=2), inner, max_size=3).map(duplicate_keys), max_leaves=40)


@settings(database=None, max_examples=1000, deadline=None)
@given(_nested(st.one_of(st.none(), st.integers(), st.text(max_size=3))), st.integers(-1, 12))
def test_deeper_than_is_the_depth_walks_verdict(value: object, bound: int) -> None:
    """The level-by-level walk `loads` uses says what `depth` said, on any nesting (a dict
    subclass counts as an object)."""
    assert safe_json.deeper_than(value, bound) == (safe_json.depth(value, bound + 1) > bound)
