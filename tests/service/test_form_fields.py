"""A callback's form body is read once for its signature and once by its mapping; the first
reading is kept for the second. Whatever the body, the signature sees exactly the fields the
lenient reading always gave it, and the mapping exactly what the strict reader gives."""

from __future__ import annotations

from urllib.parse import parse_qsl, quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dockyard.runtime.errors import InputError
from dockyard.runtime.inputs import parse_input, read_form
from dockyard.service.replay import form_fields


def _lenient(body: bytes) -> dict[str, str]:
    try:
        return dict(reversed(parse_qsl(body.decode("utf-8"), keep_blank_values=True)))
    except UnicodeDecodeError:
        return {}


_PIECES = st.sampled_from(["a", "b", "=", "&", "%", "%2", "%41", "%E4%B8%AD", "%FF", "+", "\x01", "中", "%00",
                           "logistics_interface", "%7B%22k%22%3A1%7D", ";", "=="])
_BODIES = st.one_of(
    st.lists(_PIECES, max_size=12).map(lambda parts: "".join(parts).encode("utf-8")),
    st.dictionaries(st.text(max_size=6), st.text(max_size=12), max_size=4).map(
        lambda d: "&".join(f"{quote(k)}={quote(v)}" for k, v in d.items()).encode("ascii")),
    st.binary(max_size=30),
)


@given(_BODIES)
def test_the_signature_sees_what_it_always_saw_and_the_mapping_what_the_strict_reader_gives(body: bytes) -> None:
    assert form_fields(body) == _lenient(body)
    try:
        strict = read_form(bytes(body))  # another object: no reading kept
    except InputError as exc:
        with pytest.raises(InputError) as again:
            parse_input(body, "form")
        assert str(again.value) == str(exc)
        return
    assert strict == _lenient(body)
    assert parse_input(body, "form") == strict


def test_each_reader_gets_a_dict_of_its_own() -> None:
    body = b"a=1&b=2"
    signed = form_fields(body)
    signed["a"] = "changed"  # e.g. decrypting fields in place
    mapped = parse_input(body, "form")
    assert mapped == {"a": "1", "b": "2"}
    mapped["b"] = "changed"
    assert parse_input(body, "form") == {"a": "1", "b": "2"}
