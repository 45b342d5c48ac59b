"""Reading raw inputs into the document a mapping sees: JSON, XML or a form body.

Orders arrive as JSON; warehouse responses and callbacks arrive as JSON, XML or forms. Whatever
the format, malformed input is an `InputError` that says what is wrong and where, never a
traceback. JSON numbers become exact Decimals, read with bounds (`runtime.safe_json`). XML drops
its root element; an element becomes a list when the source schema says "array" at that path, so
a single `<package>` is still a list of one. XML is parsed without entity expansion or network
access. A form with a broken percent escape, or a field given twice or holding a control
character or a lone surrogate, is refused.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import parse_qsl

from lxml import etree

from dockyard.runtime import safe_json
from dockyard.runtime.errors import InputError

__all__ = ["parse_input", "read_form", "xml_to_document"]

# No DTDs, no entities, no network: a callback is data, not a document to be expanded.
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False,
                          remove_comments=True, remove_pis=True)


def parse_input(data: bytes | str, fmt: str, schema: Mapping[str, Any] | None = None, root: str | None = None) -> Any:
    if fmt == "json":
        # Bounded: numbers, nesting, repeated keys and text no format can carry (runtime.safe_json).
        try:
            return safe_json.loads(data)
        except safe_json.JsonProblem as exc:
            text = str(exc)
            raise InputError(text if text.startswith("not ") else f"not acceptable JSON: {text}") from None
        except TypeError as exc:
            raise InputError(f"not valid JSON: {exc}") from None
    if fmt == "xml":
        raw = data.encode("utf-8") if isinstance(data, str) else data
        try:
            element = etree.fromstring(raw, _PARSER)
        except etree.XMLSyntaxError as exc:
            raise InputError(f"not valid XML: {exc.msg} (line {exc.lineno})") from None
        except ValueError as exc:
            raise InputError(f"not valid XML: {exc}") from None
        if root is not None and _local(element.tag) != root:
            raise InputError(f"expected an XML <{root}> document, got <{_local(element.tag)}>")
        return xml_to_document(element, schema or {}, schema or {})
    if fmt == "form":
        return read_form(data)
    raise InputError(f"unknown input format {fmt!r}")


# The last form read: a callback's body is read for its signature (dockyard.service.replay) and
# then by its mapping, and percent-decoding a Cainiao form is most of reading it. Keyed by the
# very object (held here, so its identity cannot be reused), read and replaced as one tuple.
_LAST_FORM: tuple[object, dict[str, str]] = (None, {})


def read_form(data: bytes | str) -> dict[str, str]:
    """A form body's fields, strictly: UTF-8, every escape whole, each field once, no control
    characters or lone surrogates (InputError otherwise). Each call gets a dict of its own."""
    global _LAST_FORM
    last = _LAST_FORM
    if last[0] is data:
        return dict(last[1])
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        broken = _BROKEN_ESCAPE.search(text)
        if broken is not None:
            raise ValueError(f"a broken percent escape at position {broken.start()}")
        pairs = _form_pairs(text)
        if pairs is None:  # the reference reader, for its exact refusal
            pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=bool(text), errors="strict")
    except (UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"not a valid form body: {exc}") from None
    result: dict[str, str] = {}
    for key, value in pairs:
        why = safe_json.bad_text(key + "=" + value)
        if why is not None:
            raise InputError(f"not a valid form body: the field {safe_json.escape_bad(key)[:60]!r} {why}")
        if key in result:  # two readers could keep different values (the signature, the mapping)
            raise InputError(f"not a valid form body: the field {safe_json.escape_bad(key)[:60]!r} "
                             "is given more than once")
        result[key] = value
    _LAST_FORM = (data, result)
    return dict(result)


# `parse_qsl(text, keep_blank_values=True, strict_parsing=True, errors="strict")` in C calls: a Cainiao
# push is a form whose message is percent-encoded JSON or XML (hundreds of escapes), and urllib
# decodes it one escape at a time in Python (76 us for a 600-byte push, most of its verification).
# With every escape known to be whole (`_BROKEN_ESCAPE` is checked first), "%XX" becomes the bytes
# escape "\xXX" (each backslash of the text doubled first, so it stays itself) and the codec that
# reads bytes escapes decodes them all at once; then the bytes are read as UTF-8, strictly. That is
# urllib's result exactly: it decodes each ASCII run the same way and passes other characters
# through as their UTF-8 (a run's escaped bytes cannot complete a sequence with a neighbouring
# character's bytes, which begin with a lead byte). Anything the fast reading cannot take (a field
# without "=", text that is not UTF-8, a lone surrogate) answers None, and urllib reads it to give
# its own refusal. tests/runtime/test_form_reading.py compares the two on arbitrary forms.
_escape_decode: Callable[[bytes], tuple[bytes, int]] | None = getattr(codecs, "escape_decode", None)


def _unquote_plus(part: str, escape_decode: Callable[[bytes], tuple[bytes, int]]) -> str:
    part = part.replace("+", " ")
    if "%" not in part:
        return part
    return escape_decode(part.encode("utf-8").replace(b"\\", b"\\\\").replace(b"%", b"\\x"))[0].decode("utf-8")


def _form_pairs(text: str) -> list[tuple[str, str]] | None:
    if not text:
        return []
    decode = _escape_decode
    if decode is None:  # a Python without the codec: urllib reads every form
        return None
    pairs = []
    try:
        for field in text.split("&"):
            name, eq, value = field.partition("=")
            if not eq:
                return None
            pairs.append((_unquote_plus(name, decode), _unquote_plus(value, decode)))
    except (UnicodeError, ValueError):
        return None
    return pairs


_BROKEN_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")


def _local(tag: Any) -> str:
    text = str(tag)
    return text.rsplit("}", 1)[-1] if text.startswith("{") else text


def _resolve(schema: Mapping[str, Any], root: Mapping[str, Any]) -> Mapping[str, Any]:
    from dockyard.dsl.types import _resolve as resolve  # the one $ref resolver

    return resolve(schema, root)


def _is_array(schema: Mapping[str, Any]) -> bool:
    kind = schema.get("type")
    return kind == "array" or (isinstance(kind, list) and "array" in kind)


def xml_to_document(element: Any, schema: Mapping[str, Any], root: Mapping[str, Any]) -> dict[str, Any]:
    """The children (and attributes) of `element` as an object, guided by `schema`: a child the
    schema declares as an array, or one that repeats, is a list; a leaf is its text."""
    return _read(element, _shape(schema, root))


class _Shape:
    """What reading XML needs of a schema, resolved once per schema object and kept: for each
    declared child, whether it is a list and the shape of its items. Resolving `$ref`s and looking
    up properties on every element of every callback cost more than parsing the XML itself."""

    __slots__ = ("_kids", "_props", "_root")

    def __init__(self, schema: Mapping[str, Any], root: Mapping[str, Any]) -> None:
        schema = _resolve(schema, root)
        props = schema.get("properties")
        self._props: Mapping[str, Any] = props if isinstance(props, Mapping) else {}
        self._root = root
        self._kids: dict[str, tuple[bool, _Shape]] = {}

    def child(self, name: str) -> tuple[bool, _Shape]:
        known = self._kids.get(name)
        if known is not None:
            return known
        if name not in self._props:  # undeclared names are not cached: a hostile document has many
            return _UNDECLARED
        sub = _resolve(self._props[name], self._root) if isinstance(self._props[name], Mapping) else {}
        if _is_array(sub):
            items = sub.get("items")
            known = (True, _Shape(items if isinstance(items, Mapping) else {}, self._root))
        else:
            known = (False, _Shape(sub, self._root))
        self._kids[name] = known
        return known


_EMPTY: Mapping[str, Any] = {}
_UNDECLARED = (False, _Shape(_EMPTY, _EMPTY))
# Schemas live as long as the mappings that hold them; keyed by identity (a schema is a plain dict).
_SHAPES: dict[tuple[int, int], tuple[Mapping[str, Any], _Shape]] = {}


def _shape(schema: Mapping[str, Any], root: Mapping[str, Any]) -> _Shape:
    key = (id(schema), id(root))
    known = _SHAPES.get(key)
    if known is None or known[0] is not schema:
        if len(_SHAPES) > 1024:  # schemas made on the fly (tests): never an unbounded cache
            _SHAPES.clear()
        known = (schema, _Shape(schema, root))
        _SHAPES[key] = known
    return known[1]


def _read(element: Any, shape: _Shape) -> dict[str, Any]:
    attrib = element.attrib
    out: dict[str, Any] = {f"@{_local(k)}": v for k, v in attrib.items()} if attrib else {}
    repeated: set[str] | None = None  # undeclared names seen twice: a list from then on
    for child in element:
        tag = child.tag
        if not isinstance(tag, str):
            continue
        name = tag.rsplit("}", 1)[-1] if tag[:1] == "{" else tag
        is_list, sub = shape.child(name)
        value = _read(child, sub) if (len(child) or child.attrib) else (child.text or "")
        if is_list:
            out.setdefault(name, []).append(value)
        elif name not in out:
            out[name] = value
        elif repeated is not None and name in repeated:
            out[name].append(value)
        else:
            out[name] = [out[name], value]
            if repeated is None:
                repeated = set()
            repeated.add(name)
    text = element.text
    if text and text.strip() and (out or len(element)):
        out["#text"] = text
    return out
