"""Reports from the journal: per warehouse and flow, over a time window — volumes, success rate,
error rate (retries counted as the failures they are), retries, latency percentiles, top rejection
reasons, dead-letter and in-doubt counts, feedback timeliness (accepted by the warehouse →
shipped), and the same counts over time. Rendered as JSON, CSV or one self-contained HTML page
(report_html.py) with inline SVG charts (no scripts, no external files: it can be mailed).

Every figure is counted from `dy_journal` rows in the window (and, for shipping, `dy_events`);
nothing here writes. Measured on a journal of one million orders: see bench/README.md.
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter, defaultdict
from datetime import UTC, datetime, tzinfo
from typing import Any

from dockyard.service.db import Conn

__all__ = ["build_report", "percentile", "percentile_ms", "render_csv", "render_html", "render_json"]

# Time slices of the chart over time: the smallest of these that gives at most TIMELINE_SLICES.
_SLICES = (5, 10, 15, 30, 60, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400, 7 * 86400, 28 * 86400,
           364 * 86400)
TIMELINE_SLICES = 60


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


# Each delivery attempt ends in one journal row named for what became of it: committed, retry,
# in-doubt (the outcome is unknown) or dead-lettered (cancels: cancel-refused). `held` marks a job
# handed to an operator; it is not an attempt.
_COUNTED = {"committed": "delivered", "dead-lettered": "dead_lettered", "held": "held_in_doubt", "retry": "retries",
            "in-doubt": "unknown_outcomes",
            "cancel-refused": "cancel_refused"}


def build_report(conn: Conn, start: int, end: int, zone: tzinfo = UTC) -> dict[str, Any]:
    """The figures for journal entries with `start` <= at < `end` (microseconds, UTC). Counting
    is done by the database (one grouped scan of the window); only latencies come back row by
    row, as plain numbers, for the percentiles. `zone`: the time zone the report is read in (the
    slices of the chart over time start at its midnights and hours)."""
    groups: dict[tuple[str, str], dict[str, Any]] = defaultdict(lambda: {
        "received": 0, "delivered": 0, "duplicates": 0, "dead_lettered": 0, "held_in_doubt": 0, "retries": 0,
        "unknown_outcomes": 0,
        "cancel_refused": 0, "_latency": [], "_reasons": Counter()})
    marks = ", ".join("?" for _ in ("received", *_COUNTED))
    slicing = _slicing(conn, start, end, zone)
    origin, step_us, count = slicing or (start, end - start, 1)
    sliced: dict[int, dict[str, Any]] = {}
    # One grouped scan gives both the totals and the counts per time slice.
    for index, warehouse, flow, step, outcome, n in conn.execute(
            f"SELECT (at - ?) / ?, warehouse, flow, step, outcome, COUNT(*) FROM dy_journal WHERE at >= ? AND at < ? "
            f"AND step IN ({marks}) GROUP BY 1, 2, 3, 4, 5", (origin, step_us, start, end, "received", *_COUNTED)):
        if not warehouse or warehouse == "_upstream" or (step == "received" and outcome != "ok"):
            continue
        n = int(n)
        if step == "received":
            groups[(warehouse, "create")]["received"] += n
        else:
            g = groups[(warehouse, flow or "create")]
            g[_COUNTED[step]] += n
            if step == "committed" and outcome == "duplicate":
                g["duplicates"] += n
        key = _SLICED.get(step)
        if key is None or (step == "committed" and (flow or "create") != "create"):
            continue
        entry = sliced.setdefault(int(index), _slice())
        entry[key] += n
        per = entry["by_warehouse"].setdefault(warehouse, _slice(per_warehouse=True))
        per[key] += n
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
        # Each attempt's outcome: accepted, or not (retried, outcome unknown, dead-lettered).
        attempts = g["delivered"] + g["retries"] + g["unknown_outcomes"] + g["dead_lettered"]
        out.append({
            "warehouse": warehouse, "flow": flow, "received": g["received"], "delivered": g["delivered"],
            "duplicates": g["duplicates"], "dead_lettered": g["dead_lettered"], "held_in_doubt": g["held_in_doubt"],
            "retries": g["retries"], "cancel_refused": g["cancel_refused"],
            "success_rate": round(g["delivered"] / finished, 4) if finished else None,
            "unknown_outcomes": g["unknown_outcomes"], "attempts": attempts,
            "error_rate": round((attempts - g["delivered"]) / attempts, 4) if attempts else None,
            "latency_ms": {f"p{q}": percentile_ms(g["_latency"], q) for q in (50, 95, 99)},
            "top_rejections": [{"reason": r, "count": n} for r, n in g["_reasons"].most_common(5)],
            "accepted_to_shipped_ms": {"count": len(timeliness),
                                       **{f"p{q}": percentile_ms(timeliness, q) for q in (50, 95, 99)}},
        })
    return {"from": _iso(start), "to": _iso(end), "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "time_zone": _zone_name(zone), "rows": out,
            "timeline": {"slice_seconds": step_us // 1_000_000 if slicing else None,
                         "slices": [{"start": _iso(origin + i * step_us), **(sliced.get(i) or _slice())}
                                    for i in range(count)] if slicing else []}}


def _zone_name(zone: tzinfo) -> str:
    return str(getattr(zone, "key", None) or zone.tzname(None) or "UTC")


_SLICED = {"received": "received", "committed": "delivered", "retry": "retries", "dead-lettered": "dead_lettered"}


def _slice(*, per_warehouse: bool = False) -> dict[str, Any]:
    counts: dict[str, Any] = dict.fromkeys(_SLICED.values(), 0)
    if not per_warehouse:
        counts["by_warehouse"] = {}
    return counts


def _slicing(conn: Conn, start: int, end: int, zone: tzinfo) -> tuple[int, int, int] | None:
    """The time slices of the chart over the part of the window that has journal rows: the first
    slice's start (on the zone's hour or day boundary), the slice length (µs) and the number of
    slices, at most TIMELINE_SLICES; None when the window is empty. Two index look-ups."""
    first = conn.execute("SELECT MIN(at) FROM dy_journal WHERE at >= ? AND at < ?", (start, end))[0][0]
    if first is None:
        return None
    last = int(conn.execute("SELECT MAX(at) FROM dy_journal WHERE at >= ? AND at < ?", (start, end))[0][0])
    first = int(first)
    span = (last - first) / 1e6 + 1
    step = next((s for s in _SLICES if span / s <= TIMELINE_SLICES), _SLICES[-1])
    offset = datetime.fromtimestamp(first / 1e6, UTC).astimezone(zone).utcoffset()
    shift = int(offset.total_seconds() * 1_000_000) if offset is not None else 0
    step_us = step * 1_000_000
    origin = first - (first + shift) % step_us
    return origin, step_us, (last - origin) // step_us + 1


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
              "shipped_p50_ms", "shipped_p95_ms", "shipped_p99_ms", "top_rejection", "attempts", "error_rate")


def render_csv(report: dict[str, Any]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_FIELDS)
    for r in report["rows"]:
        lat, ship = r["latency_ms"], r["accepted_to_shipped_ms"]
        top = r["top_rejections"][0]["reason"] if r["top_rejections"] else ""
        writer.writerow([r["warehouse"], r["flow"], r["received"], r["delivered"], r["duplicates"],
                         r["success_rate"], r["retries"], r["dead_lettered"], r["held_in_doubt"], r["cancel_refused"],
                         lat["p50"], lat["p95"], lat["p99"], ship["p50"], ship["p95"], ship["p99"], top,
                         r["attempts"], r["error_rate"]])
    return buffer.getvalue()


def render_html(report: dict[str, Any]) -> str:
    """One self-contained, responsive HTML page (report_html.py)."""
    from dockyard.service.report_html import render

    return render(report)
