"""The wire protocols of the simulated warehouses, written from the protocol notes alone
(shared/domain/warehouse-protocols.md): independent signature checks and signers, the answers
each warehouse gives to our requests, the callbacks it pushes, and what counts as its
acknowledgement.

Nothing here imports `dockyard.runtime.signing` or `dockyard.runtime.fieldcrypto`: a simulator
that verified with the code under test would accept whatever that code gets wrong. The same
independent code signs the callbacks the simulator pushes, so the service's verifiers are checked
against a second implementation as well.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import quote
from xml.sax.saxutils import escape

import orjson

__all__ = [
    "SHANGHAI",
    "cainiao_acked",
    "cainiao_answer",
    "cainiao_callback",
    "cainiao_receiver",
    "cainiao_sign",
    "java_urlencode",
    "jd_answer",
    "jd_lop_receiver",
    "jd_lop_sign",
    "qimen_acked",
    "qimen_answer",
    "qimen_callback_query",
    "qimen_confirm_xml",
    "qimen_process_xml",
    "qimen_query_answer",
    "qimen_receiver",
    "qimen_sign",
    "sf_acked",
    "sf_answer",
    "sf_receiver",
    "sf_route_push",
    "sf_sign",
    "shanghai_time",
    "upstream_receiver",
    "upstream_sign",
]

# China has had no daylight saving time since 1991: a fixed offset is exact and needs no tzdata.
SHANGHAI = timezone(timedelta(hours=8), "Asia/Shanghai")


def shanghai_time(now: datetime | None = None) -> str:
    """Wall-clock time in Shanghai as QIMEN, JD and Cainiao write it: yyyy-MM-dd HH:mm:ss."""
    return (now or datetime.now(SHANGHAI)).astimezone(SHANGHAI).strftime("%Y-%m-%d %H:%M:%S")


def _equal(a: str, b: str) -> bool:
    # Constant-time: a receiver that leaks how many characters matched is a signing oracle.
    return hmac.compare_digest(a.encode("utf-8"), b.encode("utf-8"))


# --- QIMEN (md5) --------------------------------------------------------------------------------

def qimen_sign(params: Mapping[str, str], body: str, secret: str) -> str:
    """MD5(secret + Σsorted(k+v) + body + secret), uppercase hex; `sign` and empty keys or values
    are left out of the sorted pairs (senders never send them; receivers skip them)."""
    pairs = "".join(k + v for k, v in sorted(params.items()) if k and v and k != "sign")
    return hashlib.md5((secret + pairs + body + secret).encode("utf-8")).hexdigest().upper()


def qimen_receiver(query: Mapping[str, str], body: str, secret: str) -> bool:
    """Whether `query["sign"]` signs the query and body with `secret` (case-sensitive compare)."""
    sign = query.get("sign")
    return sign is not None and _equal(sign, qimen_sign(query, body, secret))


def qimen_answer(ok: bool, code: str, message: str, order_id: str | None = None) -> bytes:
    """<response><flag>…</flag><code>…</code><message>…</message>[<deliveryOrderId>]</response>."""
    tail = f"<deliveryOrderId>{escape(order_id)}</deliveryOrderId>" if order_id else ""
    return (f'<?xml version="1.0" encoding="utf-8"?>\n<response><flag>{"success" if ok else "failure"}</flag>'
            f"<code>{escape(code)}</code><message>{escape(message)}</message>{tail}</response>").encode()


def qimen_query_answer(*, order_no: str, order_id: str, warehouse_code: str, status: str,
                       packages: Sequence[tuple[str, str]] = ()) -> bytes:
    """A success answer to deliveryorder.query (the fields of Taobao's API page of
    taobao.qimen.deliveryorder.query): the delivery order and, once shipped, its packages as
    (logisticsCode, expressCode)."""
    pkgs = "".join(f"<package>{_el('logisticsCode', carrier)}{_el('expressCode', waybill)}</package>"
                   for carrier, waybill in packages)
    return ('<?xml version="1.0" encoding="utf-8"?>\n<response><flag>success</flag><code>0</code>'
            "<message>success</message><deliveryOrder>"
            f"{_el('deliveryOrderCode', order_no)}{_el('deliveryOrderId', order_id)}"
            f"{_el('warehouseCode', warehouse_code)}{_el('orderType', 'JYCK')}{_el('status', status)}"
            f"</deliveryOrder>{f'<packages>{pkgs}</packages>' if pkgs else ''}</response>").encode()


def qimen_callback_query(method: str, context: Mapping[str, Any], body: str, secret: str,
                         now: datetime | None = None) -> dict[str, str]:
    """The signed system parameters of a QIMEN push (WMS → ERP): the same query as our requests
    carry, with the callback's method name."""
    query = {
        "method": str(context.get("methodPrefix", "taobao.qimen.")) + method,
        "timestamp": shanghai_time(now),
        "format": "xml",
        "app_key": str(context.get("appKey", "")),
        "v": str(context.get("version", "2.0")),
        "sign_method": "md5",
        "customerId": str(context.get("customerId", "")),
    }
    query = {k: v for k, v in query.items() if v}  # never send an empty parameter
    query["sign"] = qimen_sign(query, body, secret)
    return query


