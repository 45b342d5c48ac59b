"""The HTML face of `dockyard report`: one self-contained page (inline CSS and SVG, no scripts, no
links, nothing fetched: it can be mailed) that reads well from a phone to a wide screen.

What it shows, top to bottom: the window in the report's time zone (UTC on hover), headline
figures, the counts over time (delivered, retries, dead letters per slice), per warehouse the
success rate on an axis that starts near the lowest rate (so 98.6% does not look like 100%; the
axis start is written on the chart), the error rate with retries counted as failures, retries and
latency, a table with plain-word headers, and the top rejection reasons. Bar charts are HTML, so
they reflow on narrow screens; the chart over time is SVG that scrolls sideways when the screen is
narrower than it can be read at. Tooltips are `title` attributes (no script needed).
"""

from __future__ import annotations

import html
from datetime import UTC, datetime, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = ["format_duration_ms", "format_rate", "rate_axis_floor", "render"]

_CSS = """
*{box-sizing:border-box}
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Noto Sans","PingFang SC","Microsoft YaHei",sans-serif;
color:#1d2433;background:#f6f7f9;margin:0}
main{max-width:72rem;margin:0 auto;padding:1rem 1rem 3rem}
h1{font-size:1.5rem;margin:.5rem 0}h2{font-size:1.15rem;margin:2rem 0 .6rem}h3{font-size:1rem;margin:1rem 0 .4rem}
.window{color:#4a5568;margin:0 0 1rem}.note{color:#5a6478;font-size:.85rem;margin:.3rem 0}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(8.5rem,1fr));gap:.6rem}
.card{background:#fff;border:1px solid #dde1e8;border-radius:8px;padding:.6rem .8rem}
.card .v{font-size:1.35rem;font-weight:600;font-variant-numeric:tabular-nums}.card .k{color:#5a6478;font-size:.85rem}
.panel{background:#fff;border:1px solid #dde1e8;border-radius:8px;padding:.8rem 1rem;margin:.6rem 0}
.grid2{display:grid;grid-template-columns:repeat(auto-fit,minmax(min(100%,27rem),1fr));gap:.6rem}
.bars{display:grid;grid-template-columns:minmax(5rem,9rem) minmax(6rem,1fr) minmax(4.5rem,auto);
gap:.35rem .6rem;align-items:center}
.bars .label{overflow-wrap:anywhere}.bars .val{text-align:right;font-variant-numeric:tabular-nums}
.track{position:relative;height:1.1rem;background:#eef1f5;border-radius:3px}
.track .fill{position:absolute;left:0;top:0;bottom:0;border-radius:3px}
.axis{display:grid;grid-template-columns:minmax(5rem,9rem) minmax(6rem,1fr) minmax(4.5rem,auto);gap:0 .6rem;
color:#5a6478;font-size:.8rem;margin-top:.2rem}
.axis .ticks{position:relative;height:1rem}.axis .ticks span{position:absolute;transform:translateX(-50%)}
.axis .ticks span:first-child{transform:none}.axis .ticks span:last-child{transform:translateX(-100%)}
.ok{background:#2f9e6f}.warn{background:#e0a526}.bad{background:#d64545}.info{background:#3b7dd8}
.chart{overflow-x:auto}.chart svg{display:block;width:100%;min-width:36rem;height:auto}
.chart text{font-size:13px;fill:#4a5568}.legend{display:flex;flex-wrap:wrap;gap:1rem;font-size:.85rem;margin:.3rem 0}
.legend i{display:inline-block;width:.8rem;height:.8rem;border-radius:2px;margin-right:.3rem;vertical-align:-1px}
.scroll{overflow-x:auto;background:#fff;border:1px solid #dde1e8;border-radius:8px}
table{border-collapse:collapse;width:100%;font-size:.85rem}
th,td{padding:.4rem .6rem;border-bottom:1px solid #eef1f5;text-align:right;white-space:nowrap}
th{background:#f0f2f6;font-weight:600;vertical-align:bottom;white-space:normal;min-width:5rem}
th:first-child,td:first-child,th:nth-child(2),td:nth-child(2){text-align:left}
td{font-variant-numeric:tabular-nums}ol{padding-left:1.3rem}li{margin:.2rem 0;overflow-wrap:anywhere}
@media (max-width:40rem){.bars,.axis{grid-template-columns:1fr minmax(4rem,auto)}
.bars .label{grid-column:1/-1;margin-bottom:-.2rem}.axis .spacer{display:none}}
"""

_COLORS = {"delivered": "#2f9e6f", "retries": "#e0a526", "dead_lettered": "#d64545"}
_SERIES = (("delivered", "Delivered"), ("retries", "Retries"), ("dead_lettered", "Dead-lettered"))


