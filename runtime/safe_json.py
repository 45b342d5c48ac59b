"""JSON from outside (orders, callbacks, JSON text inside a callback), read with its bounds set
before anything is built or expanded.

What `json.loads` lets through, and why each is refused here:
- `NaN`, `Infinity`, `-Infinity`: not JSON numbers at all; no warehouse format can carry them.
- numbers with more than `MAX_DIGITS` digits or an exponent beyond ±`MAX_EXPONENT`: a Decimal
  keeps `1e49999999` small, but the first time it is written out plainly it becomes 50 MB. The
  bound is checked on the literal's text, before a Decimal or an int is made of it.
- a lone surrogate (`"\\ud800"`) or a control character other than tab, LF and CR: text that no
  UTF-8 encoder, XML document or database column can carry.
- a key given twice in one object: two readers may keep different values (a signature checked
  over one, the mapping reading the other).
- nesting deeper than `max_depth`.

`loads(strict=True)` raises `JsonProblem` at the first one (a callback is one message: all or
nothing). `loads(strict=False)` is for a batch of orders, where one bad order must not refuse the
others: it builds the value with a `Refused` marker in place of each refused number and a
`DuplicateKeys` dict where a key was repeated, and `problems(order)` then lists every problem
inside one order with its path. `ExponentDecimal` marks a finite number written with an exponent
(`1.5e2`): accepted as a number, but not where a plain decimal is required (money).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

__all__ = [
    "MAX_DEPTH",
    "MAX_DIGITS",
    "MAX_EXPONENT",
    "DuplicateKeys",
    "ExponentDecimal",
    "JsonProblem",
    "Parsed",
    "Refused",
    "bad_text",
    "deeper_than",
    "depth",
    "escape_bad",
    "loads",
    "problems",
]

MAX_DIGITS = 34  # decimal128's precision: what the runtime computes with
MAX_EXPONENT = 40  # |e| of a number written with an exponent
MAX_DEPTH = 64  # default nesting bound of a callback

# Characters no warehouse format can carry: C0 controls except tab, LF and CR (XML 1.0 forbids
# them, PostgreSQL refuses NUL), lone surrogates (no UTF-8 form), U+FFFE and U+FFFF (XML again).
_BAD_CHAR = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
# In the raw JSON text: an escape that decodes to a bad character (`\b` and `\f` are backspace and
# form feed). A match only means "look closer" (an escaped backslash before `u0000` matches too),
# never a refusal by itself. Raw control characters need no scan: strict JSON refuses them, and
# only then is the text read again leniently; U+FFFE and U+FFFF are looked for with `in`.
_SUSPECT_ESCAPE = re.compile(r"\\(?:[bf]|u(?:00[01]|[dD][89a-fA-F]|[fF]{3}[eEfF]))")
_NUMBER = re.compile(r"-?(?P<int>[0-9]+)(?:\.(?P<frac>[0-9]+))?(?:[eE](?P<exp>[-+]?[0-9]+))?")


class JsonProblem(ValueError):
    """The JSON text is refused; the message says why and, where known, at which path."""


class Refused:
    """Stands in (strict=False) for a number that was refused: `text` is the literal as sent."""

    __slots__ = ("reason", "text")

    def __init__(self, text: str, reason: str) -> None:
        self.text = text
        self.reason = reason

    def __repr__(self) -> str:
        return self.text if len(self.text) <= 40 else self.text[:37] + "..."


class DuplicateKeys(dict[str, Any]):
    """An object in which a key was given more than once (strict=False); the first value is kept."""

    duplicates: tuple[str, ...] = ()


class ExponentDecimal(Decimal):
    """A finite number within the bounds, written with an exponent (`1.5e2`): not a plain decimal."""

    __slots__ = ()


class Parsed:
    """The value of `loads(strict=False)` and whether anything in it may be refused: a marker, a
    repeated key, bad text (`problems` finds them) or a number written with an exponent."""

    __slots__ = ("suspect", "value")

    def __init__(self, value: Any, suspect: bool) -> None:
        self.value = value
        self.suspect = suspect


def _number_problem(text: str) -> tuple[str | None, bool]:
    """(why the literal is refused or None, whether it has an exponent)."""
    m = _NUMBER.fullmatch(text)
    if m is None:  # pragma: no cover - the scanner hands over only number literals
        return f"{_shown(text)} is not a number", False
    digits = len(m["int"]) + len(m["frac"] or "")
    if digits > MAX_DIGITS:
        return f"a number of {digits} digits (at most {MAX_DIGITS})", False
    exp = m["exp"]
    if exp is None:
        return None, False
    if len(exp.lstrip("+-").lstrip("0")) > 4 or abs(int(exp)) > MAX_EXPONENT:
        return f"{_shown(text)} has an exponent beyond ±{MAX_EXPONENT}", True
    return None, True


def _shown(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def bad_text(text: str) -> str | None:
    """Why `text` cannot be carried (a lone surrogate, a control character), or None."""
    m = _BAD_CHAR.search(text)
    if m is None:
        return None
    ch = m.group()
    if "\ud800" <= ch <= "\udfff":
        what = f"a lone surrogate (\\u{ord(ch):04x})"
    elif ch in "\ufffe\uffff":
        what = f"the non-character U+{ord(ch):04X}"
    else:
        what = f"the control character U+{ord(ch):04X}"
    return f"contains {what} at position {m.start()}"


def loads(data: str | bytes, *, max_depth: int = MAX_DEPTH, strict: bool = True) -> Any:
    """The value of the JSON text; see the module's docstring. With strict=False the result is a
    `Parsed`. Raises JsonProblem (a ValueError) for what cannot be read at all."""
    if isinstance(data, bytes | bytearray):
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise JsonProblem(f"not UTF-8 text (byte {exc.start})") from None
    else:
        text = data
    flagged = [False]

    def number(text: str) -> Any:
        if len(text) <= 20 and "e" not in text and "E" not in text:  # plain and short: within every bound
            return int(text) if "." not in text else Decimal(text)
        why, exponent = _number_problem(text)
        if why is not None:
            if strict:
                raise JsonProblem(why)
            flagged[0] = True
            return Refused(text, why)
        if "." not in text and not exponent:
            return int(text)
        if exponent:
            flagged[0] = True  # not a plain decimal: where one is required, the checker must look
            return ExponentDecimal(text)
        return Decimal(text)

    def constant(name: str) -> Any:
        if strict:
            raise JsonProblem(f"{name} is not a number")
        flagged[0] = True
        return Refused(name, f"{name} is not a number")

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        result = dict(items)
        if len(result) == len(items):
            return result
        seen: set[str] = set()
        repeated = [k for k, _ in items if k in seen or seen.add(k)]  # type: ignore[func-returns-value]
        if strict:
            raise JsonProblem(f"the key {_shown(repr(repeated[0]))} is given more than once in one object")
        flagged[0] = True
        first = DuplicateKeys()
        for k, v in items:
            first.setdefault(k, v)
        first.duplicates = tuple(dict.fromkeys(repeated))
        return first

    raw_controls = False
    try:
        try:
            value = json.loads(text, parse_float=number, parse_int=number, parse_constant=constant,
                               object_pairs_hook=pairs)
        except json.JSONDecodeError as exc:
            if strict or not exc.msg.startswith("Invalid control character"):
                raise
            raw_controls = True  # leniently: the order that holds it is refused by `problems`, not the body
            value = json.loads(text, parse_float=number, parse_int=number, parse_constant=constant,
                               object_pairs_hook=pairs, strict=False)
    except RecursionError:
        raise JsonProblem(f"nests deeper than {max_depth} levels") from None
    except JsonProblem:
        raise
    except json.JSONDecodeError as exc:
        raise JsonProblem(f"not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}") from None
    except ValueError as exc:  # pragma: no cover - e.g. int() limits, kept as a refusal
        raise JsonProblem(f"not valid JSON: {exc}") from None
    # Each level of nesting opens with its own `{` or `[`: a text with no more of them than the bound
    # (counted anywhere, inside strings too, so never too few) cannot nest deeper, and the walk over
    # the value (a third of reading a small callback's JSON) is left out. Only the count decides.
    if text.count("{") + text.count("[") > max_depth and deeper_than(value, max_depth):
        raise JsonProblem(f"nests deeper than {max_depth} levels")
    suspect = (flagged[0] or raw_controls or "\ufffe" in text or "\uffff" in text
               or _SUSPECT_ESCAPE.search(text) is not None)
    if strict:
        if suspect:
            for path, why in problems(value):
                raise JsonProblem(f"{path or '(the document)'}: {why}")
        return value
    return Parsed(value, suspect)


def depth(value: Any, cap: int) -> int:
    """Nesting depth of a JSON value, counted up to `cap` (iterative: no recursion on hostile input)."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, level = stack.pop()
        if isinstance(node, dict):
            children: Any = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        deepest = max(deepest, level)
        if deepest >= cap:
            return deepest
        stack.extend((child, level + 1) for child in children if isinstance(child, dict | list))
    return deepest