def _el(name: str, value: object) -> str:
    return f"<{name}>{escape(str(value))}</{name}>"


def qimen_confirm_xml(*, order_no: str, order_id: str, warehouse_code: str, out_biz_code: str, when: str,
                      carrier: str, waybill: str, weight: str, lines: Sequence[tuple[str, str, int]]) -> str:
    """deliveryorder.confirm: the final confirm (status DELIVERED, confirmType 0), one package.
    `lines` are (orderLineNo, itemCode, qty) as we sent them; all of them ship."""
    head = "".join((_el("deliveryOrderCode", order_no), _el("deliveryOrderId", order_id),
                    _el("warehouseCode", warehouse_code), "<orderType>JYCK</orderType><status>DELIVERED</status>",
                    _el("outBizCode", out_biz_code), "<confirmType>0</confirmType>",
                    _el("orderConfirmTime", when), _el("logisticsCode", carrier), _el("expressCode", waybill)))
    items = "".join(f"<item>{_el('itemCode', sku)}{_el('quantity', qty)}</item>" for _, sku, qty in lines)
    package = (f"<package>{_el('logisticsCode', carrier)}{_el('expressCode', waybill)}"
               f"<packageCode>PKG-1</packageCode>{_el('weight', weight)}"
               + (f"<items>{items}</items>" if items else "") + "</package>")
    order_lines = "".join(f"<orderLine>{_el('orderLineNo', no)}{_el('itemCode', sku)}{_el('planQty', qty)}"
                          f"{_el('actualQty', qty)}</orderLine>" for no, sku, qty in lines)
    return ('<?xml version="1.0" encoding="utf-8"?>\n<request>'
            f"<deliveryOrder>{head}</deliveryOrder><packages>{package}</packages>"
            + (f"<orderLines>{order_lines}</orderLines>" if order_lines else "") + "</request>")


def qimen_process_xml(*, order_no: str, order_id: str, warehouse_code: str, step: str, when: str,
                      info: str, out_biz_code: str) -> str:
    """orderprocess.report: one process step (ACCEPT, PICK, PACKAGE, SIGN, …). The report has no
    standard message id; outBizCode is added inside <process> (extra elements are allowed) so a
    receiver that wants one can dedupe on it."""
    return ('<?xml version="1.0" encoding="utf-8"?>\n<request>'
            f"<order>{_el('orderCode', order_no)}{_el('orderId', order_id)}<orderType>JYCK</orderType>"
            f"{_el('warehouseCode', warehouse_code)}</order>"
            f"<process>{_el('processStatus', step)}<operatorCode>SIM-01</operatorCode>"
            f"<operatorName>模拟仓</operatorName>{_el('operateTime', when)}{_el('operateInfo', info)}"
            f"{_el('outBizCode', out_biz_code)}</process></request>")


_QIMEN_SUCCESS = re.compile(rb"<flag>\s*success\s*</flag>", re.IGNORECASE)


def qimen_acked(status: int, body: bytes) -> bool:
    """The ERP's acknowledgement of a QIMEN push: HTTP 200 with <flag>success</flag>."""
    return status == 200 and _QIMEN_SUCCESS.search(body) is not None


# --- SF Express (msgDigest) ---------------------------------------------------------------------

def java_urlencode(text: str) -> str:
    """Java's URLEncoder.encode(text, "UTF-8"): letters, digits and .-*_ kept, space → +."""
    return quote(text, safe=".-*_").replace("~", "%7E").replace("%20", "+")


def sf_sign(msg_data: str, timestamp: str, secret: str) -> str:
    """Base64(raw MD5(UTF-8(URLENC(msgData + timestamp + checkWord))))."""
    digest = hashlib.md5(java_urlencode(msg_data + timestamp + secret).encode("utf-8")).digest()
    return base64.b64encode(digest).decode()


def sf_receiver(form: Mapping[str, str], secret: str) -> bool:
    """Whether form `msgDigest` signs form `msgData` + `timestamp` with the checkWord."""
    digest, data, ts = form.get("msgDigest"), form.get("msgData"), form.get("timestamp")
    return digest is not None and data is not None and ts is not None and _equal(digest, sf_sign(data, ts, secret))


def _json(value: object) -> bytes:
    return orjson.dumps(value)


def sf_answer(inner: Mapping[str, Any] | None, *, api_code: str = "A1000", api_msg: str = "",
              response_id: str = "") -> bytes:
    """SF's envelope; the service's answer `inner` travels double-encoded in apiResultData."""
    data = None if inner is None else orjson.dumps(inner).decode()
    return _json({"apiErrorMsg": api_msg, "apiResponseID": response_id, "apiResultCode": api_code,
                  "apiResultData": data})


