"""Replay where the signature does not cover the dedupe key: a Cainiao LINK digest covers only
`logistics_interface`, not `msg_id`. A captured callback sent again with a new or absent `msg_id`
is acknowledged but neither applied nor forwarded again: its identity rests on what is signed.
QIMEN's signed outBizCode (inside the signed XML) stays the identity, so a redelivery the
warehouse signs again is still one event. On SQLite and PostgreSQL; plus the rule itself, without
a server, over every shipped callback mapping."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from urllib.parse import urlencode

import pytest
from seckit import Env, service

from dockyard.compiler.api import compile_file
from dockyard.runtime.mapping import CompiledMapping
from dockyard.service.config import CallbackConfig, VerifyConfig
from dockyard.service.replay import dedupe_identity, event_id_sources, signed_input
from dockyard.simulate.protocols import cainiao_callback, qimen_callback_query, qimen_process_xml

ROOT = Path(__file__).resolve().parents[2]
MESSAGE = {"orderCode": "MP20231108000388", "status": "WMS_ACCEPT", "storeCode": "STORE_HZ_01",
           "operateDate": "2023-11-11 10:00:00"}


async def _upload(env: Env, form: dict[str, str]) -> int:
    status, answer, _ = await env.request("POST", "/callbacks/cainiao/order-status-upload", body=urlencode(form),
                                          headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert json.loads(answer)["success"] in (True, "true"), answer
    return status


async def _forwarded(env: Env, expected: int, timeout: float = 10.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while len(env.sim.upstream_events()) < expected and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)  # and nothing more arrives
    return [e["raw_status"] for e in env.sim.upstream_events()]


def test_a_captured_cainiao_callback_with_another_msg_id_is_not_applied_again(tmp_path: Path, store_url: str,
                                                                              bundle_dir: Path) -> None:
    async def main() -> None:
        async with service(tmp_path, store_url, bundle_dir, warehouses=("cainiao",)) as env:
            assert await env.placed("miniapp-whitespace-address") == MESSAGE["orderCode"]
            secret = env.plan.secret_values["CAINIAO_SECRET_KEY"]
            form = cainiao_callback("WMS_ORDER_STATUS_UPLOAD", MESSAGE, secret=secret, hex_digest=False,
                                    provider="WMS_TEST_STORE", to_code="DOCKYARD_ERP_TEST", msg_id="M-1")
            assert await _upload(env, form) == 200
            for replay in ({**form, "msg_id": "M-2"}, {k: v for k, v in form.items() if k != "msg_id"},
                           {**form, "msg_id": ""}, {**form, "msg_type": "WMS_ORDER_STATUS_UPLOAD", "msg_id": "M-1"}):
                assert await _upload(env, replay) == 200  # acknowledged: LINK stops sending it
            events = await env.events()
            assert len(events) == 1 and events[0][1].startswith("sha256:")
            assert await _forwarded(env, 1) == ["WMS_ACCEPT"]
            journal = await env.rows("SELECT outcome FROM dy_journal WHERE step = 'feedback' ORDER BY id")
            assert [o for (o,) in journal] == ["duplicate"] * 4  # the applied one is its event's row (schema v9)
            assert await env.rows("SELECT COUNT(*) FROM dy_events WHERE recorded_at IS NOT NULL") == [(1,)]
            # a genuinely new message (other signed content) is a new event
            later = cainiao_callback("WMS_ORDER_STATUS_UPLOAD", {**MESSAGE, "operateDate": "2023-11-11 11:00:00"},
                                     secret=secret, hex_digest=False, provider="WMS_TEST_STORE",
                                     to_code="DOCKYARD_ERP_TEST", msg_id="M-2")
            assert await _upload(env, later) == 200
            assert len(await env.events()) == 2
            assert await _forwarded(env, 2) == ["WMS_ACCEPT", "WMS_ACCEPT"]
            await env.alive()

    asyncio.run(main())


# -- the rule, without a server -----------------------------------------------------------------

CAINIAO_VERIFY = VerifyConfig(scheme="cainiao-link", secret="S", params="form", body="form.logistics_interface")
QIMEN_VERIFY = VerifyConfig(scheme="qimen-md5", secret="S", params="query")


@pytest.fixture(scope="module")
def mappings() -> dict[str, CompiledMapping]:
    return {name: compile_file(ROOT / "mappings" / f"{name}.yaml") for name in
            ("cainiao/order-status-upload", "cainiao/consign-order-confirm", "qimen/deliveryorder.confirm",
             "qimen/orderprocess.report", "sf/route-push")}


def test_which_event_ids_are_made_of_signed_fields(mappings: dict[str, CompiledMapping]) -> None:
    assert event_id_sources(mappings["cainiao/order-status-upload"]) == {"msg_id"}
    assert event_id_sources(mappings["cainiao/consign-order-confirm"]) == {"logistics_interface"}
    assert event_id_sources(mappings["qimen/deliveryorder.confirm"]) == {"deliveryOrder"}
    assert event_id_sources(mappings["qimen/orderprocess.report"]) is None


def test_the_identity_rests_on_signed_content(mappings: dict[str, CompiledMapping]) -> None:
    upload = mappings["cainiao/order-status-upload"]
    cfg = CallbackConfig("order-status-upload", "m", verify=CAINIAO_VERIFY)
    form = cainiao_callback("WMS_ORDER_STATUS_UPLOAD", MESSAGE, secret="x", hex_digest=False, provider="P",
                            to_code="T", msg_id="M-1")
    ids = {dedupe_identity(cfg, upload, {}, {}, urlencode({**form, "msg_id": m}).encode(),
                           {"event_id": m}) for m in ("M-1", "M-2", "", "anything")}
    assert len(ids) == 1  # msg_id is not signed: it changes nothing
    other = dict(form, logistics_interface=form["logistics_interface"].replace("10:00", "11:00"))
    assert dedupe_identity(cfg, upload, {}, {}, urlencode(other).encode(), {"event_id": "M-1"}) not in ids
    # consign-order-confirm's outBizCode is inside the signed logistics_interface: it stays the identity
    confirm = mappings["cainiao/consign-order-confirm"]
    assert dedupe_identity(CallbackConfig("c", "m", verify=CAINIAO_VERIFY), confirm, {}, {},
                           urlencode(form).encode(), {"event_id": "OBC-9"}) == "OBC-9"
    # QIMEN: the XML body is signed; its outBizCode stays the identity whatever the timestamp
    qimen = mappings["qimen/deliveryorder.confirm"]
    qcfg = CallbackConfig("deliveryorder.confirm", "m", verify=QIMEN_VERIFY)
    query = qimen_callback_query("deliveryorder.confirm", {"appKey": "1"}, "<request/>", "s")
    assert dedupe_identity(qcfg, qimen, query, {}, b"<request/>", {"event_id": "OBC-1"}) == "OBC-1"
    # no event id: the hash of the signed body, the same key as before (sha256 of the body)
    report = mappings["qimen/orderprocess.report"]
    body = qimen_process_xml(order_no="X", order_id="W", warehouse_code="H", step="PICK", when="2023-11-11 10:00:00",
                             info="i", out_biz_code="O").encode()
    import hashlib

    rcfg = CallbackConfig("orderprocess.report", "m", verify=QIMEN_VERIFY)
    assert dedupe_identity(rcfg, report, query, {}, body, {}) == "sha256:" + hashlib.sha256(body).hexdigest()
    # what verifying read (as the service passes it) gives the same identities, first message or not
    for c, m, q, b, event in ((rcfg, report, query, body, {}), (cfg, upload, {}, urlencode(form).encode(),
                                                                 {"event_id": "M-3"})):
        for flow_cfg in (c, CallbackConfig(c.name, c.mapping, verify=c.verify)):  # the second: nothing known yet
            read = signed_input(flow_cfg.verify, q, {}, b)
            verified = dedupe_identity(flow_cfg, m, q, {}, b, event, 0, read)  # first, for the fresh config
            assert verified == dedupe_identity(flow_cfg, m, q, {}, b, event)
            assert dedupe_identity(flow_cfg, m, q, {}, b, event, 2, read).endswith("#2")
    # an unsigned flow: the event id (its guard is what keeps strangers out)
    sf = mappings["sf/route-push"]
    assert dedupe_identity(CallbackConfig("route-push", "m"), sf, {}, {}, b"{}", {"event_id": "R1"}) == "R1"
