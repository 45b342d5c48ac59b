"""The HTTP face of the service (aiohttp) and its lifecycle.

Routes:
  POST /orders                       one order → 202 {tracking_id} once it is durably recorded
  POST /orders/batch                 a JSON array (or {"orders": [...]}) → per-order results
  GET  /orders/{order_no}            current status, waybills, events, jobs
  POST /orders/{order_no}/cancel     the warehouse's cancel flow, queued behind the create
  POST /callbacks/{warehouse}/{flow} warehouse feedback (see feedback.py); …/{flow}/{token} when
                                     the flow's guard takes its token in the path
  GET  /healthz, /readyz             ready: 200; live but the store unreachable: 503 (no token needed)
  GET  /livez                        liveness only
  GET  /stats                        counts from the store (outbox, DLQ, in doubt, events)
  GET  /metrics                      Prometheus

Who may call what (guards.py): ingest has its own guard, a callback its signature and guard; every
other route but /healthz and /ui needs a token once any token is configured. Every answer gets
the headers of middleware.py, and no 500 says more than an error id.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import ipaddress
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from dockyard.service import logs, queries, retention, store, tracing
from dockyard.service.config import ServiceConfig
from dockyard.service.context import ServiceContext, dumps
from dockyard.service.db import Database, StoreUnavailable, now_us
from dockyard.service.delivery import UPSTREAM, Deliverer
from dockyard.service.feedback import handle_callback
from dockyard.service.guards import Guard, Refusal, require_token
from dockyard.service.ingest import BodyError, Checked, OrderChecker, read_body, storable_order, storable_text
from dockyard.service.metrics import CONTENT_TYPE_LATEST, Metrics, read_backlog
from dockyard.service.middleware import error_ids, receive_body, security_headers
from dockyard.service.ui import add_ui_routes

__all__ = ["SERVE_GC_THRESHOLDS", "Service"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


# The cyclic collector's thresholds while serving. Python's first one (700) counts allocations
# net of frees: reading a batch of 200 orders, a group commit's results or a burst of callbacks
# passes it many times over, and each young collection walks what is alive at that moment (the
# very batch being built), then moves it on to be walked again by the middle generation. With
# feedback on that was 230-260 µs of CPU per order, 7-8% of the service's (bench/e2e.py -n 5000:
# ~1,120 young, ~100 middle and 9 full collections; bench/README.md, stop 22); with these, one
# collection in the run. Short-lived objects are freed by their reference counts and never need
# the collector; what it is for, garbage in cycles, is still found once 50,000 objects more are
# alive than at the last collection (a few MB at most): memory stays bounded (the same peak RSS).
SERVE_GC_THRESHOLDS = (50_000, 10, 10)


def _json(data: Any, status: int = 200) -> web.Response:
    return _encoded(orjson.dumps(data, default=str), status)


def _encoded(body: bytes, status: int = 200) -> web.Response:
    """A JSON answer already encoded (in a reader thread, off the event loop)."""
    return web.Response(body=body, status=status, content_type="application/json")


class Service:
    def __init__(self, ctx: ServiceContext, *, db: Database | None = None) -> None:
        self.ctx = ctx
        self.config = ctx.config
        self.db = db or Database(self.config.store, readers=self.config.readers)
        self.checker = OrderChecker(ctx.router, ctx.config.limits)
        self.metrics = Metrics(self.config)
        self.deliverer = Deliverer(ctx, self.db, owner=self.db.owner, metrics=self.metrics)
        self.runner: web.AppRunner | None = None
        self.url = ""
        self.ingest_guard: Guard | None = None
        self.callback_guards: dict[tuple[str, str], Guard] = {}
        self.set_guards(self.config)

    def set_guards(self, config: ServiceConfig) -> None:
        """The guards of `config` (at start, and when a reload changes them): each replaced whole,
        in one assignment on the event loop, so a request is checked by the old guards or the new."""
        proxies = tuple(ipaddress.ip_network(p, strict=False) for p in config.trusted_proxies)
        self.ingest_guard = Guard(config.ingest, self.ctx.secrets, proxies) if config.ingest is not None else None
        self.callback_guards = {(w.name, name): Guard(cb.guard, self.ctx.secrets, proxies)
                                for w in config.warehouses.values() for name, cb in w.callbacks.items()
                                if cb.guard is not None}

    # -- lifecycle --------------------------------------------------------------------------
    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.config.limits.max_body_bytes, middlewares=[error_ids])
        app.on_response_prepare.append(security_headers)
        app.router.add_post("/orders", self._timed("order", self.post_order))
        app.router.add_post("/orders/batch", self._timed("batch", self.post_batch))
        app.router.add_get("/orders/{order_no}", self.get_order)
        app.router.add_post("/orders/{order_no}/cancel", self.post_cancel)
        app.router.add_post("/callbacks/{warehouse}/{flow}", self.post_callback)
        app.router.add_post("/callbacks/{warehouse}/{flow}/{token}", self.post_callback)
        app.router.add_get("/healthz", self.health)
        app.router.add_get("/readyz", self.health)
        app.router.add_get("/livez", self.live)
        app.router.add_get("/stats", self.stats)
        app.router.add_get("/metrics", self.metrics_page)
        add_ui_routes(app, self)
        return app

    def _timed(self, endpoint: str, handler: Handler) -> Handler:
        """`handler`, its time to answer observed as dockyard_ingest_seconds{endpoint} (CPU-cheap:
        one clock read each side)."""
        observe = self.metrics.observe_ingest

        async def timed(request: web.Request) -> web.StreamResponse:
            started = time.perf_counter()
            try:
                return await handler(request)
            finally:
                observe(endpoint, time.perf_counter() - started)
        return timed

    async def start(self, host: str | None = None, port: int | None = None, sock: socket.socket | None = None) -> str:
        """Serve on host:port, or on an already listening socket (the workers of `serve`)."""
        tracing.refresh()  # the SDK, if any, is configured by now: spans are made only if it exports
        recovered = await self.db.write(lambda c: store.recover(c, me=self.db.owner, gone=self.db.owner_gone))
        self.recovered = len(recovered)
        await self.deliverer.start()
        # the journal's partitions ahead and the retention purge, hourly (retention.py)
        self._maintenance_stop = asyncio.Event()
        self._maintenance = asyncio.create_task(retention.maintain(self.db, self.config.retention,
                                                                   self._maintenance_stop))
        # keepalive_timeout runs from a connection's start (or its last answer) until a request's
        # headers are complete: it is the header timeout too (middleware.py). Lingering (reading
        # and dropping the rest of a body no one read, after the answer) is kept short.
        limits = self.config.limits
        self.runner = web.AppRunner(self.app(), access_log=None, handle_signals=False,
                                    keepalive_timeout=limits.header_timeout,
                                    lingering_time=min(2.0, limits.body_timeout))
        await self.runner.setup()
        site: web.BaseSite
        if sock is not None:
            site = web.SockSite(self.runner, sock)
        else:
            site = web.TCPSite(self.runner, host or self.config.host, self.config.port if port is None else port,
                               backlog=1024)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        bound = sockets[0].getsockname()[1] if sockets else port
        self.url = f"http://{host or self.config.host}:{bound}"
        return self.url

    async def stop(self) -> None:
        maintenance = getattr(self, "_maintenance", None)
        if maintenance is not None:
            self._maintenance_stop.set()
            await maintenance  # a run under way stops at its next batch
        if self.runner is not None:
            await self.runner.cleanup()
        await self.deliverer.stop()
        self.db.close()

    # -- ingest -----------------------------------------------------------------------------
    async def _record(self, checked: list[Checked], bodies: list[str],
                      continued: str | None = None) -> list[dict[str, Any]]:
        """One commit for the whole request: accepted orders with their jobs, refused ones in quarantine.
        `continued`: the tracking id of a request with a `traceparent` (its orders join the caller's trace)."""
        on_update = self.config.on_change == "update"
        received = now_us()
        items = [store.IngestItem(c.order_no or "", continued or c.tracking_id, c.warehouse or "",
                                  _text(c.order, "shop_code"), _text(c.order, "channel"), c.fingerprint,
                                  dumps(c.order), now_us(), c.route,
                                  on_update and "update" in self.config.warehouses[c.warehouse or ""].flows)
                 for c in checked if c.order is not None]
        refused = [(c, b) for c, b in zip(checked, bodies, strict=True) if c.order is None]

        results: list[store.IngestResult] = []
        if items:
            results = await self.db.write(store.IngestOp(items))
        qids: list[int] = []
        if refused:
            qids = await self.db.write(lambda c: [store.quarantine(c, "order", ch.order_no, ch.reasons, body)
                                                  for ch, body in refused])
        cache = self.deliverer.orders
        for c, r in zip((c for c in checked if c.order is not None), results, strict=True):
            if r.status == "accepted" and c.order is not None:
                if len(cache) >= self.deliverer.orders_cap:  # another worker took them: forget the oldest
                    del cache[next(iter(cache))]
                cache[c.order_no] = c.order
        out: list[dict[str, Any]] = []
        accepted, quarantined = iter(results), iter(qids)
        for c in checked:
            if c.order is None:
                self.metrics.orders.labels("none", "quarantined").inc()
                out.append({"order_no": c.order_no, "status": "quarantined", "quarantine_id": next(quarantined),
                            "reasons": list(c.reasons)})
                continue
            r = next(accepted)
            self.metrics.child(self.metrics.orders, c.warehouse, r.status).inc()
            if tracing.enabled():  # from receipt to the commit that made the order durable
                with tracing.span("dockyard.ingest", r.tracking_id, {
                        "dockyard.order_no": c.order_no, "dockyard.warehouse": c.warehouse,
                        "dockyard.outcome": r.status}, start_us=received):
                    pass
            entry: dict[str, Any] = {"order_no": c.order_no, "status": r.status, "tracking_id": r.tracking_id,
                                     "warehouse": c.warehouse}
            if r.reason:
                entry["reason"] = r.reason
            out.append(entry)
        for warehouse in {c.warehouse for c in checked if c.warehouse}:
            self.deliverer.poke(warehouse)
        return out

    async def post_order(self, request: web.Request) -> web.Response:
        try:
            return await self._post_order(request)
        except StoreUnavailable as exc:
            return _unavailable(exc)

    async def _post_order(self, request: web.Request) -> web.Response:
        refused = await self._guard_ingest(request)
        if refused is not None:
            return refused
        body = await receive_body(request, self.config.limits.body_timeout)
        try:
            parsed = read_body(body, self.config.limits)
        except BodyError as exc:
            return await self._refuse_body(body, str(exc))
        checked = self.checker.check(parsed.value, suspect=parsed.suspect)
        [result] = await self._record([checked], [storable_text(body.decode("utf-8", errors="replace"))],
                                      tracing.continued_tracking_id(request.headers))
        status = {"accepted": 202, "updated": 202, "duplicate": 200, "conflict": 409, "quarantined": 422}
        return _json(result, status[result["status"]])

    async def post_batch(self, request: web.Request) -> web.Response:
        try:
            return await self._post_batch(request)
        except StoreUnavailable as exc:
            return _unavailable(exc)

    async def _post_batch(self, request: web.Request) -> web.Response:
        refused = await self._guard_ingest(request)
        if refused is not None:
            return refused
        body = await receive_body(request, self.config.limits.body_timeout)
        try:
            parsed = read_body(body, self.config.limits)
        except BodyError as exc:
            return await self._refuse_body(body, str(exc))
        data = parsed.value
        orders = data.get("orders") if isinstance(data, dict) else data
        if not isinstance(orders, list):
            return await self._refuse_body(body, "a batch is a JSON array of orders, or {\"orders\": [...]}")
        if len(orders) > self.config.limits.max_batch:
            return await self._refuse_body(body, f"{len(orders)} orders in one batch; the limit is "
                                                 f"{self.config.limits.max_batch}", status=413)
        checked = [self.checker.check(o, suspect=parsed.suspect) for o in orders]
        bodies = [storable_order(o) if c.order is None else "" for o, c in zip(orders, checked, strict=True)]
        results = await self._record(checked, bodies, tracing.continued_tracking_id(request.headers))
        counts: dict[str, int] = {}
        for r in results:
            counts[r["status"]] = counts.get(r["status"], 0) + 1
        ok = all(r["status"] in ("accepted", "duplicate", "updated") for r in results)
        return _json({"counts": counts, "results": results}, 202 if ok else 207)

    async def _guard_ingest(self, request: web.Request) -> web.Response | None:
        """The ingest guard, before the body is read: None to go on, else the refusal (journaled)."""
        if self.ingest_guard is None:
            return None
        refusal = self.ingest_guard.check(_peer(request), request.headers)
        if refusal is None:
            return None
        remote = _peer(request)
        logs.event(logging.WARNING, "ingest refused", reason=refusal.reason, remote=remote)
        await self.db.write(lambda c: store.journal(c, [store.JournalRow(
            now_us(), None, None, None, "ingest-rejected", refusal.outcome,
            detail={"reason": refusal.reason, "remote": remote})]))
        self.metrics.orders.labels("none", refusal.outcome).inc()
        return _refusal(refusal)

    async def _refuse_body(self, body: bytes, reason: str, status: int = 400) -> web.Response:
        text = storable_text(body[:1_000_000].decode("utf-8", errors="replace"))
        qid = await self.db.write(lambda c: store.quarantine(c, "order", None, [reason], text))
        return _json({"status": "quarantined", "quarantine_id": qid, "reasons": [reason]}, status)

    # -- orders -----------------------------------------------------------------------------
    async def get_order(self, request: web.Request) -> web.Response:
        refusal = require_token(self.config, self.ctx.secrets, request.headers)
        if refusal is not None:
            return _refusal(refusal)
        order_no = request.match_info["order_no"]
        if not queries.storable_key(order_no):
            return _json({"error": f"no order {order_no!r}"}, 404)

        def read(conn: Any) -> bytes | None:  # read and encoded in the reader thread: the loop only sends it
            found = queries.order_status(conn, order_no)
            return None if found is None else orjson.dumps(found, default=str)

        body = await self.db.read(read)
        if body is None:
            return _json({"error": f"no order {order_no!r}"}, 404)
        return _encoded(body)

    async def post_cancel(self, request: web.Request) -> web.Response:
        refusal = require_token(self.config, self.ctx.secrets, request.headers, operator=True)
        if refusal is not None:
            return _refusal(refusal)
        order_no = request.match_info["order_no"]
        if not queries.storable_key(order_no):
            return _json({"order_no": order_no, "status": "unknown", "detail": f"no order {order_no!r}"}, 404)

        def write(conn: Any) -> tuple[str, str, str | None]:
            row = conn.execute("SELECT warehouse FROM dy_orders WHERE order_no = ?", (order_no,))
            warehouse = row[0][0] if row else None
            wh = self.config.warehouses.get(warehouse) if warehouse else None
            status, why = store.request_cancel(conn, order_no, has_cancel_flow=wh is not None and "cancel" in wh.flows)
            return status, why, warehouse

        status, why, warehouse = await self.db.write(write)
        if warehouse:
            self.deliverer.poke(warehouse)
        code = {"unknown": 404, "unsupported": 409, "already": 200, "cancelled": 200, "queued": 202}[status]
        return _json({"order_no": order_no, "status": status, "detail": why}, code)

    # -- feedback ---------------------------------------------------------------------------
    async def post_callback(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        warehouse, flow = request.match_info["warehouse"], request.match_info["flow"]
        wh = self.config.warehouses.get(warehouse)
        if wh is None or flow not in wh.callbacks:  # nothing is read of a callback nobody configured
            self.metrics.observe_callback("unknown", "unknown", "unknown-flow", 0.0)
            return web.Response(status=404, text=f"no callback {warehouse[:60]}/{flow[:60]} is configured")
        guard = self.callback_guards.get((warehouse, flow))
        path_token = request.match_info.get("token")
        if path_token is not None and (guard is None or guard.config.token is None
                                       or guard.config.token.where != "path"):
            return web.Response(status=404, text=f"no callback {warehouse}/{flow}/… is configured")
        peer = _peer(request)  # once: the transport is asked for its peer's address each time
        if guard is not None:
            refusal = guard.check(peer, request.headers, path_token)
            if refusal is not None:
                await self._journal_refused_callback(warehouse, flow, refusal, peer)
                return _refusal(refusal)
        body = await receive_body(request, self.config.limits.body_timeout)
        reply = await handle_callback(self.ctx, self.db, warehouse, flow, request.query, request.headers, body,
                                      forward=self.config.upstream is not None, remote=peer)
        if reply.outcome == "applied":
            self.deliverer.poke(UPSTREAM)
        # labels come from the config, never from the request (the pair was checked above)
        self.metrics.observe_callback(warehouse, flow, reply.outcome, time.perf_counter() - started, reply.secret)
        return web.Response(body=reply.body, status=reply.status, headers={"Content-Type": reply.content_type})

    async def _journal_refused_callback(self, warehouse: str, flow: str, refusal: Refusal, remote: str | None) -> None:
        logs.event(logging.WARNING, "callback refused", warehouse=warehouse, flow=flow, reason=refusal.reason,
                   remote=remote)
        await self.db.write(lambda c: store.journal(c, [store.JournalRow(
            None, None, warehouse, flow, "callback-rejected", refusal.outcome,
            detail={"reason": refusal.reason, "remote": remote})]))
        self.metrics.observe_callback(warehouse, flow, refusal.outcome, 0.0)

    # -- operations -------------------------------------------------------------------------
    async def health(self, request: web.Request) -> web.Response:
        """Live and ready: 200. Live but not ready (the state store is unreachable, so nothing can
        be accepted or recorded): 503, so that a load balancer sends traffic to another node."""
        if not self.db.ready:
            return _json({"status": "not-ready", "live": True, "ready": False, "store": self.db.shown_url,
                          "reason": self.db.unready_reason}, 503)
        return _json({"status": "ok", "live": True, "ready": True, "store": self.db.shown_url})

    async def live(self, request: web.Request) -> web.Response:
        return _json({"status": "ok", "live": True})

    async def metrics_page(self, request: web.Request) -> web.Response:
        """Prometheus text format. When dashboard tokens are configured, a token is needed
        (`Authorization: Bearer …`); without tokens the endpoint is open, as on a private network."""
        refusal = require_token(self.config, self.ctx.secrets, request.headers)
        if refusal is not None:
            return _refusal(refusal)
        breakers = {n: b.state for n, b in self.deliverer.breakers.items()}
        inflight = dict(self.deliverer.inflight)

        def scrape(conn: Any) -> bytes:
            # The text is made in the reader thread, with the store's figures it has just read: a
            # few milliseconds of pure Python per scrape (every series of every warehouse and flow,
            # and with workers the other processes' files) that the event loop, which answers
            # ingest and callbacks, no longer waits through. prometheus_client's values are
            # thread-safe; what the loop knows (circuits, requests in flight) was copied above.
            self.metrics.refresh(queries.job_counts(conn), breakers, inflight, read_backlog(conn, now_us()))
            return self.metrics.render()

        return web.Response(body=await self.db.read(scrape), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def stats(self, request: web.Request) -> web.Response:
        refusal = require_token(self.config, self.ctx.secrets, request.headers)
        if refusal is not None:
            return _refusal(refusal)
        return _encoded(await self.db.read(lambda c: orjson.dumps(queries.summary(c), default=str)))


def _unavailable(exc: StoreUnavailable) -> web.Response:
    return web.Response(body=orjson.dumps({"status": "unavailable", "reason": "the state store is unreachable; "
                                           "nothing was recorded: send it again"}),
                        status=503, content_type="application/json", headers={"Retry-After": "1"})


def _peer(request: web.Request) -> str | None:
    """The TCP peer's address (never a header)."""
    peer = request.transport.get_extra_info("peername") if request.transport is not None else None
    return str(peer[0]) if isinstance(peer, tuple | list) and peer else None


def _refusal(refusal: Refusal) -> web.Response:
    headers = {"WWW-Authenticate": "Bearer"} if refusal.status == 401 else None
    return web.Response(body=orjson.dumps({"error": refusal.reason}), status=refusal.status,
                        content_type="application/json", headers=headers)


def _text(order: dict[str, Any] | None, key: str) -> str | None:
    value = (order or {}).get(key)
    return value if isinstance(value, str) else None


async def run_forever(service: Service, ready: Callable[[str], None] | None = None,
                      sock: socket.socket | None = None) -> None:
    """Serve until SIGINT/SIGTERM, then stop cleanly (attempts on the wire are finished)."""
    import signal

    url = await service.start(sock=sock)
    # Everything loaded so far (the bundles' compiled mappings, the libraries, the config) lives as
    # long as the process: out of the collector's sight, so that a full collection walks only
    # what the service made since. A full collection walked all of it too, on the event loop
    # (35 ms with the demo's four warehouses; every request in flight waited through it). Then
    # the collector's thresholds for serving (SERVE_GC_THRESHOLDS, above).
    gc.freeze()
    gc.set_threshold(*SERVE_GC_THRESHOLDS)
    if ready is not None:
        ready(url)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    with contextlib.suppress(NotImplementedError):
        loop.add_signal_handler(signal.SIGUSR2, _dump_tasks)
    reloads: set[asyncio.Task[Any]] = set()

    def reload() -> None:  # SIGHUP: new bundles (and tokens) from the config file, no restart
        from dockyard.service.reload import ReloadError, reload_service

        async def run() -> None:
            with contextlib.suppress(ReloadError):  # journaled and logged; the old versions run on
                await reload_service(service, "SIGHUP")

        task = asyncio.create_task(run())
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    with contextlib.suppress(NotImplementedError):
        loop.add_signal_handler(signal.SIGHUP, reload)
    await stop.wait()
    await service.stop()


def _dump_tasks() -> None:
    """SIGUSR2: write where every task of the service is waiting to stderr (for a person looking at a
    stuck node; no order data, only code locations)."""
    import sys

    for task in asyncio.all_tasks():
        chain: list[str] = []
        awaiting: Any = task.get_coro()
        while awaiting is not None and len(chain) < 20:  # follow the await chain down to where it waits
            frame = getattr(awaiting, "cr_frame", None) or getattr(awaiting, "gi_frame", None)
            if frame is not None:
                chain.append(f"{frame.f_code.co_filename.rsplit('/', 1)[-1]}:{frame.f_code.co_name}:{frame.f_lineno}")
            awaiting = getattr(awaiting, "cr_await", None) or getattr(awaiting, "gi_yieldfrom", None)
        sys.stderr.write(f"task {os.getpid()} {task.get_name()}: {' -> '.join(chain)}\n")
    sys.stderr.flush()


def install_uvloop() -> None:
    """uvloop when it is installed and not switched off: the same code, a faster event loop."""
    if os.environ.get("DOCKYARD_NO_UVLOOP"):
        return
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
