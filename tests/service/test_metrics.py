"""`GET /metrics` scrapes cleanly with Prometheus's own text parser and counts what happened,
on SQLite and PostgreSQL; with dashboard tokens configured it needs one."""

from __future__ import annotations

import asyncio
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from test_service import example

TOKEN = "test-only-metrics-token-0123456789"


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_metrics_count_orders_deliveries_callbacks_and_state(env: Any) -> None:
    async def main() -> None:
        async with env(warehouses=("qimen-std", "jd"), overrides={"dashboard": {"tokens": {TOKEN: "read"}}}) as run:
            good, jd, bad = example(), example("jd-three-decimal-discount"), example("all-lines-zero")
            broken = example("hostile-remark")
            del broken["buyer"]
            bad["channel"] = "jd"
            await run.post("/orders/batch", [good, jd, bad, broken, good])
            for order in (good, jd):
                await run.until(order["order_no"], lambda d: d["delivery"] == "delivered")
            await run.until(bad["order_no"], lambda d: d["delivery"] == "dlq")
            async with run.session.post(f"{run.url}/callbacks/qimen-std/deliveryorder.confirm?sign=x",
                                        data=b"<request/>") as resp:
                assert resp.status == 401
            async with run.session.post(f"{run.url}/callbacks/nobody/{'x' * 50}", data=b"") as resp:
                assert resp.status == 404
            async with run.session.get(f"{run.url}/metrics") as resp:
                assert resp.status == 401
            async with run.session.get(f"{run.url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}) as resp:
                assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/plain")
                text = await resp.text()
            m = _samples(text)
            assert m[("dockyard_orders_total", (("outcome", "accepted"), ("warehouse", "qimen-std")))] == 1
            assert m[("dockyard_orders_total", (("outcome", "accepted"), ("warehouse", "jd")))] == 2
            assert m[("dockyard_orders_total", (("outcome", "duplicate"), ("warehouse", "qimen-std")))] == 1
            assert m[("dockyard_orders_total", (("outcome", "quarantined"), ("warehouse", "none")))] == 1
            assert m[("dockyard_deliveries_total", (("flow", "create"), ("result", "done"),
                                                    ("warehouse", "qimen-std")))] == 1
            assert m[("dockyard_deliveries_total", (("flow", "create"), ("result", "dead"), ("warehouse", "jd")))] == 1
            assert m[("dockyard_callbacks_total", (("flow", "deliveryorder.confirm"), ("outcome", "forged"),
                                                   ("warehouse", "qimen-std")))] == 1
            assert m[("dockyard_callbacks_total", (("flow", "unknown"), ("outcome", "unknown-flow"),
                                                   ("warehouse", "unknown")))] == 1
            assert m[("dockyard_dead_letters", ())] == 1 and m[("dockyard_in_doubt", ())] == 0
            assert m[("dockyard_outbox_depth", (("lane", "wh"),))] == 0
            assert m[("dockyard_circuit_state", (("warehouse", "jd"),))] == 0
            assert m[("dockyard_stage_seconds_count", (("stage", "http"), ("warehouse", "jd")))] >= 1
            assert "x" * 50 not in text and good["order_no"] not in text  # no request-chosen labels
            for value in run.plan.secret_values.values():
                assert value not in text

    asyncio.run(main())


def test_the_grafana_dashboard_uses_only_metrics_the_service_exports() -> None:
    """docs/grafana/dockyard-dashboard.json queries names that /metrics really has."""
    import json
    import re
    from pathlib import Path

    from dockyard.service.metrics import Metrics

    exported = set()
    for family in text_string_to_metric_families(Metrics().render().decode()):
        exported.add(family.name)
        exported.update({f"{family.name}_total", f"{family.name}_bucket", f"{family.name}_count",
                         f"{family.name}_sum"})
    board = json.loads((Path(__file__).resolve().parents[2] / "docs" / "grafana" / "dockyard-dashboard.json")
                       .read_text(encoding="utf-8"))
    used = {name for panel in board["panels"] for target in panel["targets"]
            for name in re.findall(r"\b(dockyard_[a-z_]+)", target["expr"])}
    assert used and used <= exported, used - exported
