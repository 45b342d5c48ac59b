"""The service end to end over real HTTP, on SQLite and on PostgreSQL: ingest and quarantine,
duplicates and conflicts, delivery with retries, the dead-letter queue and replay, in-doubt
handling by each duplicate rule, cancels, and the journal."""

from __future__ import annotations

import asyncio
import copy
import json
from pathlib import Path
from typing import Any

import pytest

from dockyard.service import queries, store
from dockyard.service.db import now_us
from dockyard.simulate import Faults

ROOT = Path(__file__).resolve().parents[2]


def example(name: str = "tmall-basic") -> dict[str, Any]:
    data: dict[str, Any] = json.loads((ROOT / "examples" / "orders" / f"{name}.json").read_text(encoding="utf-8"))
    return data


def delivered(doc: dict[str, Any]) -> bool:
    return doc["delivery"] == "delivered"


def steps(journal: list[dict[str, Any]]) -> list[str]:
    return [s["step"] for s in journal]


def test_an_order_is_recorded_delivered_once_and_journaled(env: Any) -> None:
    async def main() -> None:
        async with env() as run:
            order = example()
            status, body = await run.post("/orders", order)
            assert status == 202, body
            assert body["status"] == "accepted" and len(body["tracking_id"]) == 32
            doc = await run.until(order["order_no"], delivered)
            assert doc["warehouse"] == "qimen-std" and doc["warehouse_order_id"]
            assert run.sim.received("qimen-std") == {order["order_no"]: 1}
            journal = await run.journal(order["order_no"])
            assert steps(journal)[:7] == ["received", "validated", "routed", "transformed", "sent", "response",
                                          "committed"]
            sent = next(s for s in journal if s["step"] == "sent")["detail"]
            assert sent["url"].endswith("/qimen-std/router/qimen/service") and "?" not in sent["url"]
            # the same order again: acknowledged, nothing more is sent
            status, body = await run.post("/orders", order)
            assert (status, body["status"]) == (200, "duplicate")
            await asyncio.sleep(0.3)
            assert run.sim.received("qimen-std") == {order["order_no"]: 1}

    asyncio.run(main())


def test_changed_content_under_the_same_order_number_is_a_kept_conflict(env: Any) -> None:
    async def main() -> None:
        async with env() as run:
            order = example()
            assert (await run.post("/orders", order))[0] == 202
            changed = copy.deepcopy(order)
            changed["remark"] = "another remark"
            status, body = await run.post("/orders", changed)
            assert status == 409 and body["status"] == "conflict"
            assert "different content" in body["reason"]
            kept = await run.service.db.read(lambda c: c.execute(
                "SELECT order_no, reasons, body FROM dy_quarantine WHERE source = 'order'"))
            assert [(k[0], "another remark" in k[2]) for k in kept] == [(order["order_no"], True)]

    asyncio.run(main())


def test_bad_orders_get_every_reason_and_are_quarantined(env: Any) -> None:
    async def main() -> None:
        async with env(overrides={"limits": {"max_depth": 8, "max_batch": 3, "max_lines": 5,
                                             "max_body_bytes": 200_000}}) as run:
            bad = example()
            del bad["receiver"]["province"]
            bad["items"][0]["qty"] = "two"
            bad["created_at"] = "yesterday"
            status, body = await run.post("/orders", bad)
            assert status == 422 and body["status"] == "quarantined"
            text = "\n".join(body["reasons"])
            for expected in ("receiver: 'province' is required", "items[0].qty", "created_at"):
                assert expected in text, text
            status, body = await run.post("/orders", raw=b'{"order_no": "X1", ')
            assert status == 400 and "not valid JSON" in body["reasons"][0]
            deep: Any = 1
            for _ in range(20):
                deep = [deep]
            status, body = await run.post("/orders", {"order_no": "DEEP", "x": deep})
            assert status == 400 and "deeper than 8" in body["reasons"][0]
            many = example()
            many["items"] = many["items"] * 2
            status, body = await run.post("/orders", many)
            assert status == 422 and "limit of 5" in body["reasons"][0]
            status, body = await run.post("/orders/batch", [example()] * 4)
            assert status == 413 and "limit is 3" in body["reasons"][0]
            status, _ = await run.post("/orders", raw=b" " * 300_000)
            assert status == 413
            kept = await run.service.db.read(lambda c: c.execute("SELECT reasons FROM dy_quarantine ORDER BY id"))
            assert len(kept) == 5  # every refused body is kept with its reasons (the 413 body was never read)
            assert json.loads(kept[0][0]) == [r for r in json.loads(kept[0][0])]
            counts = (await run.get("/stats"))[1]
            assert counts["quarantined"] == 5

    asyncio.run(main())