def sf_route_push(route: Mapping[str, Any] | Sequence[Mapping[str, Any]], secret: str,
                  timestamp: str) -> tuple[dict[str, str], bytes]:
    """A route push, {"Body":{"WaybillRoute":[route, …]}} (one route, or a list: SF pushes several
    routes at once, of one waybill or of many), and its signed query.

    SF's notes give no signature for pushes; the simulator signs them like SF's requests, over
    the JSON body as msgData: query `timestamp` (epoch milliseconds) and `msgDigest`. A receiver
    that does not verify pushes can ignore the query; one that does verifies scheme sf-msgdigest
    with parameters from the query and the raw body as msgData."""
    routes = [route] if isinstance(route, Mapping) else list(route)
    body = _json({"Body": {"WaybillRoute": routes}})
    return {"timestamp": timestamp, "msgDigest": sf_sign(body.decode(), timestamp, secret)}, body


def _json_ack(status: int, body: bytes) -> dict[str, Any]:
    """A 200 answer's JSON object; {} for anything else (which no JSON ack accepts)."""
    if status != 200:
        return {}
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return {}
    return doc if isinstance(doc, dict) else {}


def sf_acked(status: int, body: bytes) -> bool:
    """The reply SF waits for: {"return_code":"0000", …}."""
    return _json_ack(status, body).get("return_code") == "0000"


# --- JD Logistics LOP (md5-salt) ----------------------------------------------------------------

def jd_lop_sign(query: Mapping[str, str], body: str, secret: str, path: str) -> str:
    """MD5(secret + access_token… + app_key… + method+path + param_json+body + timestamp… + v… +
    secret), lowercase hex."""
    text = (secret + "access_token" + query.get("access_token", "") + "app_key" + query.get("app_key", "")
            + "method" + path + "param_json" + body + "timestamp" + query.get("timestamp", "")
            + "v" + query.get("v", "") + secret)
    return hashlib.md5(text.encode("utf-8")).hexdigest()


def jd_lop_receiver(query: Mapping[str, str], body: str, secret: str, path: str) -> bool:
    """Whether `query["sign"]` is the md5-salt signature of the call; hex case is not significant
    (JD's demos send lowercase, its docs show uppercase)."""
    sign = query.get("sign")
    return sign is not None and _equal(sign.lower(), jd_lop_sign(query, body, secret, path))


def jd_answer(doc: Mapping[str, Any]) -> bytes:
    return _json(doc)


# --- Cainiao LINK (data_digest) -----------------------------------------------------------------

def cainiao_sign(content: str, secret: str, hex_digest: bool = False) -> str:
    """Base64(MD5(logistics_interface + secretKey)): over the raw 16 bytes, or over the 32-char
    hex text for the gateways that do so."""
    md5 = hashlib.md5((content + secret).encode("utf-8"))
    return base64.b64encode(md5.hexdigest().encode() if hex_digest else md5.digest()).decode()


def cainiao_receiver(form: Mapping[str, str], secret: str, hex_digest: bool) -> bool:
    digest, content = form.get("data_digest"), form.get("logistics_interface")
    return digest is not None and content is not None and _equal(digest, cainiao_sign(content, secret, hex_digest))


def cainiao_answer(success: bool, code: str = "", message: str = "") -> bytes:
    """LINK's response object: {"success":…, "errorCode":…, "errorMsg":…}."""
    return _json({"success": success, "errorCode": code, "errorMsg": message})


def cainiao_callback(msg_type: str, message: Mapping[str, Any], *, secret: str, hex_digest: bool,
                     provider: str, to_code: str, msg_id: str) -> dict[str, str]:
    """The form of a LINK push (WMS → us): the warehouse's code as logistic_provider_id, ours as
    to_code, the message as JSON text, its data_digest, and msg_id (the event id LINK gives a push)."""
    content = orjson.dumps(message).decode()
    return {"msg_type": msg_type, "logistic_provider_id": provider, "to_code": to_code, "msg_id": msg_id,
            "logistics_interface": content, "data_digest": cainiao_sign(content, secret, hex_digest)}


def cainiao_acked(status: int, body: bytes) -> bool:
    """The acknowledgement LINK waits for: success true (or the text "true")."""
    return _json_ack(status, body).get("success") in (True, "true")


# --- the order middle-platform's webhook --------------------------------------------------------

def upstream_sign(body: bytes, secret: str) -> str:
    """X-Dockyard-Signature: hex HMAC-SHA256 of the raw body."""
    return hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def upstream_receiver(body: bytes, signature: str | None, secret: str) -> bool:
    return signature is not None and _equal(signature.strip().lower(), upstream_sign(body, secret))
