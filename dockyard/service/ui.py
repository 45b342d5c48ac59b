"""The operator dashboard at /ui: static pages (dockyard/service/ui/) and a JSON API under /ui/api.

Every /ui route needs a dashboard token (config `dashboard.tokens`, token -> role): the API takes
`Authorization: Bearer <token>`, a browser logs in at /ui/login and gets an HttpOnly, SameSite=Strict
cookie (EventSource cannot send headers). Role "read" sees everything; "operator" may also replay.
Without any token configured the dashboard is disabled (403), never open. Every answer goes through
the secrets' redaction before it leaves.

Against cross-site requests: a state change authenticated by the cookie (not by a Bearer token)
must carry `X-Dockyard-UI: 1`, which a cross-site form cannot set, whatever other headers it has;
login and logout refuse a request whose `Origin` is another site's.

API: overview (also pushed every second as server-sent events at /ui/api/stream), search, an
order's timeline and field lineage, DLQ / in-doubt list, show and replay, recent errors by reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import time
from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
from aiohttp import web

from dockyard.service import queries, store, triage
from dockyard.service.context import load_order
from dockyard.service.counters import percentile_from_buckets
from dockyard.service.db import Conn, now_us
from dockyard.service.delivery import UPSTREAM
from dockyard.service.guards import bearer
from dockyard.service.metrics import read_backlog

__all__ = ["add_ui_routes"]

UI_DIR = Path(__file__).with_name("ui")
STATIC = {"app.js": "text/javascript", "app.css": "text/css"}
COOKIE = "dockyard_token"
WINDOW_S = 300  # the overview's throughput window
BUCKET_S = 5  # one chart point per bucket
CACHE_S = 1.0  # every open page shares one overview per second: the stream pushes one a second
# the counter kinds the overview shows only as sums over the window (counters.py): exchange times
# and ingest → accepted, per histogram bucket
_HISTOGRAMS = "kind LIKE 'l:%' OR kind LIKE 'i:%'"
_THROUGHPUT = frozenset({"received", "delivered", "failed"})
ERROR_STEPS = ("dead-lettered", "retry", "held", "callback-rejected", "ingest-rejected")
DISABLED = "dashboard disabled: configure dashboard.tokens"
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
LOGIN_CSP = "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'"
STREAMS = web.AppKey("dockyard_ui_streams", set)
DASHBOARD: web.AppKey[_Dashboard] = web.AppKey("dockyard_ui")
ROLE = "dockyard_ui_role"


def add_ui_routes(app: web.Application, service: Any) -> None:
    """Register the dashboard's routes on the service's application."""
    ui = _Dashboard(service)
    app[DASHBOARD] = ui
    app[STREAMS] = set()
    app.on_shutdown.append(ui.shutdown)
    r = app.router
    r.add_get("/ui", ui.root)
    r.add_get("/ui/", ui.index)
    r.add_get("/ui/login", ui.login_form)
    r.add_post("/ui/login", ui.login)
    r.add_post("/ui/logout", ui.logout)
    r.add_get("/ui/static/{name}", ui.static)
    r.add_get("/ui/api/whoami", ui.whoami)
    r.add_get("/ui/api/overview", ui.overview)
    r.add_get("/ui/api/stream", ui.stream)
    r.add_get("/ui/api/search", ui.search)
    r.add_get("/ui/api/orders/{order_no}", ui.order)
    r.add_get("/ui/api/orders/{order_no}/lineage", ui.lineage)
    r.add_get("/ui/api/dlq", ui.dlq)
    r.add_get("/ui/api/dlq/groups", ui.dlq_groups)
    r.add_post("/ui/api/dlq/bulk", ui.bulk)
    r.add_get("/ui/api/dlq/{job_id}", ui.dlq_show)
    r.add_post("/ui/api/dlq/{job_id}/replay", ui.replay)
    r.add_get("/ui/api/errors", ui.errors)


class _Dashboard:
    def __init__(self, service: Any) -> None:
        self.service = service
        self.stopping = asyncio.Event()
        self.cached: _Shared | None = None  # the overview as every viewer is sent it, made once per CACHE_S
        self.computing = asyncio.Lock()
        self.computed = 0  # overviews computed since start (the tests count them)

    # -- auth and answers -------------------------------------------------------------------
    def _role(self, request: web.Request) -> str | None:
        """The caller's role, from a Bearer token or else the cookie (see `_by_cookie`)."""
        given = bearer(request.headers.get("Authorization"))
        return _match(self.service.config.tokens, given or request.cookies.get(COOKIE, ""))

    def _gate(self, request: web.Request, *, page: bool = False) -> str | web.StreamResponse:
        """The caller's role, or the answer that refuses them."""
        if not self.service.config.tokens:
            return web.Response(status=403, text=DISABLED)
        role = self._role(request)
        if role is not None:
            return role
        if page:
            raise web.HTTPSeeOther("/ui/login")
        return web.Response(status=401, text="a dashboard token is needed", headers={"WWW-Authenticate": "Bearer"})

    def _json(self, data: Any, status: int = 200) -> web.Response:
        return self._answer(self._encode(data), status)

    def _encode(self, data: Any) -> bytes:
        """`data` as the JSON a viewer is sent: encoded and redacted (safe in any thread)."""
        return self._redact(orjson.dumps(data, default=str).decode("utf-8")).encode("utf-8")

    @staticmethod
    def _answer(body: bytes, status: int = 200) -> web.Response:
        return web.Response(body=body, status=status, content_type="application/json",
                            headers={"Cache-Control": "no-store"})

    async def _read_json(self, fn: Any, missing: str | None = None) -> web.Response:
        """What `fn` reads, encoded and redacted in the reader thread that read it, so the event
        loop (which also answers ingest and callbacks) only sends the bytes: an order's timeline
        holds every attempt's request and answer, and scanning it for every secret's value is
        the longest part of the answer. With `missing`, a None from `fn` is that 404."""
        def read(conn: Conn) -> tuple[bytes, int]:
            data = fn(conn)
            if data is None and missing is not None:
                return self._encode({"error": missing}), 404
            return self._encode(data), 200

        return self._answer(*await self._read(read))

    def _redact(self, text: str) -> str:
        redacted: str = self.service.ctx.secrets.redact(text)
        return redacted

    async def _read(self, fn: Any) -> Any:
        return await self.service.db.read(fn)

    # -- pages ------------------------------------------------------------------------------
    async def root(self, request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound("/ui/")

    async def index(self, request: web.Request) -> web.StreamResponse:
        gate = self._gate(request, page=True)
        if not isinstance(gate, str):
            return gate
        return _file("index.html", "text/html")

    async def static(self, request: web.Request) -> web.StreamResponse:
        gate = self._gate(request)
        if not isinstance(gate, str):
            return gate
        name = request.match_info["name"]
        if name not in STATIC:
            return web.Response(status=404, text="not found")
        return _file(name, STATIC[name])

    async def login_form(self, request: web.Request, error: str = "") -> web.StreamResponse:
        if not self.service.config.tokens:
            return web.Response(status=403, text=DISABLED)
        note = f'<p class="err">{error}</p>' if error else ""
        page = LOGIN_PAGE.replace("{note}", note)
        return web.Response(text=page, status=401 if error else 200, content_type="text/html",
                            headers={"Content-Security-Policy": LOGIN_CSP, "Cache-Control": "no-store"})

    async def login(self, request: web.Request) -> web.StreamResponse:
        if not self.service.config.tokens:
            return web.Response(status=403, text=DISABLED)
        if not _same_origin(request):
            return web.Response(status=403, text="a sign-in from another site is refused")
        form = await request.post()
        token = str(form.get("token", "")).strip()
        if _match(self.service.config.tokens, token) is None:
            return await self.login_form(request, "That token is not valid.")
        resp = web.HTTPSeeOther("/ui/")
        resp.set_cookie(COOKIE, token, path="/ui", httponly=True, samesite="Strict", secure=request.secure)
        raise resp

    async def logout(self, request: web.Request) -> web.StreamResponse:
        if not _same_origin(request):
            return web.Response(status=403, text="a sign-out from another site is refused")
        resp = web.HTTPSeeOther("/ui/login")
        resp.del_cookie(COOKIE, path="/ui")
        raise resp

    # -- API --------------------------------------------------------------------------------
    async def whoami(self, request: web.Request) -> web.StreamResponse:
        gate = self._gate(request)
        return gate if not isinstance(gate, str) else self._json({"role": gate})

    async def overview(self, request: web.Request) -> web.StreamResponse:
        gate = self._gate(request)
        if not isinstance(gate, str):
            return gate
        shared = await self._overview()
        # The overview holds counts, never an order's data: a client may keep it and ask again with
        # If-None-Match (`no-cache`: always revalidated; `private`: never kept by a proxy). What
        # is sent is the one encoded, redacted bytes object of this interval, not a copy per poll.
        headers = {"Cache-Control": "private, no-cache", "ETag": shared.etag}
        asked = _etags(request.headers.get("If-None-Match", ""))
        if shared.etag in asked or "*" in asked:
            return web.Response(status=304, headers=headers)
        return web.Response(body=shared.body, content_type="application/json", headers=headers)

    async def overview_data(self) -> dict[str, Any]:
        """One overview per CACHE_S for every open page and API caller: the first caller computes
        it, the others wait for that one instead of each taking a reader."""
        return (await self._overview()).data

    async def _overview(self) -> _Shared:
        """The overview of this interval, computed by the first caller after it ends while the
        others wait for that one: one reader, one encoding and one redaction per CACHE_S however
        many pages are open (ten pages were ten encodings and ten scans for every secret's value
        per second, on the event loop that also answers ingest)."""
        clock = time.monotonic()
        if self.cached is not None and clock - self.cached.clock < CACHE_S:
            return self.cached
        async with self.computing:
            if self.cached is not None and time.monotonic() - self.cached.clock < CACHE_S:
                return self.cached
            return await self._compute_overview(clock)

    async def _compute_overview(self, clock: float) -> _Shared:
        now = now_us()
        deliverer = self.service.deliverer
        # what the event loop knows, copied here; the rest is read, encoded and redacted in the reader
        known = {"circuits": {n: b.state for n, b in deliverer.breakers.items()},
                 "time_zone": self.service.config.time_zone,
                 "inflight": {n: deliverer.inflight.get(n, 0) for n in deliverer.breakers}}
        names = list(self.service.config.warehouses)

        def compute(conn: Conn) -> _Shared:
            data: dict[str, Any] = overview(conn, now) | known
            for name in names:
                data["warehouses"].setdefault(name, _empty_series(data["buckets"]))
            body = self._encode(data)
            # The ETag leaves out the time of computing ("at", the first key, a time with no comma
            # in it): on a quiet service the overview stays the same for seconds, and a client
            # asking again is told so (304) without a body.
            same = body[body.index(b","):]
            etag = '"' + hashlib.blake2b(same, digest_size=12).hexdigest() + '"'
            return _Shared(clock, data, body, etag, b"event: overview\ndata: " + body + b"\n\n")

        self.cached = await self._read(compute)
        self.computed += 1
        return self.cached

    async def stream(self, request: web.Request) -> web.StreamResponse:
        gate = self._gate(request)
        if not isinstance(gate, str):
            return gate
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store",
                                           "X-Accel-Buffering": "no"})
        await resp.prepare(request)
        streams = request.app[STREAMS]
        streams.add(resp)
        try:
            while not self.stopping.is_set():
                shared = await self._overview()
                await resp.write(shared.event)  # the interval's one event, the same bytes for every stream
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stopping.wait(), 1.0)
        except (ConnectionResetError, ConnectionError):
            pass  # the client went away
        finally:
            streams.discard(resp)
        return resp

    async def shutdown(self, app: web.Application) -> None:
        """Let the event streams end, so that the runner's cleanup does not wait for them."""
        self.stopping.set()  # every stream loop wakes up, ends, and its response is finished

    async def search(self, request: web.Request) -> web.StreamResponse:
        gate = self._gate(request)
        if not isinstance(gate, str):
            return gate
        q = request.query.get("q", "").strip()[:200]
        if not q or not queries.storable_key(q):  # (no stored text holds a NUL: nothing to find)
            return self._json({"query": q, "results": []})
        return await self._read_json(lambda c: {"query": q, "results": search(c, q)})

    async def order(self, request: web.Request) -> web.StreamResponse:
        gate = self._gate(request)
        if not isinstance(gate, str):
            return gate
        order_no = request.match_info["order_no"]
        if not queries.storable_key(order_no):
            return self._json({"error": f"no order {order_no!r}"}, 404)

        def read(conn: Conn) -> dict[str, Any] | None:
            status, steps = queries.order_status(conn, order_no), queries.timeline(conn, order_no)
            if status is None and not steps:
                return None
            for job in (status or {}).get("jobs", []):
                if job["state"] in ("dead", "held"):  # the page shows why, and whether a replay can help
                    job.update(triage.advice(job["reason"]))
            return {"order": status, "timeline": steps}

        return await self._read_json(read, missing=f"no order {order_no!r}")

    async def lineage(self, request: web.Request) -> web.StreamResponse:
        """The lineage of what was sent: the mapping version journaled with the transform, run again
        with the journaled clock. When that version is no longer loaded, say so rather than explain
        today's mapping as if it had sent the order; an order not sent yet shows today's version."""
        gate = self._gate(request)
        if not isinstance(gate, str):
            return gate
        order_no = request.match_info["order_no"]
        if not queries.storable_key(order_no):
            return self._json({"error": f"no order {order_no!r}"}, 404)

        def read(conn: Conn) -> tuple[list[tuple[Any, ...]], dict[str, Any] | None]:
            rows = conn.execute("SELECT warehouse, payload FROM dy_orders WHERE order_no = ?", (order_no,))
            return rows, queries.sent_version(conn, order_no)

        rows, sent = await self._read(read)
        if not rows:
            return self._json({"error": f"no order {order_no!r}"}, 404)
        warehouse, payload = rows[0]
        ctx = self.service.ctx
        wh = self.service.config.warehouses.get(warehouse)
        if wh is None or "create" not in wh.flows:
            return self._json({"error": f"warehouse {warehouse!r} has no create flow"}, 404)
        answer: dict[str, Any] = {"order_no": order_no, "warehouse": warehouse}
        clock: datetime | None = None
        if sent is None:
            name = wh.flows["create"].request
            mapping = ctx.mappings.get(name)
            current = ctx.versions.get(name)
            answer |= {"basis": "preview", "mapping": name,
                       "note": "not sent yet: what the loaded version would send now",
                       **(current.as_detail() if current is not None else {})}
        else:
            name = str(sent["mapping"])
            answer |= {"basis": "sent", "mapping": name, **{k: sent[k] for k in
                       ("mapping_version", "mapping_sha", "bundle", "clock", "step", "at")}}
            mapping = ctx.archive.get(sent["mapping_sha"]) if sent.get("mapping_sha") else None
            if mapping is None:
                why = ("the journal does not say which version sent it (it was sent before versions were recorded)"
                       if not sent.get("mapping_sha") else
                       f"version {sent['mapping_version']} (module {sent['mapping_sha']}, bundle {sent['bundle']}) "
                       f"is no longer loaded")
                answer |= {"gone": True, "fields": [],
                           "note": f"the lineage of what was sent cannot be shown: {why}. The request as sent "
                                   f"is in the timeline."}
                return self._json(answer)
            with contextlib.suppress(ValueError, TypeError):
                clock = datetime.fromisoformat(str(sent["clock"]))
        if mapping is None:
            return self._json({**answer, "error": f"mapping {name!r} is not loaded", "fields": []}, 404)
        try:
            _doc, fields = mapping.explain(load_order(payload), wh.context, clock)
        except Exception as exc:  # a transform error is an answer here, not a crash
            return self._json({**answer, "error": str(exc), "fields": []}, 422)
        return self._json({**answer, "fields": [_field(f) for f in fields]})

    async def dlq(self, request: web.Request) -> web.StreamResponse:
        gate = self._gate(request)
        if not isinstance(gate, str):
            return gate
        return await self._read_json(lambda c: {"jobs": queries.dlq_list(c)})

    async def dlq_show(self, request: web.Request) -> web.StreamResponse:
        gate = self._gate(request)
        if not isinstance(gate, str):
            return gate
        job_id = _int(request.match_info["job_id"])
        if job_id is None:
            return self._json({"error": "no such job"}, 404)
        return await self._read_json(lambda c: queries.dlq_show(c, job_id), missing="no such job")

    def _operator(self, request: web.Request, what: str) -> str | web.StreamResponse:
        """The operator's role, or the answer that refuses the action."""
        gate = self._gate(request)
        if not isinstance(gate, str):
            return gate
        if gate != "operator":
            return self._json({"error": f"{what} needs the operator role"}, 403)
        if _by_cookie(request) and request.headers.get("X-Dockyard-UI") != "1":
            # a cookie alone does not make an action: a cross-site form cannot set this header (any
            # other header it may send, an Authorization: Basic … included, changes nothing)
            return self._json({"error": "an action from the browser needs the X-Dockyard-UI header"}, 403)
        return gate

    async def dlq_groups(self, request: web.Request) -> web.StreamResponse:
        gate = self._gate(request)
        if not isinstance(gate, str):
            return gate
        q = request.query
        sel = triage.Selection(warehouse=q.get("warehouse") or None, state=q.get("state") or None,
                               text=(q.get("match") or "")[:200] or None)

        def read(conn: Conn) -> dict[str, Any]:
            found = triage.groups(conn, sel)
            return {"groups": found, "total": sum(g["count"] for g in found)}

        return await self._read_json(read)

    async def bulk(self, request: web.Request) -> web.StreamResponse:
        """Replay or discard a group, a filtered selection or the chosen jobs. A discard needs a
        reason; a replay leaves out the jobs it cannot help unless `anyway` is set."""
        gate = self._operator(request, "a bulk action")
        if not isinstance(gate, str):
            return gate
        try:
            body = await request.json()
        except ValueError:
            return self._json({"error": "the body must be JSON"}, 400)
        if not isinstance(body, dict) or body.get("action") not in ("replay", "discard"):
            return self._json({"error": "action must be replay or discard"}, 400)
        why = str(body.get("reason") or "").strip()[:500]
        if body["action"] == "discard" and not why:
            return self._json({"error": "a discard needs a reason"}, 400)
        ids = body.get("ids")
        if ids is not None and not (isinstance(ids, list) and all(isinstance(i, int) for i in ids)):
            return self._json({"error": "ids must be a list of job ids"}, 400)
        sel = triage.Selection(group=_text(body.get("group")), warehouse=_text(body.get("warehouse")),
                               state=_text(body.get("state")), text=_text(body.get("match")))
        if ids is None and sel == triage.Selection():
            return self._json({"error": "give ids, a group or a filter: a bulk action on everything is refused"}, 400)
        anyway = body.get("anyway") is True
        who = f"dashboard:{gate}"

        def write(conn: Conn) -> dict[str, Any]:
            jobs = triage.select(conn, sel)
            if ids is not None:
                wanted = set(ids)
                jobs = [j for j in jobs if j["id"] in wanted]
            skipped = [j["id"] for j in jobs if body["action"] == "replay" and not j["replay_helps"] and not anyway]
            chosen = [j["id"] for j in jobs if j["id"] not in set(skipped)]
            results = (store.replay(conn, chosen, now_us(), who) if body["action"] == "replay"
                       else store.discard(conn, chosen, who, why))
            done = [jid for jid, r in results if r in ("replayed", "discarded")]
            return {"action": body["action"], "by": who, "done": len(done), "skipped": skipped,
                    "warehouses": sorted({j["warehouse"] for j in jobs if j["id"] in set(done)}),
                    "results": results[:100]}

        answer = await self.service.db.write(write)
        if body["action"] == "replay":
            for warehouse in answer["warehouses"]:
                self.service.deliverer.poke(warehouse)
        if answer["skipped"]:
            answer["note"] = (f"{len(answer['skipped'])} job(s) not replayed: replay cannot help them (the mapping "
                              f"refuses or cannot transform the order); fix the order, load a new mapping version, "
                              f"or discard them")
        return self._json(answer)

    async def replay(self, request: web.Request) -> web.StreamResponse:
        gate = self._operator(request, "replay")
        if not isinstance(gate, str):
            return gate
        job_id = _int(request.match_info["job_id"])
        if job_id is None:
            return self._json({"error": "no such job"}, 404)
        who = f"dashboard:{gate}"

        def write(conn: Conn) -> tuple[list[tuple[int, str]], str | None]:
            rows = conn.execute("SELECT warehouse FROM dy_jobs WHERE id = ?", (job_id,))
            return store.replay(conn, [job_id], now_us(), who), rows[0][0] if rows else None

        [(jid, message)], warehouse = await self.service.db.write(write)
        if warehouse and message == "replayed":
            self.service.deliverer.poke(warehouse)
        code = 200 if message == "replayed" else 404 if message == "no such job" else 409
        return self._json({"job": jid, "result": message, "by": who}, code)

    async def errors(self, request: web.Request) -> web.StreamResponse:
        gate = self._gate(request)
        if not isinstance(gate, str):
            return gate
        since = now_us() - 3600 * 1_000_000
        return await self._read_json(lambda c: {"since": queries._iso(since), "groups": errors(c, since)})