# -- formatting ----------------------------------------------------------------------------------
def format_rate(value: float | None) -> str:
    """A share as a percentage that never rounds a shortfall away: 0.986 → 98.6%, 0.9996 → 99.96%,
    0.99999 → >99.99%, 1 → 100%."""
    if value is None:
        return "–"
    if value >= 1:
        return "100%"
    for digits in (1, 2):
        text = f"{value * 100:.{digits}f}"
        if float(text) < 100:
            return f"{text}%"
    return ">99.99%"


def format_duration_ms(ms: float | None) -> str:
    """Milliseconds in the unit a person reads: 0.4 ms, 8.2 ms, 67 ms, 1.2 s, 3 min 20 s, 2 h 5 min."""
    if ms is None:
        return "–"
    if ms < 10:
        return f"{ms:.1f} ms"
    if ms < 1000:
        return f"{ms:.0f} ms"
    seconds = ms / 1000
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, sec = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {sec} s" if sec else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


def _count(n: int) -> str:
    return f"{n:,}"


def rate_axis_floor(rates: list[float]) -> float:
    """Where a success-rate axis starts: the highest of 99.9, 99, 98, 95, 90, 80, 50 or 0 % that lies
    below every rate, so that the lowest bar keeps a visible length and differences show."""
    lowest = min(rates, default=1.0)
    for floor in (0.999, 0.99, 0.98, 0.95, 0.9, 0.8, 0.5):
        if floor < lowest:
            return floor
    return 0.0


def _zone(name: str) -> tzinfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return UTC


def _moment(iso: str, zone: tzinfo, pattern: str = "%Y-%m-%d %H:%M") -> str:
    """An ISO time (UTC) shown in the report's zone, with UTC on hover."""
    moment = datetime.fromisoformat(iso)
    local = moment.astimezone(zone).strftime(pattern)
    utc = moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return f'<time datetime="{html.escape(iso)}" title="{utc}">{html.escape(local)}</time>'


def _e(text: Any) -> str:
    return html.escape(str(text))


# -- charts --------------------------------------------------------------------------------------
def _bars(title: str, items: list[tuple[str, float, str, str]], *, lo: float = 0.0, hi: float | None = None,
          ticks: list[tuple[float, str]] | None = None, note: str = "") -> str:
    """Horizontal bars as HTML: items are (label, value, shown text, css class). The axis runs from
    `lo` to `hi` (the largest value by default); a value at or below `lo` gets a sliver."""
    if not items:
        return ""
    top = hi if hi is not None else max(v for _, v, _, _ in items) or 1.0
    span = (top - lo) or 1.0
    rows = []
    for label, value, shown, css in items:
        width = max(0.5, min(100.0, (value - lo) / span * 100))
        rows.append(f'<div class="label">{_e(label)}</div><div class="track" title="{_e(label)}: {_e(shown)}">'
                    f'<div class="fill {css}" style="width:{width:.1f}%"></div></div>'
                    f'<div class="val">{_e(shown)}</div>')
    axis = ""
    if ticks:
        marks = "".join(f'<span style="left:{(v - lo) / span * 100:.1f}%">{_e(t)}</span>' for v, t in ticks)
        axis = f'<div class="axis"><div class="spacer"></div><div class="ticks">{marks}</div><div></div></div>'
    foot = f'<p class="note">{_e(note)}</p>' if note else ""
    return f'<div class="panel"><h3>{_e(title)}</h3><div class="bars">{"".join(rows)}</div>{axis}{foot}</div>'


