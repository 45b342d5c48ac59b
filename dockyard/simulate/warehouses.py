"""The simulated warehouses' business logic: what each one does with a request that reached it
(verify, create, repeat, cancel, query) and the counters of what it received.

Parsing is kept to what the logic needs — the order number, the signed fields, and, only when
callbacks will be pushed, the order lines — because a benchmark drives thousands of requests a
second through one process. Each `handle_*` function is synchronous and does no I/O; the HTTP
layer (app.py) applies faults around it.
"""

from __future__ import annotations

import hashlib
import html
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple
from urllib.parse import parse_qsl

import orjson

from dockyard.simulate import protocols as p
from dockyard.simulate.faults import FAULT_KINDS, Faults

__all__ = [
    "HANDLERS",
    "KINDS",
    "STAGES",
    "Answer",
    "OrderState",
    "SimWarehouse",
    "WarehouseState",
]

KINDS = ("qimen", "sf", "jd", "cainiao")

# Stages of an order in a simulated warehouse. A cancel succeeds only in ACCEPTED: once picking
# has started (for SF: once the parcel is collected) it is refused as too late.
STAGES = ACCEPTED, PICKING, PACKED, SHIPPED, SIGNED, CANCELLED = (
    "accepted", "picking", "packed", "shipped", "signed", "cancelled")

XML = "text/xml;charset=utf-8"
JSON = "application/json;charset=utf-8"


@dataclass(frozen=True)
class SimWarehouse:
    """One simulated warehouse, served under /{name}/…. `secret` is the secret VALUE (QIMEN app
    secret, SF checkWord, JD LOP app secret, Cainiao secret key); `context` holds the same config
    values the service uses for this warehouse (appKey, customerId, warehouseCode, storeCode, …).

    Context keys the simulator reads besides those: `identicalRepeatIsSuccess` (QIMEN duplicate
    rule), `digest` (Cainiao: raw | hex | any, default any), `carrierCode` (carrier of the waybills
    QIMEN and Cainiao report, default SF)."""

    name: str
    kind: str
    secret: str
    callback_base: str | None = None
    faults: Faults = field(default_factory=Faults)
    context: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"warehouse {self.name!r}: kind must be one of {KINDS}, not {self.kind!r}")
        if not self.name or self.name.startswith("_") or "/" in self.name:
            raise ValueError(f"warehouse name {self.name!r}: must be non-empty, without '/', not starting with '_'")


class OrderState:
    """What a simulated warehouse remembers of one order."""

    __slots__ = ("carrier", "fingerprint", "lines", "order_no", "stage", "warehouse_order_id", "waybill")

    def __init__(self, order_no: str, warehouse_order_id: str, waybill: str, carrier: str,
                 fingerprint: str | None, lines: list[tuple[str, str, int]]) -> None:
        self.order_no = order_no
        self.warehouse_order_id = warehouse_order_id
        self.waybill = waybill
        self.carrier = carrier
        self.fingerprint = fingerprint
        self.lines = lines  # (line no / orderItemId, sku, qty), only kept when callbacks are pushed
        self.stage = ACCEPTED


class Answer(NamedTuple):
    status: int
    content_type: str
    body: bytes
    new_order: OrderState | None = None  # set when this request created an order (starts its lifecycle)


