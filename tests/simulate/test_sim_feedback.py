"""The simulated warehouses push signed feedback for accepted orders; our verifiers accept the
signatures, our inbound mappings read every push as a valid status-event, and a push that is not
acknowledged is retried."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

import aiohttp
import jsonschema
from simkit import KITS, ROOT, CallbackReceiver, Received, mapping, order, outcome, run, send, wire

from dockyard.runtime.secrets import MappingSecrets, Secrets
from dockyard.runtime.signing import SignInput, get_signer
from dockyard.simulate import Feedback, Simulator

STATUS_EVENT = json.loads((ROOT / "dsl" / "schemas" / "status-event.schema.json").read_text(encoding="utf-8"))
INBOUND = {
    ("qimen", "deliveryorder.confirm"): "qimen/deliveryorder.confirm.yaml",
    ("qimen", "orderprocess.report"): "qimen/orderprocess.report.yaml",
    ("sf", "route-push"): "sf/route-push.yaml",
    ("cainiao", "consign-order-confirm"): "cainiao/consign-order-confirm.yaml",
    ("cainiao", "order-status-upload"): "cainiao/order-status-upload.yaml",
}
EXPECTED = {
    "qimen-std": ["accepted", "picking", "packed", "shipped", "signed"],
    "sf": ["shipped", "in_transit", "out_for_delivery", "signed"],
    "cainiao": ["accepted", "picking", "packed", "shipped", "signed"],
}
PUSHING = sorted(EXPECTED)


def verify_signature(kind: str, secret_name: str, secret: str, push: Received) -> None:
    """Our own verifiers (dockyard.runtime.signing) accept what the simulator signed."""
    key = Secrets([MappingSecrets({secret_name: secret})]).get(secret_name)
    now = datetime.now(UTC)
    text = push.body.decode("utf-8")
    if kind == "qimen":
        params = {k: v for k, v in push.query.items() if k != "sign"}
        get_signer("qimen-md5").verify(SignInput(params, text), push.query["sign"], key, now=now)
    elif kind == "sf":
        get_signer("sf-msgdigest").verify(SignInput({"timestamp": push.query["timestamp"]}, text),
                                          push.query["msgDigest"], key, now=now)
    else:
        form = dict(parse_qsl(text))
        get_signer("cainiao-link").verify(SignInput({}, form["logistics_interface"]), form["data_digest"], key)


def status_event(kind: str, push: Received, context: dict[str, Any]) -> dict[str, Any]:
    """The push's one event (an SF push from the simulator carries one route: its `events` hold one)."""
    m = mapping(INBOUND[(kind, push.flow)])
    result: dict[str, Any] = m.transform(m.parse_input(push.body), context, validate=True)
    if "events" in result:  # status-events
        assert len(result["events"]) == 1, result
        [result] = result["events"]
    jsonschema.validate(result, STATUS_EVENT)
    return result


async def _run(names: list[str], feedback: Feedback, refuse_first: int = 0,
               orders: int = 1) -> tuple[Simulator, CallbackReceiver, dict[str, Any]]:
    kits = [KITS[n] for n in names]
    receiver = CallbackReceiver({k.name: k.kind for k in kits}, refuse_first=refuse_first)
    base = await receiver.start()
    sim = Simulator([k.warehouse(callback_base=f"{base}/{k.name}") for k in kits], feedback=feedback, seed=3)
    sim_base = await sim.start()
    answers: dict[str, Any] = {}
    try:
        async with aiohttp.ClientSession() as session:
            for kit in kits:
                for i in range(orders):
                    _, answer = await send(session, wire(kit, kit.create, sim_base, order(order_no=f"FB-{i}")))
                    answers[f"{kit.name}/FB-{i}"] = outcome(kit, answer)
        await sim.drain(20)
    finally:
        await sim.stop()
        await receiver.stop()
    return sim, receiver, answers


def test_every_push_is_signed_parsed_by_our_inbound_mappings_and_in_order() -> None:
    sim, receiver, answers = run(lambda: _run(PUSHING, Feedback(step_delay=0.01)))
    for name in PUSHING:
        kit = KITS[name]
        pushes = [r for r in receiver.received if r.warehouse == name]
        events = []
        for push in pushes:
            verify_signature(kit.kind, kit.secret_name, kit.secret, push)
            events.append(status_event(kit.kind, push, kit.context))
        assert [e["status"] for e in events] == EXPECTED[name], name
        assert {e["order_no"] for e in events} == {"FB-0"}
        assert all(e["unknown_status"] is False for e in events)
        # Every event has its own id (where the flow has one), so the service can dedupe.
        ids = [e["event_id"] for e in events if "event_id" in e]
        assert len(ids) == len(set(ids)) and ids
        shipped = next(e for e in events if e["status"] == "shipped")
        waybill = shipped["waybills"][0]["waybill_no"]
        assert waybill and shipped["waybills"][0]["carrier_code"]
        if answers[f"{name}/FB-0"].get("waybills"):  # SF gave the waybill in its answer: the same one
            assert answers[f"{name}/FB-0"]["waybills"][0]["waybill_no"] == waybill
        callbacks = sim.stats()["warehouses"][name]["callbacks"]
        assert callbacks == {"pushed": len(EXPECTED[name]), "acked": len(EXPECTED[name]), "retried": 0,
                             "failed": 0, "duplicated": 0}
    # The QIMEN confirm carries the lines we sent, all shipped.
    confirm = next(r for r in receiver.received if r.flow == "deliveryorder.confirm")
    lines = status_event("qimen", confirm, KITS["qimen-std"].context)["lines"]
    assert [(line["sku"], line["shipped_qty"]) for line in lines] == [
        ("SKU-100215-STD", 1), ("SKU-100208-STD", 2), ("SKU-100203-BLK", 1)]


