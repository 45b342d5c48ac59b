"""Reports from the journal: per warehouse and flow, over a time window — volumes, success rate,
retries, latency percentiles, top rejection reasons, dead-letter and in-doubt counts, and feedback
timeliness (accepted by the warehouse → shipped). Rendered as JSON, CSV or one self-contained
HTML file with inline SVG charts (no scripts, no external files: it can be mailed).

Every figure is counted from `dy_journal` rows in the window (and, for shipping, `dy_events`);
nothing here writes. Measured on a journal of one million orders: see bench/README.md.
"""

from __future__ import annotations

import csv
import html
import io
import json
from collections import Counter, defaultdict
from datetime import UTC, datetime
from typing import Any

from dockyard.service.db import Conn

__all__ = ["build_report", "percentile", "percentile_ms", "render_csv", "render_html", "render_json"]


def percentile(values: list[float], q: float) -> float | None:
    """The nearest-rank q-th percentile of `values`; None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def percentile_ms(values: list[float], q: float) -> float | None:
    """`percentile` of milliseconds, to the microsecond, as reports and the dashboard show them."""
    value = percentile(values, q)
    return None if value is None else round(value, 3)


_COUNTED = {"committed": "delivered", "dead-lettered": "dead_lettered", "held": "held_in_doubt", "retry": "retries",
            "cancel-refused": "cancel_refused"}


def build_report(conn: Conn, start: int, end: int) -> dict[str, Any]:
    """The figures for journal entries with `start` <= at < `end` (microseconds, UTC). Counting
    is done by the database (one grouped scan of the window); only latencies come back row by
    row, as plain numbers, for the percentiles."""
    groups: dict[tuple[str, str], dict[str, Any]] = defaultdict(lambda: {
        "received": 0, "delivered": 0, "duplicates": 0, "dead_lettered": 0, "held_in_doubt": 0, "retries": 0,
        "cancel_refused": 0, "_latency": [], "_reasons": Counter()})
    marks = ", ".join("?" for _ in ("received", *_COUNTED))
    for warehouse, flow, step, outcome, n in conn.execute(
            f"SELECT warehouse, flow, step, outcome, COUNT(*) FROM dy_journal WHERE at >= ? AND at < ? "
            f"AND step IN ({marks}) GROUP BY warehouse, flow, step, outcome", (start, end, "received", *_COUNTED)):
        if not warehouse or warehouse == "_upstream":
            continue
        if step == "received":
            if outcome == "ok":
                groups[(warehouse, "create")]["received"] += int(n)
            continue
        g = groups[(warehouse, flow or "create")]
        g[_COUNTED[step]] += int(n)
        if step == "committed" and outcome == "duplicate":
            g["duplicates"] += int(n)
    # Each delivery's receipt is found through the order's own rows. SQLite without statistics
    # would scan every `received` row per delivery (the step index looks attractive): the join
    # order and the index are spelled out for it; PostgreSQL's planner has its statistics.
    def join(alias: str) -> str:
        if conn.dialect == "sqlite":
            return f"CROSS JOIN dy_journal {alias} INDEXED BY dy_journal_order"
        return f"JOIN dy_journal {alias}"

    for warehouse, took in conn.execute(
            f"SELECT c.warehouse, c.at - r.at FROM dy_journal c {join('r')} ON r.order_no = c.order_no "
            "AND r.step = 'received' AND r.outcome = 'ok' WHERE c.step = 'committed' AND c.flow = 'create' "
            "AND c.at >= ? AND c.at < ?", (start, end)):
        groups[(warehouse, "create")]["_latency"].append(took / 1000)
    for warehouse, flow, detail in conn.execute(
            "SELECT warehouse, flow, detail FROM dy_journal WHERE step IN ('dead-lettered', 'cancel-refused') "
            "AND at >= ? AND at < ?", (start, end)):
        reason = str((json.loads(detail) if detail else {}).get("reason", "no reason recorded"))
        groups[(warehouse, flow or "create")]["_reasons"][_reason_class(reason)] += 1
    shipped: dict[str, list[float]] = defaultdict(list)
    for warehouse, took in conn.execute(
            f"SELECT e.warehouse, MIN(e.received_at) - MIN(c.at) FROM dy_events e {join('c')} "
            "ON c.order_no = e.order_no AND c.step = 'committed' AND c.flow = 'create' "
            "WHERE e.status = 'shipped' AND e.received_at >= ? AND e.received_at < ? "
            "GROUP BY e.warehouse, e.order_no", (start, end)):
        shipped[warehouse].append(took / 1000)
    out = []
    for (warehouse, flow), g in sorted(groups.items()):
        finished = g["delivered"] + g["dead_lettered"]
        timeliness = shipped.get(warehouse, []) if flow == "create" else []
        out.append({
            "warehouse": warehouse, "flow": flow, "received": g["received"], "delivered": g["delivered"],
            "duplicates": g["duplicates"], "dead_lettered": g["dead_lettered"], "held_in_doubt": g["held_in_doubt"],
            "retries": g["retries"], "cancel_refused": g["cancel_refused"],
            "success_rate": round(g["delivered"] / finished, 4) if finished else None,
            "latency_ms": {f"p{q}": percentile_ms(g["_latency"], q) for q in (50, 95, 99)},
            "top_rejections": [{"reason": r, "count": n} for r, n in g["_reasons"].most_common(5)],
            "accepted_to_shipped_ms": {"count": len(timeliness),
                                       **{f"p{q}": percentile_ms(timeliness, q) for q in (50, 95, 99)}},
        })
    return {"from": _iso(start), "to": _iso(end), "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "rows": out}


def _reason_class(reason: str) -> str:
    """A rejection reason without the order-specific parts, so that the same cause groups together."""
    text = reason.split("; order ", 1)[0]
    return text[:200]


def _iso(micros: int) -> str:
    return datetime.fromtimestamp(micros / 1e6, UTC).isoformat(timespec="seconds")


def render_json(report: dict[str, Any]) -> str:
    return json.dumps(report, ensure_ascii=False, indent=2)


CSV_FIELDS = ("warehouse", "flow", "received", "delivered", "duplicates", "success_rate", "retries", "dead_lettered",
              "held_in_doubt", "cancel_refused", "latency_p50_ms", "latency_p95_ms", "latency_p99_ms",
              "shipped_p50_ms", "shipped_p95_ms", "shipped_p99_ms", "top_rejection")


def render_csv(report: dict[str, Any]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_FIELDS)
    for r in report["rows"]:
        lat, ship = r["latency_ms"], r["accepted_to_shipped_ms"]
        top = r["top_rejections"][0]["reason"] if r["top_rejections"] else ""
        writer.writerow([r["warehouse"], r["flow"], r["received"], r["delivered"], r["duplicates"],
                         r["success_rate"], r["retries"], r["dead_lettered"], r["held_in_doubt"], r["cancel_refused"],
                         lat["p50"], lat["p95"], lat["p99"], ship["p50"], ship["p95"], ship["p99"], top])
    return buffer.getvalue()


def _bars(title: str, items: list[tuple[str, float]], unit: str) -> str:
    """A horizontal bar chart as inline SVG."""
    if not items:
        return ""
    top = max(v for _, v in items) or 1.0
    height = 22 * len(items) + 30
    parts = [f'<svg role="img" aria-label="{html.escape(title)}" width="640" height="{height}" '
             f'xmlns="http://www.w3.org/2000/svg"><text x="0" y="16" font-weight="bold">{html.escape(title)}</text>']
    for i, (label, value) in enumerate(items):
        y = 28 + 22 * i
        width = int(380 * value / top)
        parts.append(f'<text x="0" y="{y + 14}">{html.escape(label)}</text>'
                     f'<rect x="180" y="{y}" width="{width}" height="16" fill="#3b7dd8"/>'
                     f'<text x="{186 + width}" y="{y + 14}">{value:g} {html.escape(unit)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def render_html(report: dict[str, Any]) -> str:
    rows = report["rows"]
    label = [(f"{r['warehouse']} {r['flow']}", r) for r in rows]
    charts = "".join((
        _bars("Delivered", [(k, float(r["delivered"])) for k, r in label], "orders"),
        _bars("Success rate", [(k, round(100 * (r["success_rate"] or 0), 2)) for k, r in label], "%"),
        _bars("Latency p99 ingest → warehouse accepted", [(k, float(r["latency_ms"]["p99"] or 0)) for k, r in label],
              "ms"),
        _bars("Accepted → shipped p50", [(k, float(r["accepted_to_shipped_ms"]["p50"] or 0)) for k, r in label
                                        if r["accepted_to_shipped_ms"]["count"]], "ms"),
    ))
    head = "".join(f"<th>{html.escape(f)}</th>" for f in CSV_FIELDS)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in line) + "</tr>"
                   for line in csv.reader(io.StringIO(render_csv(report).split("\n", 1)[1])) if line)
    reasons = "".join(
        f"<h3>{html.escape(r['warehouse'])} {html.escape(r['flow'])}</h3><ol>"
        + "".join(f"<li>{html.escape(x['reason'])} — {x['count']}</li>" for x in r["top_rejections"]) + "</ol>"
        for r in rows if r["top_rejections"])
    return (f"<!doctype html><html><head><meta charset=\"utf-8\"><title>Dockyard report {html.escape(report['from'])} "
            f"– {html.escape(report['to'])}</title><style>body{{font-family:sans-serif;margin:2em}}"
            f"table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px;font-size:13px}}"
            f"svg text{{font-size:12px}}</style></head><body><h1>Dockyard report</h1>"
            f"<p>{html.escape(report['from'])} – {html.escape(report['to'])} (generated "
            f"{html.escape(report['generated_at'])})</p>{charts}<h2>Per warehouse and flow</h2>"
            f"<table><tr>{head}</tr>{body}</table><h2>Top rejection reasons</h2>{reasons or '<p>none</p>'}"
            f"</body></html>\n")
