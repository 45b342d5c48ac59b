"""Feedback: the life of an accepted order in a simulated warehouse, and the callbacks that report
it to the service, each in its warehouse's own protocol, signed the way that warehouse signs.

Per kind, the steps (one every `step_delay` seconds after acceptance) and what is pushed to
`{callback_base}/{flow}`:

- qimen:   orderprocess.report ACCEPT, PICK, PACKAGE; deliveryorder.confirm DELIVERED (with the
           waybill); orderprocess.report SIGN.
- sf:      route-push opCodes 50 (collected), 30 (in transit), 44 (out for delivery), 80 (signed).
- cainiao: order-status-upload WMS_ACCEPT, WMS_PICK, WMS_PACKAGE; consign-order-confirm; then
           order-status-upload TMS_SIGN.
- jd:      the same stages without pushes (our library has no JD inbound flow).

A step moves the order's stage first (what cancel looks at), then pushes. The next step waits for
that push to be acknowledged or given up, so one order's callbacks arrive in order. A push whose
answer is not the warehouse's success acknowledgement is retried with exponential backoff, up to
`max_push_attempts` attempts in all; `duplicate_push_rate` re-sends an acknowledged push once,
same event id and bytes, to exercise the service's dedupe.

SF pushes routes in batches (its route push carries a list, of one waybill or of many): with
`route_batch` above 1 the SF routes of all orders are gathered for up to `route_linger` seconds
and pushed together, at most `route_batch` to a push; each order's lifecycle still waits for
the push that carried its route, so its routes arrive in order.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from itertools import count
from typing import NamedTuple
from urllib.parse import urlencode

from dockyard.service.http_client import HttpPool, NotSent, OutcomeUnknown, prepare
from dockyard.simulate import protocols as p
from dockyard.simulate.warehouses import (
    ACCEPTED,
    CANCELLED,
    PACKED,
    PICKING,
    SHIPPED,
    SIGNED,
    OrderState,
    WarehouseState,
)

__all__ = ["STEPS", "Feedback", "Push", "Pusher", "build_push"]


@dataclass(frozen=True)
class Feedback:
    """How the simulated warehouses report back. `retry_delay` (first backoff, doubling, capped at
    `max_retry_delay`) and `push_timeout` (one push attempt) extend the documented fields."""

    enabled: bool = True
    step_delay: float = 0.05
    duplicate_push_rate: float = 0.0
    max_push_attempts: int = 5
    retry_delay: float = 0.05
    max_retry_delay: float = 2.0
    push_timeout: float = 5.0
    route_batch: int = 1  # SF: routes (of any orders) in one push at most; 1 pushes each alone
    route_linger: float = 0.02  # SF: how long a route waits for others to share its push

    def __post_init__(self) -> None:
        if not 0.0 <= self.duplicate_push_rate <= 1.0:
            raise ValueError("duplicate_push_rate must lie in 0..1")
        if self.max_push_attempts < 1:
            raise ValueError("max_push_attempts must be at least 1")
        if self.route_batch < 1:
            raise ValueError("route_batch must be at least 1")
        if min(self.step_delay, self.retry_delay, self.max_retry_delay, self.push_timeout, self.route_linger) < 0:
            raise ValueError("delays and timeouts must not be negative")


class Push(NamedTuple):
    flow: str
    query: dict[str, str] | None
    content_type: str
    body: bytes
    acked: Callable[[int, bytes], bool]


# (stage the step moves the order to, the warehouse's code for the step)
STEPS: dict[str, tuple[tuple[str, str], ...]] = {
    "qimen": ((ACCEPTED, "ACCEPT"), (PICKING, "PICK"), (PACKED, "PACKAGE"), (SHIPPED, "DELIVERED"), (SIGNED, "SIGN")),
    "sf": ((SHIPPED, "50"), (SHIPPED, "30"), (SHIPPED, "44"), (SIGNED, "80")),
    "cainiao": ((ACCEPTED, "WMS_ACCEPT"), (PICKING, "WMS_PICK"), (PACKED, "WMS_PACKAGE"), (SHIPPED, "CONFIRM"),
                (SIGNED, "TMS_SIGN")),
    "jd": ((PICKING, "PICK"), (PACKED, "PACK"), (SHIPPED, "SHIP"), (SIGNED, "SIGN")),
}

_QIMEN_INFO = {"ACCEPT": "仓库已接单", "PICK": "拣货完成", "PACKAGE": "打包完成", "SIGN": "买家已签收"}
_SF_REMARK = {"50": "顺丰速运 已收取快件", "30": "快件在【杭州转运中心】完成分拣，准备发往下一站",
              "44": "快件交给张师傅，正在派送途中", "80": "已签收，感谢使用顺丰，期待再次为您服务"}
_SF_ROUTE_IDS = count(1589187410000001)  # SF route ids are long numbers, unique across pushes


def build_push(ws: WarehouseState, order: OrderState, code: str) -> Push | None:
    """The callback reporting step `code` of `order`, signed; None for warehouses that push nothing."""
    spec, ctx, now = ws.spec, ws.spec.context, p.shanghai_time()
    event_id = f"SIM-{spec.name}-{order.order_no}-{code}"  # unique per order and step; same on a re-send
    if spec.kind == "qimen":
        warehouse = str(ctx.get("warehouseCode", spec.name))
        if code == "DELIVERED":
            xml = p.qimen_confirm_xml(order_no=order.order_no, order_id=order.warehouse_order_id,
                                      warehouse_code=warehouse, out_biz_code=event_id, when=now,
                                      carrier=order.carrier, waybill=order.waybill, weight="1.25", lines=order.lines)
            method = "deliveryorder.confirm"
        else:
            xml = p.qimen_process_xml(order_no=order.order_no, order_id=order.warehouse_order_id,
                                      warehouse_code=warehouse, step=code, when=now, info=_QIMEN_INFO.get(code, code),
                                      out_biz_code=event_id)
            method = "orderprocess.report"
        query = p.qimen_callback_query(method, ctx, xml, spec.secret)
        return Push(method, query, "text/xml;charset=utf-8", xml.encode("utf-8"), p.qimen_acked)
    if spec.kind == "sf":
        return sf_push(ws, [sf_route(order, code, now)])
    if spec.kind == "cainiao":
        message: dict[str, object] = {
            "orderCode": order.order_no, "erpOrderCode": order.order_no, "orderType": 201,
            "storeCode": str(ctx.get("storeCode", spec.name)), "storeOrderCode": order.warehouse_order_id}
        if code == "CONFIRM":
            message.update({
                "outBizCode": event_id, "confirmType": 0, "orderConfirmTime": now,
                "tmsOrders": {"tmsOrder": [{"tmsCode": order.carrier, "tmsOrderCode": order.waybill,
                                            "packageCode": "PKG-1", "packageWeight": 1250}]}})
            if order.lines:
                message["orderItems"] = {"orderItem": [{"orderItemId": no, "itemCode": sku, "itemQuantity": qty}
                                                       for no, sku, qty in order.lines]}
            msg_type, flow = "WMS_CONSIGN_ORDER_CONFIRM", "consign-order-confirm"
        else:
            message.update({"status": code, "operator": "模拟仓", "operateDate": now})
            msg_type, flow = "WMS_ORDER_STATUS_UPLOAD", "order-status-upload"
        form = p.cainiao_callback(msg_type, message, secret=spec.secret,
                                  hex_digest=str(ctx.get("digest", "raw")) == "hex",
                                  provider=str(ctx.get("toCode", spec.name)),
                                  to_code=str(ctx.get("logisticProviderId", "")), msg_id=event_id)
        return Push(flow, None, "application/x-www-form-urlencoded;charset=utf-8",
                    urlencode(form).encode("ascii"), p.cainiao_acked)
    return None


def sf_route(order: OrderState, code: str, now: str | None = None) -> dict[str, str]:
    """One SF route: step `code` of `order`."""
    return {"id": str(next(_SF_ROUTE_IDS)), "mailno": order.waybill, "orderid": order.order_no,
            "acceptTime": now or p.shanghai_time(), "acceptAddress": "杭州市", "remark": _SF_REMARK.get(code, ""),
            "opCode": code, "reasonCode": "", "reasonName": ""}


def sf_push(ws: WarehouseState, routes: list[dict[str, str]]) -> Push:
    """One signed SF route push carrying `routes`."""
    query, body = p.sf_route_push(routes, ws.spec.secret, str(int(time.time() * 1000)))
    return Push("route-push", query, "application/json;charset=utf-8", body, p.sf_acked)


class _Routes:
    """SF routes waiting to share a push: each with the future its lifecycle awaits."""

    __slots__ = ("timer", "waiting")

    def __init__(self) -> None:
        self.waiting: list[tuple[dict[str, str], asyncio.Future[bool]]] = []
        self.timer: asyncio.TimerHandle | None = None


class Pusher:
    """Runs order lifecycles and delivers their callbacks over one pool of keep-alive connections.

    The pool is the service's own lean HTTP client (dockyard.service.http_client), not aiohttp's:
    the simulated warehouses push 3-5 callbacks per order, and aiohttp's client request cost more
    CPU than the service spent taking the callback, so on a 2-core machine the rig, not the service,
    capped what bench/e2e.py could measure (issue 10)."""

    def __init__(self, feedback: Feedback, pool: HttpPool, rng: random.Random) -> None:
        self.feedback = feedback
        self.pool = pool
        self.rng = rng
        self._routes: dict[str, _Routes] = {}
        self._flushing: set[asyncio.Task[None]] = set()

    async def lifecycle(self, ws: WarehouseState, order: OrderState) -> None:
        base = ws.spec.callback_base
        for stage, code in STEPS[ws.spec.kind]:
            await asyncio.sleep(self.feedback.step_delay)
            if order.stage == CANCELLED:  # a cancel that got in before picking ends the story
                return
            order.stage = stage
            if base and ws.spec.kind == "sf" and self.feedback.route_batch > 1:
                await self._route(ws, base, sf_route(order, code))
                continue
            push = build_push(ws, order, code) if base else None
            if push is not None and base is not None:
                await self.deliver(ws, base, push)

    async def _route(self, ws: WarehouseState, base: str, route: dict[str, str]) -> bool:
        """Push `route` together with the other orders' routes gathered meanwhile; whether the push
        that carried it was acknowledged."""
        batch = self._routes.setdefault(ws.spec.name, _Routes())
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        batch.waiting.append((route, done))
        if len(batch.waiting) >= self.feedback.route_batch:
            self._flush(ws, base)
        elif batch.timer is None:
            batch.timer = asyncio.get_running_loop().call_later(self.feedback.route_linger, self._flush, ws, base)
        return await done

    def _flush(self, ws: WarehouseState, base: str) -> None:
        batch = self._routes.get(ws.spec.name)
        if batch is None or not batch.waiting:
            return
        if batch.timer is not None:
            batch.timer.cancel()
            batch.timer = None
        taken, batch.waiting = batch.waiting, []
        task = asyncio.get_running_loop().create_task(self._send_routes(ws, base, taken))
        self._flushing.add(task)  # held until done: a task nobody references may be collected
        task.add_done_callback(self._flushing.discard)

    async def _send_routes(self, ws: WarehouseState, base: str,
                           taken: list[tuple[dict[str, str], asyncio.Future[bool]]]) -> None:
        ok = False
        try:
            ok = await self.deliver(ws, base, sf_push(ws, [route for route, _ in taken]))
        finally:  # every lifecycle that waits hears how it went, even when the push failed inside
            for _, done in taken:
                if not done.done():
                    done.set_result(ok)

    async def deliver(self, ws: WarehouseState, base: str, push: Push) -> bool:
        """Push until acknowledged or `max_push_attempts` are spent; counts on `ws`."""
        url = f"{base.rstrip('/')}/{push.flow}"
        if push.query:
            url += "?" + urlencode(push.query)
        ws.pushed += 1
        delay = self.feedback.retry_delay
        for attempt in range(1, self.feedback.max_push_attempts + 1):
            if await self._post(url, push):
                ws.acked += 1
                rate = self.feedback.duplicate_push_rate
                if rate and self.rng.random() < rate:
                    ws.duplicated += 1
                    await self._post(url, push)  # a redelivery: its answer changes nothing
                return True
            if attempt < self.feedback.max_push_attempts:
                ws.retried += 1
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.feedback.max_retry_delay)
        ws.failed += 1
        return False

    async def _post(self, url: str, push: Push) -> bool:
        try:
            answer = await self.pool.request(prepare("POST", url, [("Content-Type", push.content_type)], push.body))
        except (NotSent, OutcomeUnknown, OSError):
            return False
        return push.acked(answer.status, answer.body)