def test_a_batch_answers_per_order(env: Any) -> None:
    async def main() -> None:
        async with env(warehouses=("qimen-std", "jd")) as run:
            good, jd, bad = example(), example("jd-three-decimal-discount"), example("douyin-trimmed-money")
            del bad["items"]
            status, body = await run.post("/orders/batch", {"orders": [good, jd, bad, good]})
            assert status == 207
            assert [r["status"] for r in body["results"]] == ["accepted", "accepted", "quarantined", "duplicate"]
            assert body["results"][1]["warehouse"] == "jd"
            await run.until(jd["order_no"], delivered)
            assert run.sim.received("jd") == {jd["order_no"]: 1}

    asyncio.run(main())


def test_retryable_failures_back_off_then_deliver(env: Any) -> None:
    async def main() -> None:
        async with env(faults={"qimen-std": Faults(error_rate=1.0)}) as run:
            order = example()
            await run.post("/orders", order)
            await asyncio.sleep(1.0)
            assert run.sim.received("qimen-std") == {}  # a 5xx is not processed
            run.sim.set_faults("qimen-std", Faults())
            doc = await run.until(order["order_no"], delivered)
            create = doc["jobs"][0]
            assert create["attempts"] > 1 and create["state"] == "done"
            journal = await run.journal(order["order_no"])
            assert "retry" in steps(journal)
            assert run.sim.received("qimen-std") == {order["order_no"]: 1}

    asyncio.run(main())


def test_a_refused_order_goes_to_the_dlq_and_replays_once_fixed(env: Any) -> None:
    async def main() -> None:
        async with env(warehouses=("jd",)) as run:
            order = example("all-lines-zero")  # JD refuses an order with nothing to ship
            await run.post("/orders", order)
            doc = await run.until(order["order_no"], lambda d: d["delivery"] == "dlq")
            job = doc["jobs"][0]
            assert job["state"] == "dead" and "cargoes" in job["reason"]
            listed = await run.service.db.read(lambda c: queries.dlq_list(c))
            assert [(d["id"], d["state"]) for d in listed] == [(job["id"], "dead")]
            shown = await run.service.db.read(lambda c: queries.dlq_show(c, job["id"]))
            assert shown is not None and "dead-lettered" in steps(shown["history"])
            # replayed unchanged, it fails the same way; replaying a job that is not dead does nothing
            fixed = copy.deepcopy(order)
            fixed["items"][0]["qty"] = 1
            from dockyard.service.ingest import fingerprint

            def fix_and_replay(conn: Any) -> Any:
                conn.execute("UPDATE dy_orders SET payload = ?, fingerprint = ? WHERE order_no = ?",
                             (json.dumps(fixed, ensure_ascii=False), fingerprint(fixed), order["order_no"]))
                return store.replay(conn, [job["id"]], now_us(), "test")

            assert await run.service.db.write(fix_and_replay) == [(job["id"], "replayed")]
            run.service.deliverer.poke("jd")
            await run.until(order["order_no"], delivered)
            again = await run.service.db.write(lambda c: store.replay(c, [job["id"]], now_us(), "test"))
            assert again == [(job["id"], "not replayed: the job is done")]
            assert run.sim.received("jd") == {order["order_no"]: 1}
            assert "replayed" in steps(await run.journal(order["order_no"]))

    asyncio.run(main())


