"""Serialization of a mapped document to the bytes sent to a warehouse: JSON, XML or a form body.

This module owns the one rule for turning document values into wire text (`scalar_text`), the JSON
encoder (orjson, exact decimals), the XML writer (lxml, driven by `XmlOptions`) and the
`application/x-www-form-urlencoded` encoder (with `form_pairs` for signing the un-encoded values).

A document is a tree of `dict` (str keys), `list`/`tuple` and scalars: `str` (and `CData`), `int`,
`bool`, `decimal.Decimal` (finite), `datetime.datetime`/`datetime.date`. `None` anywhere is a bug in
the mapping and is refused, as is `float` (write a `Decimal`: a float cannot say which digits are
meant). Every refusal is a `SerializationError` naming the dotted path of the value, e.g.
`orderLines[2].itemCode` (XML attributes and text appear as `item.@id` and `item.#text`).
"""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal

from dockyard.runtime import percent
from dockyard.runtime.errors import SerializationError
from dockyard.runtime.target import CData, Target, XmlOptions

TYPE_CHECKING = False  # `typing` costs a fresh process ~3.5 ms: see runtime/records.py
if TYPE_CHECKING:
    from typing import Any

__all__ = [
    "form_pairs",
    "scalar_text",
    "serialize",
    "to_form_bytes",
    "to_json_bytes",
    "to_json_text",
    "to_xml_bytes",
    "url_quote",
    "writes_wrongly",
]

_MISSING = "missing value"
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
# orjson writes integers natively only inside this range.
_JSON_INT_MIN = -(2**63)
_JSON_INT_MAX = 2**64 - 1


def serialize(doc: dict[str, Any], target: Target, *, plain: bool = False) -> bytes:
    """Encode `doc` in the target's format (the body of the request to the warehouse). `plain`:
    the caller knows the document holds no None and no float (see `to_json_bytes`)."""
    fmt: str = target.format
    if fmt == "json":
        return to_json_bytes([doc] if target.wrap == "array" else doc, plain=plain)
    if fmt == "xml":
        if target.xml is None:
            raise SerializationError("an XML target needs XmlOptions")
        return to_xml_bytes(doc, target.xml)
    if fmt == "form":
        return to_form_bytes(doc)
    raise SerializationError(f"unknown target format {fmt!r}")


# --------------------------------------------------------------------------------------------------
# Paths and scalars


