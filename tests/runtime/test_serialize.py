"""Tests of dockyard.runtime.serialize: JSON, XML and form output, checked by parsing the bytes back."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree

from dockyard.runtime.errors import SerializationError
from dockyard.runtime.serialize import (
    form_pairs,
    scalar_text,
    serialize,
    to_form_bytes,
    to_json_bytes,
    to_json_text,
    to_xml_bytes,
)
from dockyard.runtime.target import CData, Target, XmlOptions

# No example database: the tests must not leave a .hypothesis folder in the repository.
PROPERTY = settings(database=None, max_examples=200, deadline=None)

CST = dt.timezone(dt.timedelta(hours=8))

HOSTILE = [
    "<script>alert(1)</script>",
    "&amp;",
    "&",
    '"}; import os #',
    'a"b',
    "it's",
    "{x}",
    "{{x}}",
    "line1\nline2\r\nline3\rline4",
    "\ttabbed\t",
    "  padded  ",
    "]]>",
    "<![CDATA[x]]>",
    "<!-- c -->",
    "<?pi x?>",
    "emoji 😀 and 中文 and ünïcödé",
    "",
]


def xml(doc: dict[str, Any], **options: Any) -> bytes:
    options.setdefault("root", "r")
    return to_xml_bytes(doc, XmlOptions(**options))


def parse(data: bytes) -> etree._Element:
    return etree.fromstring(data, parser=etree.XMLParser(resolve_entities=False))


def text_of(element: etree._Element | None) -> str:
    assert element is not None
    return element.text or ""


@contextmanager
def raises_at(path: str, match: str = "") -> Iterator[None]:
    """Expect a SerializationError whose path is exactly `path` (and whose text matches `match`)."""
    with pytest.raises(SerializationError, match=match) as info:
        yield
    assert info.value.path == path, str(info.value)


# --------------------------------------------------------------------------------------------------
# scalar_text


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("abc", "abc"),
        (CData("a<b"), "a<b"),
        (0, "0"),
        (-42, "-42"),
        (12345678901234567890123, "12345678901234567890123"),
        (True, "true"),
        (False, "false"),
        (Decimal("1E+2"), "100"),
        (Decimal("128.50"), "128.50"),
        (Decimal("1E-7"), "0.0000001"),
        (Decimal("-0.10"), "-0.10"),
        (dt.datetime(2024, 3, 1, 9, 30, tzinfo=CST), "2024-03-01T09:30:00+08:00"),
        (dt.datetime(2024, 3, 1, 9, 30, 5, 120000, tzinfo=dt.UTC), "2024-03-01T09:30:05.120000+00:00"),
        (dt.date(2024, 3, 1), "2024-03-01"),
    ],
)
def test_scalar_text(value: Any, text: str) -> None:
    assert scalar_text(value, "p") == text


@pytest.mark.parametrize(
    ("value", "match"),
    [
        (None, "missing value"),
        ({"a": 1}, "scalar"),
        ([1], "scalar"),
        ((1,), "scalar"),
        (1.5, "float"),
        (Decimal("NaN"), "finite"),
        (Decimal("-Infinity"), "finite"),
        (object(), "unsupported"),
        ("bad \ud800", "surrogate"),
    ],
)
def test_scalar_text_refuses(value: Any, match: str) -> None:
    with raises_at("a.b[1]", match):
        scalar_text(value, "a.b[1]")


# --------------------------------------------------------------------------------------------------
# JSON


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (Decimal("1E+2"), "100"),
        (Decimal("128.50"), "128.50"),
        (Decimal("0.10"), "0.10"),
        (Decimal("1E-7"), "0.0000001"),
        (Decimal("-0.000"), "-0.000"),
        (Decimal("12345678901234567890.123456789012345"), "12345678901234567890.123456789012345"),
        (Decimal("0.1") + Decimal("0.2"), "0.3"),
    ],
)
def test_json_decimal_is_an_exact_number(value: Decimal, text: str) -> None:
    assert to_json_bytes({"amount": value}) == b'{"amount":' + text.encode() + b"}"
    assert json.loads(to_json_bytes({"amount": value}), parse_float=Decimal)["amount"] == value


@pytest.mark.parametrize("value", [Decimal(v) for v in ("NaN", "sNaN", "Infinity", "-Infinity")])
def test_json_non_finite_decimal_is_refused(value: Decimal) -> None:
    with raises_at("order.total", "finite"):
        to_json_bytes({"order": {"total": value}})


def test_json_is_compact_and_keeps_non_ascii() -> None:
    doc = {"name": "张三 😀", "lines": [{"sku": "A-1", "qty": 2}], "ok": True, "note": "ü"}
    out = to_json_bytes(doc)
    assert out == '{"name":"张三 😀","lines":[{"sku":"A-1","qty":2}],"ok":true,"note":"ü"}'.encode()
    assert b"\\u" not in out
    assert to_json_text(doc) == out.decode("utf-8")


def test_json_scalars_tuples_and_cdata() -> None:
    doc = {
        "at": dt.datetime(2024, 3, 1, 9, 30, tzinfo=CST),
        "utc": dt.datetime(2024, 3, 1, 1, 30, 0, 500, tzinfo=dt.UTC),
        "naive": dt.datetime(2024, 3, 1, 9, 30),
        "day": dt.date(2024, 3, 1),
        "pair": (1, "x"),
        "remark": CData("<b>"),
        "big": 2**63,
    }
    assert json.loads(to_json_bytes(doc)) == {
        "at": "2024-03-01T09:30:00+08:00",
        "utc": "2024-03-01T01:30:00.000500+00:00",
        "naive": "2024-03-01T09:30:00",
        "day": "2024-03-01",
        "pair": [1, "x"],
        "remark": "<b>",
        "big": 2**63,
    }


@pytest.mark.parametrize(
    ("doc", "path"),
    [
        ({"deliveryOrder": {"remark": None}}, "deliveryOrder.remark"),
        (
            {"orderLines": [{"itemCode": "A"}, {"itemCode": "B"}, {"itemCode": None}]},
            "orderLines[2].itemCode",
        ),
        ({"pair": ("x", None)}, "pair[1]"),
        ({"a": [[1, None]]}, "a[0][1]"),
        ({"top": None}, "top"),
    ],
)
def test_json_none_is_a_missing_value(doc: dict[str, Any], path: str) -> None:
    with raises_at(path, "missing value"):
        to_json_bytes(doc)
    with pytest.raises(SerializationError) as info:
        serialize(doc, Target("json"))
    assert str(info.value) == f"{path}: missing value"


@pytest.mark.parametrize(
    ("doc", "path", "match"),
    [
        ({"w": 1.5}, "w", "float"),
        ({"n": 2**64}, "n", "64-bit"),
        ({"s": "x\udc00"}, "s", "surrogate"),
        ({"o": {"t": dt.time(9, 30)}}, "o.t", "unsupported"),
        ({"o": {1: "x"}}, "o", "not a string"),
    ],
)
def test_json_refuses_what_it_cannot_write_exactly(doc: dict[str, Any], path: str, match: str) -> None:
    with raises_at(path, match):
        to_json_bytes(doc)


# --------------------------------------------------------------------------------------------------
# XML: structure


def test_xml_nested_and_repeated_elements() -> None:
    doc = {
        "deliveryOrder": {"code": "SO-1", "warehouse": {"id": 7}},
        "orderLines": [{"itemCode": "A", "qty": 1}, {"itemCode": "B", "qty": Decimal("2.50")}],
        "tags": ["x", "y", "z"],
        "empty": [],
        "urgent": False,
    }
    out = xml(doc, declaration=False)
    assert out == (
        b"<r><deliveryOrder><code>SO-1</code><warehouse><id>7</id></warehouse></deliveryOrder>"
        b"<orderLines><itemCode>A</itemCode><qty>1</qty></orderLines>"
        b"<orderLines><itemCode>B</itemCode><qty>2.50</qty></orderLines>"
        b"<tags>x</tags><tags>y</tags><tags>z</tags><urgent>false</urgent></r>"
    )
    root = parse(out)
    assert [line.findtext("itemCode") for line in root.findall("orderLines")] == ["A", "B"]
    assert [tag.text for tag in root.findall("tags")] == ["x", "y", "z"]


def test_xml_attributes_and_own_text() -> None:
    doc = {
        "@version": "2",
        "item": [{"@id": "7", "@qty": 3, "#text": "widget"}, {"@id": "8", "#text": CData("a<b")}],
        "price": {"@currency": "CNY", "#text": Decimal("9.90")},
        "at": dt.datetime(2024, 3, 1, 9, 30, tzinfo=CST),
        "box": {"@w": Decimal("1E+1"), "inner": "x"},
    }
    root = parse(xml(doc))
    assert root.get("version") == "2"
    first, second = root.findall("item")
    assert (first.get("id"), first.get("qty"), first.text) == ("7", "3", "widget")
    assert (second.get("id"), second.text) == ("8", "a<b")
    price = root.find("price")
    assert price is not None and price.get("currency") == "CNY" and price.text == "9.90"
    assert root.findtext("at") == "2024-03-01T09:30:00+08:00"
    box = root.find("box")
    assert box is not None and box.get("w") == "10" and box.findtext("inner") == "x"


def test_xml_cdata_section() -> None:
    out = xml({"remark": CData("a < b & c"), "plain": "a < b"}, declaration=False)
    assert b"<remark><![CDATA[a < b & c]]></remark>" in out
    assert b"<plain>a &lt; b</plain>" in out
    assert parse(out).findtext("remark") == "a < b & c"


@pytest.mark.parametrize("text", ["x]]>y", "]]>", "a]]>b]]>c", "]]]]>>", "cr\r\nlf\r", ""])
@pytest.mark.parametrize("encoding", ["UTF-8", "GBK"])
def test_xml_cdata_text_survives_what_cdata_cannot_hold(text: str, encoding: str) -> None:
    out = xml({"remark": CData(text), "after": "ok"}, encoding=encoding)
    root = parse(out)  # well-formed
    assert text_of(root.find("remark")) == text
    assert root.findtext("after") == "ok"


def test_xml_cdata_with_characters_the_encoding_lacks() -> None:
    text = "中文 😀 ok"
    out = xml({"remark": CData(text)}, encoding="GBK")
    assert parse(out).findtext("remark") == text


def test_xml_namespaces_default_and_prefixed() -> None:
    namespaces = {"": "urn:dock", "w": "urn:wms"}
    doc = {
        "order": {"@w:id": "1", "@plain": "2", "w:code": "A", "line": [{"w:sku": "S1"}, {"w:sku": "S2"}]},
    }
    out = xml(doc, root="w:request", namespaces=namespaces, declaration=False)
    assert out.startswith(b'<w:request xmlns="urn:dock" xmlns:w="urn:wms">')
    root = parse(out)
    assert root.tag == "{urn:wms}request"
    assert root.nsmap == {None: "urn:dock", "w": "urn:wms"}
    order = root.find("{urn:dock}order")
    assert order is not None
    assert dict(order.attrib) == {"{urn:wms}id": "1", "plain": "2"}
    assert order.findtext("{urn:wms}code") == "A"
    assert [e.text for e in order.iterfind("{urn:dock}line/{urn:wms}sku")] == ["S1", "S2"]


def test_xml_declared_namespace_is_emitted_even_if_unused() -> None:
    root = parse(xml({"a": "1"}, namespaces={"x": "urn:x"}))
    assert root.nsmap == {"x": "urn:x"}
    assert root.tag == "r" and root.find("a") is not None


@pytest.mark.parametrize(
    ("doc", "path"),
    [
        ({"order": {"q:code": "x"}}, "order.q:code"),
        ({"order": [{"a": "1"}, {"@q:id": "x"}]}, "order[1].@q:id"),
        ({"order": {"q:list": []}}, "order.q:list"),
    ],
)
def test_xml_unknown_prefix(doc: dict[str, Any], path: str) -> None:
    with raises_at(path, "unknown namespace prefix 'q'"):
        xml(doc, namespaces={"w": "urn:w"})


def test_xml_unknown_prefix_on_root() -> None:
    with pytest.raises(SerializationError, match="unknown namespace prefix"):
        xml({}, root="q:r")


@pytest.mark.parametrize("namespaces", [{"xml": "urn:x"}, {"xmlns": "urn:x"}, {"p": ""}, {"1p": "urn:x"}])
def test_xml_bad_namespace_declarations(namespaces: dict[str, str]) -> None:
    with pytest.raises(SerializationError):
        xml({"a": "1"}, namespaces=namespaces)


def test_xml_lang_attribute_uses_the_predeclared_xml_prefix() -> None:
    out = xml({"note": {"@xml:lang": "zh", "#text": "你好"}})
    note = parse(out).find("note")
    assert note is not None
    assert note.get("{http://www.w3.org/XML/1998/namespace}lang") == "zh"


# --------------------------------------------------------------------------------------------------
# XML: declaration, encoding, layout


def test_xml_declaration_utf8() -> None:
    out = xml({"name": "张三"})
    assert out.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n<r>')
    assert "张三".encode() in out
    assert xml({"name": "x"}, declaration=False) == b"<r><name>x</name></r>"


def test_xml_gbk_really_encodes_gbk() -> None:
    doc = {"name": "张三", "addr": "北京市 😀", "@attr": "李四 😀", "cd": CData("王五")}
    out = xml(doc, encoding="GBK")
    assert out.startswith(b'<?xml version="1.0" encoding="GBK"?>\n')
    assert "张三".encode("gbk") in out
    assert "张三".encode() not in out
    decoded = out.decode("gbk")  # strict: every byte is GBK
    assert "<name>张三</name>" in decoded
    assert "<cd><![CDATA[王五]]></cd>" in decoded
    root = parse(out)  # the parser honours the declared encoding
    assert root.findtext("name") == "张三"
    assert root.findtext("addr") == "北京市 😀"
    assert root.get("attr") == "李四 😀"
    assert root.findtext("cd") == "王五"
    assert serialize(doc, Target("xml", XmlOptions(root="r", encoding="GBK"))) == out


def test_xml_name_the_encoding_cannot_hold() -> None:
    with raises_at("😀", "cannot be written in GBK"):
        xml({"😀": "x"}, encoding="GBK")


@pytest.mark.parametrize("encoding", ["NO-SUCH-ENCODING", "UTF 8", '"><x'])
def test_xml_unknown_encoding(encoding: str) -> None:
    with pytest.raises(SerializationError, match="encoding"):
        xml({"a": "1"}, encoding=encoding)


def test_xml_pretty() -> None:
    doc = {"a": {"b": "x y", "c": ["1", "2"]}, "d": {"@k": "v", "#text": " t "}}
    out = xml(doc, pretty=True, declaration=False)
    assert out == (
        b'<r>\n  <a>\n    <b>x y</b>\n    <c>1</c>\n    <c>2</c>\n  </a>\n  <d k="v"> t </d>\n</r>\n'
    )
    root = parse(out)
    assert root.findtext("a/b") == "x y"
    assert root.findtext("d") == " t "


# --------------------------------------------------------------------------------------------------
# XML: escaping and refusals


@pytest.mark.parametrize("value", HOSTILE)
def test_xml_hostile_strings_round_trip(value: str) -> None:
    doc = {"text": value, "cdata": CData(value), "holder": {"@attr": value, "#text": value}, "last": "end"}
    for encoding in ("UTF-8", "GBK"):
        out = xml(doc, encoding=encoding)
        root = parse(out)
        assert [child.tag for child in root] == ["text", "cdata", "holder", "last"]
        assert text_of(root.find("text")) == value
        assert text_of(root.find("cdata")) == value
        holder = root.find("holder")
        assert holder is not None and holder.get("attr") == value and text_of(holder) == value
        assert len(holder) == 0
        assert root.findtext("last") == "end"


@pytest.mark.parametrize("char", ["\x00", "\x0b", "\x0c", "\x1f", "\ufffe", "\uffff", "\ud800"])
def test_xml_characters_xml_cannot_carry(char: str) -> None:
    refused = "not allowed in XML|surrogate"
    with raises_at("lines[1].remark", refused):
        xml({"lines": [{"remark": "ok"}, {"remark": f"a{char}b"}]})
    with raises_at("lines[0].@code", refused):
        xml({"lines": [{"@code": char}]})
    with raises_at("lines.#text", refused):
        xml({"lines": {"#text": CData(char)}})


@pytest.mark.parametrize(
    "name", ["1abc", "a b", "", "a<b", "{urn:x}y", "{a}b", "{}b", "a:b:c", ":a", "a:", "-x", "$other"]
)
def test_xml_invalid_element_names(name: str) -> None:
    with raises_at(f"order.{name}", "invalid element name"):
        xml({"order": {name: "x"}}, namespaces={"a": "urn:a"})


@pytest.mark.parametrize("name", ["1abc", "a b", "", "{urn:x}y", "{a}b", "x=y"])
def test_xml_invalid_attribute_names(name: str) -> None:
    with raises_at(f"order.@{name}", "invalid attribute name"):
        xml({"order": {f"@{name}": "x"}})


def test_xml_invalid_root_name() -> None:
    with pytest.raises(SerializationError, match="invalid element name"):
        xml({}, root="1root")


@pytest.mark.parametrize(
    ("doc", "path", "match"),
    [
        ({"deliveryOrder": {"remark": None}}, "deliveryOrder.remark", "missing value"),
        ({"orderLines": [{"itemCode": "A"}, {"itemCode": None}]}, "orderLines[1].itemCode", "missing value"),
        ({"item": {"@id": None}}, "item.@id", "missing value"),
        ({"item": {"#text": None}}, "item.#text", "missing value"),
        ({"item": ["a", None]}, "item[1]", "missing value"),
        ({"grid": [[1, 2]]}, "grid[0]", "list inside a list"),
        ({"item": {"@id": {"x": 1}}}, "item.@id", "scalar"),
        ({"item": {"#text": ["x"]}}, "item.#text", "scalar"),
        ({"weight": 1.25}, "weight", "float"),
        ({"total": Decimal("NaN")}, "total", "finite"),
    ],
)
def test_xml_refused_values(doc: dict[str, Any], path: str, match: str) -> None:
    with raises_at(path, match):
        xml(doc)


def test_xml_target_without_options() -> None:
    with pytest.raises(SerializationError, match="XmlOptions"):
        serialize({"a": "1"}, Target("xml"))


# --------------------------------------------------------------------------------------------------
# Form


def test_form_keeps_order_and_uses_plus_for_space() -> None:
    doc = {"zeta": "a b", "alpha": "中", "mid": "x+y&z=1/2?", "n": 3, "amount": Decimal("1E+2"), "flag": True}
    assert to_form_bytes(doc) == b"zeta=a+b&alpha=%E4%B8%AD&mid=x%2By%26z%3D1%2F2%3F&n=3&amount=100&flag=true"
    assert form_pairs(doc) == [
        ("zeta", "a b"),
        ("alpha", "中"),
        ("mid", "x+y&z=1/2?"),
        ("n", "3"),
        ("amount", "100"),
        ("flag", "true"),
    ]
    assert serialize(doc, Target("form")) == to_form_bytes(doc)


def test_form_json_message_round_trips() -> None:
    message = to_json_text(
        {"orderCode": "SO 1&2", "remark": 'a"b + c=d %20 中文', "lines": [{"qty": Decimal("1.50")}]}
    )
    body = to_form_bytes({"method": "deliveryorder.create", "msgData": message, "sign": "AB/CD+=="})
    pairs = parse_qsl(body.decode("ascii"), keep_blank_values=True, strict_parsing=True)
    assert pairs == [("method", "deliveryorder.create"), ("msgData", message), ("sign", "AB/CD+==")]
    assert json.loads(dict(pairs)["msgData"], parse_float=Decimal)["lines"][0]["qty"] == Decimal("1.50")


@pytest.mark.parametrize(
    ("doc", "path", "match"),
    [
        ({"ok": "1", "nested": {"a": "1"}}, "nested", "scalar"),
        ({"list": ["a"]}, "list", "scalar"),
        ({"tuple": ("a",)}, "tuple", "scalar"),
        ({"remark": None}, "remark", "missing value"),
        ({"w": 0.5}, "w", "float"),
    ],
)
def test_form_refuses_non_flat_documents(doc: dict[str, Any], path: str, match: str) -> None:
    with raises_at(path, match):
        to_form_bytes(doc)
    with raises_at(path, match):
        form_pairs(doc)


def test_form_empty_document() -> None:
    assert to_form_bytes({}) == b""


# --------------------------------------------------------------------------------------------------
# Properties


def _xml_char(c: str) -> bool:
    cp = ord(c)
    return c in "\t\n\r" or 0x20 <= cp <= 0xD7FF or 0xE000 <= cp <= 0xFFFD or 0x10000 <= cp <= 0x10FFFF


XML_TEXT = st.text(st.characters(exclude_categories=("Cs",)).filter(_xml_char))
UNICODE_TEXT = st.text(st.characters(exclude_categories=("Cs",)))


@PROPERTY
@given(value=XML_TEXT)
@pytest.mark.parametrize("encoding", ["UTF-8", "GBK"])
@pytest.mark.parametrize("pretty", [False, True])
def test_property_xml_text_round_trip(encoding: str, pretty: bool, value: str) -> None:
    doc = {"text": value, "cdata": CData(value), "node": {"@attr": value, "#text": value}}
    root = parse(xml(doc, encoding=encoding, pretty=pretty))
    assert text_of(root.find("text")) == value
    assert text_of(root.find("cdata")) == value
    node = root.find("node")
    assert node is not None
    assert node.get("attr") == value
    assert text_of(node) == value


@PROPERTY
@given(doc=st.dictionaries(UNICODE_TEXT, UNICODE_TEXT))
def test_property_form_round_trip(doc: dict[str, str]) -> None:
    body = to_form_bytes(doc)
    assert parse_qsl(body.decode("ascii"), keep_blank_values=True) == list(doc.items())
    assert form_pairs(doc) == list(doc.items())


FINITE_DECIMALS = st.decimals(allow_nan=False, allow_infinity=False, min_value=-(10**15), max_value=10**15)
JSON_SCALARS = UNICODE_TEXT | st.integers(min_value=-(2**63), max_value=2**63 - 1) | FINITE_DECIMALS
JSON_DOCS = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(UNICODE_TEXT, inner, max_size=4),
    max_leaves=20,
)


@PROPERTY
@given(doc=st.dictionaries(UNICODE_TEXT, JSON_DOCS, max_size=5))
def test_property_json_round_trip(doc: dict[str, Any]) -> None:
    assert json.loads(to_json_bytes(doc), parse_float=Decimal) == doc


@PROPERTY
@given(value=st.decimals(allow_nan=False, allow_infinity=False))
def test_property_json_decimal_is_exact_and_never_exponent(value: Decimal) -> None:
    text = to_json_text(value)
    assert "e" not in text.lower()
    assert Decimal(text) == value
    assert text == scalar_text(value, "")


@settings(database=None, max_examples=400, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",))))
def test_form_quote_is_quote_plus_and_url_quote_is_quote(text: str) -> None:
    from urllib.parse import quote, quote_plus

    from dockyard.runtime.serialize import form_quote, url_quote

    assert form_quote(text) == quote_plus(text)
    assert url_quote(text) == quote(text, safe="")


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=True)
    | st.decimals(allow_nan=True, allow_infinity=True) | st.text()
    # Text that looks like what the JSON writer looks for in its output (null, a float).
    | st.sampled_from([":null", ",null", "[1.5", "a:1.0", ":-2e5", "x,3.", '":null']),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=12)


@settings(database=None, max_examples=400, deadline=None)
@given(JSONISH)
def test_json_refuses_exactly_what_the_full_check_refuses(value: Any) -> None:
    """The fast path (orjson first, the named walk only on trouble) accepts and refuses the same
    documents as checking every node first, and writes the same bytes."""
    import orjson

    from dockyard.runtime.serialize import _check_json, _json_default

    try:
        _check_json(value, "")
        expected: bytes | None = orjson.dumps(value, default=_json_default,
                                              option=orjson.OPT_PASSTHROUGH_DATETIME)
    except (SerializationError, orjson.JSONEncodeError):
        expected = None
    try:
        got: bytes | None = to_json_bytes(value)
    except SerializationError:
        got = None
    assert got == expected


@settings(database=None, max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(categories=("Cs",)), min_size=1), st.text(), st.text())
def test_percent_encoding_refuses_a_lone_surrogate_as_quote_plus_does(surrogate: str, before: str,
                                                                       after: str) -> None:
    """A lone surrogate has no UTF-8 form: every encoder fails on it as urllib does, wherever it
    stands, whatever the rest of the text (ASCII or not, which take different paths)."""
    from urllib.parse import quote_plus

    from dockyard.runtime.serialize import form_quote, url_quote
    from dockyard.runtime.signing import java_urlencode

    text = (before + surrogate + after).encode("utf-8", "surrogatepass").decode("utf-8", "surrogatepass")
    with pytest.raises(UnicodeEncodeError):
        quote_plus(text)
    for encoder in (form_quote, url_quote, java_urlencode):
        with pytest.raises(UnicodeEncodeError):
            encoder(text)


@settings(database=None, max_examples=300, deadline=None)
@given(st.binary())
def test_percent_encoding_of_every_byte_value_is_urllibs(data: bytes) -> None:
    """Every byte value, as the UTF-8 of whatever text decodes from it (so each table entry is
    reached, through the ASCII path and the latin-1 one)."""
    from urllib.parse import quote, quote_plus

    from dockyard.runtime.serialize import form_quote, url_quote

    text = data.decode("utf-8", "replace") + "".join(chr(b) for b in data)
    assert form_quote(text) == quote_plus(text)
    assert url_quote(text) == quote(text, safe="")
