"""Warehouse callbacks through the service's HTTP endpoint, on SQLite and PostgreSQL: a signed
callback is applied once and acknowledged in the warehouse's words; a forged, tampered or replayed
one is refused with 401 and never applied; a repeated delivery is acknowledged but applied once;
an unreadable one is quarantined; recorded events reach the upstream webhook, signed."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import pytest
from test_service import example

from dockyard.service import store
from dockyard.simulate import Feedback
from dockyard.simulate.protocols import cainiao_callback, qimen_callback_query, qimen_confirm_xml


def _confirm(order_no: str, out_biz_code: str = "OBC-1") -> str:
    return qimen_confirm_xml(order_no=order_no, order_id="WMS-1", warehouse_code="WH-HZ-01",
                             out_biz_code=out_biz_code, when="2023-11-11 10:00:00", carrier="SF",
                             waybill="SF1234567890", weight="1.25", lines=[("1", "SKU-100215-STD", 1)])


async def _post_qimen(run: Any, body: str, *, secret: str | None = None, now: datetime | None = None,
                      tamper: bool = False) -> tuple[int, bytes]:
    context = {"methodPrefix": "taobao.qimen.", "appKey": "23456789", "customerId": "STD-C-1001"}
    query = qimen_callback_query("deliveryorder.confirm", context, body,
                                 secret or run.plan.secret_values["QIMEN_APP_SECRET"], now)
    sent = body.replace("SF1234567890", "SF0000000000") if tamper else body
    url = f"{run.url}/callbacks/qimen-std/deliveryorder.confirm?{urlencode(query)}"
    async with run.session.post(url, data=sent.encode(), headers={"Content-Type": "text/xml"}) as resp:
        return resp.status, await resp.read()


async def _events(run: Any) -> list[tuple[Any, ...]]:
    rows: list[tuple[Any, ...]] = await run.service.db.read(
        lambda c: c.execute("SELECT warehouse, event_id, order_no, status FROM dy_events ORDER BY event_id"))
    return rows


async def _delivered(run: Any, prefix: str, n: int) -> list[dict[str, Any]]:
    """n example orders numbered under `prefix`, sent in one batch and delivered."""
    orders = []
    for i in range(n):
        order = example()
        order["order_no"] = f"{prefix}{i:04d}"
        orders.append(order)
    await run.post("/orders/batch", orders)
    for order in orders:
        await run.until(order["order_no"], lambda d: d["delivery"] == "delivered")
    return orders


def _arrived(run: Any) -> dict[str, list[str]]:
    """Each order's event ids in the order the webhook first took them."""
    arrived: dict[str, list[str]] = {}
    for e in run.sim.upstream_events():
        seen = arrived.setdefault(e["order_no"], [])
        if e["event_id"] not in seen:
            seen.append(e["event_id"])
    return arrived


def test_a_signed_confirm_is_applied_once_and_acked_each_time(env: Any) -> None:
    async def main() -> None:
        async with env() as run:
            order = example()
            await run.post("/orders", order)
            await run.until(order["order_no"], lambda d: d["delivery"] == "delivered")
            body = _confirm(order["order_no"])
            for _ in range(2):
                status, ack = await _post_qimen(run, body)
                assert status == 200
                assert b"<flag>success</flag>" in ack
            assert await _events(run) == [("qimen-std", "OBC-1", order["order_no"], "shipped")]
            doc = await run.order(order["order_no"])
            assert doc["status"] == "shipped"
            assert [w["waybill_no"] for w in doc["waybills"]] == ["SF1234567890"]
            journal = await run.journal(order["order_no"])
            assert [s["outcome"] for s in journal if s["step"] == "feedback"] == ["ok", "duplicate"]
            # the one recorded event reaches the upstream webhook (which checks the HMAC)
            for _ in range(100):
                if run.sim.upstream_events():
                    break
                await asyncio.sleep(0.05)
            events = run.sim.upstream_events()
            assert [(e["order_no"], e["status"], e["event_id"]) for e in events] == [
                (order["order_no"], "shipped", "OBC-1")]
            assert run.sim.stats()["upstream"]["bad_signatures"] == 0

    asyncio.run(main())


