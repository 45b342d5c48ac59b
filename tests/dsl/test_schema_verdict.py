"""The quick verdict on a spec's structure agrees with jsonschema, which it stands in for."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from dockyard.dsl.schema_verdict import conforms
from dockyard.dsl.spec_parser import spec_schema
from dockyard.dsl.yaml_nodes import safe_load
from dockyard.runtime.schema_patterns import validator_class

REPO = Path(__file__).resolve().parents[2]
SCHEMA = spec_schema()
VALIDATOR = validator_class()(SCHEMA)  # jsonschema as the spec parser sets it up
SPECS = [p for p in sorted((REPO / "mappings").rglob("*.yaml")) if not p.name.endswith(".test.yaml")
         and "schemas" not in p.parts and "testdata" not in p.parts and "accounts" not in p.parts
         and "warehouses" not in p.parts]


def _plain(path: Path) -> Any:
    data = safe_load(path.read_text(encoding="utf-8"))
    if isinstance(data, dict):  # as the spec parser validates it: the output tree and lets are checked apart
        data["output"] = {}
        if isinstance(data.get("let"), dict):
            data["let"] = {k: "x" for k in data["let"]}
    return data


def test_every_library_spec_conforms() -> None:
    assert len(SPECS) > 10
    for path in SPECS:
        plain = _plain(path)
        assert conforms(SCHEMA, plain) is VALIDATOR.is_valid(plain) is True, path


_VALUES: list[Any] = [None, True, False, 0, 1, -2, 1.5, 2.0, "", "x", "json", "xml", "form", "1.0.0", "Bad Name",
                     "a.b", "HALF_UP", "GET", "POST", "ctx.x", "query.a", ["a", "b"], ["a", "a"], [1], {}, {"x": 1},
                     "1.0.0\n", "a.b\n", "query.a\n", "GET\n"]
_KEYS = ["extra", "format", "name", "rows", "default", "sign", "schema", "root", "wrap"]


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out.extend(_paths(v, (*prefix, k)))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out.extend(_paths(v, (*prefix, i)))
    return out


@settings(max_examples=500, deadline=None, database=None)
@given(st.sampled_from(SPECS), st.randoms(use_true_random=False), st.integers(1, 3))
def test_mutated_specs_get_the_same_verdict(path: Path, rnd: Any, count: int) -> None:
    """Values replaced, keys removed and added anywhere in a real spec: both say the same."""
    doc = copy.deepcopy(_plain(path))
    for _ in range(count):
        where = rnd.choice(_paths(doc)[1:])
        parent = doc
        for part in where[:-1]:
            parent = parent[part]
        action = rnd.choice(["set", "delete", "add", "newline"])
        if action == "newline" and isinstance(parent[where[-1]], str):  # `$` before a final newline
            parent[where[-1]] += "\n"
        elif action == "delete":
            del parent[where[-1]]
        elif action == "add" and isinstance(parent, dict):
            parent[rnd.choice(_KEYS)] = copy.deepcopy(rnd.choice(_VALUES))
        else:
            parent[where[-1]] = copy.deepcopy(rnd.choice(_VALUES))
    assert conforms(SCHEMA, doc) is VALIDATOR.is_valid(doc)
