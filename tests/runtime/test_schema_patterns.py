"""JSON Schema patterns read as ECMA-262 reads `$`, alike in every validator of ours
(runtime/schema_patterns.py): jsonschema as we set it up, fastjsonschema (ingest's verdict) and
the spec parser's own verdict (dsl/schema_verdict.py), on every pattern of every schema we ship."""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path
from typing import Any

import fastjsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dockyard.dsl.schema_verdict import conforms
from dockyard.runtime.schema_patterns import python_regex, search, validator_class

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_FILES = sorted([*ROOT.glob("dsl/schemas/*.json"), ROOT / "dockyard" / "service" / "config.schema.json",
                       *ROOT.glob("mappings/*/schemas/*.json")])


def _patterns(node: Any) -> set[str]:
    found: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "pattern" and isinstance(value, str):
                found.add(value)
            found |= _patterns(value)
    elif isinstance(node, list):
        for value in node:
            found |= _patterns(value)
    return found


SHIPPED = sorted(set().union(*(_patterns(json.loads(p.read_text(encoding="utf-8"))) for p in SCHEMA_FILES)))


@pytest.mark.parametrize(("pattern", "expected"), [
    ("^a$", r"^a\Z"),
    ("a$|b$", r"a\Z|b\Z"),
    ("^(x|y)$", r"^(x|y)\Z"),
    (r"^\$", r"^\$"),                 # an escaped dollar is a dollar
    (r"^\\$", r"^\\\Z"),              # an escaped backslash, then the anchor
    ("^[$]$", r"^[$]\Z"),             # a dollar in a class is a dollar
    ("^[^$]+$", r"^[^$]+\Z"),
    ("^[]$]$", r"^[]$]\Z"),           # Python reads `]` just after `[` as a literal
    ("^[^]$]$", r"^[^]$]\Z"),
    (r"^[\]$]$", r"^[\]$]\Z"),        # an escaped `]` does not close the class
    ("no anchor", "no anchor"),
])
def test_only_an_end_anchor_becomes_the_end_of_the_text(pattern: str, expected: str) -> None:
    assert python_regex(pattern) == expected
    re.compile(python_regex(pattern))


def test_the_shipped_schemas_have_patterns_to_check() -> None:
    # the order schema's codes and money, the spec schema's names, the config's names and headers
    assert len(SHIPPED) >= 10
    assert "^-?[0-9]+(\\.[0-9]+)?$" in SHIPPED


def _judges(pattern: str) -> tuple[Any, Any, dict[str, Any]]:
    schema = {"type": "string", "pattern": pattern}
    return validator_class()(schema), fastjsonschema.compile(schema), schema


def _fast_valid(fast: Any, text: str) -> bool:
    try:
        fast(text)
    except fastjsonschema.JsonSchemaException:
        return False
    return True


# fastjsonschema writes every unescaped `$` as `\Z`, also inside a class: where a shipped pattern had
# one there, it would not be an oracle for that pattern
assert not any(re.search(r"\[[^\]]*\$", p) for p in SHIPPED), "a shipped pattern with `$` in a class"


@settings(database=None, max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data(), st.sampled_from(["", "\n", "\n\n", "\r\n", "\r", " ", "\t", "\u2028", "x", "-"]))
def test_every_validator_judges_a_shipped_pattern_alike(data: st.DataObject, suffix: str) -> None:
    """A text that Python's `re` finds the pattern in (so near the edge: `$` before a final
    newline is exactly such a find), with something appended, or any text at all."""
    pattern = data.draw(st.sampled_from(SHIPPED))
    text = data.draw(st.one_of(st.from_regex(pattern), st.text(max_size=30))) + suffix
    full, fast, schema = _judges(pattern)
    verdict = search(pattern, text)
    assert full.is_valid(text) is verdict
    assert _fast_valid(fast, text) is verdict
    assert conforms(schema, text) is verdict


@settings(database=None, max_examples=200, deadline=None)
@given(st.from_regex(r"[a-z]{1,8}", fullmatch=True), st.sampled_from(["", "\n", "\n\n", " "]))
def test_pattern_properties_and_the_properties_they_leave_out(key: str, suffix: str) -> None:
    schema = {"type": "object", "patternProperties": {"^[a-z]+$": {"type": "integer"}},
              "additionalProperties": False}
    validator = validator_class()(schema)
    name = key + suffix
    ok = validator.is_valid({name: 1})
    assert ok is (suffix == "")  # "abc\n" is not covered by the pattern, so it is an extra property
    errors = list(validator.iter_errors({name: "x"}))
    if suffix == "":
        assert [(e.validator, list(e.absolute_path)) for e in errors] == [("type", [name])]
    else:
        assert [e.validator for e in errors] == ["additionalProperties"] and repr(name) in errors[0].message


def test_messages_name_the_pattern_as_the_schema_wrote_it() -> None:
    validator = validator_class()({"type": "string", "pattern": "^[0-9]+$"})
    (error,) = validator.iter_errors("12\n")
    assert error.message == "'12\\n' does not match '^[0-9]+$'"


_KEY = st.text(alphabet="abcXYZ_1-", min_size=1, max_size=4)


@settings(database=None, max_examples=300, deadline=None)
@given(st.dictionaries(_KEY, st.one_of(st.integers(), st.text(max_size=3)), max_size=5),
       st.lists(_KEY, max_size=3), st.lists(st.sampled_from(["^a", "b$", "^[XYZ]+$", "1", "^_?c"]), max_size=2),
       st.sampled_from([False, True, {"type": "integer"}]))
def test_where_no_line_break_is_involved_the_messages_are_jsonschemas_own(
        instance: dict[str, Any], declared: list[str], patterns: list[str], additional: Any) -> None:
    """Our `pattern`, `patternProperties` and `additionalProperties` report exactly what
    jsonschema's own report, in the same order, for keys and texts without a line break."""
    import jsonschema

    schema: dict[str, Any] = {"type": "object", "properties": {k: {"type": "integer"} for k in declared},
                              "additionalProperties": additional}
    if patterns:
        schema["patternProperties"] = {p: {"type": "string", "pattern": p} for p in patterns}

    def report(validator: Any) -> list[tuple[str, list[Any], str]]:
        return sorted((e.validator, list(e.absolute_path), e.message) for e in validator.iter_errors(instance))

    assert report(validator_class()(schema)) == report(jsonschema.Draft202012Validator(schema))


def _compiles(pattern: str) -> bool:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "possible nested set": Python's, not ours
        try:
            re.compile(pattern)
        except (re.error, OverflowError, RecursionError):
            return False
    return True


@settings(database=None, max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(st.text(alphabet="[]^$\\()|*+?.{}-ab$$", max_size=12).filter(_compiles),
       st.text(alphabet="ab$^[]\\.-", max_size=8))
def test_the_translation_changes_nothing_but_the_end_anchor(pattern: str, text: str) -> None:
    """Any pattern Python compiles, made of regex punctuation: its translation compiles too, and on
    a text without a line break (where `$` and `\\Z` cannot differ) it finds exactly what the
    pattern finds. A `$` taken for an anchor inside a class, or a class boundary read wrongly,
    would change what a `$`, `[` or `]` in the text matches."""
    translated = python_regex(pattern)
    assert _compiles(translated), translated
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert search(pattern, text) is (re.search(pattern, text) is not None)
