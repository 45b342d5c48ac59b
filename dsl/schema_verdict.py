"""A yes/no answer to "does this document fit this JSON Schema?" without importing jsonschema.

The spec parser validates the structure of every spec it reads. jsonschema explains problems well
but costs about 60 ms of CPU to import, more than the rest of `dockyard check` on a correct spec.
So the verdict comes from this small interpreter of the keywords the spec schema uses, and only a
spec it refuses is validated again by jsonschema for the messages. Any keyword outside that set
makes the verdict "unknown" (None), and the caller asks jsonschema. A hypothesis test checks the
verdict against jsonschema on generated specs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dockyard.runtime.schema_patterns import search

__all__ = ["conforms"]

# Keywords that never change a verdict.
_ANNOTATIONS = frozenset(("$id", "$schema", "$defs", "$comment", "title", "description", "examples", "default",
                          "format", "deprecated", "readOnly", "writeOnly"))
_HANDLED = frozenset(("$ref", "type", "properties", "additionalProperties", "required", "pattern", "enum", "const",
                      "items", "propertyNames", "uniqueItems", "minLength", "maxLength", "anyOf", "oneOf", "not",
                      "if", "then", "else"))


class _Unknown(Exception):
    """The schema uses something this interpreter does not decide."""


def conforms(schema: Mapping[str, Any], instance: Any) -> bool | None:
    """True when `instance` is valid against `schema` (draft 2020-12, formats not asserted), False
    when it is not, None when the schema uses a keyword this module does not know."""
    try:
        return _valid(schema, instance, schema)
    except (_Unknown, RecursionError):
        return None


def _is_type(value: Any, name: str) -> bool:
    if name == "object":
        return isinstance(value, dict)
    if name == "array":
        return isinstance(value, list)
    if name == "string":
        return isinstance(value, str)
    if name == "boolean":
        return isinstance(value, bool)
    if name == "null":
        return value is None
    if isinstance(value, bool):
        return False
    if name == "integer":
        return isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    if name == "number":
        return isinstance(value, int | float)
    raise _Unknown(name)


def _equal(a: Any, b: Any) -> bool:
    """JSON equality as jsonschema has it: true and 1 differ, 1 and 1.0 do not."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict | list) or isinstance(b, dict | list):
        return False
    return bool(a == b)


def _resolve(ref: str, root: Mapping[str, Any]) -> Mapping[str, Any]:
    if not ref.startswith("#/"):
        raise _Unknown(ref)
    node: Any = root
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, Mapping) or part not in node:
            raise _Unknown(ref)
        node = node[part]
    if not isinstance(node, Mapping):
        raise _Unknown(ref)
    return node


def _valid(schema: Any, value: Any, root: Mapping[str, Any]) -> bool:
    if schema is True:
        return True
    if schema is False:
        return False
    if not isinstance(schema, Mapping):
        raise _Unknown(schema)
    for key in schema:
        if key not in _HANDLED and key not in _ANNOTATIONS:
            raise _Unknown(key)
    if "$ref" in schema and not _valid(_resolve(schema["$ref"], root), value, root):
        return False
    kind = schema.get("type")
    if kind is not None:
        kinds = [kind] if isinstance(kind, str) else kind
        if not any(_is_type(value, k) for k in kinds):
            return False
    if "const" in schema and not _equal(value, schema["const"]):
        return False
    if "enum" in schema and not any(_equal(value, option) for option in schema["enum"]):
        return False
    if isinstance(value, str):
        pattern = schema.get("pattern")
        if pattern is not None and not search(pattern, value):  # `$` as ECMA-262 reads it (schema_patterns)
            return False
        if "minLength" in schema and len(value) < schema["minLength"]:
            return False
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            return False
    if isinstance(value, dict) and not _valid_object(schema, value, root):
        return False
    if isinstance(value, list):
        items = schema.get("items")
        if items is not None and not all(_valid(items, v, root) for v in value):
            return False
        if schema.get("uniqueItems") and any(_equal(value[i], value[j]) for i in range(len(value))
                                              for j in range(i + 1, len(value))):
            return False
    if "anyOf" in schema and not any(_valid(s, value, root) for s in schema["anyOf"]):
        return False
    if "oneOf" in schema and sum(1 for s in schema["oneOf"] if _valid(s, value, root)) != 1:
        return False
    if "not" in schema and _valid(schema["not"], value, root):
        return False
    if "if" in schema:
        branch = schema.get("then") if _valid(schema["if"], value, root) else schema.get("else")
        if branch is not None and not _valid(branch, value, root):
            return False
    return True


def _valid_object(schema: Mapping[str, Any], value: dict[Any, Any], root: Mapping[str, Any]) -> bool:
    for name in schema.get("required", ()):
        if name not in value:
            return False
    properties: Mapping[str, Any] = schema.get("properties", {})
    additional = schema.get("additionalProperties")
    names = schema.get("propertyNames")
    for key, item in value.items():
        if names is not None and not _valid(names, key, root):
            return False
        sub = properties.get(key) if isinstance(key, str) else None
        if sub is not None:
            if not _valid(sub, item, root):
                return False
        elif additional is not None and not _valid(additional, item, root):
            return False
    return True
