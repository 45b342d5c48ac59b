"""Every simulated warehouse, driven over real HTTP by requests our own specs build, answers the
way our response mappings read: accepted, duplicate, rejected (bad signature, cancel too late)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import aiohttp
import pytest
from simkit import KITS, Kit, order, outcome, run, send, wire

from dockyard.simulate import Feedback, Simulator

NAMES = sorted(KITS)


async def _with_sim(kits: list[Kit], body: Any, feedback: Feedback | None = None) -> Any:
    sim = Simulator([k.warehouse() for k in kits], feedback=feedback or Feedback(enabled=False), seed=7)
    base = await sim.start()
    try:
        async with aiohttp.ClientSession() as session:
            return await body(sim, base, session)
    finally:
        await sim.stop()


@pytest.mark.parametrize("name", NAMES)
def test_a_signed_create_is_accepted_and_a_repeat_is_a_duplicate(name: str) -> None:
    kit = KITS[name]

    async def body(sim: Simulator, base: str, session: aiohttp.ClientSession) -> None:
        status, answer = await send(session, wire(kit, kit.create, base, order(order_no="SIM-A-1")))
        assert status == 200
        first = outcome(kit, answer)
        assert first["result"] == "accepted", first
        # The same order again (a new request id, a new timestamp): the warehouse's duplicate rule.
        _, answer = await send(session, wire(kit, kit.create, base, order(order_no="SIM-A-1")))
        again = outcome(kit, answer)
        assert again["result"] == "duplicate", again
        if "warehouse_order_id" in first:
            assert again.get("warehouse_order_id", first["warehouse_order_id"]) == first["warehouse_order_id"]
        stats = sim.stats()["warehouses"][name]
        assert stats["creates"] == 2 and stats["unique_orders"] == 1
        assert stats["orders_received_twice"] == ["SIM-A-1"]
        assert stats["duplicates_answered"] == 1 and stats["bad_signatures"] == 0
        assert sim.received(name) == {"SIM-A-1": 2}

    run(lambda: _with_sim([kit], body))


@pytest.mark.parametrize("name", NAMES)
def test_a_wrong_secret_is_refused_counted_and_rejected(name: str) -> None:
    kit = KITS[name]

    async def body(sim: Simulator, base: str, session: aiohttp.ClientSession) -> None:
        status, answer = await send(session, wire(kit, kit.create, base, order(order_no="SIM-B-1"), secret="wrong"))
        assert status == 200  # every warehouse answers a bad signature in its protocol, not with an HTTP error
        result = outcome(kit, answer)
        assert result["result"] == "rejected" and result["retryable"] is False, result
        stats = sim.stats()["warehouses"][name]
        assert stats["bad_signatures"] == 1 and stats["creates"] == 0
        assert sim.received(name) == {}
        # Nothing was created: the correctly signed request afterwards is a first, accepted.
        _, answer = await send(session, wire(kit, kit.create, base, order(order_no="SIM-B-1")))
        assert outcome(kit, answer)["result"] == "accepted"

    run(lambda: _with_sim([kit], body))


@pytest.mark.parametrize("name", NAMES)
def test_cancel_before_pick_succeeds_and_after_pick_is_refused(name: str) -> None:
    kit = KITS[name]

    async def body(sim: Simulator, base: str, session: aiohttp.ClientSession) -> None:
        for no in ("SIM-C-1", "SIM-C-2"):
            _, answer = await send(session, wire(kit, kit.create, base, order(order_no=no)))
            assert outcome(kit, answer)["result"] == "accepted"
        _, answer = await send(session, wire(kit, kit.cancel, base, order(order_no="SIM-C-1")))
        assert outcome(kit, answer)["result"] == "accepted"
        assert sim.order_stage(name, "SIM-C-1") == "cancelled"

        sim.set_stage(name, "SIM-C-2", "shipped" if kit.kind == "sf" else "picking")
        _, answer = await send(session, wire(kit, kit.cancel, base, order(order_no="SIM-C-2")))
        refused = outcome(kit, answer)
        assert refused["result"] == "rejected" and refused["retryable"] is False, refused
        assert "不能取消" in refused["message"]
        assert sim.order_stage(name, "SIM-C-2") != "cancelled"
        assert sim.stats()["warehouses"][name]["cancels"] == 2

    run(lambda: _with_sim([kit], body))


def test_cancel_is_refused_once_the_feedback_has_moved_the_order_past_picking() -> None:
    kit = KITS["jd"]  # no callbacks: the stages still advance

    async def body(sim: Simulator, base: str, session: aiohttp.ClientSession) -> None:
        _, answer = await send(session, wire(kit, kit.create, base, order(order_no="SIM-D-1")))
        assert outcome(kit, answer)["result"] == "accepted"
        await sim.drain(5)
        assert sim.order_stage("jd", "SIM-D-1") == "signed"
        _, answer = await send(session, wire(kit, kit.cancel, base, order(order_no="SIM-D-1")))
        refused = outcome(kit, answer)
        assert refused["result"] == "rejected" and refused["message"] == "订单已签收，不能取消"

    run(lambda: _with_sim([kit], body, Feedback(step_delay=0.01)))


def test_acme_identical_repeat_is_a_duplicate_and_changed_content_is_rejected() -> None:
    kit = KITS["qimen-acme"]  # identicalRepeatIsSuccess: true

    async def body(sim: Simulator, base: str, session: aiohttp.ClientSession) -> None:
        _, answer = await send(session, wire(kit, kit.create, base, order(order_no="SIM-E-1")))
        assert outcome(kit, answer)["result"] == "accepted"
        _, answer = await send(session, wire(kit, kit.create, base, order(order_no="SIM-E-1")))
        assert outcome(kit, answer)["result"] == "duplicate"
        changed = order(order_no="SIM-E-1")
        changed["remark"] = "请改为周末送货"
        _, answer = await send(session, wire(kit, kit.create, base, changed))
        result = outcome(kit, answer)
        assert result["result"] == "rejected" and "内容不一致" in result["message"]

    run(lambda: _with_sim([kit], body))


def test_sf_search_order_finds_a_known_order_and_not_an_unknown_one() -> None:
    kit = KITS["sf"]

    async def body(sim: Simulator, base: str, session: aiohttp.ClientSession) -> None:
        _, answer = await send(session, wire(kit, kit.create, base, order(order_no="SIM-F-1")))
        created = outcome(kit, answer)
        _, answer = await send(session, wire(kit, "sf/search-order.yaml", base, order(order_no="SIM-F-1")))
        found = outcome(kit, answer, "sf/search-response.yaml")
        assert found["result"] == "duplicate" and found["waybills"] == created["waybills"]
        assert found["original"]["orderId"] == "SIM-F-1"
        _, answer = await send(session, wire(kit, "sf/search-order.yaml", base, order(order_no="SIM-F-2")))
        assert outcome(kit, answer, "sf/search-response.yaml")["result"] == "retryable"
        assert sim.stats()["warehouses"]["sf"]["queries"] == 2

    run(lambda: _with_sim([kit], body))


def test_a_path_of_another_kind_or_an_unknown_warehouse_is_404() -> None:
    kit = KITS["sf"]

    async def body(sim: Simulator, base: str, session: aiohttp.ClientSession) -> None:
        async with session.post(f"{base}/sf/router/qimen/service", data=b"<request/>") as resp:
            assert resp.status == 404
        async with session.post(f"{base}/nobody/std/service", data=b"") as resp:
            assert resp.status == 404

    run(lambda: _with_sim([kit], body))


def test_the_simulator_shares_no_signing_or_crypto_code_with_the_runtime() -> None:
    """The simulated warehouses sign, verify, encrypt and parse with code of their own, so that
    the service is tested against an independent implementation. The one thing they share is the
    HTTP client their callback pushes go out with (the service's lean keep-alive client): it is
    only the transport, and the other end of those exchanges, the service's server, is aiohttp's."""
    import ast

    from simkit import ROOT

    for path in sorted((ROOT / "dockyard" / "simulate").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                assert not name.startswith(("dockyard.runtime", "dockyard.compiler")), f"{path.name} imports {name}"
                assert not name.startswith("dockyard.service") or name == "dockyard.service.http_client", \
                    f"{path.name} imports {name}"


# The recovery query of each warehouse that offers one: (request spec, response spec).
QUERIES = {"qimen-std": ("qimen/deliveryorder.query.yaml", "qimen/query-response.yaml"),
           "qimen-acme": ("qimen/deliveryorder.query.yaml", "qimen/query-response.yaml"),
           "sf": ("sf/search-order.yaml", "sf/search-response.yaml"),
           "jd": ("jd/query-order.yaml", "jd/query-response.yaml")}


@pytest.mark.parametrize("name", sorted(QUERIES))
def test_the_recovery_query_finds_what_was_received_and_only_that(name: str) -> None:
    kit = KITS[name]
    request, response = QUERIES[name]

    async def body(sim: Simulator, base: str, session: aiohttp.ClientSession) -> None:
        _, answer = await send(session, wire(kit, kit.create, base, order(order_no="SIM-Q-1")))
        created = outcome(kit, answer)
        assert created["result"] == "accepted", created
        _, answer = await send(session, wire(kit, request, base, order(order_no="SIM-Q-1")))
        found = outcome(kit, answer, response)
        assert found["result"] == "duplicate" and found["retryable"] is False, found
        # The original ids: the ones the create's answer carried.
        assert found.get("warehouse_order_id") == created.get("warehouse_order_id")
        if created.get("waybills"):
            assert found["waybills"] == created["waybills"]
        _, answer = await send(session, wire(kit, request, base, order(order_no="SIM-Q-2")))
        absent = outcome(kit, answer, response)
        assert absent["result"] == "retryable" and absent["retryable"] is True, absent
        stats = sim.stats()["warehouses"][name]
        # A query is not a create: nothing was received twice, and SIM-Q-2 was never received.
        assert stats["queries"] == 2 and stats["creates"] == 1 and sim.received(name) == {"SIM-Q-1": 1}
        assert stats["bad_signatures"] == 0 and stats["invalid"] == 0

    run(lambda: _with_sim([kit], body))


@pytest.mark.parametrize("name", ["qimen-std", "jd"])
def test_a_recovery_query_with_a_wrong_secret_is_refused_and_rejected(name: str) -> None:
    kit = KITS[name]
    request, response = QUERIES[name]

    async def body(sim: Simulator, base: str, session: aiohttp.ClientSession) -> None:
        await send(session, wire(kit, kit.create, base, order(order_no="SIM-Q-3")))
        _, answer = await send(session, wire(kit, request, base, order(order_no="SIM-Q-3"), secret="wrong"))
        refused = outcome(kit, answer, response)
        # Refused, never "not found": a query the warehouse could not trust must not trigger a resend.
        assert refused["result"] == "rejected", refused
        stats = sim.stats()["warehouses"][name]
        assert stats["bad_signatures"] == 1 and stats["queries"] == 0

    run(lambda: _with_sim([kit], body))


def test_qimen_query_reports_the_stage_and_once_shipped_the_package() -> None:
    kit = KITS["qimen-std"]
    request, response = QUERIES["qimen-std"]

    async def body(sim: Simulator, base: str, session: aiohttp.ClientSession) -> None:
        await send(session, wire(kit, kit.create, base, order(order_no="SIM-Q-4")))
        _, answer = await send(session, wire(kit, request, base, order(order_no="SIM-Q-4")))
        accepted = outcome(kit, answer, response)
        assert accepted["original"]["status"] == "ACCEPT" and accepted["waybills"] == []
        assert accepted["original"]["warehouseCode"] == kit.context["warehouseCode"]
        sim.set_stage("qimen-std", "SIM-Q-4", "shipped")
        _, answer = await send(session, wire(kit, request, base, order(order_no="SIM-Q-4")))
        shipped = outcome(kit, answer, response)
        assert shipped["result"] == "duplicate" and shipped["original"]["status"] == "DELIVERED"
        [waybill] = shipped["waybills"]
        assert waybill["carrier_code"] == "SF" and waybill["waybill_no"].startswith("SF")

    run(lambda: _with_sim([kit], body))


def test_jd_query_answers_at_the_configured_path_only() -> None:
    kit = replace(KITS["jd"], context_overrides={"queryPath": "/ecap/v2/orders/query"})
    request, response = QUERIES["jd"]

    async def body(sim: Simulator, base: str, session: aiohttp.ClientSession) -> None:
        await send(session, wire(kit, kit.create, base, order(order_no="SIM-Q-5")))
        w = wire(kit, request, base, order(order_no="SIM-Q-5"))
        assert "/jd/ecap/v2/orders/query?" in w.url  # sent to, and signed with, the configured path
        _, answer = await send(session, w)
        assert outcome(kit, answer, response)["result"] == "duplicate"
        default = wire(KITS["jd"], request, base, order(order_no="SIM-Q-5"))
        status, _ = await send(session, default)
        assert status == 404  # this account's JD has no query at the default path
        assert sim.stats()["warehouses"]["jd"]["queries"] == 1

    run(lambda: _with_sim([kit], body))