def test_forged_tampered_and_replayed_callbacks_are_refused_and_not_applied(env: Any) -> None:
    async def main() -> None:
        async with env() as run:
            body = _confirm("TM20231111000123", "OBC-F")
            status, text = await _post_qimen(run, body, secret="TEST-ONLY-not-the-secret")
            assert status == 401 and b"does not match" in text
            status, _ = await _post_qimen(run, body, tamper=True)
            assert status == 401
            old = datetime.now(UTC) - timedelta(hours=1)
            status, text = await _post_qimen(run, body, now=old)
            assert status == 401 and b"old" in text
            async with run.session.post(f"{run.url}/callbacks/qimen-std/deliveryorder.confirm",
                                        data=body.encode()) as resp:
                assert resp.status == 401  # no signature at all
            assert await _events(run) == []
            rejected = await run.service.db.read(lambda c: c.execute(
                "SELECT outcome, detail FROM dy_journal WHERE step = 'callback-rejected'"))
            assert len(rejected) == 4 and {r[0] for r in rejected} == {"forged"}
            secret = run.plan.secret_values["QIMEN_APP_SECRET"]
            assert all(secret not in r[1] for r in rejected)
            async with run.session.post(f"{run.url}/callbacks/qimen-std/no-such-flow", data=b"x") as resp:
                assert resp.status == 404

    asyncio.run(main())


def test_an_unreadable_callback_is_quarantined_with_its_reason(env: Any) -> None:
    async def main() -> None:
        async with env() as run:
            status, _ = await _post_qimen(run, "<request><deliveryOrder>")
            assert status == 400
            kept = await run.service.db.read(lambda c: c.execute(
                "SELECT source, reasons FROM dy_quarantine"))
            assert len(kept) == 1 and kept[0][0] == "callback"
            assert "qimen-std/deliveryorder.confirm" in kept[0][1]
            assert await _events(run) == []

    asyncio.run(main())


def test_cainiao_form_callbacks_verify_on_the_digest(env: Any) -> None:
    async def main() -> None:
        async with env(warehouses=("cainiao",)) as run:
            order = example()  # routed to cainiao, the only warehouse: a callback may only touch its own orders
            await run.post("/orders", order)
            await run.until(order["order_no"], lambda d: d["delivery"] == "delivered")
            secret = run.plan.secret_values["CAINIAO_SECRET_KEY"]
            message = {"orderCode": order["order_no"], "status": "WMS_ACCEPT", "storeCode": "STORE_HZ_01",
                       "operateDate": "2023-11-11 10:00:00"}
            form = cainiao_callback("WMS_ORDER_STATUS_UPLOAD", message, secret=secret, hex_digest=False,
                                    provider="WMS_TEST_STORE", to_code="DOCKYARD_ERP_TEST", msg_id="M-1")
            url = f"{run.url}/callbacks/cainiao/order-status-upload"
            headers = {"Content-Type": "application/x-www-form-urlencoded"}
            async with run.session.post(url, data=urlencode(form), headers=headers) as resp:
                assert resp.status == 200, await resp.text()
                assert json.loads(await resp.read())["success"] in (True, "true")
            forged = dict(form, logistics_interface=form["logistics_interface"].replace("WMS_ACCEPT", "WMS_CANCEL"))
            async with run.session.post(url, data=urlencode(forged), headers=headers) as resp:
                assert resp.status == 401
            events = await _events(run)
            assert [(e[2], e[3]) for e in events] == [(order["order_no"], "accepted")]

    asyncio.run(main())


def test_a_signed_callback_for_another_warehouses_or_no_order_is_refused(env: Any) -> None:
    """A callback applies only to an order routed to that warehouse: one about a QIMEN order that
    comes in signed as Cainiao, or about no order at all, is refused (409), journaled as
    `foreign-order` / `unknown-order`, and never applied or forwarded."""
    async def main() -> None:
        async with env(warehouses=("qimen-std", "cainiao")) as run:
            order = example()  # the default route: qimen-std
            await run.post("/orders", order)
            await run.until(order["order_no"], lambda d: d["delivery"] == "delivered")
            secret = run.plan.secret_values["CAINIAO_SECRET_KEY"]
            url = f"{run.url}/callbacks/cainiao/order-status-upload"
            headers = {"Content-Type": "application/x-www-form-urlencoded"}
            for order_no, outcome in ((order["order_no"], "foreign-order"), ("NO-SUCH-ORDER-1", "unknown-order")):
                message = {"orderCode": order_no, "status": "TMS_SIGN", "storeCode": "STORE_HZ_01",
                           "operateDate": "2023-11-11 10:00:00"}
                form = cainiao_callback("WMS_ORDER_STATUS_UPLOAD", message, secret=secret, hex_digest=False,
                                        provider="WMS_TEST_STORE", to_code="DOCKYARD_ERP_TEST", msg_id=f"M-{outcome}")
                async with run.session.post(url, data=urlencode(form), headers=headers) as resp:
                    assert resp.status == 409, await resp.text()
                    assert f"not applied ({outcome})" in await resp.text()
                rows = await run.service.db.read(lambda c, o=order_no: c.execute(
                    "SELECT outcome FROM dy_journal WHERE step = 'feedback' AND order_no = ?", (o,)))
                assert rows == [(outcome,)]
            assert await _events(run) == []
            doc = await run.order(order["order_no"])
            assert doc["status"] != "signed"
            jobs = await run.service.db.read(lambda c: c.execute("SELECT COUNT(*) FROM dy_jobs WHERE lane = 'up'"))
            assert jobs == [(0,)]

    asyncio.run(main())


