"""The simulator process: one aiohttp server for every simulated warehouse (under /{name}/…), the
order middle-platform's webhook (/_upstream/events), the control endpoints (/_sim/…), and the
`Simulator` object that starts, inspects and stops it all.

Routes (each warehouse answers only on the paths of its own kind):

    POST /{name}/router/qimen/service          QIMEN (method in the query)
    POST /{name}/std/service                   SF (serviceCode form field)
    POST /{name}/ecap/…                        JD LOP (…/orders/create, …/cancel, the order query)
    POST /{name}/gateway/link.do               Cainiao LINK (msg_type form field)
    POST /_upstream/events                     status-event webhook (JSON array)
    GET  /_sim/stats   GET /_sim/received/{name}   GET /_sim/upstream/events   POST /_sim/faults/{name}
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterable
from typing import Any

import orjson
from aiohttp import web

from dockyard.service.http_client import HttpPool
from dockyard.simulate.faults import FAULT_KINDS, GARBAGE_PAGE, Faults, pick_fault
from dockyard.simulate.feedback import Feedback, Pusher
from dockyard.simulate.protocols import upstream_receiver
from dockyard.simulate.warehouses import HANDLERS, STAGES, Answer, OrderState, SimWarehouse, WarehouseState

__all__ = ["UPSTREAM", "Simulator"]

UPSTREAM = "_upstream"  # the name of the webhook receiver in set_faults / stats


def _json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, headers={"Content-Type": "application/json"})


class _Upstream:
    """The order middle-platform's side: status events received, by order and by event."""

    def __init__(self, secret: str | None, faults: Faults) -> None:
        self.secret = secret
        self.faults = faults
        self.events: list[dict[str, Any]] = []
        self.by_order: dict[str, int] = {}
        self.by_event: dict[tuple[str, str], int] = {}
        self.posts = self.bad_signatures = self.invalid = self.refused = 0
        self.fault_counts = dict.fromkeys(FAULT_KINDS, 0)
        # Orders the middle platform does not take events for (it answers 422 to a batch holding
        # one, taking none of the batch), as a platform refuses an order it never issued.
        self.refuse_orders: frozenset[str] = frozenset()

    def record(self, events: list[dict[str, Any]]) -> None:
        self.posts += 1
        self.events.extend(events)
        for event in events:
            order_no = str(event.get("order_no", ""))
            self.by_order[order_no] = self.by_order.get(order_no, 0) + 1
            # An event is the same event when its id is; events without an id (QIMEN process
            # reports) are told apart by their status.
            key = (order_no, str(event.get("event_id") or event.get("status", "")))
            self.by_event[key] = self.by_event.get(key, 0) + 1

    def stats(self) -> dict[str, Any]:
        return {"posts": self.posts, "events": len(self.events), "unique_events": len(self.by_event),
                "orders": len(self.by_order), "bad_signatures": self.bad_signatures, "invalid": self.invalid,
                "refused": self.refused, "faults": dict(self.fault_counts)}


