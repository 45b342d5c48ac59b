"""Implementations of the language's functions that are more than one Python expression.

Generated code reaches these only through `dockyard.runtime.api`. Each one receives present
values (the generated code has already handled missing ones) and raises ValueError/TypeError
with a plain message on bad data; the mapping wrapper turns that into a TransformError that
names the spec location and the field.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Context, Decimal, DivisionByZero, InvalidOperation, Overflow, localcontext
from functools import partial, reduce

TYPE_CHECKING = False  # `typing` costs a fresh process ~3.5 ms: see runtime/records.py
if TYPE_CHECKING:
    from typing import Any

    _MemoBase = dict[str, Any]
else:
    _MemoBase = dict

__all__ = [
    "MONEY",
    "PAD_LIMIT",
    "Memo",
    "WrongKind",
    "any_order",
    "as_bool",
    "as_datetime",
    "as_int",
    "as_list",
    "as_number",
    "as_object",
    "as_str",
    "compact",
    "compact_list",
    "fail",
    "first",
    "get_field",
    "get_index",
    "get_item",
    "last",
    "mask",
    "memo_put",
    "money_abs",
    "money_add",
    "money_compare",
    "money_div",
    "money_max",
    "money_min",
    "money_minus",
    "money_mul",
    "money_order",
    "money_rem",
    "money_sub",
    "money_sum",
    "pad_width",
    "parse_json",
    "regex_extract",
    "split",
    "to_decimal",
    "to_int",
    "to_string",
]

# All money arithmetic, in generated code and here, computes in this one context, never in the
# calling thread's: 34 significant digits (decimal128), results rounded HALF_EVEN only beyond that
# (rounding to places is always explicit: round/format_decimal name their mode), and an invalid
# operation, a division by zero or an overflow is an error. So a mapping's result does not depend on
# `decimal.getcontext()`. Generated code calls its methods (`MONEY.add(a, b)`, `x.quantize(q, r,
# MONEY)`, `Decimal(text, MONEY)`); nothing may change it (its flags are never read).
MONEY = Context(prec=34, rounding=ROUND_HALF_EVEN, Emax=999999, Emin=-999999, capitals=1, clamp=0,
                flags=[], traps=[InvalidOperation, DivisionByZero, Overflow])
money_add = MONEY.add
money_sub = MONEY.subtract
money_mul = MONEY.multiply
money_div = MONEY.divide
money_rem = MONEY.remainder
money_minus = MONEY.minus
money_abs = MONEY.abs
money_compare = MONEY.compare  # for == and != (a quiet NaN is unequal, a signalling one an error)
money_order = MONEY.compare_signal  # for < <= > >= (any NaN is an error, as `<` is in MONEY)
# sum(items, start) of decimals: start + each item in turn, in MONEY.
money_sum = partial(reduce, money_add)

# The most values one memoised field keeps (each a few short texts: about 1 MB at most), and the
# misses after which a full memo is emptied to fill again with what comes next.
MEMO_LIMIT = 4096
MEMO_REFRESH = 65536


class Memo(_MemoBase):
    """The values of one field of a `$each` that the generated code has computed, by the input
    texts they were computed from (nested: one level per text, in the order the general code
    reads them). Only exact `str` keys are ever stored, and only values whose computation ended
    without an error, so a lookup that finds one gives what the general code would give; a text
    that fails is never stored and fails again each time, exactly as before.

    It fills with the first MEMO_LIMIT values computed, then stores nothing more, so that where
    values rarely repeat a miss costs little more than the lookup (a full memo keeps the values
    that came first, the frequent ones for the most part); after MEMO_REFRESH misses it is emptied
    and fills again, so that it follows prices that change."""

    __slots__ = ("misses", "size")

    def __init__(self) -> None:
        super().__init__()
        self.size = 0
        self.misses = 0


def memo_put(memo: Memo, value: Any, *keys: Any) -> Any:
    """Stores `value`, just computed by the general code from the texts `keys`, and returns it.
    Nothing is stored for a key that is not exactly a `str` (a number, a str subclass), nor while
    the memo is full."""
    if memo.size >= MEMO_LIMIT:
        misses = memo.misses + 1
        if misses < MEMO_REFRESH:
            memo.misses = misses
            return value
        memo.clear()
        memo.size = memo.misses = 0
    for key in keys:
        if key.__class__ is not str:
            return value
    level: dict[str, Any] = memo
    for key in keys[:-1]:
        inner = level.get(key)
        if inner is None:
            inner = level[key] = {}
        level = inner
    level[keys[-1]] = value
    memo.size += 1
    return value



def money_min(items: list[Any], default: Any = None) -> Any:
    """min() of decimals as MONEY compares them: a NaN among two or more is an error, whatever
    the thread's traps say (Python's `<` consults the thread's context)."""
    with localcontext(MONEY):
        return min(items, default=default)