def test_simulated_feedback_flows_to_signed_upstream_events(env: Any) -> None:
    async def main() -> None:
        async with env(warehouses=("qimen-std", "cainiao", "sf"), feedback=Feedback(step_delay=0.01)) as run:
            from dockyard.sample_orders import generate

            orders = [o for o in generate(40, seed=11) if o["channel"] in ("tmall", "miniapp", "douyin")][:12]
            _status, body = await run.post("/orders/batch", orders)
            accepted = [r["order_no"] for r in body["results"] if r["status"] == "accepted"]
            for order_no in accepted:
                await run.until(order_no, lambda d: d["status"] == "signed" or d["delivery"] == "dlq", timeout=30)
            await run.sim.drain(30)
            for _ in range(200):
                recorded = len(await _events(run))
                if run.sim.stats()["upstream"]["unique_events"] == recorded:
                    break
                await asyncio.sleep(0.05)
            stats = run.sim.stats()
            acked = sum(w["callbacks"]["acked"] for w in stats["warehouses"].values())
            assert acked == recorded > 0
            assert stats["upstream"]["unique_events"] == recorded and stats["upstream"]["bad_signatures"] == 0

    asyncio.run(main())


def test_no_secret_reaches_the_store_the_answers_or_the_logs(env: Any, caplog: Any) -> None:
    """The canary: every secret of the run is looked for in every table of the store and in every
    answer the service gave, after deliveries, feedback, a forged callback and a dead letter."""
    async def main() -> None:
        async with env(warehouses=("qimen-std", "jd", "cainiao"), feedback=Feedback(step_delay=0.01)) as run:
            answers: list[bytes] = []
            for name in ("tmall-basic", "jd-three-decimal-discount", "all-lines-zero"):
                order = example(name)
                _status, body = await run.post("/orders", order)
                answers.append(json.dumps(body).encode())
                await run.until(order["order_no"], lambda d: d["delivery"] in ("delivered", "dlq"))
                answers.append(json.dumps(await run.order(order["order_no"])).encode())
            answers.append((await _post_qimen(run, _confirm("TM20231111000123", "C-9"), secret="TEST-ONLY-x"))[1])
            await run.sim.drain(30)
            dump = await run.service.db.read(lambda c: [
                repr(c.execute(f"SELECT * FROM {table}"))
                for table in ("dy_orders", "dy_jobs", "dy_events", "dy_quarantine", "dy_journal")])
            haystack = "\n".join(dump) + b"\n".join(answers).decode("utf-8", "replace") + caplog.text
            for name, value in run.plan.secret_values.items():
                assert value not in haystack, f"secret {name} leaked"

    asyncio.run(main())