def test_an_unknown_outcome_under_skip_is_held_never_resent(env: Any) -> None:
    # Cainiao LINK offers no query and no documented duplicate answer: its create's rule is `skip`.
    async def main() -> None:
        async with env(warehouses=("cainiao",), faults={"cainiao": Faults(timeout_rate=1.0, timeout_seconds=3.0)},
                       timeout=0.5) as run:
            order = example("miniapp-whitespace-address")
            await run.post("/orders", order)
            doc = await run.until(order["order_no"], lambda d: d["delivery"] == "in_doubt")
            assert doc["warehouse"] == "cainiao" and doc["jobs"][0]["state"] == "held"
            assert "neither resends nor queries" in doc["jobs"][0]["reason"]
            await asyncio.sleep(1.0)
            assert run.sim.received("cainiao") == {order["order_no"]: 1}  # it did arrive, exactly once
            listed = await run.service.db.read(lambda c: queries.dlq_list(c))
            assert [d["state"] for d in listed] == ["in_doubt"]
            summary = (await run.get("/stats"))[1]
            assert summary["in_doubt"] == 1

    asyncio.run(main())


def test_an_unknown_outcome_under_query_asks_the_warehouse(env: Any) -> None:
    async def main() -> None:
        async with env(warehouses=("sf",), faults={"sf": Faults(timeout_rate=1.0, timeout_seconds=2.0)},
                       timeout=0.5) as run:
            order = example("douyin-trimmed-money")
            await run.post("/orders", order)
            await run.until(order["order_no"], lambda d: str(d["jobs"][0]["reason"]).startswith("in doubt"))
            run.sim.set_faults("sf", Faults())
            doc = await run.until(order["order_no"], delivered)
            journal = await run.journal(order["order_no"])
            assert "resolved" in steps(journal)
            assert next(s for s in journal if s["step"] == "resolved")["outcome"] == "delivered"
            assert run.sim.received("sf") == {order["order_no"]: 1}  # found by the query, not created again
            assert doc["jobs"][0]["state"] == "done"

    asyncio.run(main())


# The QIMEN and JD creates (rule `query`) and an order of each that routes there; the id each
# simulated warehouse gives an order starts with its prefix (dockyard/simulate/warehouses.py).
QUERIED = {"qimen-std": ("tmall-basic", "WMS-DO-"), "jd": ("jd-three-decimal-discount", "ESO")}


def _resolved(journal: list[dict[str, Any]]) -> list[str]:
    return [s["outcome"] for s in journal if s["step"] == "resolved"]


def _create_request_ids(journal: list[dict[str, Any]]) -> list[str]:
    return [s["detail"]["request_id"] for s in journal
            if s["step"] == "transformed" and s["flow"] == "create" and s.get("detail")]


@pytest.mark.parametrize("warehouse", sorted(QUERIED))
def test_an_unknown_outcome_found_by_the_query_is_delivered_without_a_resend(env: Any, warehouse: str) -> None:
    name, prefix = QUERIED[warehouse]

    async def main() -> None:
        # The warehouse processes the create, but its answer comes too late: in doubt, and there.
        async with env(warehouses=(warehouse,), faults={warehouse: Faults(timeout_rate=1.0, timeout_seconds=2.0)},
                       timeout=0.5) as run:
            order = example(name)
            await run.post("/orders", order)
            await run.until(order["order_no"], lambda d: str(d["jobs"][0]["reason"]).startswith("in doubt"))
            assert run.sim.received(warehouse) == {order["order_no"]: 1}
            run.sim.set_faults(warehouse, Faults())
            doc = await run.until(order["order_no"], delivered)
            assert doc["jobs"][0]["state"] == "done" and doc["warehouse"] == warehouse
            assert str(doc["warehouse_order_id"]).startswith(prefix)  # the original's id, from the query
            journal = await run.journal(order["order_no"])
            assert _resolved(journal)[-1] == "delivered"
            assert run.sim.received(warehouse) == {order["order_no"]: 1}  # found, not created again
            assert run.sim.stats()["warehouses"][warehouse]["queries"] >= 1
            assert len(set(_create_request_ids(journal))) == 1  # the create went out once

    asyncio.run(main())


