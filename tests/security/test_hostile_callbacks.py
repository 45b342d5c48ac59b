"""Callbacks: a malformed body on any callback endpoint gets a 4xx, never a 500, and no answer
speaks Python. Each body is signed correctly where the flow is signed (so it reaches the parser,
not only the signature check): JSON nested too deep, lone surrogates, NaN and huge numbers,
repeated keys, control characters, XML bombs and external entities, forms with NULs, repeated
fields or broken escapes, valid documents of the wrong shape. Nothing is applied or forwarded,
the service still answers, and a good callback beside them still goes through. On SQLite and
PostgreSQL."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from urllib.parse import urlencode

from seckit import Env, no_internals, service

from dockyard.simulate.protocols import cainiao_sign, qimen_callback_query, qimen_confirm_xml

QIMEN_CONTEXT = {"methodPrefix": "taobao.qimen.", "appKey": "23456789", "customerId": "STD-C-1001"}
DEEP = 100_000

# JSON text: for SF's route push (the body) and Cainiao's logistics_interface (a form field).
JSON_BODIES: list[tuple[str, str]] = [
    ("deep-array", "[" * DEEP + "]" * DEEP),
    ("deep-array-900", "[" * 900 + "]" * 900),
    ("deep-object", '{"a":' * 5000 + "1" + "}" * 5000),
    ("lone-surrogate", '{"Body": {"WaybillRoute": [{"mailno": "SF1\\ud800", "orderid": "TM1", "opCode": "50", '
                       '"id": "1", "acceptTime": "2023-11-11 10:00:00"}]}}'),
    ("lone-surrogate-key", '{"Body\\udc00": 1}'),
    ("nan", '{"Body": {"WaybillRoute": [{"mailno": NaN}]}}'),
    ("huge-exponent", '{"weight": 1e49999999, "orderCode": "TM1"}'),
    ("many-digits", '{"n": ' + "9" * 5000 + "}"),
    ("repeated-key", '{"orderCode": "TM1", "orderCode": "TM2"}'),
    ("nul", '{"Body": {"WaybillRoute": [{"mailno": "a\\u0000b", "orderid": "TM1", "opCode": "50", "id": "2"}]}}'),
    ("not-json", '{"Body": '),
    ("empty", ""),
    ("array", "[]"),
    ("string", '"x"'),
    ("wrong-shape", '{"Body": []}'),
    ("wrong-shape-2", '{"Body": {"WaybillRoute": "x"}}'),
    ("wrong-shape-3", '{"Body": {"WaybillRoute": [1, 2]}}'),
    ("wrong-shape-4", '{"tmsOrders": 5, "orderCode": {"a": 1}, "status": [1]}'),
]
XML_BODIES: list[tuple[str, str]] = [
    ("truncated", "<request><deliveryOrder>"),
    ("billion-laughs", '<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa">'
                       + "".join(f'<!ENTITY {chr(98 + i)} "{("&" + chr(97 + i) + ";") * 10}">' for i in range(8))
                       + "]><request><deliveryOrder><deliveryOrderCode>&i;</deliveryOrderCode></deliveryOrder>"
                       "</request>"),
    ("external-entity", '<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
                        "<request><deliveryOrder><deliveryOrderCode>&x;</deliveryOrderCode></deliveryOrder></request>"),
    ("deep", "<request>" + "<a>" * 10_000 + "</a>" * 10_000 + "</request>"),
    ("wrong-root", "<foo/>"),
    ("char-ref-nul", "<request><deliveryOrder><deliveryOrderCode>&#0;</deliveryOrderCode></deliveryOrder></request>"),
    ("char-ref-surrogate", "<request><deliveryOrder><deliveryOrderCode>&#xD800;</deliveryOrderCode>"
                           "</deliveryOrder></request>"),
    ("raw-nul", "<request>\x00</request>"),
    ("wrong-shape", "<request><deliveryOrder>text</deliveryOrder></request>"),
    ("wrong-shape-2", "<request><deliveryOrder><deliveryOrderCode><x/></deliveryOrderCode></deliveryOrder>"
                      "<packages>1</packages></request>"),
    ("empty", ""),
    ("not-utf8", "<request>\udcff</request>"),  # sent as the byte 0xFF
]


def _bytes(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


async def _qimen(env: Env, body: str) -> tuple[int, bytes]:
    secret = env.plan.secret_values["QIMEN_APP_SECRET"]
    raw = _bytes(body)
    query = qimen_callback_query("deliveryorder.confirm", QIMEN_CONTEXT, raw.decode("utf-8", "replace"), secret)
    status, answer, _ = await env.request("POST", f"/callbacks/qimen-std/deliveryorder.confirm?{urlencode(query)}",
                                          body=raw, headers={"Content-Type": "text/xml"})
    return status, answer


def _cainiao_form(env: Env, content: str, **extra: str) -> dict[str, str]:
    secret = env.plan.secret_values["CAINIAO_SECRET_KEY"]
    form = {"msg_type": "WMS_ORDER_STATUS_UPLOAD", "logistic_provider_id": "WMS_TEST_STORE",
            "to_code": "DOCKYARD_ERP_TEST", "msg_id": "M-1", "logistics_interface": content,
            "data_digest": cainiao_sign(content, secret)}
    form.update(extra)
    return form


async def _cainiao(env: Env, body: bytes | str) -> tuple[int, bytes]:
    status, answer, _ = await env.request("POST", "/callbacks/cainiao/order-status-upload", body=body,
                                          headers={"Content-Type": "application/x-www-form-urlencoded"})
    return status, answer


async def _sf(env: Env, body: str) -> tuple[int, bytes]:
    status, answer, _ = await env.request("POST", "/callbacks/sf/route-push", body=_bytes(body),
                                          headers={"Content-Type": "application/json"})
    return status, answer


def _refused(what: str, status: int, answer: bytes) -> None:
    assert 400 <= status < 500, (what, status, answer[:300])
    no_internals(answer)


async def _nothing_applied(env: Env) -> None:
    assert await env.events() == []
    assert await env.upstream_after(0.3) == []
    await env.alive()


def test_malformed_callback_bodies_get_a_4xx_on_every_endpoint(tmp_path: Path, store_url: str,
                                                               bundle_dir: Path) -> None:
    async def main() -> None:
        async with service(tmp_path, store_url, bundle_dir, warehouses=("qimen-std", "sf", "cainiao")) as env:
            for name, body in JSON_BODIES:
                _refused(f"sf {name}", *await _sf(env, body))
                _refused(f"cainiao {name}", *await _cainiao(env, urlencode(_cainiao_form(env, body))))
            for name, body in XML_BODIES:
                _refused(f"qimen {name}", *await _qimen(env, body))
            # forms that are broken as forms (each signed over its logistics_interface)
            good_li = json.dumps({"orderCode": "TM1", "status": "WMS_ACCEPT"})
            signed = _cainiao_form(env, good_li)
            for name, body in [
                ("nul-in-field", urlencode(signed) + "&remark=%00"),
                ("control-in-field", urlencode({**signed, "msg_type": "WMS\x07"})),
                ("bad-escape", urlencode(signed) + "&x=%ZZ%"),
                ("not-utf8", urlencode(signed) + "&x=%FF%FE"),
                ("raw-bytes", b"\xff\xfe" + urlencode(signed).encode()),
                ("repeated-field", urlencode(signed) + "&msg_type=WMS_X"),
                ("no-digest", urlencode({k: v for k, v in signed.items() if k != "data_digest"})),
                ("empty", ""),
            ]:
                _refused(f"cainiao form {name}", *await _cainiao(env, body))
            await _nothing_applied(env)
            kept = await env.rows("SELECT source, body FROM dy_quarantine")
            assert kept and {s for s, _ in kept} == {"callback"} and all("\x00" not in b for _, b in kept)
            # a good callback beside them still goes through
            order_no = await env.placed()
            body = qimen_confirm_xml(order_no=order_no, order_id="WMS-1", warehouse_code="WH-HZ-01",
                                     out_biz_code="OBC-1", when="2023-11-11 10:00:00", carrier="SF",
                                     waybill="SF1234567890", weight="1.25", lines=[("1", "SKU-1", 1)])
            status, answer = await _qimen(env, body)
            assert status == 200 and b"success" in answer
            assert [e[1] for e in await env.events()] == ["OBC-1"]

    asyncio.run(main())


def test_a_repeated_form_field_cannot_split_what_is_verified_from_what_is_read(
        tmp_path: Path, store_url: str, bundle_dir: Path) -> None:
    """Two `logistics_interface` fields: the signature checked over one, the mapping reading the
    other, would apply a forged message under a genuine digest. The form is read one way only."""
    async def main() -> None:
        async with service(tmp_path, store_url, bundle_dir, warehouses=("cainiao",)) as env:
            genuine = json.dumps({"orderCode": "MP1", "status": "WMS_ACCEPT", "storeCode": "S1",
                                  "operateDate": "2023-11-11 10:00:00"})
            forged = genuine.replace("WMS_ACCEPT", "WMS_CANCEL")
            form = _cainiao_form(env, genuine)
            for pairs in ([("logistics_interface", forged), *form.items()],
                          [*form.items(), ("logistics_interface", forged)]):
                status, answer = await _cainiao(env, urlencode(pairs))
                _refused("repeated logistics_interface", status, answer)
            await _nothing_applied(env)

    asyncio.run(main())
