"""The XML text writer (`_Stream`) writes exactly the bytes the tree writers write, and whenever it is
not sure it gives up, so that documents it declines get the tree writers' bytes or errors.

The oracle is the full writer (`_XmlWriter`: an lxml tree checked node by node, then lxml's
serialization). Documents are fuzzed with what text can hold (XML-special characters, characters
XML 1.0 forbids, lone surrogates, carriage returns, non-ASCII, CDATA values with "]]>"), every kind
of scalar (Decimals of every scale, None, floats, bools, huge ints, dates, str subclasses), empty
and missing values, and element names lxml accepts, refuses or would spell with a namespace, under
the options of the specs in mappings/ and options the text writer leaves to the trees (namespaces,
pretty printing, other encodings).
"""

from __future__ import annotations

import datetime as dt
import enum
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from xmlkit import full, outcome

import dockyard
from dockyard.runtime.target import CData, XmlOptions
from dockyard.runtime.xml_writer import _fast_writer, _finish, _Slow, to_xml_bytes

REPO = Path(__file__).resolve().parents[2]

# The specs' own options first (QIMEN requests; ack.yaml without a declaration), then encodings
# the text writer encodes itself, then options it leaves to the trees.
OPTIONS = [
    XmlOptions("request", encoding="UTF-8"),
    XmlOptions("response", declaration=False),
    XmlOptions("r", encoding="utf8"),
    XmlOptions("r", encoding="GBK"),
    XmlOptions("r", encoding="ISO-8859-1"),
    XmlOptions("r", encoding="US-ASCII", declaration=False),
    XmlOptions("r", encoding="UTF-16"),
    XmlOptions("名", encoding="UTF-8"),
    XmlOptions("r", declaration=False, pretty=True),
    XmlOptions("p:r", encoding="GBK", namespaces={"p": "urn:p", "": "urn:d"}),
    XmlOptions("r", namespaces={"x": "urn:x"}),
    XmlOptions("1bad"),
]
STREAMED = [o for o in OPTIONS if not o.namespaces and not o.pretty and o.root != "1bad"]


class Kind(enum.StrEnum):  # a str subclass, as an enum value in a caller's document would be
    A = "a&b"


_legal_chars = st.sampled_from([
    "a", "Z", "0", " ", "名", "é", "😀", "&", "<", ">", '"', "'", "]", "]]>", "&amp;", "&#13;", "\t", "\n", "\r",
    "\r\n", "\x7f", "\x85", "\xa0", "\u2028", "\ufeff", "\ue000", "\U0010ffff",
])
_illegal_chars = st.sampled_from(["\x00", "\x08", "\x0b", "\x1f", "\ufffe", "\uffff", "\ud800", "\udfff"])
_texts = st.one_of(
    st.lists(_legal_chars, max_size=6).map("".join),
    st.lists(_legal_chars | _illegal_chars, max_size=6).map("".join),
    st.text(max_size=8),
)
_decimals = st.builds(lambda sign, digits, exp: Decimal((sign, tuple(digits), exp)),  # every scale
                      st.integers(0, 1), st.lists(st.integers(0, 9), min_size=1, max_size=12),
                      st.integers(-30, 30))
_usual = st.one_of(
    _texts, _decimals, st.integers(-(10**20), 10**20), st.booleans(),
    st.datetimes(timezones=st.none() | st.timezones()), st.dates(), st.just(Kind.A),
)
_odd = st.one_of(
    _texts.map(CData), st.none(), st.decimals(allow_nan=True, allow_infinity=True), st.floats(width=16),
    st.builds(lambda: 10**5000),  # beyond sys.get_int_max_str_digits(): an error in every writer
)
_scalars = st.one_of(_usual, _odd)
_GOOD_NAMES = ["a", "b", "itemCode", "orderLine", "x-y.z_1", "xmlfoo"]
_names = st.sampled_from(_GOOD_NAMES * 6 + ["名", "a\u0300", "😀", "p:x", "x:", ":x", "1bad", "a b", "@id", "@p:k",
                                            "#text", "", "xml", "{a}b"])
_docs = st.recursive(
    _scalars,
    lambda inner: st.dictionaries(_names, inner, max_size=4) | st.lists(inner, max_size=3)
    | st.lists(inner, max_size=2).map(tuple),
    max_leaves=16)

# Documents the text writer should write itself: element names lxml accepts, legal text.
_plain_names = st.sampled_from(["a", "b", "itemCode", "orderLine", "名", "x-y.z_1", "a\u0300"])
_legal = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\ufffe\uffff")
                 .filter(lambda c: c in "\t\n\r" or c >= " "), max_size=8)
_plain_scalars = st.one_of(_legal, st.integers(), st.booleans(), _decimals,
                           st.datetimes(timezones=st.none() | st.timezones()))
_plain_docs = st.recursive(  # a list holds no list (that has no XML form)
    _plain_scalars,
    lambda inner: st.dictionaries(
        _plain_names, inner | st.lists(inner.filter(lambda v: not isinstance(v, list)), max_size=3), max_size=4),
    max_leaves=16)


def _trees(doc: dict[str, Any], options: XmlOptions) -> bytes:
    """What `to_xml_bytes` did before the text writer: the fast tree writer, else the full one."""
    fast = _fast_writer(options)
    try:
        root = fast.full.root(options.root)
        fast.fill(root, doc)
        return _finish(root, options, fast.full.codec)
    except _Slow:
        return full(doc, options)


def _streamed(doc: dict[str, Any], options: XmlOptions) -> bytes | None:
    """The text writer's bytes, or None when it gives up (or does not serve these options)."""
    stream = _fast_writer(options).stream
    if stream is None:
        return None
    try:
        return stream.write(doc)
    except _Slow:
        return None


