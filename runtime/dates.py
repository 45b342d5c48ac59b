"""Date-time support for generated code: ISO-8601 parsing, zones, and Java-style patterns.

Patterns are compiled once, when a generated module is imported, into small closures. The common
warehouse pattern ``yyyy-MM-dd HH:mm:ss`` takes a fast path through ``isoformat`` (C code) instead
of ``strftime``; both truncate fractional seconds.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from datetime import datetime, tzinfo
from zoneinfo import ZoneInfo

__all__ = ["DatePatternError", "compile_pattern", "datetime_formatter", "datetime_parser", "parse_datetime", "zone"]


class DatePatternError(ValueError):
    """A date-time pattern uses a letter Dockyard does not know."""


# Java pattern letters → strftime directives. Only these are accepted; anything else is an error
# at compile time, so a typo never silently prints a literal letter.
_TOKENS = {
    "yyyy": "%Y", "yy": "%y", "MM": "%m", "dd": "%d", "HH": "%H", "mm": "%M", "ss": "%S",
    "SSS": "%f", "XXX": "%:z", "Z": "%z", "EEE": "%a",
}
_TOKEN_RE = re.compile(r"'(?:[^']|'')*'|yyyy|yy|MM|dd|HH|mm|ss|SSS|XXX|EEE|Z|[A-Za-z]")


def compile_pattern(pattern: str) -> list[tuple[bool, str]]:
    """Split a pattern into (is_directive, text) parts; raises DatePatternError on unknown letters."""
    parts: list[tuple[bool, str]] = []
    pos = 0
    for m in _TOKEN_RE.finditer(pattern):
        if m.start() > pos:
            parts.append((False, pattern[pos : m.start()]))
        tok = m.group()
        if tok.startswith("'"):
            parts.append((False, tok[1:-1].replace("''", "'") if tok != "''" else "'"))
        elif tok in _TOKENS:
            parts.append((True, tok))
        else:
            raise DatePatternError(
                f"unknown pattern letter {tok!r} in {pattern!r}; use yyyy MM dd HH mm ss SSS XXX, "
                "and put literal text in 'single quotes'")
        pos = m.end()
    if pos < len(pattern):
        parts.append((False, pattern[pos:]))
    if not parts:
        raise DatePatternError("empty date-time pattern")
    return parts


@functools.cache
def zone(name: str) -> tzinfo:
    return ZoneInfo(name)


def parse_datetime(text: str) -> datetime:
    """ISO-8601 with an offset or Z. A value without an offset is an error: its instant is unknown."""
    try:
        value = datetime.fromisoformat(text)
    except (TypeError, ValueError):
        raise ValueError(f"not an ISO-8601 date-time: {text!r}") from None
    if value.tzinfo is None:
        raise ValueError(f"date-time has no UTC offset: {text!r}")
    return value


def datetime_formatter(pattern: str) -> Callable[[datetime], str]:
    parts = compile_pattern(pattern)
    if pattern == "yyyy-MM-dd HH:mm:ss":
        # isoformat pads the year to 4 digits and truncates to whole seconds; [:19] drops the offset.
        return lambda d: d.isoformat(" ", "seconds")[:19]
    if pattern == "yyyy-MM-dd'T'HH:mm:ss":
        return lambda d: d.isoformat("T", "seconds")[:19]
    fmt = "".join(_TOKENS[text] if directive else text.replace("%", "%%") for directive, text in parts)
    if "%f" in fmt:
        # strftime's %f is microseconds (6 digits); SSS means milliseconds.
        head, _, tail = fmt.partition("%f")
        return lambda d: f"{d.strftime(head)}{d.microsecond // 1000:03d}{d.strftime(tail) if tail else ''}"
    return lambda d: d.strftime(fmt)


def datetime_parser(pattern: str, zone_name: str) -> Callable[[str], datetime]:
    parts = compile_pattern(pattern)
    fmt = "".join(_TOKENS[text] if directive else text.replace("%", "%%") for directive, text in parts)
    fmt = fmt.replace("%:z", "%z")
    tz = zone(zone_name)

    def parse(text: str) -> datetime:
        try:
            value = datetime.strptime(text, fmt)
        except (TypeError, ValueError):
            raise ValueError(f"date-time {text!r} does not match the pattern {pattern!r}") from None
        return value if value.tzinfo is not None else value.replace(tzinfo=tz)

    return parse
