"""Parsing a date-time by a pattern (runtime.dates.datetime_parser) reads zero-padded numeric
patterns directly instead of through strptime. That shortcut must be invisible: on any text, the
parser answers exactly what strptime would (the same value, or the same refusal)."""

from __future__ import annotations

from datetime import datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dockyard.runtime.dates import _fixed_width, compile_pattern, datetime_parser, zone

PATTERNS = ["yyyy-MM-dd HH:mm:ss", "yyyyMMddHHmmss", "yyyy-MM-dd", "yyyy/MM/dd HH:mm", "yyyy-MM-dd'T'HH:mm:ss.SSS",
            "dd.MM.yyyy HH:mm:ss"]
TZ = "Asia/Shanghai"


def _strptime(pattern: str, text: str) -> datetime | str:
    """The general path alone: the pattern as strptime reads it."""
    from dockyard.runtime import dates

    fmt = "".join(dates._TOKENS[t] if d else t.replace("%", "%%") for d, t in compile_pattern(pattern))
    try:
        return datetime.strptime(text, fmt).replace(tzinfo=zone(TZ))
    except (TypeError, ValueError):
        return "refused"


def _fast(pattern: str, text: str) -> datetime | str:
    try:
        return datetime_parser(pattern, TZ)(text)
    except ValueError as exc:
        assert repr(pattern) in str(exc)
        return "refused"


def _near(pattern: str) -> st.SearchStrategy[str]:
    """Texts in and around the pattern's shape: valid and invalid dates (leap days, month 13, hour
    24, second 60), one-digit fields, other digits, extra spaces, other separators, other case."""
    field = {"yyyy": st.integers(0, 9999).map(lambda v: f"{v:04d}") | st.sampled_from(["2024", "1900", "99", "٢٠٢٤"]),
             "MM": st.integers(0, 13).map(lambda v: f"{v:02d}") | st.sampled_from(["1", "2", "1 "]),
             "dd": st.integers(0, 32).map(lambda v: f"{v:02d}") | st.sampled_from(["29", "31", "7"]),
             "HH": st.integers(0, 25).map(lambda v: f"{v:02d}") | st.just("3"),
             "mm": st.integers(0, 60).map(lambda v: f"{v:02d}"),
             "ss": st.integers(0, 62).map(lambda v: f"{v:02d}") | st.just("5"),
             "SSS": st.integers(0, 999).map(lambda v: f"{v:03d}") | st.sampled_from(["5", "123456"])}
    pieces = [field[t] if d else st.sampled_from([t, t.lower(), t + " ", "-", " "])
              for d, t in compile_pattern(pattern)]
    return st.tuples(*pieces).map("".join) | st.text("0123456789-: T./", max_size=25)


@pytest.mark.parametrize("pattern", PATTERNS)
def test_the_direct_reading_agrees_with_strptime_on_any_text(pattern: str) -> None:
    assert _fixed_width(compile_pattern(pattern)) is not None  # these patterns take the direct path

    @settings(max_examples=400, deadline=None)
    @given(_near(pattern))
    def agree(text: str) -> None:
        assert _fast(pattern, text) == _strptime(pattern, text)

    agree()


@pytest.mark.parametrize("pattern", ["yyyy-MM-dd HH:mm:ssXXX", "EEE yyyy-MM-dd", "yy-MM-dd", "MM-dd HH:mm"])
def test_patterns_with_zones_names_or_no_full_date_keep_strptime(pattern: str) -> None:
    assert _fixed_width(compile_pattern(pattern)) is None


def test_a_leap_day_and_an_impossible_one() -> None:
    parse = datetime_parser("yyyy-MM-dd HH:mm:ss", TZ)
    assert parse("2024-02-29 23:59:59") == datetime(2024, 2, 29, 23, 59, 59, tzinfo=zone(TZ))
    with pytest.raises(ValueError, match="does not match the pattern"):
        parse("2023-02-29 00:00:00")
