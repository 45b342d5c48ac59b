"""`dockyard report` agrees with the store counted another way (the orders and jobs tables), on
SQLite and PostgreSQL, and renders JSON, CSV and a self-contained HTML file."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import re
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from dockyard.cli import main
from dockyard.simulate import Faults, Feedback


def test_the_report_agrees_with_the_raw_counts(env: Any) -> None:
    async def main_() -> None:
        async with env(warehouses=("qimen-std", "jd"), faults={"jd": Faults(error_rate=0.3)},
                       feedback=Feedback(step_delay=0.01)) as run:
            from dockyard.sample_orders import generate

            orders = generate(120, seed=21)
            await run.post("/orders/batch", orders)
            for order in orders:
                await run.until(order["order_no"], lambda d: d["delivery"] in ("delivered", "dlq"), timeout=30)
            await run.sim.drain(30)
            config = str(run.plan.config_path)
            out = await asyncio.to_thread(CliRunner().invoke, main, [
                "report", "--config", config, "--from", "2000-01-01", "--to", "2100-01-01", "--format", "json"])
            assert out.exit_code == 0, out.output
            report = json.loads(out.output)

            def raw(conn: Any) -> dict[str, Any]:
                return {
                    "orders": dict(conn.execute("SELECT warehouse, COUNT(*) FROM dy_orders GROUP BY warehouse")),
                    "delivered": dict(conn.execute("SELECT warehouse, COUNT(*) FROM dy_orders "
                                                   "WHERE delivery = 'delivered' GROUP BY warehouse")),
                    "dead": dict(conn.execute("SELECT warehouse, COUNT(*) FROM dy_jobs WHERE state = 'dead' "
                                              "AND lane = 'wh' GROUP BY warehouse")),
                    "retries": dict(conn.execute("SELECT warehouse, SUM(attempts - 1) FROM dy_jobs "
                                                 "WHERE lane = 'wh' GROUP BY warehouse")),
                    "shipped": dict(conn.execute("SELECT warehouse, COUNT(DISTINCT order_no) FROM dy_events "
                                                 "WHERE status = 'shipped' GROUP BY warehouse")),
                }

            counts = await run.service.db.read(raw)
            rows = {r["warehouse"]: r for r in report["rows"] if r["flow"] == "create"}
            assert set(rows) == {"qimen-std", "jd"}
            for wh, r in rows.items():
                assert r["received"] == counts["orders"][wh]
                assert r["delivered"] == counts["delivered"].get(wh, 0)
                assert r["dead_lettered"] == counts["dead"].get(wh, 0)
                assert r["retries"] == counts["retries"][wh]
                assert r["accepted_to_shipped_ms"]["count"] == counts["shipped"].get(wh, 0)
                finished = r["delivered"] + r["dead_lettered"]
                assert r["success_rate"] == round(r["delivered"] / finished, 4)
                assert r["latency_ms"]["p50"] <= r["latency_ms"]["p99"]
            assert rows["jd"]["retries"] > 0
            if rows["jd"]["dead_lettered"]:
                assert "cargoes" in rows["jd"]["top_rejections"][0]["reason"]

            # the chart over time counts the same rows, slice by slice
            slices = report["timeline"]["slices"]
            assert slices and report["timeline"]["slice_seconds"] >= 5 and len(slices) <= 60
            for key in ("received", "delivered", "retries", "dead_lettered"):
                assert sum(sl[key] for sl in slices) == sum(r[key] for r in report["rows"]
                                                            if key in ("retries", "dead_lettered")
                                                            or r["flow"] == "create"), key
                for wh in rows:
                    assert sum(sl["by_warehouse"].get(wh, {}).get(key, 0) for sl in slices) == sum(
                        r[key] for r in report["rows"] if r["warehouse"] == wh
                        and (key in ("retries", "dead_lettered") or r["flow"] == "create")), (wh, key)
            for r in report["rows"]:
                assert r["attempts"] == (r["delivered"] + r["retries"] + r["unknown_outcomes"]
                                         + r["dead_lettered"])
                if r["attempts"]:
                    assert r["error_rate"] == round((r["attempts"] - r["delivered"]) / r["attempts"], 4)
            assert rows["jd"]["error_rate"] > 0 and rows["jd"]["error_rate"] > 1 - rows["jd"]["success_rate"]
            # everything happened within the last hour: --since 1h and the default window agree with it
            for window in (["--since", "1h"], [], ["--since", "today", "--tz", "Asia/Shanghai"]):
                out = await asyncio.to_thread(CliRunner().invoke, main, ["report", "--config", config, *window])
                assert out.exit_code == 0, out.output
                recent = json.loads(out.output)
                if window and window[1] == "today" and recent["rows"] != report["rows"]:
                    continue  # the run crossed midnight in Shanghai: today holds only a part
                assert recent["rows"] == report["rows"], window
            assert recent["time_zone"] == "Asia/Shanghai"

            out = await asyncio.to_thread(CliRunner().invoke, main, [
                "report", "--config", config, "--from", "2000-01-01", "--to", "2100-01-01", "--format", "csv"])
            table = list(csv.DictReader(io.StringIO(out.output)))
            assert {(t["warehouse"], int(t["delivered"])) for t in table if t["flow"] == "create"} == {
                (wh, r["delivered"]) for wh, r in rows.items()}
            out = await asyncio.to_thread(CliRunner().invoke, main, [
                "report", "--config", config, "--from", "2000-01-01", "--to", "2100-01-01", "--format", "html"])
            page = out.output
            assert page.startswith("<!doctype html>") and "<svg" in page and "<script" not in page
            assert "src=" not in page and "href=" not in page  # one file that can be mailed
            assert '<meta name="viewport" content="width=device-width' in page
            headers = re.findall(r"<th>([^<]*)</th>", page)
            assert "Success rate" in headers and "Warehouse" in headers
            assert not [h for h in headers if "_" in h], headers  # words, not field names
            for value in run.plan.secret_values.values():
                assert value not in page and value not in out.output
            # an empty window is empty, not an error
            out = await asyncio.to_thread(CliRunner().invoke, main, [
                "report", "--config", config, "--from", "2000-01-01", "--to", "2000-01-02"])
            assert json.loads(out.output)["rows"] == []

    asyncio.run(main_())


NOW = datetime(2026, 11, 27, 1, 30, tzinfo=UTC)  # 09:30 in Shanghai
SHANGHAI = ZoneInfo("Asia/Shanghai")


def _us(moment: datetime) -> int:
    return int(moment.timestamp() * 1_000_000)


@pytest.mark.parametrize(("since", "start", "end", "window"), [
    ("1h", None, None, (datetime(2026, 11, 27, 0, 30, tzinfo=UTC), NOW)),
    ("90m", None, None, (datetime(2026, 11, 27, 0, 0, tzinfo=UTC), NOW)),
    ("2d", None, None, (datetime(2026, 11, 25, 1, 30, tzinfo=UTC), NOW)),
    ("1w", None, None, (datetime(2026, 11, 20, 1, 30, tzinfo=UTC), NOW)),
    ("0.5 h", None, None, (datetime(2026, 11, 27, 1, 0, tzinfo=UTC), NOW)),
    ("today", None, None, (datetime(2026, 11, 27, 0, 0, tzinfo=SHANGHAI), NOW)),
    ("Yesterday", None, None, (datetime(2026, 11, 26, 0, 0, tzinfo=SHANGHAI),
                               datetime(2026, 11, 27, 0, 0, tzinfo=SHANGHAI))),
    (None, None, None, (datetime(2026, 11, 26, 1, 30, tzinfo=UTC), NOW)),
    (None, "2026-11-11", None, (datetime(2026, 11, 11, tzinfo=SHANGHAI), NOW)),
    (None, "2026-11-11", "2026-11-12T00:00+00:00", (datetime(2026, 11, 11, tzinfo=SHANGHAI),
                                                    datetime(2026, 11, 12, tzinfo=UTC))),
])
def test_the_report_window(since: str | None, start: str | None, end: str | None,
                           window: tuple[datetime, datetime]) -> None:
    from dockyard.service_cli import report_window

    assert report_window(since, start, end, SHANGHAI, now=NOW) == (_us(window[0]), _us(window[1]))


@pytest.mark.parametrize(("args", "message"), [
    (["--since", "1h", "--from", "2026-01-01"], "give --since, or --from (and --to), not both"),
    (["--since", "soon"], "give a duration such as 30m, 1h, 2d or 1w"),
    (["--since", "0h"], "give a duration such as 30m"),
    (["--since", "-1h"], "give a duration such as 30m"),
    (["--to", "2026-01-01"], "--to needs --from"),
    (["--from", "2026-02-01", "--to", "2026-01-01"], "the window ends before it begins"),
    (["--from", "last tuesday"], "'last tuesday' is not an ISO-8601 date or date-time"),
    (["--tz", "Mars/Olympus", "--since", "1h"], "'Mars/Olympus' is not a time zone name"),
])
def test_a_bad_window_is_a_clear_error_before_the_store_is_read(tmp_path: Any, args: list[str], message: str) -> None:
    out = CliRunner().invoke(main, ["report", "--config", str(tmp_path / "absent.yaml"), *args])
    assert out.exit_code == 2 and message in out.output, out.output
    assert "Traceback" not in out.output


@given(st.floats(min_value=0, max_value=1, exclude_max=True))
def test_a_rate_below_one_never_shows_as_100_percent(rate: float) -> None:
    from dockyard.service.report_html import format_rate, rate_axis_floor

    assert format_rate(rate) != "100%" and not format_rate(rate).startswith("100")
    floor = rate_axis_floor([rate, 1.0])
    assert floor < rate or floor == 0.0


def test_durations_read_in_the_unit_a_person_uses() -> None:
    from dockyard.service.report_html import format_duration_ms

    assert [format_duration_ms(v) for v in (None, 0.4, 8.24, 67.3, 67272.521, 200_000, 7_500_000, 200_000_000)] == [
        "–", "0.4 ms", "8.2 ms", "67 ms", "1 min 7 s", "3 min 20 s", "2 h 5 min", "2 d 7 h"]
    assert format_duration_ms(1234) == "1.2 s"