class WarehouseState:
    """The mutable side of a simulated warehouse: its orders and its counters."""

    def __init__(self, spec: SimWarehouse, index: int) -> None:
        self.spec = spec
        self.index = index  # makes generated ids and waybills unique across warehouses
        self.faults = spec.faults
        self.keep_lines = False  # set by the simulator when this warehouse pushes callbacks
        self.orders: dict[str, OrderState] = {}
        self.received: dict[str, int] = {}
        self.creates = self.duplicates = self.cancels = self.queries = 0
        self.bad_signatures = self.invalid = 0
        self.fault_counts = dict.fromkeys(FAULT_KINDS, 0)
        self.pushed = self.acked = self.retried = self.failed = self.duplicated = 0
        self._seq = 0

    def next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def create(self, order_no: str, fingerprint: str | None = None,
               lines: list[tuple[str, str, int]] | None = None) -> tuple[OrderState, bool]:
        """Count a create that reached the warehouse; (the order, whether it is new)."""
        self.creates += 1
        self.received[order_no] = self.received.get(order_no, 0) + 1
        known = self.orders.get(order_no)
        if known is not None:
            self.duplicates += 1
            return known, False
        seq = self.next_seq()
        kind = self.spec.kind
        if kind == "sf":
            carrier, waybill, wid = "SF", f"SF{self.index:02d}{seq:011d}", order_no
        elif kind == "jd":
            carrier, waybill, wid = "JD", f"JDVA{self.index:02d}{seq:012d}", f"ESO{self.index:02d}{seq:010d}"
        else:
            carrier = str(self.spec.context.get("carrierCode", "SF"))
            waybill = f"{carrier}{self.index:02d}{seq:011d}"
            wid = f"WMS-DO-{self.index:02d}{seq:08d}" if kind == "qimen" else f"LBX{self.index:02d}{seq:010d}"
        order = OrderState(order_no, wid, waybill, carrier, fingerprint, lines or [])
        self.orders[order_no] = order
        return order, True

    def cancel(self, order_no: str) -> tuple[str, OrderState | None]:
        """Count a cancel; ("ok" | "already" | "too_late" | "unknown", the order)."""
        self.cancels += 1
        order = self.orders.get(order_no)
        if order is None:
            return "unknown", None
        if order.stage == CANCELLED:
            return "already", order
        if order.stage != ACCEPTED:
            return "too_late", order
        order.stage = CANCELLED
        return "ok", order

    def stats(self) -> dict[str, Any]:
        return {
            "kind": self.spec.kind,
            "creates": self.creates,
            "unique_orders": len(self.received),
            "orders_received_twice": sorted(k for k, n in self.received.items() if n > 1),
            "duplicates_answered": self.duplicates,
            "cancels": self.cancels,
            "queries": self.queries,
            "bad_signatures": self.bad_signatures,
            "invalid": self.invalid,
            "faults": dict(self.fault_counts),
            "callbacks": {"pushed": self.pushed, "acked": self.acked, "retried": self.retried,
                          "failed": self.failed, "duplicated": self.duplicated},
        }


def _too_late_text(stage: str) -> str:
    # Worded so that our response mappings read it as a plain rejection: no 重复/已存在 (duplicate)
    # and no 繁忙/稍后重试 (retryable).
    return {PICKING: "订单已拣货，不能取消", PACKED: "订单已打包，不能取消",
            SHIPPED: "订单已发货，不能取消", SIGNED: "订单已签收，不能取消"}.get(stage, "订单状态不允许取消")


def _text(value: str) -> str:
    return html.unescape(value).strip() if "&" in value else value.strip()


# --- QIMEN --------------------------------------------------------------------------------------

_Q_CODE = re.compile(r"<deliveryOrderCode>([^<]*)</deliveryOrderCode>")
_Q_CANCEL_CODE = re.compile(r"<orderCode>([^<]*)</orderCode>")
# What a QIMEN WMS reports as a delivery order's status (deliveryorder.query) in each stage.
_Q_STATUS = {ACCEPTED: "ACCEPT", PICKING: "PICK", PACKED: "PACKAGE", SHIPPED: "DELIVERED", SIGNED: "DELIVERED",
             CANCELLED: "CANCELED"}
# JD's public SDKs give the status query's statuses as numbers with a text; these are made up in
# that shape (the simulator's own, read by nobody but a person looking at the answer).
_JD_STATUS = {ACCEPTED: (100, "已下单"), PICKING: (200, "已揽收"), PACKED: (200, "已揽收"),
              SHIPPED: (300, "运输中"), SIGNED: (400, "已签收"), CANCELLED: (-1, "已取消")}
# The JD order query's path when the warehouse's config names none (query-order.yaml's default).
JD_QUERY_PATH = "/ecap/v1/orders/status/get"
_Q_OPERATE_TIME = re.compile(r"<operateTime>[^<]*</operateTime>")
_Q_LINE = re.compile(r"<orderLine>(.*?)</orderLine>", re.S)
_Q_LINE_NO = re.compile(r"<orderLineNo>([^<]*)</orderLineNo>")
_Q_ITEM = re.compile(r"<itemCode>([^<]*)</itemCode>")
_Q_QTY = re.compile(r"<planQty>\s*(\d+)\s*</planQty>")


def _qimen_lines(body: str) -> list[tuple[str, str, int]]:
    lines = []
    for block in _Q_LINE.findall(body):
        no, item, qty = _Q_LINE_NO.search(block), _Q_ITEM.search(block), _Q_QTY.search(block)
        if item is not None:
            lines.append((_text(no.group(1)) if no else "", _text(item.group(1)), int(qty.group(1)) if qty else 0))
    return lines


