"""Faults on demand (rates honoured, reproducible with a seed, processed or not as documented),
the upstream webhook receiver, and the control endpoints."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import orjson
import pytest
from simkit import KITS, Wire, order, outcome, run, send, wire

from dockyard.simulate import Faults, Feedback, Simulator
from dockyard.simulate.faults import pick_fault
from dockyard.simulate.protocols import upstream_sign


async def _sim(faults: Faults, seed: int = 11) -> tuple[Simulator, str]:
    sim = Simulator([KITS["jd"].warehouse(faults=faults)], feedback=Feedback(enabled=False), seed=seed)
    return sim, await sim.start()


async def _send_all(base: str, n: int, prefix: str) -> list[tuple[int, bytes]]:
    kit = KITS["jd"]
    wires = [wire(kit, kit.create, base, order(order_no=f"{prefix}-{i}")) for i in range(n)]
    async with aiohttp.ClientSession() as session:
        return [await send(session, w) for w in wires]  # sequential: the fault sequence is reproducible


def test_error_and_garbage_rates_are_roughly_honoured_and_reproducible() -> None:
    faults = Faults(error_rate=0.2, garbage_rate=0.1)

    async def once() -> tuple[list[int], dict[str, Any], dict[str, int]]:
        sim, base = await _sim(faults)
        try:
            answers = await _send_all(base, 300, "R")
            kinds = []
            for status, body in answers:
                if status == 503:
                    kinds.append(503)
                elif body.startswith(b"<!DOCTYPE html>"):
                    kinds.append(1)  # garbage: an HTML page with HTTP 200
                else:
                    assert outcome(KITS["jd"], body)["result"] == "accepted"
                    kinds.append(200)
            return kinds, sim.stats()["warehouses"]["jd"], sim.received("jd")
        finally:
            await sim.stop()

    kinds, stats, received = run(once)
    errors, garbage = kinds.count(503), kinds.count(1)
    assert 40 <= errors <= 80 and 15 <= garbage <= 45, (errors, garbage)
    assert stats["faults"]["error"] == errors and stats["faults"]["garbage"] == garbage
    # A 5xx was not processed; a garbage answer was.
    assert stats["creates"] == 300 - errors == len(received)
    again, _, _ = run(once)
    assert again == kinds  # same seed, same requests: same faults


def test_timeout_and_reset_are_processed_but_unanswered_slow_is_answered_late() -> None:
    kit = KITS["jd"]

    async def body() -> None:
        sim, base = await _sim(Faults(timeout_rate=1.0, timeout_seconds=5.0))
        try:
            async with aiohttp.ClientSession() as session:
                with pytest.raises(asyncio.TimeoutError):
                    await send(session, wire(kit, kit.create, base, order(order_no="T-1")), timeout=0.3)
                assert sim.received("jd") == {"T-1": 1}  # in doubt for the client, but the order is there
                sim.set_faults("jd", Faults(reset_rate=1.0))
                with pytest.raises(aiohttp.ClientError):
                    await send(session, wire(kit, kit.create, base, order(order_no="T-2")))
                assert sim.received("jd") == {"T-1": 1, "T-2": 1}
                sim.set_faults("jd", Faults(slow_rate=1.0, slow_seconds=0.2))
                started = time.monotonic()
                status, answer = await send(session, wire(kit, kit.create, base, order(order_no="T-3")))
                assert time.monotonic() - started >= 0.2
                assert status == 200 and outcome(kit, answer)["result"] == "accepted"
                sim.set_faults("jd", Faults())
                _, answer = await send(session, wire(kit, kit.create, base, order(order_no="T-1")))
                assert outcome(kit, answer)["result"] == "duplicate"
            faults = sim.stats()["warehouses"]["jd"]["faults"]
            assert faults == {"error": 0, "timeout": 1, "slow": 1, "reset": 1, "garbage": 0, "lost": 0}
        finally:
            await sim.stop()

    run(body)


def test_a_lost_request_is_unanswered_and_not_processed() -> None:
    kit = KITS["jd"]
    query, response = "jd/query-order.yaml", "jd/query-response.yaml"

    async def body() -> None:
        sim, base = await _sim(Faults(lost_rate=1.0, timeout_seconds=0.2))
        try:
            async with aiohttp.ClientSession() as session:
                started = time.monotonic()
                with pytest.raises(aiohttp.ClientError):  # dropped, never answered
                    await send(session, wire(kit, kit.create, base, order(order_no="L-1")))
                assert time.monotonic() - started >= 0.2
                with pytest.raises(asyncio.TimeoutError):  # a client that gives up first: in doubt
                    await send(session, wire(kit, kit.create, base, order(order_no="L-2")), timeout=0.05)
                await asyncio.sleep(0.3)
                assert sim.received("jd") == {}  # in doubt for the client, but nothing is there
                sim.set_faults("jd", Faults())
                _, answer = await send(session, wire(kit, query, base, order(order_no="L-1")))
                assert outcome(kit, answer, response)["result"] == "retryable"  # the query says: not found
            stats = sim.stats()["warehouses"]["jd"]
            assert stats["faults"]["lost"] == 2 and stats["creates"] == 0
        finally:
            await sim.stop()

    run(body)


def test_pick_fault_is_none_without_rates_and_faults_are_checked() -> None:
    import random

    assert pick_fault(Faults(), random.Random(1)) is None
    with pytest.raises(ValueError, match="sum to at most 1"):
        Faults(error_rate=0.7, reset_rate=0.7)
    with pytest.raises(ValueError, match="unknown fault setting"):
        Faults.from_mapping({"eror_rate": 0.1})


def test_control_endpoints() -> None:
    async def body() -> None:
        sim, base = await _sim(Faults())
        try:
            await _send_all(base, 2, "CTL")
            async with aiohttp.ClientSession() as session:
                async with session.get(f"{base}/_sim/stats") as resp:
                    stats = await resp.json()
                assert stats["warehouses"]["jd"]["creates"] == 2
                async with session.get(f"{base}/_sim/received/jd") as resp:
                    assert await resp.json() == {"CTL-0": 1, "CTL-1": 1}
                async with session.post(f"{base}/_sim/faults/jd", json={"error_rate": 1}) as resp:
                    assert resp.status == 200
                async with session.post(f"{base}/_sim/faults/jd", json={"nope": 1}) as resp:
                    assert resp.status == 400
                async with session.get(f"{base}/_sim/received/nobody") as resp:
                    assert resp.status == 404
            answers = await _send_all(base, 1, "CTL-X")
            assert answers[0][0] == 503
        finally:
            await sim.stop()

    run(body)


def _events(*pairs: tuple[str, str]) -> bytes:
    return orjson.dumps([{"order_no": o, "status": s, "event_id": f"{o}-{s}", "warehouse": "W"} for o, s in pairs])


def test_upstream_receiver_verifies_counts_and_fails_on_demand() -> None:
    async def body() -> dict[str, Any]:
        sim = Simulator([], feedback=Feedback(enabled=False), upstream_secret="up-secret")
        base = await sim.start()
        url = f"{base}/_upstream/events"
        try:
            async with aiohttp.ClientSession() as session:
                async def post(data: bytes, signature: str | None) -> int:
                    headers = {"Content-Type": "application/json"}
                    if signature is not None:
                        headers["X-Dockyard-Signature"] = signature
                    return (await send(session, Wire("POST", url, headers, data)))[0]

                first = _events(("O-1", "accepted"), ("O-1", "shipped"), ("O-2", "accepted"))
                assert await post(first, upstream_sign(first, "up-secret")) == 200
                repeat = _events(("O-1", "shipped"))
                assert await post(repeat, upstream_sign(repeat, "up-secret")) == 200
                assert await post(repeat, upstream_sign(repeat, "other")) == 401
                assert await post(repeat, None) == 401
                assert await post(b"{}", upstream_sign(b"{}", "up-secret")) == 400
                sim.set_faults("_upstream", Faults(error_rate=1.0))
                assert await post(repeat, upstream_sign(repeat, "up-secret")) == 503
            assert len(sim.upstream_events()) == 4
            assert sim.upstream_received() == {"O-1": 3, "O-2": 1}
            return sim.stats()["upstream"]
        finally:
            await sim.stop()

    stats = run(body)
    assert stats["events"] == 4 and stats["unique_events"] == 3 and stats["orders"] == 2
    assert stats["bad_signatures"] == 2 and stats["invalid"] == 1 and stats["faults"]["error"] == 1


def test_concurrent_creates_are_all_counted() -> None:
    kit = KITS["qimen-std"]

    async def body() -> dict[str, int]:
        sim = Simulator([kit.warehouse()], feedback=Feedback(enabled=False))
        base = await sim.start()
        try:
            wires = [wire(kit, kit.create, base, order(order_no=f"P-{i % 100}")) for i in range(200)]
            async with aiohttp.ClientSession() as session:
                answers = await asyncio.gather(*(send(session, w) for w in wires))
            results = [outcome(kit, b)["result"] for _, b in answers]
            assert results.count("accepted") == 100 and results.count("duplicate") == 100
            return sim.received(kit.name)
        finally:
            await sim.stop()

    received = run(body)
    assert len(received) == 100 and set(received.values()) == {2}