def test_a_push_that_is_not_acknowledged_is_retried() -> None:
    sim, receiver, _ = run(lambda: _run(PUSHING, Feedback(step_delay=0.01, retry_delay=0.01), refuse_first=1))
    for name in PUSHING:
        n = len(EXPECTED[name])
        assert sim.stats()["warehouses"][name]["callbacks"] == {
            "pushed": n, "acked": n, "retried": n, "failed": 0, "duplicated": 0}
        pushes = [r.body for r in receiver.received if r.warehouse == name]
        assert len(pushes) == 2 * n and len(set(pushes)) == n  # each event twice, same bytes


def test_a_push_never_acknowledged_fails_after_max_attempts() -> None:
    feedback = Feedback(step_delay=0.01, retry_delay=0.01, max_push_attempts=3)
    sim, receiver, _ = run(lambda: _run(["qimen-std"], feedback, refuse_first=99))
    assert sim.stats()["warehouses"]["qimen-std"]["callbacks"] == {
        "pushed": 5, "acked": 0, "retried": 10, "failed": 5, "duplicated": 0}
    assert len(receiver.received) == 15


def test_duplicate_push_rate_resends_acknowledged_events() -> None:
    sim, receiver, _ = run(lambda: _run(["cainiao"], Feedback(step_delay=0.01, duplicate_push_rate=1.0)))
    callbacks = sim.stats()["warehouses"]["cainiao"]["callbacks"]
    assert callbacks["pushed"] == 5 and callbacks["duplicated"] == 5
    events = [status_event("cainiao", r, KITS["cainiao"].context) for r in receiver.received]
    assert len(events) == 10
    assert len({(e["event_id"], e["status"]) for e in events}) == 5  # the re-sends carry the same event ids


def test_no_pushes_without_a_callback_base_or_with_feedback_disabled() -> None:
    async def body() -> dict[str, Any]:
        kit = KITS["qimen-std"]
        sim = Simulator([kit.warehouse()], feedback=Feedback(enabled=False))
        base = await sim.start()
        try:
            async with aiohttp.ClientSession() as session:
                await send(session, wire(kit, kit.create, base, order(order_no="NF-1")))
            await sim.drain(1)
            assert sim.order_stage("qimen-std", "NF-1") == "accepted"
            return sim.stats()
        finally:
            await sim.stop()

    stats = run(body)
    assert stats["warehouses"]["qimen-std"]["callbacks"]["pushed"] == 0


def _routes(receiver: Any) -> list[list[dict[str, Any]]]:
    """Each SF push's routes, as our inbound mapping reads them (its events), in arrival order."""
    kit, out = KITS["sf"], []
    for push in receiver.received:
        if push.warehouse != "sf":
            continue
        verify_signature(kit.kind, kit.secret_name, kit.secret, push)
        m = mapping(INBOUND[("sf", push.flow)])
        result = m.transform(m.parse_input(push.body), kit.context, validate=True)
        for event in result["events"]:
            jsonschema.validate(event, STATUS_EVENT)
        out.append(result["events"])
    return out


def test_sf_routes_of_many_orders_share_pushes_and_each_orders_arrive_in_order() -> None:
    """With route_batch, SF pushes carry routes of several orders (as SF's own pushes do): every
    route arrives once, no push holds more than the batch, and each order's routes are in the
    order of its steps (a lifecycle waits for the push that carried its route)."""
    feedback = Feedback(step_delay=0.01, route_batch=4, route_linger=0.05)
    sim, receiver, _ = run(lambda: _run(["sf"], feedback, orders=6))
    pushes = _routes(receiver)
    assert max(len(p) for p in pushes) <= 4 and any(len(p) > 1 for p in pushes)
    events = [e for p in pushes for e in p]
    by_order: dict[str, list[str]] = {}
    for e in events:
        by_order.setdefault(e["order_no"], []).append(e["status"])
    assert by_order == {f"FB-{i}": EXPECTED["sf"] for i in range(6)}
    assert len({e["event_id"] for e in events}) == len(events) == 6 * len(EXPECTED["sf"])
    callbacks = sim.stats()["warehouses"]["sf"]["callbacks"]
    assert callbacks["pushed"] == callbacks["acked"] == len(pushes) and callbacks["failed"] == 0


def test_a_refused_batch_is_pushed_again_whole() -> None:
    feedback = Feedback(step_delay=0.01, retry_delay=0.01, route_batch=3, route_linger=0.05)
    _sim, receiver, _ = run(lambda: _run(["sf"], feedback, refuse_first=1, orders=3))
    bodies = [r.body for r in receiver.received if r.warehouse == "sf"]
    assert len(bodies) == 2 * len(set(bodies))  # each push refused once, then sent again, same bytes
    events = [e for p in _routes(receiver) for e in p]
    assert len({e["event_id"] for e in events}) == 3 * len(EXPECTED["sf"])
