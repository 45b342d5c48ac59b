"""Date-time support for generated code: ISO-8601 parsing, zones, and Java-style patterns.

Patterns are compiled once, when a generated module is imported, into small closures. The common
warehouse pattern ``yyyy-MM-dd HH:mm:ss`` takes a fast path through ``isoformat`` (C code) instead
of ``strftime``; both truncate fractional seconds.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from datetime import UTC, datetime, tzinfo
from operator import attrgetter
from zoneinfo import ZoneInfo

__all__ = [
    "DatePatternError",
    "compile_pattern",
    "datetime_formatter",
    "datetime_parser",
    "epoch_millis",
    "parse_datetime",
    "zone",
]


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


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def epoch_millis(value: datetime) -> int:
    delta = value - _EPOCH
    return (delta.days * 86400 + delta.seconds) * 1000 + delta.microseconds // 1000


def parse_datetime(text: str) -> datetime:
    """ISO-8601 with an offset or Z. A value without an offset is an error: its instant is unknown."""
    try:
        value = datetime.fromisoformat(text)
    except (TypeError, ValueError):
        raise ValueError(f"not an ISO-8601 date-time: {text!r}") from None
    if value.tzinfo is None:
        raise ValueError(f"date-time has no UTC offset: {text!r}")
    return value


# Tokens that are one zero-padded datetime attribute each: such patterns are written with one
# %-format over an attrgetter tuple, about three times faster than strftime (which also pads
# years below 1000 differently across platforms).
_NUMERIC = {"yyyy": ("year", "%04d"), "MM": ("month", "%02d"), "dd": ("day", "%02d"), "HH": ("hour", "%02d"),
            "mm": ("minute", "%02d"), "ss": ("second", "%02d")}


def datetime_formatter(pattern: str) -> Callable[[datetime], str]:
    parts = compile_pattern(pattern)
    if all(not directive or text in _NUMERIC for directive, text in parts):
        template = "".join(_NUMERIC[text][1] if directive else text.replace("%", "%%") for directive, text in parts)
        getter = attrgetter(*[_NUMERIC[text][0] for directive, text in parts if directive])
        if sum(1 for directive, _ in parts if directive) == 1:
            return lambda d: template % (getter(d),)
        return lambda d: template % getter(d)
    pieces = [_PIECES[text] if directive else _literal_piece(text) for directive, text in parts]
    return lambda d: "".join(piece(d) for piece in pieces)


def _literal_piece(text: str) -> Callable[[datetime], str]:
    return lambda _d: text


def _offset(d: datetime) -> str:
    """Java's XXX: Z for UTC, otherwise +HH:MM."""
    delta = d.utcoffset()
    if delta is None:
        raise ValueError("the pattern writes a UTC offset, but the date-time has none")
    minutes = int(delta.total_seconds()) // 60
    if minutes == 0:
        return "Z"
    sign = "+" if minutes > 0 else "-"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def _offset_compact(d: datetime) -> str:
    """Java's Z: +HHMM."""
    text = _offset(d)
    return "+0000" if text == "Z" else text.replace(":", "")


_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_PIECES: dict[str, Callable[[datetime], str]] = {
    "yyyy": lambda d: f"{d.year:04d}", "yy": lambda d: f"{d.year % 100:02d}", "MM": lambda d: f"{d.month:02d}",
    "dd": lambda d: f"{d.day:02d}", "HH": lambda d: f"{d.hour:02d}", "mm": lambda d: f"{d.minute:02d}",
    "ss": lambda d: f"{d.second:02d}", "SSS": lambda d: f"{d.microsecond // 1000:03d}", "XXX": _offset,
    "Z": _offset_compact, "EEE": lambda d: _DAYS[d.weekday()],
}


def datetime_parser(pattern: str, zone_name: str) -> Callable[[str], datetime]:
    parts = compile_pattern(pattern)
    fmt = "".join(_TOKENS[text] if directive else text.replace("%", "%%") for directive, text in parts)
    fmt = fmt.replace("%:z", "%z")  # strptime's %z also reads +08:00 and Z
    tz = zone(zone_name)
    fast = _fixed_width(parts)

    def parse(text: str) -> datetime:
        if fast is not None and type(text) is str:
            m = fast.fullmatch(text)
            if m is not None:  # what strptime would read, read directly (10-20x cheaper)
                g = m.groupdict()
                try:
                    return datetime(int(g["yyyy"]), int(g["MM"]), int(g["dd"]), int(g.get("HH") or 0),
                                    int(g.get("mm") or 0), int(g.get("ss") or 0), int(g.get("SSS") or 0) * 1000,
                                    tzinfo=tz)
                except ValueError:
                    raise ValueError(f"date-time {text!r} does not match the pattern {pattern!r}") from None
        try:
            value = datetime.strptime(text, fmt)
        except (TypeError, ValueError):
            raise ValueError(f"date-time {text!r} does not match the pattern {pattern!r}") from None
        return value if value.tzinfo is not None else value.replace(tzinfo=tz)

    return parse


_WIDTHS = {"yyyy": 4, "MM": 2, "dd": 2, "HH": 2, "mm": 2, "ss": 2, "SSS": 3}


def _fixed_width(parts: list[tuple[bool, str]]) -> re.Pattern[str] | None:
    """For a pattern of numeric fields (a full date, optionally a time) between literals, a strict
    regex of the zero-padded form: every text it matches, strptime reads to the same value (the
    fields have their full width in ASCII digits, each literal is exactly itself), so a match may
    skip strptime. Anything else (one-digit fields, extra spaces, zones, names) goes to strptime."""
    seen: set[str] = set()
    regex = []
    for directive, text in parts:
        if directive:
            if text not in _WIDTHS or text in seen:
                return None
            seen.add(text)
            regex.append(f"(?P<{text}>[0-9]{{{_WIDTHS[text]}}})")
        elif any(c.isdigit() or (c.isspace() and c != " ") for c in text):
            return None  # strptime reads a run of whitespace for one; a digit would make fields ambiguous
        else:
            regex.append(f"(?i:{re.escape(text)})")  # strptime matches literal letters in any case
    if not {"yyyy", "MM", "dd"} <= seen:
        return None
    return re.compile("".join(regex))
