"""The XML writer's fast path builds the same bytes, and refuses the same documents with the same
message, as the full writer that checks (and names) every node."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from xmlkit import full, outcome

from dockyard.runtime.target import CData, XmlOptions
from dockyard.runtime.xml_writer import to_xml_bytes

OPTIONS = [XmlOptions("request"), XmlOptions("r", declaration=False, pretty=True),
           XmlOptions("p:r", encoding="GBK", namespaces={"p": "urn:p", "": "urn:d"}),
           XmlOptions("r", encoding="ISO-8859-1")]

_names = st.sampled_from(["a", "b", "itemCode", "p:x", "q:x", "1bad", "a b", "@id", "@p:k", "#text", "", "名", "x:"])
_texts = st.text(alphabet=st.sampled_from(["a", "名", "\t", "\n", "\r", "\x00", "\x0b", "\ufffe", "\ud800", "]", ">",
                                           "&", "<", "é", "\x85", "\ue000", " "]), max_size=6)
_scalars = st.one_of(_texts, _texts.map(CData), st.integers(-(10**6), 10**6), st.booleans(), st.none(),
                     st.decimals(allow_nan=True, allow_infinity=True, places=2), st.floats(width=16))
_docs = st.recursive(
    _scalars,
    lambda inner: st.dictionaries(_names, inner, max_size=4) | st.lists(inner, max_size=3)
    | st.lists(inner, max_size=2).map(tuple),
    max_leaves=14)


@settings(max_examples=600, deadline=None, database=None)
@given(st.dictionaries(_names, _docs, max_size=5), st.sampled_from(OPTIONS))
def test_fast_and_full_writers_agree(doc: dict[str, Any], options: XmlOptions) -> None:
    assert outcome(to_xml_bytes, doc, options) == outcome(full, doc, options)


def test_an_order_like_document_takes_the_fast_path_and_matches() -> None:
    doc = {"deliveryOrder": {"code": "A1", "qty": 3, "price": Decimal("1.50"), "gift": False, "note": "名 & <x>"},
           "orderLines": {"orderLine": [{"itemCode": "S1"}, {"itemCode": "S2", "@seq": 2}]}}
    for options in OPTIONS[:2]:
        assert to_xml_bytes(doc, options) == full(doc, options)
