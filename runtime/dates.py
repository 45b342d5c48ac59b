"""Date-time support for generated code: ISO-8601 parsing, zones, and Java-style patterns.

Patterns are compiled once, when a generated module is imported, into small closures. The common
warehouse pattern ``yyyy-MM-dd HH:mm:ss`` takes a fast path through ``isoformat`` (C code) instead
of ``strftime``; both truncate fractional seconds.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, tzinfo
from operator import attrgetter, itemgetter
from zoneinfo import ZoneInfo

__all__ = [
    "DatePatternError",
    "compile_pattern",
    "datetime_formatter",
    "datetime_parser",
    "epoch_millis",
    "iso_formatter",
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


@functools.cache  # pure: mappings of one process share their formatters
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


# Where each numeric token sits in an ISO text of the one shape the fast path takes,
# "yyyy-MM-ddTHH:mm:ss+HH:MM" (25 characters).
_ISO_SLICES = {"yyyy": slice(0, 4), "MM": slice(5, 7), "dd": slice(8, 10), "HH": slice(11, 13),
               "mm": slice(14, 16), "ss": slice(17, 19)}


@functools.cache
def _minute_second() -> frozenset[str]:
    """Every valid "mm:ss" (built on first use: loading a bundle should not pay for it)."""
    return frozenset(f"{m:02d}:{s:02d}" for m in range(60) for s in range(60))
_HOUR = timedelta(hours=1) - timedelta(microseconds=1)
_WHOLE_HOUR = timedelta(hours=1)
_ZERO = timedelta(0)
# The separators the fast path's texts hold at these positions (the date and hour were read by
# the general path; the minute and second are checked as "mm:ss").
_ISO_FIXED = {4: "-", 7: "-", 13: ":", 16: ":"}


def _iso_template(parts: list[tuple[bool, str]]) -> tuple[str, list[slice]]:
    """A %-template and the slices of the ISO text that fill it. Neighbouring fields separated by
    the very character the text has there become one slice ("yyyy-MM-dd" is text[0:10]), so the
    usual pattern costs two slices instead of six numbers."""
    template: list[str] = []
    slices: list[slice] = []
    pending: str | None = None  # a literal after the last slice, not yet known to be mergeable
    for directive, text in parts:
        if not directive:
            pending = text if pending is None else pending + text
            continue
        part = _ISO_SLICES[text]
        last = slices[-1] if slices else None
        if (last is not None and pending is not None and len(pending) == 1 and part.start == last.stop + 1
                and _ISO_FIXED.get(last.stop) == pending):
            slices[-1] = slice(last.start, part.stop)
            pending = None
            continue
        if pending is not None:
            template.append(pending.replace("%", "%%"))
            pending = None
        elif last is not None and part.start == last.stop:
            slices[-1] = slice(last.start, part.stop)  # adjacent in the text and in the output
            continue
        template.append("%s")
        slices.append(part)
    if pending is not None:
        template.append(pending.replace("%", "%%"))
    return "".join(template), slices

_CACHE_LIMIT = 4096


@functools.cache  # one per pattern and zone in a process, shared by every mapping that uses them
def iso_formatter(pattern: str, zone_name: str | None) -> Callable[[str], str]:
    """`format_datetime(parse_datetime(text), pattern, zone)` as one function of the text, exact.

    Most orders carry a time with the offset their zone has (+08:00 for Asia/Shanghai), in which
    case the answer is the text's own digits rearranged: no datetime is built. That fast path is
    taken only when (a) the text has exactly the shape yyyy-MM-ddTHH:mm:ss±HH:MM, or that with 1 to
    6 ASCII digits of a fraction after the seconds (which the pattern cannot write), (b) the
    same date, hour and offset were read by the general path before, which checked the date and
    found the zone's offset equal to the text's over that whole hour (or no zone is asked for),
    and (c) its minute and second are valid. Everything else, and every first sight of an hour,
    takes the general path, whose answers and errors are the reference.
    """
    parts = compile_pattern(pattern)
    general_format = datetime_formatter(pattern)
    tz = None if zone_name is None else zone(zone_name)
    fast = all(not directive or text in _ISO_SLICES for directive, text in parts)
    hours: dict[str, str] = {}  # date and hour → the offset with which the fast path is exact there
    # UTC date and hour of a text in Z → "yyyy-MM-ddTHH" of that hour in the zone, when the zone's
    # offset is a whole number of hours over all of it (so minutes and seconds read the same)
    utc_hours: dict[str, str] = {}

    def general(text: str) -> str:
        value = parse_datetime(text)
        return general_format(value if tz is None else value.astimezone(tz))

    if not fast:
        return general
    minute_second = _minute_second()
    template, slices = _iso_template(parts)
    pieces = itemgetter(*slices)
    single = len(slices) == 1

    def same_offset_all_hour(value: datetime) -> bool:
        if tz is None:
            return True
        start = value.replace(minute=0, second=0, microsecond=0)
        offset = start.utcoffset()
        return start.astimezone(tz).utcoffset() == offset == (start + _HOUR).astimezone(tz).utcoffset()

    def local_hour(value: datetime) -> str | None:
        """For a time in UTC: "yyyy-MM-ddTHH" of its hour in the zone, when every instant of that
        hour has the same offset there and the offset is whole hours; else None."""
        start = value.replace(minute=0, second=0, microsecond=0)
        try:
            local = start if tz is None else start.astimezone(tz)
            offset = local.utcoffset()
            if tz is not None and (start + _HOUR).astimezone(tz).utcoffset() != offset:
                return None
        except (OverflowError, ValueError):
            return None
        if offset is None or offset % _WHOLE_HOUR:
            return None
        return f"{local.year:04d}-{local.month:02d}-{local.day:02d}T{local.hour:02d}"

    def first_sight(text: str) -> str:
        """The general path; it also learns whether the fast path is exact in this text's hour."""
        value = parse_datetime(text)  # raises for an invalid date, hour or offset
        if (text.__class__ is str and len(text) >= 25 and text[10] == "T" and text[-3] == ":"
                and text[-6] in "+-" and same_offset_all_hour(value)):
            if len(hours) >= _CACHE_LIMIT:
                hours.clear()
            hours[text[:13]] = text[-6:]  # date and hour → the offset found exact there
        result = general_format(value if tz is None else value.astimezone(tz))
        if (text.__class__ is str and len(text) >= 20 and text[10] == "T" and text[-1] == "Z"
                and value.utcoffset() == _ZERO and (prefix := local_hour(value)) is not None):
            if len(utc_hours) >= _CACHE_LIMIT:
                utc_hours.clear()
            utc_hours[text[:13]] = prefix
        return result

    def format_text(text: str) -> str:
        if text.__class__ is str and text[13:14] == ":" and text[14:19] in minute_second:
            size = len(text)
            if hours.get(text[:13]) == text[-6:]:
                # Whole seconds, or 1 to 6 digits of a fraction the pattern does not write (truncated).
                if size == 25 or (26 < size <= 32 and text[19] == "." and (fraction := text[20:-6]).isdigit()
                                  and fraction.isascii()):
                    return template % ((pieces(text),) if single else pieces(text))
            # The same in Z: the zone's hour written before the text's own minutes and seconds.
            elif (text[-1:] == "Z" and (prefix := utc_hours.get(text[:13])) is not None
                  and (size == 20 or (21 < size <= 27 and text[19] == "." and (fraction := text[20:-1]).isdigit()
                                      and fraction.isascii()))):
                local = prefix + text[13:19]
                return template % ((pieces(local),) if single else pieces(local))
        return first_sight(text)

    format_text.general = general  # type: ignore[attr-defined]  # for tests: the path it must agree with
    return format_text
