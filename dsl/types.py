"""Static types of the expression language, and how JSON Schema describes them.

A `Type` has a kind and a `maybe` flag: `maybe` means the value can be *missing* at run time (the
key absent or null). The checker uses `maybe` to decide what is safe; the code generator uses it
to emit a direct dict lookup where a value is always present and a None-safe one where it is not.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

__all__ = [
    "ANY",
    "BOOL",
    "DATETIME",
    "DECIMAL",
    "INT",
    "STRING",
    "Kind",
    "ObjectShape",
    "Type",
    "list_of",
    "object_of",
    "type_from_schema",
]


class Kind(StrEnum):
    STRING = "string"
    INT = "int"
    DECIMAL = "decimal"
    BOOL = "bool"
    DATETIME = "datetime"
    LIST = "list"
    OBJECT = "object"
    ANY = "any"


@dataclass(frozen=True, eq=False)
class ObjectShape:
    """The known fields of an object. `open` objects may carry fields the schema does not list."""

    fields: Mapping[str, Type]
    open: bool = True
    # The JSON-Schema "source" of raw values: True when a field's value reaches us as the schema's
    # own JSON type (decimal strings are converted on read, so they are *not* raw).
    description: str = ""


@dataclass(frozen=True)
class Type:
    kind: Kind
    maybe: bool = False
    item: Type | None = None  # element type of a list
    shape: ObjectShape | None = None  # known fields of an object
    # How a decimal is stored in the source document ("string" or "number"): it is converted
    # with Decimal(...) when read. None for computed values, which are already Decimal.
    decimal_source: bool = False

    def __str__(self) -> str:
        base = self.kind.value
        if self.kind is Kind.LIST and self.item is not None and self.item.kind is not Kind.ANY:
            base = f"list of {self.item.kind.value}"
        return f"{base} (may be missing)" if self.maybe else base

    @property
    def name(self) -> str:
        """The kind name used in messages: 'string', 'decimal', 'list of int', …"""
        return str(replace(self, maybe=False))

    def optional(self, maybe: bool = True) -> Type:
        return self if self.maybe == maybe else replace(self, maybe=maybe)

    def required(self) -> Type:
        return self.optional(False)

    @property
    def numeric(self) -> bool:
        return self.kind in (Kind.INT, Kind.DECIMAL)

    def field(self, name: str) -> Type | None:
        """The type of field `name` of this object type; None when the schema rules it out."""
        if self.kind is Kind.ANY:
            return ANY.optional()
        if self.kind is not Kind.OBJECT:
            return None
        if self.shape is None:
            return ANY.optional()
        ft = self.shape.fields.get(name)
        if ft is None:
            return ANY.optional() if self.shape.open and not self.shape.fields else None
        return ft.optional(ft.maybe or self.maybe)


STRING = Type(Kind.STRING)
INT = Type(Kind.INT)
DECIMAL = Type(Kind.DECIMAL)
BOOL = Type(Kind.BOOL)
DATETIME = Type(Kind.DATETIME)
ANY = Type(Kind.ANY)


def list_of(item: Type, maybe: bool = False) -> Type:
    return Type(Kind.LIST, maybe=maybe, item=item)


def object_of(fields: Mapping[str, Type], maybe: bool = False, open: bool = True) -> Type:
    return Type(Kind.OBJECT, maybe=maybe, shape=ObjectShape(dict(fields), open=open))


# --- JSON Schema → Type ------------------------------------------------------------------------

def type_from_schema(schema: Mapping[str, Any], root: Mapping[str, Any] | None = None) -> Type:
    """The static type a JSON Schema (draft 2020-12 subset) describes; unknown constructs → any.

    Understood: `type` (a name or a list; "null" in the list means *may be missing*),
    `properties` + `required`, `additionalProperties`, `items`, local `$ref` to `#/$defs/…` or
    `#/definitions/…`, `enum`/`const` (typed by their values), and `format: decimal`, which marks
    a decimal carried as a JSON string or number.
    """
    return _convert(schema, root if root is not None else schema, depth=0)


def _resolve(schema: Mapping[str, Any], root: Mapping[str, Any]) -> Mapping[str, Any]:
    ref = schema.get("$ref")
    seen = 0
    while isinstance(ref, str) and ref.startswith("#/") and seen < 32:
        target: Any = root
        for part in ref[2:].split("/"):
            part = part.replace("~1", "/").replace("~0", "~")
            if not isinstance(target, Mapping) or part not in target:
                return {}
            target = target[part]
        if not isinstance(target, Mapping):
            return {}
        merged = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
        schema, ref, seen = merged, target.get("$ref"), seen + 1
    return schema


def _convert(schema: Mapping[str, Any], root: Mapping[str, Any], depth: int) -> Type:
    if depth > 24:  # recursive schemas: stop typing deeper levels
        return ANY.optional()
    schema = _resolve(schema, root)
    raw = schema.get("type")
    names = [raw] if isinstance(raw, str) else list(raw) if isinstance(raw, list) else []
    maybe = "null" in names
    names = [n for n in names if n != "null"]
    if not names:
        for key in ("const", "enum"):
            if key in schema:
                values = [schema[key]] if key == "const" else list(schema[key])
                maybe = maybe or None in values
                kinds = {type(v) for v in values if v is not None}
                if kinds == {str}:
                    names = ["string"]
                elif kinds <= {int} and kinds:
                    names = ["integer"]
                elif kinds == {bool}:
                    names = ["boolean"]
    if schema.get("format") == "decimal" and set(names) <= {"string", "number", "integer"}:
        return Type(Kind.DECIMAL, maybe=maybe, decimal_source=True)
    if len(names) != 1:
        if set(names) == {"number", "integer"}:
            return Type(Kind.DECIMAL, maybe=maybe, decimal_source=True)
        return ANY.optional()
    name = names[0]
    if name == "string":
        return Type(Kind.STRING, maybe=maybe)
    if name == "integer":
        return Type(Kind.INT, maybe=maybe)
    if name == "number":
        # JSON numbers may arrive as floats: they are read through Decimal(repr(x)), never used as floats.
        return Type(Kind.DECIMAL, maybe=maybe, decimal_source=True)
    if name == "boolean":
        return Type(Kind.BOOL, maybe=maybe)
    if name == "array":
        items = schema.get("items")
        item = _convert(items, root, depth + 1) if isinstance(items, Mapping) else ANY.optional()
        return Type(Kind.LIST, maybe=maybe, item=item)
    if name == "object":
        props = schema.get("properties")
        if not isinstance(props, Mapping):
            return Type(Kind.OBJECT, maybe=maybe, shape=ObjectShape({}, open=True))
        required = set(schema.get("required") or ())
        fields: dict[str, Type] = {}
        for key, sub in props.items():
            ft = _convert(sub, root, depth + 1) if isinstance(sub, Mapping) else ANY.optional()
            fields[key] = ft if key in required else ft.optional()
        is_open = schema.get("additionalProperties", True) is not False
        return Type(Kind.OBJECT, maybe=maybe,
                    shape=ObjectShape(fields, open=is_open, description=str(schema.get("description", ""))))
    return ANY.optional()