def _key_path(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _item_path(path: str, index: int) -> str:
    return f"{path}[{index}]"


def _type_name(value: object) -> str:
    return type(value).__name__


def _require_dict(doc: object, what: str) -> dict[Any, Any]:
    if not isinstance(doc, dict):
        raise SerializationError(f"{what} must be a dict, got a {_type_name(doc)}")
    return doc


def _check_unicode(text: str, path: str) -> None:
    if _LONE_SURROGATE.search(text):
        raise SerializationError("text contains a lone surrogate (not valid Unicode)", path)


def _decimal_text(value: Decimal, path: str) -> str:
    if not value.is_finite():
        raise SerializationError(f"decimal {value} is not a finite number", path)
    return format(value, "f")


def scalar_text(value: Any, path: str) -> str:
    """The text of a scalar document value, shared by XML and form encoding.

    str/CData as is; bool → "true"/"false"; int → its digits; Decimal → fixed-point digits exactly
    as held (`Decimal("1E+2")` → "100", `Decimal("128.50")` → "128.50"); datetime/date →
    `isoformat()` (an aware datetime keeps its offset). None, containers, floats, non-finite
    decimals and any other type raise `SerializationError` naming `path`.
    """
    if value is None:
        raise SerializationError(_MISSING, path)
    if isinstance(value, str):
        _check_unicode(value, path)
        if type(value) is str or type(value) is CData:
            return value
        return str.__str__(value)  # a str subclass (e.g. an enum): its characters, not its repr
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        try:
            return int.__repr__(value)
        except ValueError as exc:  # beyond sys.get_int_max_str_digits()
            raise SerializationError(f"integer too large to write: {exc}", path) from None
    if isinstance(value, Decimal):
        return _decimal_text(value, path)
    if isinstance(value, dt.date):  # datetime is a subclass of date
        return value.isoformat()
    if isinstance(value, float):
        raise SerializationError("float value (an exact number must be a Decimal)", path)
    if isinstance(value, dict | list | tuple):
        raise SerializationError(f"expected a scalar value, got a {_type_name(value)}", path)
    raise SerializationError(f"unsupported value type {_type_name(value)}", path)


# --------------------------------------------------------------------------------------------------
# JSON


def _check_json(value: Any, path: str) -> None:
    """Refuse what orjson would write wrongly (None as null, floats) or fail on, naming the path."""
    if value is None:
        raise SerializationError(_MISSING, path)
    if isinstance(value, str):
        _check_unicode(value, path)
    elif isinstance(value, bool):
        pass
    elif isinstance(value, int):
        if not _JSON_INT_MIN <= value <= _JSON_INT_MAX:
            raise SerializationError("integer outside the 64-bit range", path)
    elif isinstance(value, Decimal):
        _decimal_text(value, path)
    elif isinstance(value, dt.date):
        pass
    elif isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise SerializationError(f"key {key!r} is not a string", path)
            sub = _key_path(path, key)
            _check_unicode(key, sub)
            _check_json(item, sub)
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _check_json(item, _item_path(path, index))
    elif isinstance(value, float):
        raise SerializationError("float value (an exact number must be a Decimal)", path)
    else:
        raise SerializationError(f"unsupported value type {_type_name(value)}", path)


_PLAIN = frozenset((str, int, bool))


def writes_wrongly(value: Any) -> bool:
    """Whether orjson would write something it must not: None (as null), a float, a non-finite
    decimal. Everything else that is wrong (lone surrogates, huge ints, other types) makes orjson
    fail by itself. No paths are built here: this runs on every document, and the slow walk in
    `_check_json` runs only to name the place of a problem."""
    kind = type(value)
    if kind in _PLAIN:
        return False
    if kind is dict:
        return any(writes_wrongly(item) for item in value.values())
    if kind is list or kind is tuple:
        return any(writes_wrongly(item) for item in value)
    if kind is Decimal:
        return not value.is_finite()
    return value is None or isinstance(value, float)


# orjson is imported on first use: importing it also imports dataclasses, inspect and uuid (about
# 10 ms), which a process that loads a bundle and writes XML, or nothing yet, need not pay.
_ORJSON: Any = None


def _orjson() -> Any:
    global _ORJSON
    import orjson

    _ORJSON = orjson
    return orjson


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise TypeError("not a finite number")  # orjson fails; the walk then names the path
        # A Fragment is written verbatim, so the number keeps its digits.
        return (_ORJSON or _orjson()).Fragment(format(value, "f").encode("ascii"))
    if isinstance(value, dt.date):
        return value.isoformat()
    raise TypeError(f"unsupported value type {_type_name(value)}")


def to_json_bytes(value: Any, *, plain: bool = False) -> bytes:
    """Compact UTF-8 JSON: non-ASCII as is, decimals as exact numbers, datetimes as ISO-8601 strings.

    What orjson cannot be trusted with is handled without walking the document in Python where it
    can be: non-finite decimals, unsupported types, non-string keys, lone surrogates and integers
    beyond 64 bits make it fail (then the walk names the path). None and floats it would write, so
    they are looked for first, unless the caller knows there are none (`plain=True`: a compiled
    mapping's `json_plain` says so from what the compiler knows about every value)."""
    if not plain and writes_wrongly(value):
        _check_json(value, "")  # raises, naming the path
    try:
        oj = _ORJSON or _orjson()
        return oj.dumps(value, default=_json_default, option=oj.OPT_PASSTHROUGH_DATETIME)  # type: ignore[no-any-return]
    except TypeError as exc:  # orjson's JSONEncodeError is a TypeError
        _check_json(value, "")  # a lone surrogate, an int beyond 64 bits, an unsupported type: name it
        raise SerializationError(f"cannot encode as JSON: {exc}") from None  # e.g. nesting deeper than orjson's limit


def to_json_text(value: Any) -> str:
    """`to_json_bytes` as a str."""
    return to_json_bytes(value).decode("utf-8")


# --------------------------------------------------------------------------------------------------
# XML (the writer lives in xml_writer.py: lxml is imported only by mappings that write XML)


def to_xml_bytes(doc: dict[str, Any], options: XmlOptions) -> bytes:
    """The document as XML: its keys become the children of `options.root`, encoded as configured."""
    from dockyard.runtime.xml_writer import to_xml_bytes as write

    return write(doc, options)


# --------------------------------------------------------------------------------------------------
# Form


def form_pairs(doc: dict[str, Any]) -> list[tuple[str, str]]:
    """The (key, text) pairs of a flat document, in document order, before URL encoding."""
    pairs: list[tuple[str, str]] = []
    for key, value in _require_dict(doc, "a form document").items():
        if not isinstance(key, str):
            raise SerializationError(f"key {key!r} is not a string")
        _check_unicode(key, key)
        if isinstance(value, dict | list | tuple):
            raise SerializationError(f"a form value must be a scalar, got a {_type_name(value)}", key)
        pairs.append((key, scalar_text(value, key)))
    return pairs


def form_quote(text: str) -> str:
    """`urllib.parse.quote_plus(text)`, the whole text in one C call (form bodies carry whole JSON
    documents: SF's msgData, Cainiao's logistics_interface)."""
    return percent.encode(text, percent.QUOTE_PLUS)


def url_quote(text: str) -> str:
    """`urllib.parse.quote(text, safe="")` (a space is %20)."""
    return percent.encode(text, percent.QUOTE)


def to_form_bytes(doc: dict[str, Any]) -> bytes:
    """`application/x-www-form-urlencoded` (UTF-8, space as "+") of a flat document."""
    return "&".join(f"{form_quote(key)}={form_quote(text)}" for key, text in form_pairs(doc)).encode("ascii")