def money_max(items: list[Any], default: Any = None) -> Any:
    """max() of decimals as MONEY compares them (see money_min)."""
    with localcontext(MONEY):
        return max(items, default=default)


_DECIMAL_TEXT = re.compile(r"[+-]?[0-9]+(\.[0-9]+)?")


class WrongKind(TypeError):
    """A value known only at run time (read from an input of unknown shape, or made by parse_json)
    is not of the kind the function it goes to takes: the input's fault, worded for its reader.
    Still a TypeError, so whatever handled these before still does; but not one of Python's own,
    which would mean the compiler let through something it should have checked
    (tests/compiler/test_checked_means_runs.py tells the two apart)."""


# The widest pad_left/pad_right: a width computed from the input (a number, a timestamp) must not
# make a string of gigabytes. No warehouse field comes near it; a wider literal is refused by check.
PAD_LIMIT = 100_000


def pad_width(width: int) -> int:
    """A pad width computed at run time, refused beyond PAD_LIMIT (a MemoryError otherwise)."""
    if width > PAD_LIMIT:
        raise ValueError(f"pad width {width} is more than the limit of {PAD_LIMIT:,} characters")
    return width


class MappingRefused(ValueError):
    """Raised by fail(): the spec itself refuses this input."""


def fail(message: str) -> Any:
    raise MappingRefused(f"refused by the mapping: {message}")


def parse_json(text: str) -> Any:
    """JSON text → a value, with numbers as exact Decimals (never floats), read with bounds."""
    from dockyard.runtime import safe_json

    try:
        return safe_json.loads(text)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"not valid JSON text ({exc})") from None


def to_decimal(value: Any) -> Decimal:
    """An exact Decimal from a decimal text, an int, a Decimal or a JSON float (via its repr)."""
    if isinstance(value, Decimal):
        return value
    if isinstance(value, bool):
        raise WrongKind("expected a number, got a boolean")
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):
        # repr() is the shortest text that reads back as this float: what the sender wrote.
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError(f"not a finite number: {value!r}")
        return Decimal(repr(value))
    if isinstance(value, str):
        text = value.strip()
        if not _DECIMAL_TEXT.fullmatch(text):
            raise ValueError(f"not a decimal number: {value!r}")
        try:
            return Decimal(text, MONEY)
        except InvalidOperation:  # pragma: no cover - the pattern admits only valid numbers
            raise ValueError(f"not a decimal number: {value!r}") from None
    raise WrongKind(f"expected a number, got {type(value).__name__}")


def to_int(value: Any) -> int:
    if isinstance(value, bool):
        raise WrongKind("expected a whole number, got a boolean")
    if isinstance(value, int):
        return value
    d = to_decimal(value)
    if d != d.to_integral_value(context=MONEY):
        raise ValueError(f"not a whole number: {value!r} (round it first)")
    return int(d)


def to_string(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, float):
        return format(to_decimal(value), "f")
    if isinstance(value, datetime):
        return value.isoformat()
    raise WrongKind(f"cannot convert a {type(value).__name__} to text")


