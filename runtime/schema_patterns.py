"""JSON Schema `pattern`s matched as ECMA-262 matches them, by every validator of ours.

JSON Schema says a pattern is an ECMA-262 regular expression. Python's `re` differs from it in
one way that changes verdicts: `$` (without the multiline flag) matches only at the end of the
text in ECMA-262, but in Python also before a final newline. jsonschema calls `re.search` with the
pattern as written, so it took "1.5\\n" for money and "SO-1\\n" for an order code, while
fastjsonschema (which writes `$` as `\\Z`) refused them. Ingest then refused an order without a
reason to give ("does not match the order schema"), a dry run (`transform(validate=True)`)
accepted an order the service refuses, and a spec or a config value with a trailing newline
(a YAML block scalar) passed its schema.

So each of our validators matches patterns through `search`, which reads `$` as `\\Z` outside
character classes and escapes: jsonschema through `validator_class` (its `pattern`,
`patternProperties` and `additionalProperties` keywords), the spec parser's verdict
(dsl/schema_verdict.py) directly, and fastjsonschema by its own rewriting, which is the same
outside character classes.

Other differences are left alone, because both validators read them the same way (Python's):
`\\d` and `\\w` also take non-ASCII digits and letters, and `\\s` a slightly different set of
spaces. The schemas we ship write `[0-9]` and `[A-Za-z]` instead. jsonschema is imported only by
`validator_class`, when a refusal has to be explained.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import cache, lru_cache
from typing import Any

__all__ = ["python_regex", "search", "validator_class"]


def python_regex(pattern: str) -> str:
    """`pattern` (ECMA-262) as a Python regular expression with the same end anchor: each `$`
    outside a character class and not escaped becomes `\\Z`. Classes are found as Python's `re`
    reads them (a `]` just after `[` or `[^` is a literal), since Python compiles the result."""
    out: list[str] = []
    i, n = 0, len(pattern)
    in_class = False
    while i < n:
        c = pattern[i]
        if c == "\\":
            out.append(pattern[i:i + 2])  # an escape, whole (a lone trailing backslash stays: re refuses it)
            i += 2
            continue
        if in_class:
            if c == "]":
                in_class = False
        elif c == "[":
            in_class = True
            out.append(c)
            i += 1
            if i < n and pattern[i] == "^":
                out.append("^")
                i += 1
            if i < n and pattern[i] == "]":  # literal in Python's reading
                out.append("]")
                i += 1
            continue
        elif c == "$":
            out.append(r"\Z")
            i += 1
            continue
        out.append(c)
        i += 1
    return "".join(out)


@lru_cache(maxsize=2048)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(python_regex(pattern))


def search(pattern: str, text: str) -> bool:
    """Whether `text` matches the JSON Schema `pattern` somewhere, as ECMA-262 reads `$`."""
    return _compiled(pattern).search(text) is not None


@cache
def validator_class() -> Any:
    """jsonschema's Draft 2020-12 validator class with `pattern`, `patternProperties` and
    `additionalProperties` matching patterns with `search` (made once). Its messages are
    jsonschema's own, with the pattern as the schema wrote it."""
    import jsonschema
    from jsonschema.exceptions import ValidationError

    def pattern(validator: Any, patrn: str, instance: Any, schema: Any) -> Iterator[ValidationError]:
        if validator.is_type(instance, "string") and not search(patrn, instance):
            yield ValidationError(f"{instance!r} does not match {patrn!r}")

    def pattern_properties(validator: Any, patterns: Any, instance: Any, schema: Any) -> Iterator[ValidationError]:
        if not validator.is_type(instance, "object"):
            return
        for patrn, subschema in patterns.items():
            for key, value in instance.items():
                if search(patrn, key):
                    yield from validator.descend(value, subschema, path=key, schema_path=patrn)

    def additional_properties(validator: Any, allowed: Any, instance: Any, schema: Any
                              ) -> Iterator[ValidationError]:
        # jsonschema's keyword, with the properties no pattern covers found by `search`; its
        # messages word for word
        if not validator.is_type(instance, "object"):
            return
        declared = schema.get("properties", {})
        patterns = schema.get("patternProperties", {})
        extras = {key for key in instance
                  if key not in declared and not any(search(p, key) for p in patterns)}
        if validator.is_type(allowed, "object"):
            for extra in extras:
                yield from validator.descend(instance[extra], allowed, path=extra)
        elif not allowed and extras:
            if "patternProperties" in schema:
                verb = "does" if len(extras) == 1 else "do"
                joined = ", ".join(repr(each) for each in sorted(extras))
                listed = ", ".join(repr(each) for each in sorted(patterns))
                yield ValidationError(f"{joined} {verb} not match any of the regexes: {listed}")
            else:
                ordered = sorted(extras, key=str)
                verb = "was" if len(ordered) == 1 else "were"
                yield ValidationError(f"Additional properties are not allowed "
                                      f"({', '.join(repr(each) for each in ordered)} {verb} unexpected)")

    keywords = {"pattern": pattern, "patternProperties": pattern_properties,
                "additionalProperties": additional_properties}
    return jsonschema.validators.extend(jsonschema.Draft202012Validator, keywords)  # type: ignore[no-untyped-call]