def deeper_than(value: Any, bound: int) -> bool:
    """Whether `value` nests deeper than `bound` levels: `depth(value, bound + 1) > bound`, level by
    level. A batch of orders always holds more brackets than the bound, so this walk runs for each
    one; one comprehension per level instead of a (node, level) pair per node takes a quarter of
    `depth`'s time (3.3 against 12 µs per order in a batch of 200)."""
    if bound < 0:
        return True  # a scalar has depth 0
    level = [value] if isinstance(value, dict | list) else []
    for _ in range(bound):
        if not level:
            return False
        level = [child for node in level for child in (node.values() if isinstance(node, dict) else node)
                 if isinstance(child, dict | list)]
    return bool(level)


def problems(value: Any, limit: int = 20) -> list[tuple[str, str]]:
    """(path, why) of every refused number, repeated key and bad text inside `value`, in document
    order, at most `limit`. Paths are written as the order checker writes them: `items[0].sku`."""
    found: list[tuple[str, str]] = []
    for path, why in _walk(value):
        found.append((path, why))
        if len(found) >= limit:
            break
    return found


def _walk(value: Any) -> Iterator[tuple[str, str]]:
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:
        path, node = stack.pop()
        if isinstance(node, str):
            why = bad_text(node)
            if why is not None:
                yield path, why
        elif isinstance(node, Refused):
            yield path, node.reason
        elif isinstance(node, dict):
            if isinstance(node, DuplicateKeys):
                yield path, "repeats the key(s) " + ", ".join(_shown(repr(k)) for k in node.duplicates)
            children: list[tuple[str, Any]] = []
            for k, v in node.items():
                key = str(k)
                why = bad_text(key)
                sub = _join(path, _safe_key(key))
                if why is not None:
                    yield sub, f"the key {why}"
                children.append((sub, v))
            stack.extend(reversed(children))
        elif isinstance(node, list):
            stack.extend(reversed([(f"{path}[{i}]", v) for i, v in enumerate(node)]))


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _safe_key(key: str) -> str:
    """A key as it may be shown in a path: bad characters escaped, long keys cut."""
    return _shown(escape_bad(key), 60)


def escape_bad(text: str) -> str:
    """`text` with each character no format can carry written as a `\\uXXXX` escape (for showing
    and storing refused input: the operator sees what was sent, the store can hold it)."""
    return _BAD_CHAR.sub(lambda m: f"\\u{ord(m.group()):04x}", text)