def handle_qimen(ws: WarehouseState, tail: str, query: Mapping[str, str], body: bytes) -> Answer:
    """QIMEN router: method in the query, XML body, md5 sign over both."""
    text = body.decode("utf-8", "replace")
    if not p.qimen_receiver(query, text, ws.spec.secret):
        ws.bad_signatures += 1
        return Answer(200, XML, p.qimen_answer(False, "sign-check-failure", "Illegal request: sign check failure"))
    method = query.get("method", "")
    if method.endswith("deliveryorder.create"):
        m = _Q_CODE.search(text)
        if m is None or not m.group(1).strip():
            ws.invalid += 1
            return Answer(200, XML, p.qimen_answer(False, "400", "deliveryOrderCode 不能为空"))
        order_no = _text(m.group(1))
        strict = bool(ws.spec.context.get("identicalRepeatIsSuccess", False))
        # The fingerprint leaves out operateTime (our send time), so a resent identical order matches.
        fingerprint = hashlib.sha1(_Q_OPERATE_TIME.sub("", text).encode()).hexdigest() if strict else None
        order, new = ws.create(order_no, fingerprint, _qimen_lines(text) if ws.keep_lines else None)
        if new:
            return Answer(200, XML, p.qimen_answer(True, "0", "success", order.warehouse_order_id), order)
        if not strict:  # standard rule: every repeat answers that the order exists, with its id
            return Answer(200, XML, p.qimen_answer(False, "0", f"单据已存在: {order_no}", order.warehouse_order_id))
        if fingerprint == order.fingerprint:  # identical repeat: success with the original id
            return Answer(200, XML, p.qimen_answer(True, "0", "订单重复，已返回原单号", order.warehouse_order_id))
        return Answer(200, XML, p.qimen_answer(False, "0", "单据已存在且内容不一致", order.warehouse_order_id))
    if method.endswith("deliveryorder.query"):
        return _qimen_query(ws, text)
    if method.endswith("order.cancel"):
        m = _Q_CANCEL_CODE.search(text)
        if m is None:
            ws.invalid += 1
            return Answer(200, XML, p.qimen_answer(False, "400", "orderCode 不能为空"))
        result, cancelled = ws.cancel(_text(m.group(1)))
        if result == "ok":
            return Answer(200, XML, p.qimen_answer(True, "0", "取消成功"))
        if result == "already":
            return Answer(200, XML, p.qimen_answer(True, "0", "订单已取消"))
        if result == "unknown":
            return Answer(200, XML, p.qimen_answer(False, "404", "订单不存在"))
        assert cancelled is not None
        return Answer(200, XML, p.qimen_answer(False, "CANCEL_FAILED", _too_late_text(cancelled.stage)))
    ws.invalid += 1
    return Answer(200, XML, p.qimen_answer(False, "isv.invalid-method", f"不支持的接口: {method}"))


def _qimen_query(ws: WarehouseState, text: str) -> Answer:
    """deliveryorder.query: what this WMS holds under the code asked for (deliveryOrderCode, else
    the documented orderCode), from what it actually received; an unknown code is 单据不存在."""
    ws.queries += 1
    m = _Q_CODE.search(text) or _Q_CANCEL_CODE.search(text)
    order_no = _text(m.group(1)) if m is not None else ""
    if not order_no:
        ws.invalid += 1
        return Answer(200, XML, p.qimen_answer(False, "400", "orderCode 不能为空"))
    order = ws.orders.get(order_no)
    if order is None:
        return Answer(200, XML, p.qimen_answer(False, "404", f"单据不存在: {order_no}"))
    shipped = order.stage in (SHIPPED, SIGNED)
    return Answer(200, XML, p.qimen_query_answer(
        order_no=order.order_no, order_id=order.warehouse_order_id,
        warehouse_code=str(ws.spec.context.get("warehouseCode", "")), status=_Q_STATUS[order.stage],
        packages=[(order.carrier, order.waybill)] if shipped else []))


# --- SF Express ---------------------------------------------------------------------------------

def _sf_inner(ws: WarehouseState, inner: Mapping[str, Any]) -> bytes:
    return p.sf_answer(inner, response_id=f"{ws.index:04X}{ws.next_seq():028X}")