def _nice_ceiling(value: int) -> tuple[int, int]:
    """A round top for a count axis and its gridline step (4 or 5 lines)."""
    if value <= 4:
        return max(value, 1), 1
    magnitude = 10 ** (len(str(value)) - 1)
    for step in (magnitude // 10 or 1, magnitude // 5 or 1, magnitude // 4 or 1, magnitude // 2 or 1, magnitude,
                 magnitude * 2, magnitude * 5):
        if step and value / step <= 5:
            return ((value + step - 1) // step) * step, step
    return value, max(1, value // 4)


def _timeline(report: dict[str, Any], zone: tzinfo) -> str:
    """Stacked bars per time slice: delivered, retries, dead-lettered; gridlines, a labelled count
    axis, time labels in the report's zone and a tooltip per slice."""
    timeline = report.get("timeline") or {}
    slices = timeline.get("slices") or []
    if not slices:
        return ""
    step = int(timeline["slice_seconds"])
    width, height, left, bottom, top_pad = 960, 300, 56, 36, 12
    plot_w, plot_h = width - left - 10, height - bottom - top_pad
    peak = max(sum(s[k] for k, _ in _SERIES) for s in slices)
    top, grid = _nice_ceiling(max(peak, 1))
    bar_w = plot_w / len(slices)
    parts = [f'<svg viewBox="0 0 {width} {height}" role="img" aria-label="Deliveries, retries and dead letters '
             f'per {_slice_name(step)}" xmlns="http://www.w3.org/2000/svg">']
    for value in range(0, top + 1, grid):
        y = top_pad + plot_h - value / top * plot_h
        parts.append(f'<line x1="{left}" x2="{width - 10}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e3e7ee"/>'
                     f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{_count(value)}</text>')
    label_every = max(1, round(len(slices) / 8))
    pattern = "%m-%d" if step >= 86400 else ("%m-%d %H:%M" if step >= 3600 or _spans_days(slices, zone) else
                                             "%H:%M" if step >= 60 else "%H:%M:%S")
    for i, s in enumerate(slices):
        x = left + i * bar_w
        y = top_pad + plot_h
        tip = [f"{_local(s['start'], zone, '%Y-%m-%d %H:%M:%S')} (+{_slice_name(step)})"]
        for key, name in _SERIES:
            value = s[key]
            tip.append(f"{name}: {_count(value)}")
            if not value:
                continue
            h = value / top * plot_h
            y -= h
            parts.append(f'<rect x="{x + bar_w * 0.12:.1f}" y="{y:.1f}" width="{bar_w * 0.76:.1f}" height="{h:.1f}" '
                         f'fill="{_COLORS[key]}"/>')
        tip.append(f"Received: {_count(s['received'])}")
        parts.append(f'<rect x="{x:.1f}" y="{top_pad}" width="{bar_w:.1f}" height="{plot_h}" fill="transparent">'
                     f'<title>{_e(" · ".join(tip))}</title></rect>')
        if i % label_every == 0:
            parts.append(f'<text x="{x + bar_w / 2:.1f}" y="{height - bottom + 18}" text-anchor="middle">'
                         f'{_e(_local(s["start"], zone, pattern))}</text>')
    parts.append(f'<line x1="{left}" x2="{width - 10}" y1="{top_pad + plot_h}" y2="{top_pad + plot_h}" '
                 f'stroke="#9aa3b2"/></svg>')
    legend = "".join(f'<span><i style="background:{_COLORS[k]}"></i>{n}</span>' for k, n in _SERIES)
    return (f'<div class="panel"><h3>Delivered, retries and dead letters per {_slice_name(step)} '
            f'({_e(report["time_zone"])})</h3><div class="legend">{legend}</div>'
            f'<div class="chart">{"".join(parts)}</div></div>')


def _slice_name(seconds: int) -> str:
    for unit, name in ((7 * 86400, "week"), (86400, "d"), (3600, "h"), (60, "min")):
        if seconds >= unit and seconds % unit == 0:
            n = seconds // unit
            return f"{n} {name}{'s' if name == 'week' and n > 1 else ''}"
    return f"{seconds} s"


def _local(iso: str, zone: tzinfo, pattern: str) -> str:
    return datetime.fromisoformat(iso).astimezone(zone).strftime(pattern)


def _spans_days(slices: list[dict[str, Any]], zone: tzinfo) -> bool:
    return _local(slices[0]["start"], zone, "%Y-%m-%d") != _local(slices[-1]["start"], zone, "%Y-%m-%d")


# -- the page ------------------------------------------------------------------------------------
_COLUMNS = ("Warehouse", "Flow", "Orders received", "Delivered", "Duplicates", "Success rate",
            "Error rate (attempts)", "Retries", "Dead-lettered", "Held in doubt", "Cancel refused",
            "Ingest → accepted p50 / p95 / p99", "Accepted → shipped p50 / p99 (orders)")


def _row_cells(r: dict[str, Any]) -> list[str]:
    lat, ship = r["latency_ms"], r["accepted_to_shipped_ms"]
    shipped = (f"{format_duration_ms(ship['p50'])} / {format_duration_ms(ship['p99'])} ({_count(ship['count'])})"
               if ship["count"] else "–")
    return [r["warehouse"], r["flow"], _count(r["received"]), _count(r["delivered"]), _count(r["duplicates"]),
            format_rate(r["success_rate"]), format_rate(r.get("error_rate")), _count(r["retries"]),
            _count(r["dead_lettered"]), _count(r["held_in_doubt"]), _count(r["cancel_refused"]),
            " / ".join(format_duration_ms(lat[q]) for q in ("p50", "p95", "p99")), shipped]


def _tick(rate: float) -> str:
    """An axis label: 95%, 97.5%, 99.9%."""
    return f"{rate * 100:.2f}".rstrip("0").rstrip(".") + "%"


def _rate_class(rate: float) -> str:
    return "ok" if rate >= 0.99 else ("warn" if rate >= 0.95 else "bad")


def render(report: dict[str, Any]) -> str:
    zone = _zone(str(report.get("time_zone") or "UTC"))
    rows = report["rows"]
    creates = [r for r in rows if r["flow"] == "create"]
    received = sum(r["received"] for r in creates)
    delivered = sum(r["delivered"] for r in creates)
    dead = sum(r["dead_lettered"] for r in rows)
    finished = delivered + sum(r["dead_lettered"] for r in creates)
    attempts = sum(r.get("attempts", 0) for r in rows)
    failed = attempts - sum(r["delivered"] for r in rows)
    cards = [("Orders received", _count(received)), ("Delivered", _count(delivered)),
             ("Success rate (orders)", format_rate(delivered / finished if finished else None)),
             ("Error rate (attempts)", format_rate(failed / attempts if attempts else None)),
             ("Retries", _count(sum(r["retries"] for r in rows))), ("Dead-lettered", _count(dead)),
             ("Held in doubt", _count(sum(r["held_in_doubt"] for r in rows)))]
    card_html = "".join(f'<div class="card"><div class="v">{_e(v)}</div><div class="k">{_e(k)}</div></div>'
                        for k, v in cards)
    label = [(f"{r['warehouse']} · {r['flow']}", r) for r in rows]
    rated = [(k, r["success_rate"]) for k, r in label if r["success_rate"] is not None]
    floor = rate_axis_floor([v for _, v in rated])
    mid = (floor + 1) / 2
    success = _bars("Success rate: orders delivered of those finished", [
        (k, v, format_rate(v), _rate_class(v)) for k, v in rated], lo=floor, hi=1.0,
        ticks=[(floor, _tick(floor)), (mid, _tick(mid)), (1.0, "100%")],
        note=f"The axis starts at {_tick(floor)}, not at 0, so that small differences show."
        if floor > 0 else "")
    errors = _bars("Error rate: attempts not accepted (retried, outcome unknown, dead-lettered)", [
        (k, r["error_rate"], f"{format_rate(r['error_rate'])} of {_count(r['attempts'])}",
         "ok" if r["error_rate"] < 0.01 else ("warn" if r["error_rate"] < 0.1 else "bad"))
        for k, r in label if r.get("error_rate") is not None],
        note="Retries count here as the failures they are, even when the order is delivered in the end.")
    retries = _bars("Retries", [(k, float(r["retries"]), _count(r["retries"]), "warn") for k, r in label
                                if r["retries"]])
    latency = _bars("Ingest → warehouse accepted, p99", [
        (k, float(r["latency_ms"]["p99"]), format_duration_ms(r["latency_ms"]["p99"]), "info") for k, r in label
        if r["latency_ms"]["p99"] is not None])
    shipped = _bars("Accepted → shipped, p50", [
        (k, float(r["accepted_to_shipped_ms"]["p50"]), format_duration_ms(r["accepted_to_shipped_ms"]["p50"]),
         "info") for k, r in label if r["accepted_to_shipped_ms"]["count"]])
    head = "".join(f"<th>{_e(c)}</th>" for c in _COLUMNS)
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in _row_cells(r)) + "</tr>" for r in rows)
    reasons = "".join(
        f"<h3>{_e(r['warehouse'])} · {_e(r['flow'])}</h3><ol>"
        + "".join(f"<li>{_e(x['reason'])} — {_count(x['count'])}</li>" for x in r["top_rejections"]) + "</ol>"
        for r in rows if r["top_rejections"])
    window = (f"{_moment(report['from'], zone)} – {_moment(report['to'], zone)} ({_e(report.get('time_zone', 'UTC'))})"
              f" · generated {_moment(report['generated_at'], zone)}")
    per_warehouse = "".join((success, errors, retries, latency, shipped)) or '<p class="note">No deliveries.</p>'
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<title>Dockyard report {_e(report["from"])} – {_e(report["to"])}</title><style>{_CSS}</style></head>'
            f'<body><main><h1>Dockyard report</h1><p class="window">{window}</p>'
            f'<div class="cards">{card_html}</div>'
            f'<h2>Over time</h2>{_timeline(report, zone) or "<p class=note>No journal entries in the window.</p>"}'
            f'<h2>Per warehouse</h2><div class="grid2">{per_warehouse}</div>'
            f'<h2>Per warehouse and flow</h2><div class="scroll"><table><thead><tr>{head}</tr></thead>'
            f'<tbody>{body}</tbody></table></div>'
            f'<h2>Top rejection reasons</h2>{reasons or "<p>none</p>"}</main></body></html>\n')