def split(text: str, sep: str) -> list[str]:
    if not sep:
        raise ValueError("split needs a separator that is not empty")
    return text.split(sep) if text else []


def mask(text: str, keep_start: int, keep_end: int, char: str = "*") -> str:
    if keep_start < 0 or keep_end < 0:
        raise ValueError("mask needs counts of 0 or more")
    if len(text) <= keep_start + keep_end:
        return char * len(text)
    end = len(text) - keep_end
    return text[:keep_start] + char * (end - keep_start) + text[end:]


def regex_extract(pattern: re.Pattern[str], text: str, group: int = 0) -> str | None:
    m = pattern.search(text)
    if m is None:
        return None
    value = m.group(group)
    return value if isinstance(value, str) else None


def first(items: Any) -> Any:
    return items[0] if items else None


def last(items: Any) -> Any:
    return items[-1] if items else None


def get_field(obj: Any, key: Any) -> Any:
    """A field of a value whose shape the schema does not fix: missing unless it is an object."""
    if isinstance(obj, Mapping):
        return obj.get(key)
    return None


def get_item(container: Any, key: Any) -> Any:
    """`x[key]` on a value of unknown shape: a field of an object or a position in a list."""
    if isinstance(container, Mapping):
        return container.get(key)
    if isinstance(key, int) and not isinstance(key, bool):
        return get_index(container, key)
    return None


def get_index(items: Any, index: int) -> Any:
    if isinstance(items, list | tuple) and -len(items) <= index < len(items):
        return items[index]
    return None


def compact(obj: dict[str, Any]) -> dict[str, Any]:
    """An object without its missing values (a missing value is never written as null)."""
    return {k: v for k, v in obj.items() if v is not None}


def compact_list(items: list[Any]) -> list[Any]:
    return [v for v in items if v is not None]


def as_str(value: Any) -> str:
    if isinstance(value, str):
        return value
    raise WrongKind(f"expected a text, got {type(value).__name__}")


def as_int(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise WrongKind(f"expected a whole number, got {type(value).__name__}")


def as_number(value: Any) -> Any:
    """An argument of unknown type where a whole number or a decimal is taken (abs, sum's lambda):
    checked here rather than by the Python operator it goes to, whose message is Python's."""
    if value.__class__ is int or value.__class__ is Decimal or (
            isinstance(value, int | Decimal | float) and not isinstance(value, bool)):
        return value
    raise WrongKind(f"expected a number, got {type(value).__name__}")


def _order_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | Decimal | float):
        return "a number"
    if isinstance(value, str):
        return "a text"
    if isinstance(value, datetime):
        return "a date-time"
    return f"a {type(value).__name__}"


def any_order(a: Any, b: Any) -> Any:
    """What `a < b` and the other orderings compare with 0, where one side's type is known only at
    run time (a value of parse_json's, an input of unknown shape): numbers with numbers (exactly,
    in MONEY), texts with texts, date-times with date-times. Anything else is a WrongKind in our
    words, where Python's operator would raise its own TypeError."""
    kind = _order_kind(a)
    if kind != _order_kind(b) or kind not in ("a number", "a text", "a date-time"):
        raise WrongKind(f"cannot order {_order_kind(a)} and {_order_kind(b)}")
    if kind == "a number":
        return MONEY.compare_signal(a if a.__class__ is not float else to_decimal(a),
                                    b if b.__class__ is not float else to_decimal(b))
    return (a > b) - (a < b)


def as_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    raise WrongKind(f"expected true or false, got {type(value).__name__}")


def as_list(value: Any) -> list[Any]:
    """A list argument of unknown shape: a missing list counts as empty."""
    if value is None:
        return []
    if isinstance(value, list | tuple):
        return list(value)
    raise WrongKind(f"expected a list, got {type(value).__name__}")


def as_object(value: Any) -> Mapping[str, Any]:
    if isinstance(value, Mapping):
        return value
    raise WrongKind(f"expected an object, got {type(value).__name__}")


def as_datetime(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value
    raise WrongKind(f"expected a date-time, got {type(value).__name__}")
