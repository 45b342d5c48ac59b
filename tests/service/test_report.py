"""`dockyard report` agrees with the store counted another way (the orders and jobs tables), on
SQLite and PostgreSQL, and renders JSON, CSV and a self-contained HTML file."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from typing import Any

from click.testing import CliRunner

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
            for value in run.plan.secret_values.values():
                assert value not in page and value not in out.output
            # an empty window is empty, not an error
            out = await asyncio.to_thread(CliRunner().invoke, main, [
                "report", "--config", config, "--from", "2000-01-01", "--to", "2000-01-02"])
            assert json.loads(out.output)["rows"] == []

    asyncio.run(main_())
