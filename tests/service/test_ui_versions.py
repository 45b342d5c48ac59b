"""Versions and lineage: every transformed job journals its mapping version, module and bundle hash
and the clock it ran with; the order page explains what was sent with that version and that clock
(not with today's), and says plainly when the version is no longer loaded."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

from test_service import example
from test_ui import OPERATOR, READ, TOKENS, fetch

from dockyard.service import queries


def test_the_journal_records_the_version_and_the_lineage_uses_it(env: Any) -> None:
    async def main() -> None:
        async with env(overrides=TOKENS) as run:
            order = example()
            await run.post("/orders", order)
            await run.until(order["order_no"], lambda d: d["delivery"] == "delivered")
            ctx = run.service.ctx
            [(name, version)] = [(n, v) for n, v in ctx.versions.items() if n.endswith("deliveryorder.create")]

            sent = await run.service.db.read(lambda c: queries.sent_version(c, order["order_no"]))
            assert sent is not None and sent["step"] == "committed"
            assert (sent["mapping"], sent["mapping_version"], sent["mapping_sha"], sent["bundle"]) == (
                name, version.version, version.module, version.bundle)
            clock = datetime.fromisoformat(sent["clock"])
            assert clock.tzinfo is not None and abs((datetime.now(UTC) - clock).total_seconds()) < 30

            # the timeline's "transformed" step shows the version
            _, tl = await fetch(run, f"/ui/api/orders/{order['order_no']}", READ)
            [transformed] = [s for s in tl["timeline"] if s["step"] == "transformed"]
            assert transformed["detail"]["mapping_sha"] == version.module
            assert transformed["detail"]["clock"] == sent["clock"]

            await asyncio.sleep(1.1)  # the viewing time is now another second than the send time
            status, lineage = await fetch(run, f"/ui/api/orders/{order['order_no']}/lineage", READ)
            assert status == 200 and lineage["basis"] == "sent" and not lineage.get("gone")
            assert lineage["clock"] == sent["clock"] and lineage["mapping_version"] == version.version
            fields = {f["field"]: f for f in lineage["fields"]}
            operate = fields["deliveryOrder.operateTime"]
            assert operate["clock"]
            assert operate["value"] == clock.astimezone(_shanghai()).strftime("%Y-%m-%d %H:%M:%S")
            # …which is what the request that was sent carries
            [sent_step] = [s for s in tl["timeline"] if s["step"] == "sent"]
            assert operate["value"] in json.dumps(sent_step["detail"], ensure_ascii=False)

            # the version that sent it is gone (a reload replaced it, the process restarted)
            ctx.archive.pop(version.module)
            status, gone = await fetch(run, f"/ui/api/orders/{order['order_no']}/lineage", OPERATOR)
            assert status == 200 and gone["gone"] is True and gone["fields"] == []
            assert f"version {version.version} (module {version.module}" in gone["note"]
            assert "no longer loaded" in gone["note"] and "timeline" in gone["note"]

            # a row journaled before versions were recorded: said so, nothing explained
            def strip(conn: Any) -> None:
                for rid, text in conn.execute("SELECT id, detail FROM dy_journal WHERE order_no = ?",
                                              (order["order_no"],)):
                    detail = json.loads(text) if text else None
                    if isinstance(detail, dict) and "mapping_sha" in detail:
                        for key in ("mapping_sha", "mapping_version", "bundle", "clock"):
                            detail.pop(key)
                        conn.execute("UPDATE dy_journal SET detail = ? WHERE id = ?", (json.dumps(detail), rid))

            await run.service.db.write(strip)
            ctx.remember()
            _, old = await fetch(run, f"/ui/api/orders/{order['order_no']}/lineage", READ)
            assert old["gone"] is True and "before versions were recorded" in old["note"]

    asyncio.run(main())


def _shanghai() -> Any:
    from zoneinfo import ZoneInfo

    return ZoneInfo("Asia/Shanghai")