@pytest.mark.parametrize("warehouse", sorted(QUERIED))
def test_an_unknown_outcome_the_query_does_not_find_is_sent_again(env: Any, warehouse: str) -> None:
    name, prefix = QUERIED[warehouse]

    async def main() -> None:
        # The create is lost on the way (read, never processed, never answered): in doubt, and NOT there.
        async with env(warehouses=(warehouse,), faults={warehouse: Faults(lost_rate=1.0, timeout_seconds=2.0)},
                       timeout=0.5) as run:
            order = example(name)
            await run.post("/orders", order)
            await run.until(order["order_no"], lambda d: str(d["jobs"][0]["reason"]).startswith("in doubt"))
            assert run.sim.received(warehouse) == {}
            run.sim.set_faults(warehouse, Faults())
            doc = await run.until(order["order_no"], delivered)
            assert doc["jobs"][0]["state"] == "done" and str(doc["warehouse_order_id"]).startswith(prefix)
            journal = await run.journal(order["order_no"])
            assert "absent" in _resolved(journal)  # the query: not at the warehouse
            assert run.sim.received(warehouse) == {order["order_no"]: 1}  # sent again, received once
            ids = _create_request_ids(journal)
            assert len(set(ids)) == 2, ids  # the resend went out with a new request id

    asyncio.run(main())


def test_cancel_before_delivery_after_delivery_and_too_late(env: Any) -> None:
    async def main() -> None:
        async with env(faults={"qimen-std": Faults(error_rate=1.0)}) as run:
            first = example()
            await run.post("/orders", first)
            await asyncio.sleep(0.3)  # tried once (5xx): the cancel now queues behind the create
            status, body = await run.post(f"/orders/{first['order_no']}/cancel")
            assert (status, body["status"]) == (202, "queued")
            run.sim.set_faults("qimen-std", Faults())
            doc = await run.until(first["order_no"], lambda d: d["status"] == "cancelled")
            assert [j["kind"] for j in doc["jobs"]] == ["create", "cancel"]
            assert all(j["state"] == "done" for j in doc["jobs"])
            assert run.sim.order_stage("qimen-std", first["order_no"]) == "cancelled"

            late = example("hostile-remark")
            await run.post("/orders", late)
            await run.until(late["order_no"], delivered)
            run.sim.set_stage("qimen-std", late["order_no"], "picking")
            status, body = await run.post(f"/orders/{late['order_no']}/cancel")
            assert status == 202
            doc = await run.until(late["order_no"], lambda d: len(d["jobs"]) == 2 and d["jobs"][1]["state"] == "done")
            assert doc["status"] != "cancelled"
            assert "cancel refused" in doc["jobs"][1]["reason"]
            journal = await run.journal(late["order_no"])
            refused = next(s for s in journal if s["step"] == "cancel-refused")
            assert "不能取消" in refused["detail"]["reason"]
            status, body = await run.post("/orders/NO-SUCH-ORDER/cancel")
            assert status == 404

    asyncio.run(main())


def test_a_cancel_before_anything_was_sent_never_reaches_the_warehouse(env: Any) -> None:
    async def main() -> None:
        async with env() as run:
            order = example()

            def record_only(conn: Any) -> Any:  # accepted but not yet claimed by a worker
                from dockyard.service.ingest import fingerprint

                return store.ingest(conn, [store.IngestItem(order["order_no"], "t1", "qimen-std", None, None,
                                                            fingerprint(order), json.dumps(order), now_us(), "test",
                                                            False)], now_us())

            await run.service.deliverer.stop()  # no worker: the create stays queued
            await run.service.db.write(record_only)
            status, body = await run.post(f"/orders/{order['order_no']}/cancel")
            assert (status, body["status"]) == (200, "cancelled")
            doc = await run.order(order["order_no"])
            assert (doc["status"], doc["delivery"]) == ("cancelled", "cancelled")
            assert run.sim.received("qimen-std") == {}

    asyncio.run(main())