def handle_sf(ws: WarehouseState, tail: str, query: Mapping[str, str], body: bytes) -> Answer:
    """SF open platform: a form with serviceCode, msgData (JSON text) and msgDigest."""
    form = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
    if not p.sf_receiver(form, ws.spec.secret):
        ws.bad_signatures += 1
        return Answer(200, JSON, p.sf_answer(None, api_code="A1006", api_msg="数字签名无效"))
    try:
        msg = orjson.loads(form["msgData"])
        order_no = str(msg["orderId"]).strip()
    except (orjson.JSONDecodeError, KeyError, TypeError):
        order_no = ""
    if not order_no:
        ws.invalid += 1
        return Answer(200, JSON, _sf_inner(ws, {"success": False, "errorCode": "1010", "errorMsg": "orderId 不能为空",
                                                "msgData": None}))
    service = form.get("serviceCode", "")
    if service == "EXP_RECE_CREATE_ORDER":
        order, new = ws.create(order_no)
        if not new:
            return Answer(200, JSON, _sf_inner(ws, {"success": False, "errorCode": "8016", "errorMsg": "重复下单",
                                                    "msgData": None}))
        return Answer(200, JSON, _sf_inner(ws, _sf_found(order)), order)
    if service == "EXP_RECE_SEARCH_ORDER_RESP":
        ws.queries += 1
        found = ws.orders.get(order_no)
        if found is None:
            return Answer(200, JSON, _sf_inner(ws, {"success": False, "errorCode": "8018",
                                                    "errorMsg": "未获取到订单信息", "msgData": None}))
        return Answer(200, JSON, _sf_inner(ws, _sf_found(found)))
    if service == "EXP_RECE_UPDATE_ORDER":
        if str(msg.get("dealType", "1")) != "2":  # 1 = confirm: nothing to do in the simulation
            return Answer(200, JSON, _sf_inner(ws, {"success": True, "errorCode": "S0000", "errorMsg": None,
                                                    "msgData": {"orderId": order_no, "resStatus": 2}}))
        result, cancelled = ws.cancel(order_no)
        if result in ("ok", "already"):
            return Answer(200, JSON, _sf_inner(ws, {"success": True, "errorCode": "S0000", "errorMsg": None,
                                                    "msgData": {"orderId": order_no, "resStatus": 2}}))
        if result == "unknown":
            return Answer(200, JSON, _sf_inner(ws, {"success": False, "errorCode": "8018",
                                                    "errorMsg": "未获取到订单信息", "msgData": None}))
        assert cancelled is not None
        return Answer(200, JSON, _sf_inner(ws, {"success": False, "errorCode": "8252",
                                                "errorMsg": _too_late_text(cancelled.stage),
                                                "msgData": None}))
    ws.invalid += 1
    return Answer(200, JSON, p.sf_answer(None, api_code="A1004", api_msg="无对应服务权限"))


def _sf_found(order: OrderState) -> dict[str, Any]:
    return {"success": True, "errorCode": "S0000", "errorMsg": None,
            "msgData": {"orderId": order.order_no, "originCode": "571", "destCode": "028", "filterResult": 2,
                        "remark": "", "waybillNoInfoList": [{"waybillType": 1, "waybillNo": order.waybill}]}}


# --- JD LOP -------------------------------------------------------------------------------------

def handle_jd(ws: WarehouseState, tail: str, query: Mapping[str, str], body: bytes) -> Answer:
    """JD LOP: one path per API, md5-salt sign in the query, JSON array body. The order query answers
    at the config's `queryPath` (default JD_QUERY_PATH), by our order number (customerOrderId)."""
    text = body.decode("utf-8", "replace")
    if not p.jd_lop_receiver(query, text, ws.spec.secret, "/" + tail):
        ws.bad_signatures += 1
        return Answer(200, JSON, p.jd_answer({"statusCode": 1002, "statusMessage": "签名校验失败 (sign invalid)"}))
    rid = f"{ws.index:02x}{ws.next_seq():014x}"
    try:
        doc = orjson.loads(body)
        obj = doc[0] if isinstance(doc, list) else doc
        order_no = str(obj.get("orderId") or obj.get("customerOrderId") or "").strip()
    except (orjson.JSONDecodeError, IndexError, AttributeError):
        order_no = ""
    if not order_no:
        ws.invalid += 1
        return Answer(200, JSON, p.jd_answer({"code": 1001, "msg": "订单号不能为空", "success": False,
                                              "requestId": rid}))
    if tail.endswith("/create"):
        order, new = ws.create(order_no)
        if not new:
            return Answer(200, JSON, p.jd_answer({
                "code": 1000, "msg": f"订单号{order_no}已存在，请勿重复下单", "subCode": "ORDER_ID_DUPLICATE",
                "subMsg": "商家订单号重复", "success": False, "requestId": rid}))
        return Answer(200, JSON, p.jd_answer({
            "code": 0, "msg": "成功", "success": True, "requestId": rid,
            "data": {"waybillCode": order.waybill, "orderCode": order.warehouse_order_id, "needRetry": False}}), order)
    if "/" + tail == str(ws.spec.context.get("queryPath") or JD_QUERY_PATH):
        ws.queries += 1
        found = ws.orders.get(order_no)
        if found is None:
            return Answer(200, JSON, p.jd_answer({"code": 1004, "msg": "未查询到订单信息", "success": False,
                                                  "requestId": rid}))
        status, desc = _JD_STATUS[found.stage]
        return Answer(200, JSON, p.jd_answer({
            "code": 0, "msg": "成功", "success": True, "requestId": rid,
            "data": {"customerOrderId": found.order_no, "orderCode": found.warehouse_order_id,
                     "waybillCode": found.waybill, "status": status, "statusDesc": desc}}))
    if tail.endswith("/cancel"):
        result, cancelled = ws.cancel(order_no)
        if result in ("ok", "already"):
            return Answer(200, JSON, p.jd_answer({"code": 0, "msg": "取消成功", "success": True, "requestId": rid,
                                                  "data": {"resultType": 1, "resultMsg": "取消成功"}}))
        if result == "unknown":
            return Answer(200, JSON, p.jd_answer({"code": 1004, "msg": "未查询到订单信息", "success": False,
                                                  "requestId": rid}))
        assert cancelled is not None
        return Answer(200, JSON, p.jd_answer({"code": 1005, "msg": _too_late_text(cancelled.stage), "success": False,
                                              "requestId": rid, "data": {"resultType": 2}}))
    ws.invalid += 1
    return Answer(404, JSON, p.jd_answer({"statusCode": 404, "statusMessage": f"no such API /{tail}"}))


