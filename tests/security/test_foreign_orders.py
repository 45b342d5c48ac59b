"""A callback touches only orders of its own warehouse (the report's first finding): an SF route
push that passes SF's guard but names an order routed to a QIMEN warehouse (here one sitting in
the dead-letter queue, never delivered), or an order no one has, is refused and journaled as
`foreign-order` / `unknown-order`: not applied, no made-up waybill, nothing forwarded upstream.
A push for SF's own order beside them is applied. On SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from seckit import Env, example, no_internals, service

from dockyard.simulate import Faults


async def _push(env: Env, order_no: str, route_id: str, op: str = "80") -> tuple[int, bytes]:
    route = {"mailno": "SF-FORGED-1", "orderid": order_no, "acceptTime": "2023-11-11 18:32:05", "opCode": op,
             "id": route_id, "remark": "已签收"}
    status, answer, _ = await env.request("POST", "/callbacks/sf/route-push",
                                          body=json.dumps({"Body": {"WaybillRoute": [route]}}),
                                          headers={"Content-Type": "application/json"})
    no_internals(answer)
    return status, answer


async def _dead(env: Env, order_no: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while (await env.rows("SELECT delivery FROM dy_orders WHERE order_no = ?", (order_no,)))[0][0] != "dlq":
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)


def test_a_callback_for_another_warehouses_order_or_none_is_refused(tmp_path: Path, store_url: str,
                                                                     bundle_dir: Path) -> None:
    async def main() -> None:
        down = {"qimen-std": Faults(error_rate=1.0)}  # every attempt fails: the order is dead-lettered
        async with service(tmp_path, store_url, bundle_dir, warehouses=("qimen-std", "sf"), faults=down) as env:
            dead = example()  # tmall → qimen-std
            status, _ = await env.post_json("/orders", json.dumps(dead))
            assert status == 202
            await _dead(env, dead["order_no"])
            own = await env.placed("douyin-trimmed-money")  # douyin → sf
            for order_no, outcome in ((dead["order_no"], "foreign-order"), ("NO-SUCH-ORDER", "unknown-order")):
                status, answer = await _push(env, order_no, f"R-{outcome}")
                assert status == 409 and f"({outcome})" in answer.decode(), answer
                rows = await env.rows("SELECT outcome FROM dy_journal WHERE step = 'feedback' AND order_no = ?",
                                      (order_no,))
                assert rows == [(outcome,)]
            doc = await env.rows("SELECT status, delivery, waybills FROM dy_orders WHERE order_no = ?",
                                 (dead["order_no"],))
            assert doc[0][0] != "signed" and doc[0][1] == "dlq" and "SF-FORGED" not in (doc[0][2] or "")
            assert await env.events() == []
            assert await env.upstream_after(0.3) == []
            status, _ = await _push(env, own, "R-own", op="50")
            assert status == 200
            assert [e[2] for e in await env.events()] == [own]
            await env.alive()

    asyncio.run(main())


def test_a_push_of_many_routes_is_an_event_per_route_each_for_its_own_order(tmp_path: Path, store_url: str,
                                                                            bundle_dir: Path) -> None:
    """SF pushes many routes at once, often of several orders: every route is recorded and
    forwarded as an event of its own (none is acknowledged and lost), a route for another
    warehouse's order in the same push is refused on its own, and a push sent again changes
    nothing but its one new route."""
    async def main() -> None:
        async with service(tmp_path, store_url, bundle_dir, warehouses=("qimen-std", "sf")) as env:
            first, second = await env.placed("douyin-trimmed-money"), await env.placed("hostile-remark")
            foreign = await env.placed("tmall-basic")  # routed to qimen-std

            def route(order_no: str, route_id: str, op: str) -> dict[str, str]:
                return {"mailno": "SF" + route_id, "orderid": order_no, "acceptTime": "2023-11-11 18:32:05",
                        "opCode": op, "id": route_id}

            async def push(*routes: dict[str, str]) -> tuple[int, bytes]:
                status, answer, _ = await env.request("POST", "/callbacks/sf/route-push",
                                                      body=json.dumps({"Body": {"WaybillRoute": list(routes)}}),
                                                      headers={"Content-Type": "application/json"})
                no_internals(answer)
                return status, answer

            routes = [route(first, "R1", "50"), route(second, "R2", "50"), route(foreign, "R3", "80"),
                      route(first, "R4", "30")]
            status, answer = await push(*routes)
            assert status == 200 and b'"return_code":"0000"' in answer
            assert sorted((e[1], e[2], e[3]) for e in await env.events()) == [
                ("R1", first, "shipped"), ("R2", second, "shipped"), ("R4", first, "in_transit")]
            refused = await env.rows("SELECT outcome FROM dy_journal WHERE step = 'feedback' AND order_no = ?",
                                     (foreign,))
            assert refused == [("foreign-order",)]
            status, _ = await push(*routes, route(second, "R5", "80"))  # SF sends it again, with one more
            assert status == 200
            assert sorted(e[1] for e in await env.events()) == ["R1", "R2", "R4", "R5"]
            seen: list[dict[str, object]] = []
            for _ in range(100):
                seen = await env.upstream_after(0.05)
                if len(seen) >= 4:
                    break
            assert sorted(str(e["event_id"]) for e in seen) == ["R1", "R2", "R4", "R5"]
            statuses = dict(await env.rows("SELECT order_no, status FROM dy_orders WHERE order_no IN (?, ?)",
                                           (first, second)))
            assert statuses == {first: "in_transit", second: "signed"}
            await env.alive()

    asyncio.run(main())
