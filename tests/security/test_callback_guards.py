"""Guards: an unsigned callback flow and ingest name a compensating control, checked before
anything of the request is read. Source networks are checked against the TCP peer (a forged
X-Forwarded-For changes nothing unless the peer is a trusted proxy); a token in the URL path or a
header; a client certificate vouched for by a trusted proxy. Each refusal is 401 or 403 with its
reason, journaled, and nothing is applied or forwarded; what passes the guard is handled as
before; the service still answers. On SQLite and PostgreSQL (the journal is in the store)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from seckit import Env, example, no_internals, service

from dockyard.simulate.protocols import qimen_callback_query, qimen_confirm_xml

PUSH_TOKEN = "TEST-ONLY-push-token-8f2c41"
INGEST_TOKEN = "TEST-ONLY-ingest-token-77ab90"
SF_ORDER = "DY20231111004518"  # examples/orders/douyin-trimmed-money: routed to sf
QIMEN_ORDER = "TM20231111000123"  # examples/orders/tmall-basic: routed to qimen-std
ROUTE = {"mailno": "SF7444496931331", "orderid": SF_ORDER, "acceptTime": "2023-11-11 18:32:05",
         "remark": "已收取快件", "opCode": "50", "id": "158918741444476", "acceptAddress": "杭州市"}
SF_PUSH = {"mapping": "sf.route-push", "ack": "sf.route-push.ack", "verify": "none"}
QIMEN_CONFIRM = {"mapping": "qimen.deliveryorder.confirm", "ack": "qimen.ack",
                 "verify": {"scheme": "qimen-md5", "secret": "QIMEN_APP_SECRET", "params": "query", "window": 300}}
WAREHOUSES = ("qimen-std", "sf")


async def _route_push(env: Env, path: str = "/callbacks/sf/route-push", headers: dict[str, str] | None = None,
                      route_id: str = "1") -> tuple[int, bytes]:
    body = json.dumps({"Body": {"WaybillRoute": [{**ROUTE, "id": route_id}]}}, ensure_ascii=False)
    status, answer, _ = await env.request("POST", path, body=body,
                                          headers={"Content-Type": "application/json", **(headers or {})})
    no_internals(answer)
    return status, answer


async def _confirm(env: Env, headers: dict[str, str] | None = None, out_biz_code: str = "OBC-1") -> tuple[int, bytes]:
    body = qimen_confirm_xml(order_no=QIMEN_ORDER, order_id="WMS-1", warehouse_code="WH-HZ-01",
                             out_biz_code=out_biz_code, when="2023-11-11 10:00:00", carrier="SF",
                             waybill="SF1234567890", weight="1.25", lines=[("1", "SKU-1", 1)])
    query = qimen_callback_query("deliveryorder.confirm", {"methodPrefix": "taobao.qimen.", "appKey": "23456789",
                                                           "customerId": "STD-C-1001"},
                                 body, env.plan.secret_values["QIMEN_APP_SECRET"])
    status, answer, _ = await env.request("POST", f"/callbacks/qimen-std/deliveryorder.confirm?{urlencode(query)}",
                                          body=body, headers={"Content-Type": "text/xml", **(headers or {})})
    no_internals(answer)
    return status, answer


def _reason(answer: bytes) -> str:
    reason: str = json.loads(answer)["error"]
    return reason


async def _rejected(env: Env, step: str) -> list[tuple[Any, ...]]:
    return await env.rows("SELECT warehouse, flow, outcome, detail FROM dy_journal WHERE step = ? ORDER BY id",
                          (step,))


def test_networks_are_checked_against_the_peer_and_tokens_in_headers(tmp_path: Path, store_url: str,
                                                                     bundle_dir: Path) -> None:
    async def main() -> None:
        callbacks = {"sf/route-push": {**SF_PUSH, "guard": {"networks": ["10.0.0.0/8"]}},
                     "qimen-std/deliveryorder.confirm": {**QIMEN_CONFIRM, "guard": {
                         "token": {"secret": "PUSH_TOKEN", "header": "X-Push-Token"}}}}
        ingest = {"ingest": {"networks": ["127.0.0.1/32"], "token": {"secret": "INGEST_TOKEN"}}}
        tokens = {"PUSH_TOKEN": PUSH_TOKEN, "INGEST_TOKEN": INGEST_TOKEN}
        async with service(tmp_path, store_url, bundle_dir, warehouses=WAREHOUSES, callbacks=callbacks,
                           overrides=ingest, secrets=tokens) as env:
            # ingest: its token (Authorization: Bearer), checked before the body is read
            for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": f"Basic {INGEST_TOKEN}"}):
                status, answer = await env.post_json("/orders", json.dumps(example()), headers)
                assert status == 401 and "token" in answer["error"], headers
            assert await env.rows("SELECT order_no FROM dy_orders") == []
            assert await env.rows("SELECT id FROM dy_quarantine") == []
            auth = {"Authorization": f"Bearer {INGEST_TOKEN}"}
            await env.placed("tmall-basic", auth)
            await env.placed("douyin-trimmed-money", auth)
            # the unsigned flow: loopback is not in 10/8, whatever X-Forwarded-For claims
            for headers in ({}, {"X-Forwarded-For": "10.1.2.3"}, {"X-Forwarded-For": "10.1.2.3, 10.9.9.9"}):
                status, answer = await _route_push(env, headers=headers)
                assert status == 403 and "127.0.0.1 is not in an allowed network" in _reason(answer), headers
            # a path token on a flow whose guard has none: not a route
            assert (await _route_push(env, "/callbacks/sf/route-push/anything"))[0] == 404
            # the signed flow with a token as an extra: a valid signature is not enough
            for headers in ({}, {"X-Push-Token": "wrong"}, {"X-Push-Token": PUSH_TOKEN[:-1]}):
                status, answer = await _confirm(env, headers)
                assert status == 401 and "token" in _reason(answer), headers
            assert await env.events() == []
            status, answer = await _confirm(env, {"X-Push-Token": PUSH_TOKEN})
            assert status == 200 and b"success" in answer
            rejected = await _rejected(env, "callback-rejected")
            assert [(w, f, o) for w, f, o, _ in rejected] == [("sf", "route-push", "guard-network")] * 3 + [
                ("qimen-std", "deliveryorder.confirm", "guard-token")] * 3
            assert all(PUSH_TOKEN not in d and "wrong" not in d for *_, d in rejected)
            assert [o for _, _, o, _ in await _rejected(env, "ingest-rejected")] == ["guard-token"] * 3
            assert [e[1] for e in await env.events()] == ["OBC-1"]  # only the one that passed
            await env.alive()

    asyncio.run(main())


def test_trusted_proxies_path_tokens_client_certificates_and_ingest_networks(tmp_path: Path, store_url: str,
                                                                            bundle_dir: Path) -> None:
    async def main() -> None:
        callbacks = {"sf/route-push": {**SF_PUSH, "guard": {"networks": ["10.0.0.0/8"],
                                                            "token": {"secret": "PUSH_TOKEN", "in": "path"}}},
                     "qimen-std/deliveryorder.confirm": {**QIMEN_CONFIRM, "guard": {
                         "mtls_at_proxy": {"header": "X-Client-Verify"}}}}
        overrides = {"trusted_proxies": ["127.0.0.1/32"], "ingest": {"networks": ["10.0.0.0/8"]}}
        async with service(tmp_path, store_url, bundle_dir, warehouses=WAREHOUSES, callbacks=callbacks,
                           overrides=overrides, secrets={"PUSH_TOKEN": PUSH_TOKEN}) as env:
            via_proxy = {"X-Forwarded-For": "10.1.2.3"}
            # ingest: the client behind the trusted proxy must be in 10/8; the proxy itself is not
            for headers in ({}, {"X-Forwarded-For": "192.0.2.7"}, {"X-Forwarded-For": "10.1.2.3, 192.0.2.7"}):
                status, answer = await env.post_json("/orders", json.dumps(example()), headers)
                assert status == 403 and "not in an allowed network" in answer["error"], headers
            assert await env.rows("SELECT order_no FROM dy_orders") == []
            await env.placed("tmall-basic", via_proxy)
            await env.placed("douyin-trimmed-money", via_proxy)
            good_path = f"/callbacks/sf/route-push/{PUSH_TOKEN}"
            # the client behind the trusted proxy is 10.1.2.3; a hop the proxy did not add is the client
            assert (await _route_push(env, good_path, via_proxy))[0] == 200
            status, answer = await _route_push(env, good_path, {"X-Forwarded-For": "10.1.2.3, 192.0.2.7"})
            assert status == 403 and "192.0.2.7" in _reason(answer)
            status, answer = await _route_push(env, good_path, {"X-Forwarded-For": "not-an-address"})
            assert status == 403 and "unknown" in _reason(answer)
            # the token in the path
            status, answer = await _route_push(env, "/callbacks/sf/route-push", via_proxy, route_id="2")
            assert status == 401 and "URL path" in _reason(answer)
            status, answer = await _route_push(env, "/callbacks/sf/route-push/wrong", via_proxy, route_id="3")
            assert status == 401 and _reason(answer) == "the token is not valid"
            # a client certificate, vouched for by the trusted proxy
            status, answer = await _confirm(env)
            assert status == 403 and "X-Client-Verify" in _reason(answer)
            status, answer = await _confirm(env, {"X-Client-Verify": "FAILED:unable to verify"})
            assert status == 403
            assert (await _confirm(env, {"X-Client-Verify": "SUCCESS"}))[0] == 200
            outcomes = [o for _, _, o, _ in await _rejected(env, "callback-rejected")]
            assert outcomes == ["guard-network"] * 2 + ["guard-token"] * 2 + ["guard-mtls"] * 2
            assert [o for _, _, o, _ in await _rejected(env, "ingest-rejected")] == ["guard-network"] * 3
            assert sorted(e[1] for e in await env.events()) == ["1", "OBC-1"]  # the route id that passed
            await env.alive()

    asyncio.run(main())