def test_one_failing_warehouse_never_stalls_another(env: Any) -> None:
    async def main() -> None:
        async with env(warehouses=("qimen-std", "jd"),
                       faults={"qimen-std": Faults(slow_rate=1.0, slow_seconds=3.0)}, concurrency=2) as run:
            from dockyard.sample_orders import generate

            orders = generate(60, seed=5)
            await run.post("/orders/batch", orders)
            jd = [o["order_no"] for o in orders if o["channel"] == "jd"]
            assert jd
            for order_no in jd:
                await run.until(order_no, lambda d: d["delivery"] in ("delivered", "dlq"), timeout=10)
            slow_done = sum(1 for n in run.sim.received("qimen-std"))
            assert slow_done <= 4  # two slots, each busy for 3 s: the JD orders did not wait for them

    asyncio.run(main())


def test_trace_shows_the_whole_chain(env: Any) -> None:
    async def main() -> None:
        async with env() as run:
            order = example()
            await run.post("/orders", order)
            await run.until(order["order_no"], delivered)
            journal = await run.journal(order["order_no"])
            text = queries.format_timeline(order["order_no"], journal)
            for step in ("received", "routed", "transformed", "sent", "response", "committed"):
                assert step in text
            assert "TEST-ONLY" not in json.dumps(journal)

    asyncio.run(main())


def test_serving_freezes_what_start_loaded_out_of_the_collectors_sight(tmp_path: Path, store_url: str,
                                                                        bundle_dir: Path) -> None:
    """`serve` (run_forever) puts everything loaded at start — the bundles' mappings, libraries, the
    config — in the collector's permanent generation, so that a full collection (which runs on the
    event loop) walks only what the service made since, and collects young objects only after
    SERVE_GC_THRESHOLDS[0] more are alive (not Python's 700); it serves as before, and stops on SIGTERM."""
    import gc
    import os
    import signal

    import aiohttp

    from dockyard.demo import DemoPlan, free_port
    from dockyard.service.app import SERVE_GC_THRESHOLDS, Service, run_forever
    from dockyard.service.config import load_config
    from dockyard.service.context import ServiceContext

    work = tmp_path / "work"
    work.mkdir()
    (work / "bundle").symlink_to(bundle_dir)
    port = free_port()
    plan = DemoPlan(work, ROOT / "mappings", store=store_url)
    plan.sim_base = "http://127.0.0.1:9"  # no warehouse is called: no order is sent
    config = load_config(plan.write(port))
    service = Service(ServiceContext.build(config))
    seen: dict[str, Any] = {}

    async def check(url: str) -> None:
        seen["frozen"] = gc.get_freeze_count()
        seen["thresholds"] = gc.get_threshold()
        async with aiohttp.ClientSession() as session, session.get(f"{url}/healthz") as resp:
            seen["health"] = resp.status
        os.kill(os.getpid(), signal.SIGTERM)  # run_forever's handler stops the service

    async def main() -> None:
        tasks: list[asyncio.Task[None]] = []
        await run_forever(service, lambda url: tasks.append(asyncio.get_running_loop().create_task(check(url))))
        await asyncio.gather(*tasks)

    gc.unfreeze()
    thresholds = gc.get_threshold()
    try:
        asyncio.run(asyncio.wait_for(main(), 60))
    finally:
        gc.unfreeze()  # the rest of the test run collects as before
        gc.set_threshold(*thresholds)
    assert seen["health"] == 200
    assert seen["frozen"] > 10_000  # the service's modules, mappings and config, at least
    assert seen["thresholds"] == SERVE_GC_THRESHOLDS
    assert SERVE_GC_THRESHOLDS[0] > thresholds[0]
