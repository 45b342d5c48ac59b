"""`source.key`: field names joined by dots, with [n] for a list's n-th element."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from dockyard.dsl.spec_parser import key_text, parse_key_path

_NAME = st.text(st.characters(blacklist_characters=".[]", blacklist_categories=("Cs", "Z", "Cc")),
                min_size=1, max_size=8).filter(lambda t: not any(c.isspace() for c in t))
_PATHS = st.lists(st.one_of(_NAME, st.integers(0, 9999)), min_size=1, max_size=6).filter(
    lambda p: isinstance(p[0], str)).map(tuple)


@given(_PATHS)
def test_a_path_written_as_the_spec_writes_it_reads_back(path: tuple[str | int, ...]) -> None:
    assert parse_key_path(key_text(path)) == path


@given(st.text(max_size=40))
def test_any_text_is_a_path_or_refused_never_a_crash(text: str) -> None:
    path = parse_key_path(text)
    if path is not None:
        assert path and isinstance(path[0], str)
        assert parse_key_path(key_text(path)) == path


def test_examples() -> None:
    assert parse_key_path("order_no") == ("order_no",)
    assert parse_key_path("Body.WaybillRoute[0].mailno") == ("Body", "WaybillRoute", 0, "mailno")
    assert parse_key_path("a[1][2]") == ("a", 1, 2)
    for bad in ("", "a..b", "[0]", "a[x]", "a[-1]", "a b", "a.", ".a", "a[0]b", "a[12345]"):
        assert parse_key_path(bad) is None, bad