@settings(max_examples=1500, deadline=None, database=None)
@given(st.dictionaries(_names, _docs, max_size=5), st.sampled_from(OPTIONS))
def test_the_text_writer_writes_what_the_trees_write_or_gives_up(doc: dict[str, Any], options: XmlOptions) -> None:
    expected = outcome(full, doc, options)
    assert outcome(to_xml_bytes, doc, options) == expected
    streamed = _streamed(doc, options)
    if streamed is not None:
        assert streamed == expected


@settings(max_examples=500, deadline=None, database=None)
@given(st.dictionaries(_plain_names, _plain_docs, max_size=5), st.sampled_from(STREAMED))
def test_plain_documents_are_written_as_text(doc: dict[str, Any], options: XmlOptions) -> None:
    assume(all(_encodable(name, options) for name in _names_in(doc)))  # else an error, from the trees
    streamed = _streamed(doc, options)
    assert streamed is not None, "the text writer gave up on a plain document"
    assert streamed == full(doc, options) == to_xml_bytes(doc, options)


def _names_in(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [name for key, item in value.items() for name in [key, *_names_in(item)]]
    if isinstance(value, list):
        return [name for item in value for name in _names_in(item)]
    return []


def _encodable(name: str, options: XmlOptions) -> bool:
    try:
        name.encode(options.encoding)
    except UnicodeEncodeError:
        return False
    return True


def test_the_writers_it_leaves_to() -> None:
    for options in OPTIONS:
        served = _fast_writer(options).stream is not None
        assert served == (options in STREAMED), options


@pytest.mark.parametrize("options", STREAMED)
@pytest.mark.parametrize("doc", [
    {}, {"a": ""}, {"a": {}}, {"a": []}, {"a": {"b": []}}, {"a": [{}, "", 0]}, {"a": ("x", "y")},
    {"a": " & < > \" ' ]]> \r\n\t 名 😀 \x85 \u2028"}, {"a": Decimal("-0.00")}, {"a": Decimal("1E+3")},
    {"a": Decimal("0E-30")}, {"a": True, "b": False, "c": -7}, {"a": Kind.A},
    {"a": dt.datetime(2023, 11, 12, 8, 30, tzinfo=dt.timezone(dt.timedelta(hours=8)))}, {"a": dt.date(2023, 1, 2)},
])
def test_edge_documents(doc: dict[str, Any], options: XmlOptions) -> None:
    streamed = _streamed(doc, options)
    assert streamed is not None
    assert streamed == full(doc, options) == to_xml_bytes(doc, options)


@pytest.mark.parametrize("doc", [
    {"a": None}, {"a": 1.5}, {"a": Decimal("NaN")}, {"a": "x\x00"}, {"a": "\ud800"}, {"a": [["x"]]},
    {"a": {"@id": "1"}}, {"a": {"#text": "t"}}, {"a": CData("x")}, {"a": CData("]]>")}, {"p:a": "x"},
    {"1a": "x"}, {"": "x"}, {1: "x"}, {"a": 10**5000}, {"a": object()},
])
def test_what_the_text_writer_leaves_to_the_trees(doc: dict[Any, Any]) -> None:
    options = OPTIONS[0]
    assert _streamed(doc, options) is None
    assert outcome(to_xml_bytes, doc, options) == outcome(full, doc, options)


def test_a_document_nested_deeper_than_the_text_writer_reaches_fails_or_succeeds_as_before() -> None:
    depth = sys.getrecursionlimit() // 2 + 50  # beyond the text writer's two frames a level
    doc: dict[str, Any] = {"a": "x"}
    for _ in range(depth):
        doc = {"a": doc}
    try:
        expected: Any = _trees(doc, OPTIONS[0])
    except RecursionError:
        expected = RecursionError
    try:
        got: Any = to_xml_bytes(doc, OPTIONS[0])
    except RecursionError:
        got = RecursionError
    assert got == expected


@settings(max_examples=300, deadline=None, database=None)
@given(st.fixed_dictionaries({"remark": _texts, "buyer_message": _texts, "name": _texts, "sku": _texts,
                              "qty": st.integers(0, 10**6)}))
def test_the_qimen_request_takes_the_text_writer_and_matches(values: dict[str, Any]) -> None:
    """The bench's mapping end to end: render() gives the trees' bytes (or their error)."""
    mapping = _qimen()
    ctx = dict(mapping.meta["examples"])
    order = _order()
    order["remark"] = values["remark"]
    order["buyer_message"] = values["buyer_message"]
    order["receiver"] = dict(order["receiver"], name=values["name"] or "n")
    order["items"] = [dict(order["items"][0], sku=values["sku"] or "s", qty=values["qty"]), *order["items"][1:]]
    clock = dt.datetime(2023, 11, 12, tzinfo=dt.timezone(dt.timedelta(hours=8)))
    doc = mapping.transform(order, ctx, clock)
    assert outcome(mapping.render, order, ctx, clock) == outcome(full, doc, mapping.target.xml)
    if all(c.isprintable() or c in "\t\n\r" for v in values.values() if isinstance(v, str) for c in v):
        assert _streamed(doc, mapping.target.xml) is not None


_QIMEN: list[Any] = []


def _qimen() -> Any:
    if not _QIMEN:
        _QIMEN.append(dockyard.compile_file(REPO / "mappings" / "qimen" / "deliveryorder.create.yaml"))
    return _QIMEN[0]


def _order() -> dict[str, Any]:
    import json

    return dict(json.loads((REPO / "examples" / "orders" / "tmall-basic.json").read_text(encoding="utf-8")))
