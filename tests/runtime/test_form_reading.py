"""The form reader's C-speed decoding (runtime.inputs._form_pairs) against urllib's strict
`parse_qsl`, which it replaces for forms it can read: wherever it answers, it answers exactly
what urllib gives, and wherever urllib refuses a form, it leaves the form to urllib (so the
refusal, and its message, stay urllib's). Then `read_form` end to end: the same fields or the same
InputError as the reference reader built on urllib alone."""

from __future__ import annotations

from urllib.parse import parse_qsl, quote, urlencode

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dockyard.runtime import inputs
from dockyard.runtime.errors import InputError
from dockyard.runtime.inputs import read_form

HEX = "0123456789abcdefABCDEF"

# Pieces that make the hard cases likely: escapes of every byte (invalid UTF-8 among them, split
# multi-byte sequences, %25 that decodes to a percent sign, %5C to a backslash), literal
# backslashes (which the bytes-escape codec must not read as escapes), plus signs, separators,
# non-ASCII characters next to escapes, lone surrogates and control characters.
_PIECES = st.one_of(
    st.tuples(st.sampled_from(HEX), st.sampled_from(HEX)).map(lambda p: "%" + p[0] + p[1]),
    st.sampled_from(["a", "=", "&", "+", "\\", "\\x41", "\\\\", "%E4%B8%AD", "%E4%B8", "%C3", "%A9", "é", "中",
                     "\ud800", "\x00", "\x1f", "%25", "%5C", "%5Cx41", ";", " ", "%2B", "%26", "%3D"]),
    st.text(max_size=3),
)
_TEXTS = st.lists(_PIECES, max_size=24).map("".join)


def _reference(text: str) -> list[tuple[str, str]] | None:
    try:
        return parse_qsl(text, keep_blank_values=True, strict_parsing=bool(text), errors="strict")
    except (UnicodeDecodeError, ValueError):
        return None


@settings(max_examples=1500)
@given(_TEXTS)
def test_the_fast_reading_is_urllibs_wherever_it_answers(text: str) -> None:
    if inputs._BROKEN_ESCAPE.search(text) is not None:
        return  # refused before either reading runs
    fast = inputs._form_pairs(text)
    reference = _reference(text)
    if fast is not None:
        assert fast == reference
    # a form urllib refuses is always left to urllib
    if reference is None:
        assert fast is None


@settings(max_examples=500)
@given(st.dictionaries(st.text(max_size=8), st.text(max_size=40), max_size=6))
def test_an_encoded_form_takes_the_fast_reading(fields: dict[str, str]) -> None:
    # what a warehouse sends: fields urlencoded (any text that is valid Unicode, so no lone surrogate)
    fields = {k: v for k, v in fields.items()
              if not any("\ud800" <= ch <= "\udfff" for ch in k + v)}
    text = urlencode(fields)
    fast = inputs._form_pairs(text)
    assert fast is not None
    assert fast == parse_qsl(text, keep_blank_values=True, strict_parsing=bool(text), errors="strict")


def _read_with_urllib(data: bytes) -> dict[str, str] | str:
    """read_form as it was with urllib alone: the fields, or the InputError's message."""
    saved = inputs._escape_decode
    inputs._escape_decode = None
    try:
        return read_form(bytes(data))
    except InputError as exc:
        return str(exc)
    finally:
        inputs._escape_decode = saved


@settings(max_examples=1000)
@given(st.one_of(_TEXTS.map(lambda t: t.encode("utf-8", "surrogatepass")), st.binary(max_size=40)))
def test_read_form_gives_the_same_fields_or_the_same_refusal(body: bytes) -> None:
    try:
        got: dict[str, str] | str = read_form(bytes(body))
    except InputError as exc:
        got = str(exc)
    assert got == _read_with_urllib(body)


def test_a_cainiao_push_is_read_exactly() -> None:
    message = '{"orderCode":"DY1","remark":"备注 \\\\ 100% & more","items":[{"q":1}]}'
    body = urlencode({"msg_type": "WMS_CONSIGN_ORDER_CONFIRM", "logistics_interface": message,
                      "data_digest": "ab+c/d=="}).encode("ascii")
    assert inputs._form_pairs(body.decode("ascii")) is not None
    assert read_form(body) == {"msg_type": "WMS_CONSIGN_ORDER_CONFIRM", "logistics_interface": message,
                               "data_digest": "ab+c/d=="}


@pytest.mark.parametrize(("body", "reason"), [
    (b"a=%E4%B8", "not a valid form body: 'utf-8' codec can't decode bytes in position 0-1: unexpected end of data"),
    (b"a=1&b", "not a valid form body: bad query field: 'b'"),
    (b"a=%4", "not a valid form body: a broken percent escape at position 2"),
    (b"a=1&a=2", "not a valid form body: the field 'a' is given more than once"),
    (("a=" + quote("\x01")).encode(), "not a valid form body: the field 'a' contains the control character U+0001 "
                                      "at position 2"),
])
def test_refusals_name_their_cause(body: bytes, reason: str) -> None:
    with pytest.raises(InputError) as caught:
        read_form(body)
    assert str(caught.value) == reason
