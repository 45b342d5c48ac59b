"""Leaving a value out on a condition: `omit` and `$when` beside `$value`.

Each property compiles one spec with conditions and its baseline without them (the same fields,
written `name?: value`), runs both on generated orders, and checks the JSON document and the XML
text: a field whose condition says "leave it out" is absent, and every other field is exactly what
the baseline writes.
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dockyard.compiler.api import compile_file
from dockyard.runtime.errors import TransformError
from dockyard.runtime.mapping import CompiledMapping
from dockyard.runtime.serialize import serialize

SCHEMA = {
    "type": "object",
    "required": ["order_no", "items"],
    "properties": {
        "order_no": {"type": "string"},
        "remark": {"type": ["string", "null"]},
        "items": {"type": "array", "items": {
            "type": "object", "required": ["sku", "qty"],
            "properties": {"sku": {"type": "string"}, "qty": {"type": "integer"}}}},
    },
}

# The fields under test, as (key, conditional form, baseline form). The baseline writes the value
# whenever it is there; the conditional form adds the condition.
FIELDS = """\
  orderNo: order_no
  remark?: if remark == "" then omit else remark
  note?:
    $value: remark
    $when: present(remark) and trim(remark) != ""
  tag?: if count(items) > 2 then "many" else omit
  tags: ["A", if present(remark) then "R" else omit, "Z"]
  lines:
    $each: items
    $emit:
      no: string($position)
      sku?: if $item.qty > 1 then omit else $item.sku
      qty?:
        $value: $item.qty
        $when: $item.qty != 0
"""
BASELINE = """\
  orderNo: order_no
  remark?: remark
  note?: remark
  tag?: "many"
  tags: ["A", "R", "Z"]
  lines:
    $each: items
    $emit:
      no: string($position)
      sku?: $item.sku
      qty?: $item.qty
"""


def _spec(folder: Path, name: str, fmt: str, output: str) -> CompiledMapping:
    target = "{format: xml, root: request, declaration: false}" if fmt == "xml" else "{format: json}"
    text = (f'dockyard: 1\nname: t.{name}\nversion: "1.0.0"\nsource: {{schema: order.schema.json, key: order_no}}\n'
            f"target: {target}\noutput:\n{output}")
    path = folder / f"{name}-{fmt}.yaml"
    path.write_text(text, encoding="utf-8")
    return compile_file(path)


@pytest.fixture(scope="module")
def specs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, CompiledMapping]:
    folder = tmp_path_factory.mktemp("omit")
    (folder / "order.schema.json").write_text(json.dumps(SCHEMA), encoding="utf-8")
    return {f"{kind}-{fmt}": _spec(folder, kind, fmt, FIELDS if kind == "when" else BASELINE)
            for kind in ("when", "base") for fmt in ("json", "xml")}


# Text that XML can carry and read back unchanged (no control characters but tab and newline).
TEXT = st.text(st.characters(blacklist_categories=("Cc", "Cs")) | st.sampled_from(" \t\n"), max_size=12)
ITEMS = st.lists(st.fixed_dictionaries({"sku": TEXT.filter(bool), "qty": st.integers(0, 3)}), max_size=4)
REMARK = st.one_of(st.just({}), st.just({"remark": None}), st.just({"remark": ""}),
                   st.sampled_from([" ", "\t\n"]).map(lambda r: {"remark": r}), TEXT.map(lambda r: {"remark": r}))


def expected(order: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    """The baseline document with exactly the fields whose condition is false taken out."""
    doc = json.loads(json.dumps(base))
    remark = order.get("remark")
    if remark == "":
        doc.pop("remark", None)
    if remark is None or remark.strip() == "":
        doc.pop("note", None)
    if len(order["items"]) <= 2:
        doc.pop("tag")
    if remark is None:
        doc["tags"].remove("R")
    for line, item in zip(doc["lines"], order["items"], strict=True):
        if item["qty"] > 1:
            line.pop("sku")
        if item["qty"] == 0:
            line.pop("qty")
    return doc


@settings(max_examples=150, deadline=None)
@given(remark=REMARK, items=ITEMS)
def test_left_out_fields_are_absent_in_json_and_the_rest_is_unchanged(
        specs: dict[str, CompiledMapping], remark: dict[str, Any], items: list[dict[str, Any]]) -> None:
    order = {"order_no": "T1", **remark, "items": items}
    doc = specs["when-json"].transform(order, validate=True)
    base = specs["base-json"].transform(order, validate=True)
    assert doc == expected(order, base)
    assert list(doc) == [k for k in base if k in doc]  # the spec's key order is kept
    text = serialize(doc, specs["when-json"].target).decode("utf-8")
    assert json.loads(text) == json.loads(json.dumps(doc))
    for key in set(base) - set(doc):
        assert f'"{key}"' not in text


def _element(node: ElementTree.Element) -> dict[str, Any]:
    """An element's children as {tag: [text or nested dict, …]}, for comparing two documents."""
    result: dict[str, Any] = {}
    for child in node:
        result.setdefault(child.tag, []).append(_element(child) if len(child) else child.text or "")
    return result


