"""DLQ triage for a bad night, through the dashboard's API and the command line, on SQLite and
PostgreSQL: dead and held jobs grouped by warehouse and reason, filtered, replayed and discarded a
group at a time (journaled with who, and for a discard why); a group the mapping refuses is not
replayed unless asked for anyway, and says why; the order page carries the failing reason."""

from __future__ import annotations

import asyncio
import copy
import json
from typing import Any

from click.testing import CliRunner
from test_service import example
from test_ui import OPERATOR, READ, TOKENS, bearer, fetch

from dockyard.cli import main
from dockyard.simulate import Faults

FAST_RETRY = {"max_attempts": 2, "base_delay": 0.05, "max_delay": 0.1, "jitter": 0}


def numbered(name: str, n: int, channel: str | None = None) -> dict[str, Any]:
    order = copy.deepcopy(example(name))
    order["order_no"] = f"{order['order_no']}-T{n:03d}"
    if channel:
        order["channel"] = channel
    return order


async def post_json(run: Any, path: str, body: Any, token: str = OPERATOR) -> tuple[int, Any]:
    async with run.session.post(run.url + path, json=body, headers=bearer(token)) as resp:
        return resp.status, await resp.json()


def _cli(*args: str) -> Any:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_groups_filters_bulk_replay_and_discard(env: Any) -> None:
    async def main_() -> None:
        async with env(warehouses=("qimen-std", "jd"), faults={"qimen-std": Faults(error_rate=1.0)},
                       retry=FAST_RETRY, overrides=TOKENS) as run:
            failing = [numbered("tmall-basic", n) for n in range(3)]
            refused = [numbered("all-lines-zero", n, "jd") for n in range(3)]
            await run.post("/orders/batch", failing + refused)
            for order in failing + refused:
                await run.until(order["order_no"], lambda d: d["delivery"] == "dlq")

            status, data = await fetch(run, "/ui/api/dlq/groups", READ)
            assert status == 200 and data["total"] == 6
            by_wh = {g["warehouse"]: g for g in data["groups"]}
            assert set(by_wh) == {"qimen-std", "jd"}
            five, bad = by_wh["qimen-std"], by_wh["jd"]
            assert (five["count"], five["state"], five["replay_helps"]) == (3, "dead", True)
            assert (bad["count"], bad["replay_helps"]) == (3, False) and "fails" in bad["why"]
            for order in refused:  # one group: the order's own number is not part of the reason
                assert order["order_no"] not in bad["reason"]
            assert sorted(bad["orders"]) == sorted(o["order_no"] for o in refused)

            # filters
            _, only = await fetch(run, "/ui/api/dlq/groups?warehouse=jd", READ)
            assert [g["group"] for g in only["groups"]] == [bad["group"]]
            _, none = await fetch(run, "/ui/api/dlq/groups?state=in_doubt", READ)
            assert none["groups"] == []
            word = five["reason"].split()[0]
            _, matched = await fetch(run, f"/ui/api/dlq/groups?match={word.upper()}", READ)
            assert five["group"] in [g["group"] for g in matched["groups"]]

            # the order page shows the failing reason and whether a replay helps, without a click
            _, page = await fetch(run, f"/ui/api/orders/{refused[0]['order_no']}", READ)
            [dead] = [j for j in page["order"]["jobs"] if j["state"] == "dead"]
            assert dead["reason"] and dead["replay_helps"] is False and "fix the order" in dead["why"].lower()

            # refusals: the read role, no reason for a discard, no selection at all
            status, _ = await post_json(run, "/ui/api/dlq/bulk", {"action": "replay", "group": bad["group"]}, READ)
            assert status == 403
            status, err = await post_json(run, "/ui/api/dlq/bulk", {"action": "discard", "group": bad["group"]})
            assert status == 400 and "reason" in err["error"]
            status, err = await post_json(run, "/ui/api/dlq/bulk", {"action": "replay"})
            assert status == 400 and "everything" in err["error"]

            # the refused group is not replayed unless asked for anyway
            status, res = await post_json(run, "/ui/api/dlq/bulk", {"action": "replay", "group": bad["group"]})
            assert status == 200 and res["done"] == 0 and len(res["skipped"]) == 3 and "cannot help" in res["note"]

            # the command line sees the same groups, and refuses the same way
            config = str(run.plan.config_path)
            out = await asyncio.to_thread(_cli, "dlq", "groups", "--config", config, "--json")
            assert {g["group"]: g["count"] for g in json.loads(out.output)} == {five["group"]: 3, bad["group"]: 3}
            out = await asyncio.to_thread(_cli, "dlq", "groups", "--config", config, "--warehouse", "jd")
            assert bad["group"] in out.output and "replay cannot help" in out.output
            out = await asyncio.to_thread(_cli, "dlq", "replay", "--group", bad["group"], "--config", config)
            assert out.exit_code == 1 and "3 job(s) not replayed" in out.output
            out = await asyncio.to_thread(_cli, "dlq", "discard", str(dead["id"]), "--config", config)
            assert out.exit_code == 2  # --reason is required
            out = await asyncio.to_thread(_cli, "dlq", "discard", str(dead["id"]), "--reason", "customer cancelled",
                                          "--config", config)
            assert out.exit_code == 0 and f"{dead['id']}: discarded" in out.output
            doc = await run.order(refused[0]["order_no"])
            assert doc["delivery"] == "discarded"
            [row] = [s for s in await run.journal(refused[0]["order_no"]) if s["step"] == "discarded"]
            assert row["detail"]["reason"] == "customer cancelled" and "(dockyard dlq discard)" in row["detail"]["by"]

            # the warehouse is back: replay its whole group at once
            run.sim.set_faults("qimen-std", Faults())
            status, res = await post_json(run, "/ui/api/dlq/bulk", {"action": "replay", "group": five["group"]})
            assert (status, res["done"], res["skipped"], res["by"]) == (200, 3, [], "dashboard:operator")
            for order in failing:
                await run.until(order["order_no"], lambda d: d["delivery"] == "delivered")
                replayed = [s for s in await run.journal(order["order_no"]) if s["step"] == "replayed"]
                assert [s["detail"]["by"] for s in replayed] == ["dashboard:operator"]

            # discard the rest of the refused group with a reason
            status, res = await post_json(run, "/ui/api/dlq/bulk", {"action": "discard", "group": bad["group"],
                                                                    "reason": "nothing to ship"})
            assert (status, res["done"]) == (200, 2)
            for order in refused[1:]:
                [row] = [s for s in await run.journal(order["order_no"]) if s["step"] == "discarded"]
                assert row["detail"] == {**row["detail"], "by": "dashboard:operator", "reason": "nothing to ship"}
            _, after = await fetch(run, "/ui/api/dlq/groups", READ)
            assert after == {"groups": [], "total": 0}
            # a second discard of the same jobs does nothing
            status, res = await post_json(run, "/ui/api/dlq/bulk", {"action": "discard", "group": bad["group"],
                                                                    "reason": "again"})
            assert (status, res["done"]) == (200, 0)

    asyncio.run(main_())
