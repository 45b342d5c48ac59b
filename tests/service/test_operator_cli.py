"""The operator's commands against a live store: `dockyard trace`, `dockyard dlq list|show|replay`
(with a fixed order), on SQLite and PostgreSQL, while the service runs."""

from __future__ import annotations

import asyncio
import copy
import json
from pathlib import Path
from typing import Any

from click.testing import CliRunner
from test_service import example

from dockyard.cli import main


def _cli(*args: str) -> Any:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_trace_and_the_dead_letter_queue_from_the_command_line(env: Any, tmp_path: Path) -> None:
    async def main_() -> None:
        async with env(warehouses=("jd",)) as run:
            config = str(run.plan.config_path)
            good, bad = example("jd-three-decimal-discount"), example("all-lines-zero")
            await run.post("/orders/batch", [good, bad])
            await run.until(good["order_no"], lambda d: d["delivery"] == "delivered")
            doc = await run.until(bad["order_no"], lambda d: d["delivery"] == "dlq")
            job = doc["jobs"][0]["id"]

            out = await asyncio.to_thread(_cli, "trace", good["order_no"], "--config", config)
            assert out.exit_code == 0, out.output
            for step in ("received", "routed", "transformed", "sent", "response", "committed"):
                assert step in out.output
            out = await asyncio.to_thread(_cli, "trace", "NO-SUCH", "--config", config)
            assert out.exit_code == 1 and "no journal entries" in out.output

            out = await asyncio.to_thread(_cli, "dlq", "list", "--config", config, "--json")
            listed = json.loads(out.output)
            assert [(d["id"], d["state"], d["order_no"]) for d in listed] == [(job, "dead", bad["order_no"])]
            assert "cargoes" in listed[0]["reason"]
            out = await asyncio.to_thread(_cli, "dlq", "show", str(job), "--config", config)
            assert out.exit_code == 0 and "dead-lettered" in out.output

            # a fix for another order is refused; an invalid fix is refused; then the real fix
            other = tmp_path / "other.json"
            other.write_text(json.dumps(good), encoding="utf-8")
            out = await asyncio.to_thread(_cli, "dlq", "replay", str(job), "--order", str(other), "--config", config)
            assert out.exit_code == 1 and "is not for order" in out.output
            broken = tmp_path / "broken.json"
            broken.write_text(json.dumps({**bad, "items": []}), encoding="utf-8")
            out = await asyncio.to_thread(_cli, "dlq", "replay", str(job), "--order", str(broken), "--config", config)
            assert out.exit_code == 1 and "not a valid order" in out.output
            fixed = copy.deepcopy(bad)
            fixed["items"][0]["qty"] = 2
            path = tmp_path / "fixed.json"
            path.write_text(json.dumps(fixed), encoding="utf-8")
            out = await asyncio.to_thread(_cli, "dlq", "replay", str(job), "--order", str(path), "--config", config)
            assert out.exit_code == 0 and f"{job}: replayed" in out.output
            await run.until(bad["order_no"], lambda d: d["delivery"] == "delivered")
            out = await asyncio.to_thread(_cli, "dlq", "replay", str(job), "--config", config)
            assert out.exit_code == 1 and "not replayed: the job is done" in out.output
            out = await asyncio.to_thread(_cli, "dlq", "list", "--config", config)
            assert "empty" in out.output
            steps = [s["step"] for s in await run.journal(bad["order_no"])]
            assert steps.count("replayed") == 1 and "order-fixed" in steps

    asyncio.run(main_())