class Simulator:
    """Simulated QIMEN, SF, JD LOP and Cainiao warehouses plus the upstream webhook, on loopback.

    `seed` drives every random choice (faults, duplicate pushes), so a run with the same requests
    in the same order behaves the same. `upstream_faults` sets the webhook's faults at start (the
    same as `set_faults("_upstream", …)`)."""

    def __init__(self, warehouses: Iterable[SimWarehouse], feedback: Feedback | None = None,
                 upstream_secret: str | None = None, seed: int = 1, *,
                 upstream_faults: Faults | None = None) -> None:
        self.feedback = feedback if feedback is not None else Feedback()
        self._rng = random.Random(seed)
        self._states: dict[str, WarehouseState] = {}
        for spec in warehouses:
            if spec.name in self._states:
                raise ValueError(f"two simulated warehouses are named {spec.name!r}")
            ws = WarehouseState(spec, len(self._states) + 1)
            ws.keep_lines = self.feedback.enabled and spec.callback_base is not None
            self._states[spec.name] = ws
        self._upstream = _Upstream(upstream_secret, upstream_faults or Faults())
        self._tasks: set[asyncio.Task[None]] = set()
        self._runner: web.AppRunner | None = None
        self._pool: HttpPool | None = None
        self._pusher: Pusher | None = None
        self.base_url: str | None = None

    # --- lifecycle ------------------------------------------------------------------------------

    def make_app(self) -> web.Application:
        app = web.Application(client_max_size=8 * 1024 * 1024)
        app.router.add_post("/_upstream/events", self._upstream_events)
        app.router.add_get("/_sim/stats", self._http_stats)
        app.router.add_get("/_sim/received/{name}", self._http_received)
        app.router.add_get("/_sim/upstream/events", self._http_upstream_events)
        app.router.add_post("/_sim/faults/{name}", self._http_faults)
        app.router.add_post("/{name}/router/qimen/service", self._qimen)
        app.router.add_post("/{name}/std/service", self._sf)
        app.router.add_post("/{name}/ecap/{op:.+}", self._jd)
        app.router.add_post("/{name}/gateway/link.do", self._cainiao)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Bind and serve; returns the base URL actually bound, e.g. http://127.0.0.1:41234."""
        if self._runner is not None:
            raise RuntimeError("the simulator is already started")
        # No access log: per-request logging would dominate a benchmark. A short shutdown timeout:
        # answers held back by a `timeout` fault are abandoned at stop, not waited for.
        runner = web.AppRunner(self.make_app(), access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        self._runner = runner
        bound = runner.addresses[0]
        self.base_url = f"http://{host}:{bound[1]}"
        self._pool = HttpPool(limit=256, connect_timeout=self.feedback.push_timeout,
                              timeout=self.feedback.push_timeout)
        self._pusher = Pusher(self.feedback, self._pool, self._rng)
        return self.base_url

    async def drain(self, timeout: float = 30.0) -> None:
        """Wait until no order lifecycle (and so no callback push) is pending; TimeoutError when
        some still are after `timeout` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._tasks:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"{len(self._tasks)} order lifecycle(s) still pushing after {timeout}s")
            await asyncio.wait(set(self._tasks), timeout=remaining)

    async def stop(self) -> None:
        """Abandon pending lifecycles, close the client session and the server."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # --- inspection and control -----------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        return {"warehouses": {name: ws.stats() for name, ws in self._states.items()},
                "upstream": self._upstream.stats(), "pending_lifecycles": len(self._tasks)}

    def received(self, name: str) -> dict[str, int]:
        """order_no → create requests that reached the warehouse logic (processed)."""
        return dict(self._state(name).received)

    def upstream_events(self) -> list[dict[str, Any]]:
        return list(self._upstream.events)

    def refuse_upstream(self, order_nos: Iterable[str]) -> None:
        """From now on the webhook refuses (422) every batch holding an event of these orders."""
        self._upstream.refuse_orders = frozenset(order_nos)

    def upstream_received(self) -> dict[str, int]:
        """order_no → status events the webhook received for it."""
        return dict(self._upstream.by_order)

    def set_faults(self, name: str, faults: Faults) -> None:
        if name == UPSTREAM:
            self._upstream.faults = faults
        else:
            self._state(name).faults = faults

    def order_stage(self, name: str, order_no: str) -> str | None:
        """The stage of an order in a simulated warehouse (accepted, picking, packed, shipped,
        signed, cancelled), None when it has no such order."""
        order = self._state(name).orders.get(order_no)
        return None if order is None else order.stage

    def set_stage(self, name: str, order_no: str, stage: str) -> None:
        """Move an order to a stage by hand (tests of cancel without waiting for the feedback)."""
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}; stages: {STAGES}")
        order = self._state(name).orders.get(order_no)
        if order is None:
            raise KeyError(f"{name} has no order {order_no!r}")
        order.stage = stage

    def _state(self, name: str) -> WarehouseState:
        try:
            return self._states[name]
        except KeyError:
            raise KeyError(f"no simulated warehouse named {name!r}") from None

    # --- warehouses -----------------------------------------------------------------------------

    async def _qimen(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, "qimen", "router/qimen/service")

    async def _sf(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, "sf", "std/service")

    async def _jd(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, "jd", "ecap/" + request.match_info["op"])

    async def _cainiao(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, "cainiao", "gateway/link.do")

    async def _serve(self, request: web.Request, kind: str, tail: str) -> web.StreamResponse:
        ws = self._states.get(request.match_info["name"])
        if ws is None or ws.spec.kind != kind:
            raise web.HTTPNotFound(text=f"no simulated {kind} warehouse here\n")
        fault = pick_fault(ws.faults, self._rng)
        if fault == "error":  # before anything is read or done: the request is NOT processed
            ws.fault_counts["error"] += 1
            return web.Response(status=503, text="503 Service Temporarily Unavailable\n")
        body = await request.read()
        if fault == "lost":  # read, never processed, never answered: in doubt, and NOT at the warehouse
            ws.fault_counts["lost"] += 1
            return await self._lose(request, ws.faults)
        answer = HANDLERS[kind](ws, tail, request.query, body)
        if answer.new_order is not None:
            self._start_lifecycle(ws, answer.new_order)
        if fault is None:
            return web.Response(body=answer.body, status=answer.status, headers={"Content-Type": answer.content_type})
        ws.fault_counts[fault] += 1
        return await self._misbehave(request, fault, ws.faults, answer)

    def _start_lifecycle(self, ws: WarehouseState, order: OrderState) -> None:
        if not self.feedback.enabled or self._pusher is None:
            return
        task = asyncio.get_running_loop().create_task(self._run_lifecycle(self._pusher, ws, order))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _run_lifecycle(pusher: Pusher, ws: WarehouseState, order: OrderState) -> None:
        try:
            await pusher.lifecycle(ws, order)
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug in a push must not leave an unretrieved task exception behind
            ws.failed += 1

    @staticmethod
    async def _lose(request: web.Request, faults: Faults) -> web.StreamResponse:
        """A `lost` request: no answer, the connection dropped after timeout_seconds."""
        await asyncio.sleep(faults.timeout_seconds)
        if request.transport is not None:
            request.transport.abort()
        return web.Response(status=204)  # never written: the connection is gone

    @staticmethod
    async def _misbehave(request: web.Request, fault: str, faults: Faults, answer: Answer) -> web.StreamResponse:
        """The processed request's answer, spoiled by `fault` (see faults.py)."""
        if fault == "garbage":
            return web.Response(body=GARBAGE_PAGE, status=200, headers={"Content-Type": "text/html"})
        if fault == "reset":
            if request.transport is not None:
                request.transport.abort()  # RST without an answer
            return web.Response(status=204)  # never written: the connection is gone
        await asyncio.sleep(faults.timeout_seconds if fault == "timeout" else faults.slow_seconds)
        return web.Response(body=answer.body, status=answer.status, headers={"Content-Type": answer.content_type})

    # --- upstream webhook -----------------------------------------------------------------------

    async def _upstream_events(self, request: web.Request) -> web.StreamResponse:
        up = self._upstream
        fault = pick_fault(up.faults, self._rng)
        if fault == "error":
            up.fault_counts["error"] += 1
            return web.Response(status=503, text="503 Service Temporarily Unavailable\n")
        body = await request.read()
        if fault == "lost":
            up.fault_counts["lost"] += 1
            return await self._lose(request, up.faults)
        if up.secret is not None:
            signature = request.headers.get("X-Dockyard-Signature", "")
            if signature.startswith("sha256="):
                signature = signature[7:]
            if not upstream_receiver(body, signature, up.secret):
                up.bad_signatures += 1
                return _json_response({"ok": False, "error": "bad signature"}, 401)
        try:
            events = orjson.loads(body)
        except orjson.JSONDecodeError:
            events = None
        if not isinstance(events, list) or not all(isinstance(e, dict) for e in events):
            up.invalid += 1
            return _json_response({"ok": False, "error": "expected a JSON array of status-event objects"}, 400)
        unknown = sorted({str(e.get("order_no")) for e in events} & up.refuse_orders)
        if unknown:
            up.refused += 1
            return _json_response({"ok": False, "error": f"unknown order {unknown[0]}"}, 422)
        up.record(events)
        answer = Answer(200, "application/json", orjson.dumps({"ok": True, "received": len(events)}))
        if fault is None:
            return web.Response(body=answer.body, headers={"Content-Type": answer.content_type})
        up.fault_counts[fault] += 1
        return await self._misbehave(request, fault, up.faults, answer)

    # --- control --------------------------------------------------------------------------------

    async def _http_stats(self, request: web.Request) -> web.StreamResponse:
        return _json_response(self.stats())

    async def _http_received(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if name not in self._states:
            return _json_response({"error": f"no simulated warehouse named {name!r}"}, 404)
        return _json_response(self.received(name))

    async def _http_upstream_events(self, request: web.Request) -> web.StreamResponse:
        return _json_response(self._upstream.events)

    async def _http_faults(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if name != UPSTREAM and name not in self._states:
            return _json_response({"error": f"no simulated warehouse named {name!r}"}, 404)
        try:
            data = orjson.loads(await request.read())
            if not isinstance(data, dict):
                raise ValueError("expected a JSON object of Faults fields")
            faults = Faults.from_mapping(data)
        except (orjson.JSONDecodeError, ValueError, TypeError) as exc:
            return _json_response({"error": str(exc)}, 400)
        self.set_faults(name, faults)
        return _json_response({"ok": True, "faults": vars(faults)})