# -- the questions asked of the store -------------------------------------------------------
def histogram_summary(counts: Mapping[str, int]) -> dict[str, Any]:
    """A histogram's count, p50 and p99 in ms, as the overview shows them ({upper bound: count})."""
    return {"count": sum(counts.values()), "p50": _ms(percentile_from_buckets(counts, 50)),
            "p99": _ms(percentile_from_buckets(counts, 99))}


def finish_series(series: dict[str, dict[str, Any]], latency: Mapping[str, Mapping[str, int]], buckets: int) -> None:
    """Each warehouse's figures made of its counts: the error rate of its attempts, its exchange
    times (from `latency`, its histogram) and its delivered orders per second over the last minute."""
    minute = max(0, buckets - 60 // BUCKET_S)
    for warehouse, s in series.items():
        tried = sum(s["attempts"].values())
        s["error_rate"] = round(1 - s["attempts"].get("2xx", 0) / tried, 4) if tried else None
        s["exchange_ms"] = histogram_summary(latency.get(warehouse, {}))
        s["orders_per_s"] = round(sum(s["delivered"][minute:]) / 60, 1)


def overview(conn: Conn, now: int) -> dict[str, Any]:
    """The last WINDOW_S seconds per warehouse, in BUCKET_S buckets, from the counters the service
    keeps as it works (counters.py; read by primary key, bucket first): orders received, delivered
    and failed; exchanges by outcome class, retries, error rate and exchange time p50/p99; plus the
    backlog and the age of its oldest due job (through the claim's partial index), pauses and open
    circuits (one row per warehouse), and ingest → accepted over the window (the counters'
    histogram of it, kept as each acceptance is committed). Nothing here reads history, and nothing
    reads row by row what the window's traffic wrote: the cost follows warehouses × buckets.

    The store adds up what is only shown for the whole window (the two histograms: two thirds of
    the window's counter rows), so that Python, holding the GIL the event loop needs to answer
    ingest, touches only the per-bucket series. The overview is computed once a second in a reader
    thread while ingest goes on; every row it turns into Python objects is time the loop may wait."""
    buckets, width = WINDOW_S // BUCKET_S, BUCKET_S * 1_000_000
    end = (now // width + 1) * width
    start = end - WINDOW_S * 1_000_000
    series: dict[str, dict[str, Any]] = {}
    latency: dict[str, dict[str, int]] = defaultdict(dict)
    accepted: Counter[str] = Counter()  # ingest → accepted, all warehouses: {upper bound in ms: creates}
    for bucket, warehouse, kind, n in conn.execute(
            f"SELECT bucket, warehouse, kind, SUM(n) FROM dy_counters WHERE bucket >= ? AND bucket < ? AND NOT "
            f"({_HISTOGRAMS}) GROUP BY bucket, warehouse, kind", (start, end)):
        s = series.get(warehouse) or series.setdefault(warehouse, _empty_series(buckets))  # made once each
        i, n = min(buckets - 1, max(0, (int(bucket) - start) // width)), int(n)
        if kind in _THROUGHPUT:
            s[kind][i] += n
            s["total"][kind] += n
        elif kind == "retry":
            s["retries"][i] += n
            s["retries_total"] += n
        elif kind.startswith("a:"):
            s["attempts"][kind[2:]] = s["attempts"].get(kind[2:], 0) + n
            s["attempt_series"].setdefault(kind[2:], [0] * buckets)[i] += n
    for warehouse, kind, n in conn.execute(
            f"SELECT warehouse, kind, SUM(n) FROM dy_counters WHERE bucket >= ? AND bucket < ? AND ({_HISTOGRAMS}) "
            f"GROUP BY warehouse, kind", (start, end)):
        if warehouse not in series:
            series[warehouse] = _empty_series(buckets)
        if kind.startswith("l:"):
            latency[warehouse][kind[2:]] = int(n)
        elif warehouse != UPSTREAM:
            accepted[kind[2:]] += int(n)
    finish_series(series, latency, buckets)
    for warehouse, (depth, age) in read_backlog(conn, now).items():
        entry = series.get(warehouse) or series.setdefault(warehouse, _empty_series(buckets))
        entry["backlog"], entry["oldest_due_s"] = depth, round(age, 1)
    for warehouse, paused_until, reason, opened_until in conn.execute(
            "SELECT warehouse, paused_until, pause_reason, opened_until FROM dy_limits"):
        entry = series.get(warehouse) or series.setdefault(warehouse, _empty_series(buckets))
        if int(paused_until or 0) > now:
            entry["paused"] = {"for_s": round((int(paused_until) - now) / 1e6, 1), "reason": reason}
        if int(opened_until or 0) > now:
            entry["circuit_open_s"] = round((int(opened_until) - now) / 1e6, 1)
    series.pop(UPSTREAM, None)
    delivered = sum(s["total"]["delivered"] for s in series.values())
    failed = sum(s["total"]["failed"] for s in series.values())
    tried = sum(sum(s["attempts"].values()) for s in series.values())
    ok = sum(s["attempts"].get("2xx", 0) for s in series.values())
    counts = queries.job_counts(conn)
    return {"at": queries._iso(now), "window_s": WINDOW_S, "bucket_s": BUCKET_S, "buckets": buckets,
            "start": queries._iso(start), "warehouses": series,
            "success_rate": round(delivered / (delivered + failed), 4) if delivered + failed else None,
            "attempts": tried, "attempt_success_rate": round(ok / tried, 4) if tried else None,
            "retries": sum(s["retries_total"] for s in series.values()),
            "latency_ms": histogram_summary(accepted),
            "outbox_depth": counts["outbox"], "dlq_size": counts["dead"], "in_doubt": counts["in_doubt"]}


def _ms(value: float | None) -> float | None:
    """Milliseconds as a person reads them: 0.42, 8.3, 67, 67273 — never 67272.521."""
    if value is None:
        return None
    return round(value, 2) if value < 1 else round(value, 1) if value < 100 else float(round(value))


def search(conn: Conn, q: str) -> list[dict[str, Any]]:
    """Orders by order number (exact or prefix), shop code, or a waybill number in dy_orders.waybills."""
    like = q.replace("!", "!!").replace("%", "!%").replace("_", "!_")
    rows = conn.execute("SELECT order_no, warehouse, shop_code, status, delivery, waybills, updated_at FROM dy_orders "
                        "WHERE order_no = ? OR shop_code = ? OR order_no LIKE ? ESCAPE '!' "
                        "OR waybills LIKE ? ESCAPE '!' ORDER BY updated_at DESC LIMIT 50",
                        (q, q, like + "%", "%" + like + "%"))
    out = []
    for no, warehouse, shop, status, delivery, waybills, updated in rows:
        bills = json.loads(waybills) if waybills else []
        matched = "order_no" if no == q or no.startswith(q) else "shop_code" if shop == q else "waybill"
        out.append({"order_no": no, "warehouse": warehouse, "shop_code": shop, "status": status,
                    "delivery": delivery, "waybills": bills, "updated_at": queries._iso(updated), "matched": matched})
    return out


def errors(conn: Conn, since: int) -> list[dict[str, Any]]:
    """Journal rows of the error steps since `since`, grouped by warehouse and reason."""
    marks = ", ".join("?" for _ in ERROR_STEPS)
    rows = conn.execute(f"SELECT step, warehouse, order_no, at, detail FROM dy_journal WHERE step IN ({marks}) "
                        f"AND at >= ? ORDER BY at DESC, id DESC", (*ERROR_STEPS, since))
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    steps: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    for step, warehouse, order_no, at, detail in rows:
        reason = str((json.loads(detail) if detail else {}).get("reason", "no reason recorded")).split("; order ")[0]
        key = (warehouse or "unknown", reason[:200])
        g = groups.setdefault(key, {"warehouse": key[0], "reason": key[1], "count": 0, "last": queries._iso(at),
                                    "orders": []})
        g["count"] += 1
        steps[key][step] += 1
        if order_no and order_no not in g["orders"] and len(g["orders"]) < 5:
            g["orders"].append(order_no)
    out = []
    for key, g in groups.items():
        g["steps"] = dict(steps[key])
        out.append(g)
    return sorted(out, key=lambda g: (g["warehouse"], -g["count"]))


# -- helpers --------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Shared:
    """The overview of one interval as every viewer gets it."""

    clock: float  # time.monotonic() when it was asked for
    data: dict[str, Any]
    body: bytes  # its JSON, redacted: the body of every poll
    etag: str  # of everything but the time of computing
    event: bytes  # the server-sent event that carries `body`: what every stream writes


def _etags(header: str) -> set[str]:
    """The entity tags of an If-None-Match header (weak ones compared as strong: the body is the
    same bytes whenever the tag is)."""
    return {t.strip().removeprefix("W/") for t in header.split(",") if t.strip()}


def _match(tokens: Any, given: str) -> str | None:
    """The role of `given`, comparing against every configured token in constant time."""
    role: str | None = None
    if not given:
        return None
    for token, token_role in tokens.items():
        if hmac.compare_digest(token.encode("utf-8"), given.encode("utf-8")):
            role = str(token_role)
    return role


def _by_cookie(request: web.Request) -> bool:
    """Whether the role came from the cookie: there is no Bearer token (a valid one is a deliberate
    client; with a wrong one there is no role at all)."""
    return not bearer(request.headers.get("Authorization"))


def _same_origin(request: web.Request) -> bool:
    """False when the request says it comes from another site: an `Origin` (every browser sends one
    with a POST) whose host and port are not this request's `Host`; "null" (a sandboxed or
    privacy-stripped page) is another site too. A request without Origin is not a browser's form."""
    origin = request.headers.get("Origin")
    if origin is None:
        return request.headers.get("Sec-Fetch-Site", "same-origin") in ("same-origin", "none")
    try:
        parts = urlsplit(origin)
        port = parts.port
    except ValueError:
        return False
    if not parts.hostname or parts.scheme not in ("http", "https"):
        return False
    default = 443 if parts.scheme == "https" else 80
    host = request.host.lower()
    want = parts.hostname.lower() if (port or default) == default else f"{parts.hostname.lower()}:{port}"
    if ":" in parts.hostname:  # an IPv6 literal: the Host header writes it in brackets
        want = f"[{parts.hostname.lower()}]" + ("" if (port or default) == default else f":{port}")
    return host in (want, f"{want}:{port or default}")


def _empty_series(buckets: int) -> dict[str, Any]:
    return {"received": [0] * buckets, "delivered": [0] * buckets, "failed": [0] * buckets,
            "total": {"received": 0, "delivered": 0, "failed": 0}, "attempts": {}, "attempt_series": {},
            "retries": [0] * buckets, "retries_total": 0, "error_rate": None,
            "exchange_ms": {"count": 0, "p50": None, "p99": None}, "orders_per_s": 0.0, "backlog": 0,
            "oldest_due_s": 0.0}


def _text(value: Any) -> str | None:
    return str(value)[:200] if isinstance(value, str) and value else None


def _int(text: str) -> int | None:
    # ASCII digits only: str.isdigit() also says yes to "²" and "①", which int() then refuses (a 500)
    return int(text) if text.isascii() and text.isdigit() and len(text) < 19 else None


def _field(f: Any) -> dict[str, Any]:
    return {"field": f.path, "value": f.value, "spec": f.spec,
            "sources": [{"path": p, "value": v} for p, v in f.sources],
            "lets": list(f.lets), "tables": list(f.tables), "context": list(f.context), "clock": f.clock}


def _file(name: str, content_type: str) -> web.Response:
    return web.Response(body=(UI_DIR / name).read_bytes(), content_type=content_type, charset="utf-8",
                        headers={"Content-Security-Policy": CSP, "Cache-Control": "no-store",
                                 "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"})


LOGIN_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Dockyard — sign in</title>
<style>body{font-family:system-ui,sans-serif;background:#f3f5f8;display:flex;justify-content:center;padding-top:12vh}
form{background:#fff;padding:2em;border-radius:8px;box-shadow:0 1px 4px #0002;min-width:320px}
input{width:100%;padding:.5em;margin:.5em 0 1em;box-sizing:border-box}button{padding:.5em 1.5em}
.err{color:#b00020}</style></head><body><form method="post" action="/ui/login"><h1>Dockyard</h1>{note}
<label for="token">Dashboard token</label><input id="token" name="token" type="password" autocomplete="off" autofocus>
<button type="submit" id="signin">Sign in</button></form></body></html>
"""
