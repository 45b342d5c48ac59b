"""Reading XML input into a document (runtime.inputs): a child the schema declares as an array is
always a list, a child that repeats becomes one, a leaf is its text, attributes are `@name`, mixed
text is `#text`; `$ref`s in the schema are followed. The reader caches what it needs of each schema
(`_Shape`); this pins it, on generated documents and schemas, to a direct reading of the rules."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree

from dockyard.dsl.types import _resolve
from dockyard.runtime.inputs import parse_input, xml_to_document

NAMES = st.sampled_from(["a", "b", "item", "line", "x"])


def _direct(element: Any, schema: Mapping[str, Any], root: Mapping[str, Any]) -> dict[str, Any]:
    """The rules read straight off the schema at every element (no cache)."""
    schema = _resolve(schema, root)
    props = schema.get("properties") if isinstance(schema.get("properties"), Mapping) else {}
    out: dict[str, Any] = {f"@{k}": v for k, v in element.attrib.items()}
    groups: dict[str, list[Any]] = {}
    for child in element:
        if isinstance(child.tag, str):
            groups.setdefault(child.tag, []).append(child)
    for name, children in groups.items():
        sub = _resolve(props.get(name, {}), root)
        kind = sub.get("type")
        if kind == "array" or len(children) > 1:
            # a name declared once but given several times: each is still read by its declaration
            items = _resolve(sub.get("items", {}), root) if kind == "array" else sub
            out[name] = [_leaf(c, items, root) for c in children]
        else:
            out[name] = _leaf(children[0], sub, root)
    if (element.text or "").strip() and (out or len(element)):
        out["#text"] = element.text
    return out


def _leaf(element: Any, schema: Mapping[str, Any], root: Mapping[str, Any]) -> Any:
    return _direct(element, schema, root) if len(element) or element.attrib else (element.text or "")


@st.composite
def trees(draw: st.DrawFn, depth: int = 0) -> Any:
    element = etree.Element(draw(NAMES))
    if draw(st.booleans()):
        element.set(draw(NAMES), draw(st.text("ab 1", max_size=3)))
    element.text = draw(st.sampled_from([None, "", " ", "t", "7.50"]))
    if depth < 3:
        for _ in range(draw(st.integers(0, 4))):
            element.append(draw(trees(depth + 1)))
    return element


@st.composite
def schemas(draw: st.DrawFn, depth: int = 0) -> dict[str, Any]:
    if depth >= 3 or draw(st.booleans()):
        return {"type": draw(st.sampled_from(["string", "object"]))}
    props = {n: draw(schemas(depth + 1)) for n in draw(st.sets(NAMES, max_size=3))}
    node: dict[str, Any] = {"type": "object", "properties": props}
    if draw(st.booleans()):
        return {"type": "array", "items": node}
    if draw(st.booleans()):
        return {"$ref": "#/$defs/node", "description": "via a reference"}  # resolved against the root
    return node


@settings(max_examples=300, deadline=None)
@given(trees(), schemas())
def test_the_reader_follows_the_rules_on_any_document_and_schema(tree: Any, schema: dict[str, Any]) -> None:
    root = {"$defs": {"node": {"type": "object", "properties": {"a": {"type": "array", "items": {}}}}}}
    root_schema = {**root, **schema}
    expected = _direct(tree, root_schema, root_schema)
    assert xml_to_document(tree, root_schema, root_schema) == expected
    # the second reading comes from the cached shape, and agrees
    assert xml_to_document(tree, root_schema, root_schema) == expected
    assert parse_input(etree.tostring(tree), "xml", root_schema) == _direct(
        etree.fromstring(etree.tostring(tree)), root_schema, root_schema)


def test_a_declared_array_is_a_list_even_of_one_and_an_undeclared_repeat_becomes_one() -> None:
    schema = {"type": "object", "properties": {"lines": {"type": "object", "properties": {
        "line": {"type": "array", "items": {"type": "object"}}}}}}
    doc = parse_input(b"<r><lines><line><q>1</q></line></lines><w>1</w><w>2</w><w>3</w><n a='1'>t</n></r>",
                      "xml", schema)
    assert doc == {"lines": {"line": [{"q": "1"}]}, "w": ["1", "2", "3"], "n": {"@a": "1", "#text": "t"}}


def test_a_declared_object_given_twice_is_read_by_its_declaration_each_time() -> None:
    """Found by the property test above: a name declared as an object (here through a `$ref`)
    that repeats becomes a list, and each of its elements is still read by the declaration (its
    own declared array stays a list), exactly as when it is given once."""
    schema = {"$defs": {"node": {"type": "object", "properties": {"a": {"type": "array", "items": {}}}}},
              "type": "object", "properties": {"a": {"$ref": "#/$defs/node"}}}
    assert parse_input(b"<r><a/><a><a/></a></r>", "xml", schema) == {"a": ["", {"a": [""]}]}
    assert parse_input(b"<r><a><a/></a></r>", "xml", schema) == {"a": {"a": [""]}}