def test_upstream_failures_are_retried_until_every_event_is_forwarded(env: Any) -> None:
    """With 30% of the webhook's posts failing, every recorded event still arrives, and each
    order's events arrive in the order they were recorded (a failed batch goes again before
    anything later of its partitions)."""
    async def main() -> None:
        from dockyard.simulate import Faults

        async with env() as run:
            # 30% of posts fail: with 8 attempts a batch is dead-lettered with odds of 0.3**8 (7e-5);
            # backoff (0.2 s doubling, capped at 5 s, jittered) can take ~20 s for an unlucky batch.
            run.sim.set_faults("_upstream", Faults(error_rate=0.3))
            orders = await _delivered(run, "TMUP", 20)
            sent: dict[str, list[str]] = {}
            for k in range(3):  # three events per order, recorded one after another
                for order in orders:
                    event_id = f"OBC-{order['order_no']}-{k}"
                    status, _ = await _post_qimen(run, _confirm(order["order_no"], event_id))
                    assert status == 200
                    sent.setdefault(order["order_no"], []).append(event_id)
            for _ in range(1200):
                if len({e["event_id"] for e in run.sim.upstream_events()}) >= 60:
                    break
                await asyncio.sleep(0.05)
            got = sorted({e["event_id"] for e in run.sim.upstream_events()})
            assert got == sorted(i for ids in sent.values() for i in ids)  # none lost
            arrived = _arrived(run)
            assert arrived == sent
            failed = await run.service.db.read(lambda c: c.execute(
                "SELECT COUNT(*) FROM dy_journal WHERE step = 'forward-failed'"))
            assert failed[0][0] > 0 and run.sim.stats()["upstream"]["faults"]["error"] > 0
            # The webhook has every event; the service journals a batch as forwarded once its
            # answer is back, in its next group commit, so the last rows may still be on their way.
            for _ in range(200):
                forwarded = await run.service.db.read(lambda c: c.execute(
                    "SELECT COUNT(*) FROM dy_journal WHERE step = 'forwarded'"))
                if forwarded[0][0] >= 60:
                    break
                await asyncio.sleep(0.05)
            assert forwarded[0][0] == 60  # journaled once per event, however often it went

    asyncio.run(main())


@pytest.mark.parametrize("bad", [["TMRF0005"], ["TMRF0001", "TMRF0003", "TMRF0005", "TMRF0007", "TMRF0009"]])
def test_an_event_the_webhook_refuses_holds_back_its_own_order_only(env: Any, bad: list[str]) -> None:
    """The webhook answers 422 to any batch holding an event of an order it does not take. The
    refused batches are sent in parts until those orders' events are found: every other order's
    events arrive, each order's in order, and only the refused orders end in the DLQ (their events
    in order), where a batch refused as a whole used to take every order that shared it there.
    With more refused orders than one round isolates (5 > ISOLATE_REFUSED), the rest of a batch
    backs off without counting attempts, so no good order is dead-lettered for its neighbours."""
    async def main() -> None:
        async with env(retry={"max_attempts": 3, "base_delay": 0.05, "max_delay": 0.2, "jitter": 0.0}) as run:
            orders = await _delivered(run, "TMRF", 12)
            run.sim.refuse_upstream(bad)
            # every event recorded in one commit, so that the forwarding loop reads them as one batch
            sent: dict[str, list[str]] = {}
            records = []
            for k in range(2):
                for order in orders:
                    event_id = f"OBC-{order['order_no']}-{k}"
                    records.append(store.EventRecord({"order_no": order["order_no"], "status": "DELIVERED",
                                                      "event_id": event_id}, event_id))
                    sent.setdefault(order["order_no"], []).append(event_id)
            await run.service.db.write(store.RecordEventsOp("qimen-std", "deliveryorder.confirm", records,
                                                            forward=True, received_at=0))
            good = {o: ids for o, ids in sent.items() if o not in bad}
            for _ in range(600):
                left = await run.service.db.read(lambda c: c.execute("SELECT COUNT(*) FROM dy_forwards"))
                if left[0][0] == 0:
                    break
                await asyncio.sleep(0.05)
            assert left[0][0] == 0
            arrived = _arrived(run)
            assert arrived == good  # every other order's events, in order; none of the refused one's
            dead = await run.service.db.read(lambda c: c.execute(
                "SELECT order_no, payload FROM dy_jobs WHERE lane = 'up' AND state = 'dead' ORDER BY id"))
            assert {row[0] for row in dead} == set(bad)  # the refused orders wait for a person, no other
            for order_no in bad:  # each one's events in order (a later one held while the first was tried)
                assert [json.loads(x)["event_id"] for o, payload in dead if o == order_no
                        for x in payload.split(store.EVENT_SEPARATOR)] == sent[order_no]
            failed = await run.service.db.read(lambda c: c.execute(
                "SELECT DISTINCT order_no FROM dy_journal WHERE step = 'forward-failed' ORDER BY order_no"))
            assert [row[0] for row in failed] == bad
            assert run.sim.stats()["upstream"]["refused"] > 0

    asyncio.run(main())