@settings(max_examples=150, deadline=None)
@given(remark=REMARK, items=ITEMS)
def test_left_out_fields_are_absent_in_xml_and_the_rest_is_unchanged(
        specs: dict[str, CompiledMapping], remark: dict[str, Any], items: list[dict[str, Any]]) -> None:
    order = {"order_no": "T1", **remark, "items": items}
    when_map, base_map = specs["when-xml"], specs["base-xml"]
    got = ElementTree.fromstring(serialize(when_map.transform(order, validate=True), when_map.target))
    base_doc = base_map.transform(order, validate=True)
    want_doc = expected(order, base_doc)
    want = ElementTree.fromstring(serialize(want_doc, base_map.target))
    assert _element(got) == _element(want)
    for key in ("remark", "note", "tag"):
        assert (got.find(key) is None) == (key not in want_doc)
    for line, item in zip(got.findall("lines"), items, strict=True):
        assert (line.find("sku") is None) == (item["qty"] > 1)
        assert (line.find("qty") is None) == (item["qty"] == 0)


def test_a_false_when_does_not_compute_the_value(tmp_path: Path) -> None:
    """The condition runs first: a value that would fail (here: a decimal that is not one) is never
    computed when its field is left out."""
    (tmp_path / "order.schema.json").write_text(json.dumps(SCHEMA), encoding="utf-8")
    mapping = _spec(tmp_path, "lazy", "json", """\
  orderNo: order_no
  amount?:
    $value: decimal(remark)
    $when: remark != "n/a"
  other?: if remark == "n/a" then omit else decimal(remark)
""")
    assert mapping.transform({"order_no": "T1", "remark": "n/a", "items": []}) == {"orderNo": "T1"}
    doc = mapping.transform({"order_no": "T1", "remark": "1.50", "items": []})
    assert doc == {"orderNo": "T1", "amount": Decimal("1.50"), "other": Decimal("1.50")}
    assert str(doc["amount"]) == "1.50"


def test_a_required_field_with_when_fails_the_order_when_left_out(tmp_path: Path) -> None:
    (tmp_path / "order.schema.json").write_text(json.dumps(SCHEMA), encoding="utf-8")
    mapping = _spec(tmp_path, "req", "json", "  remark:\n    $value: remark\n    $when: remark != \"\"\n")
    assert mapping.transform({"order_no": "T1", "remark": "x", "items": []}) == {"remark": "x"}
    with pytest.raises(TransformError, match="required value is missing; field remark; order T1"):
        mapping.transform({"order_no": "T1", "remark": "", "items": []})


DOC = Path(__file__).resolve().parents[2] / "docs" / "language.md"


def _doc_blocks(after: str) -> list[str]:
    """The ```yaml blocks of docs/language.md between the heading `after` and the next heading."""
    text = DOC.read_text(encoding="utf-8")
    section = text[text.index(after):]
    section = section[: section.index("\n## ", 1)] if "\n## " in section[1:] else section
    section = section[: section.index("\n### ", 1)] if "\n### " in section[1:] else section
    return [block.split("```", 1)[0] for block in section.split("```yaml\n")[1:]]


@pytest.mark.parametrize("heading", ["### Leaving a field out on a condition", "### `$each`: lists"])
def test_the_documented_examples_compile_and_leave_fields_out(tmp_path: Path, heading: str) -> None:
    blocks = [b for b in _doc_blocks(heading) if "omit" in b or "$when" in b]
    assert blocks
    fields = "".join("".join(f"  {line}\n" for line in block.splitlines()) for block in blocks)
    path = tmp_path / "doc.yaml"
    path.write_text('dockyard: 1\nname: t.doc\nversion: "1.0.0"\nsource: {schema: order}\n'
                    f"target: {{format: json}}\noutput:\n  orderNo: order_no\n{fields}", encoding="utf-8")
    mapping = compile_file(path)
    order = json.loads((DOC.parents[1] / "examples" / "orders" / "tmall-basic.json").read_text(encoding="utf-8"))
    full = mapping.transform(order)
    bare = mapping.transform({**order, "items": [], "remark": " ", "buyer_message": ""})
    assert set(full) - set(bare) == set(full) - {"orderNo"}  # every documented field can be left out