# --- Cainiao LINK -------------------------------------------------------------------------------

def _cainiao_lines(msg: Mapping[str, Any]) -> list[tuple[str, str, int]]:
    items = (msg.get("orderItemList") or {}).get("orderItem") or []
    return [(str(i.get("orderItemId", "")), str(i.get("itemCode", "")), int(i.get("itemQuantity", 0)))
            for i in items if isinstance(i, dict)]


def handle_cainiao(ws: WarehouseState, tail: str, query: Mapping[str, str], body: bytes) -> Answer:
    """Cainiao LINK gateway: a form with msg_type, logistics_interface (JSON text), data_digest."""
    form = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
    digest = str(ws.spec.context.get("digest", "any"))
    ok = ((digest in ("raw", "any") and p.cainiao_receiver(form, ws.spec.secret, False))
          or (digest in ("hex", "any") and p.cainiao_receiver(form, ws.spec.secret, True)))
    if not ok:
        ws.bad_signatures += 1
        return Answer(200, JSON, p.cainiao_answer(False, "S02", "签名校验失败 (data_digest)"))
    try:
        msg = orjson.loads(form["logistics_interface"])
        order_no = str(msg.get("erpOrderCode") or msg.get("orderCode") or "").strip()
    except (orjson.JSONDecodeError, KeyError, AttributeError):
        msg, order_no = {}, ""
    if not order_no:
        ws.invalid += 1
        return Answer(200, JSON, p.cainiao_answer(False, "S01", "orderCode 不能为空"))
    msg_type = form.get("msg_type", "")
    if msg_type == "WMS_CONSIGN_ORDER_NOTIFY":
        order, new = ws.create(order_no, None, _cainiao_lines(msg) if ws.keep_lines else None)
        if not new:
            return Answer(200, JSON, p.cainiao_answer(False, "ORDER_EXISTS", f"订单{order_no}已存在，请勿重复推送"))
        return Answer(200, JSON, p.cainiao_answer(True), order)
    if msg_type == "WMS_ORDER_CANCEL_NOTIFY":
        result, cancelled = ws.cancel(order_no)
        if result in ("ok", "already"):
            return Answer(200, JSON, p.cainiao_answer(True))
        if result == "unknown":
            return Answer(200, JSON, p.cainiao_answer(False, "ORDER_NOT_FOUND", "订单不存在"))
        assert cancelled is not None
        return Answer(200, JSON, p.cainiao_answer(False, "ORDER_CANNOT_CANCEL", _too_late_text(cancelled.stage)))
    ws.invalid += 1
    return Answer(200, JSON, p.cainiao_answer(False, "S04", f"不支持的消息类型: {msg_type}"))


Handler = Callable[[WarehouseState, str, Mapping[str, str], bytes], Answer]
HANDLERS: dict[str, Handler] = {"qimen": handle_qimen, "sf": handle_sf, "jd": handle_jd, "cainiao": handle_cainiao}
