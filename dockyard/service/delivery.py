"""Delivery workers: take jobs from the outbox and carry each one through transform → policies
(signing, encryption, the duplicate rule) → HTTP → the response mapping → commit, retry, the
dead-letter queue or an honest in-doubt.

One loop per warehouse claims only as many jobs as that warehouse has free slots
(`concurrency`), and claims nothing while its circuit is open, so a slow or failing warehouse
keeps its orders waiting in the outbox and never takes the others' workers. Claimed jobs are
marked `sending` durably before anything leaves; that row is what makes a crash honest: a job
found `sending` after a restart may have reached the warehouse and is settled by the warehouse's
duplicate rule (resend with the same request id, query, or hold for an operator), never guessed.

A separate loop forwards recorded status events to the upstream webhook in batches, with the
same retry and dead-letter handling.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import itertools
import logging
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from yarl import URL

from dockyard.runtime.delivery import NotSent, OutcomeUnknown, origin, retry_status
from dockyard.runtime.errors import DockyardError
from dockyard.runtime.request import PreparedRequest, WireRequest, build_request
from dockyard.service import logs, store, tracing
from dockyard.service.config import FlowConfig, RetryConfig, WarehouseConfig
from dockyard.service.context import ServiceContext, load_order, rewrite_url
from dockyard.service.db import Conn, Database, now_us
from dockyard.service.metrics import Metrics
from dockyard.service.resilience import Breaker, backoff_seconds
from dockyard.service.store import ClaimedJob, JobResult, JournalRow

__all__ = ["Deliverer", "HttpAnswer"]

UPSTREAM = "_upstream"
EXCERPT = 2000


@dataclass(frozen=True)
class HttpAnswer:
    status: int
    body: bytes
    elapsed_us: int


class Deliverer:
    def __init__(self, ctx: ServiceContext, db: Database, *, owner: str | None = None,
                 metrics: Metrics | None = None) -> None:
        self.ctx = ctx
        self.metrics = metrics or Metrics()
        self.db = db
        self.owner = owner or uuid.uuid4().hex
        self.breakers = {name: Breaker(wh.circuit) for name, wh in ctx.config.warehouses.items()}
        self.wake: dict[str, asyncio.Event] = {}
        self.inflight: Counter[str] = Counter()
        self._sessions: dict[str, aiohttp.ClientSession] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loops: list[asyncio.Task[None]] = []
        self._stopping = False
        self._slots: dict[str, asyncio.Event] = {}
        # Orders this process accepted and has not sent yet, as parsed at ingest: the first attempt
        # uses them instead of parsing the stored JSON again. Bounded; a miss reads the store.
        self.orders: dict[str | None, dict[str, Any]] = {}
        self.orders_cap = 50_000

    # -- lifecycle --------------------------------------------------------------------------
    async def start(self) -> None:
        for name, wh in self.ctx.config.warehouses.items():
            self._sessions[name] = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=wh.concurrency, limit_per_host=wh.concurrency),
                timeout=aiohttp.ClientTimeout(total=wh.timeout, sock_connect=wh.connect_timeout),
                auto_decompress=True)
            self.wake[name] = asyncio.Event()
            self._slots[name] = asyncio.Event()
            self._loops.append(asyncio.create_task(self._warehouse_loop(wh), name=f"deliver-{name}"))
        self._loops.append(asyncio.create_task(self._recovery_loop(), name="recover"))
        up = self.ctx.config.upstream
        if up is not None:
            self._sessions[UPSTREAM] = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=up.timeout))
            self.wake[UPSTREAM] = asyncio.Event()
            self._loops.append(asyncio.create_task(self._upstream_loop(), name="forward-upstream"))

    async def stop(self) -> None:
        self._stopping = True
        for event in self.wake.values():
            event.set()
        for event in self._slots.values():
            event.set()
        for loop in self._loops:
            loop.cancel()
        for loop in self._loops:
            with contextlib.suppress(asyncio.CancelledError):
                await loop
        if self._tasks:  # let attempts on the wire finish and record their outcome
            await asyncio.wait(self._tasks, timeout=30)
        for session in self._sessions.values():
            await session.close()

    async def _recovery_loop(self, every: float = 5.0) -> None:
        """Take back, as in doubt, the jobs of workers that died (another process on the same
        PostgreSQL store, or a lease that ran out), while this process runs."""
        while not self._stopping:
            await asyncio.sleep(every)
            recovered = await self.db.write(lambda c: store.recover(c, now_us(), me=self.owner,
                                                                    gone=self.db.owner_gone))
            if recovered:
                logs.event(logging.WARNING, "recovered in-flight jobs of a stopped worker", jobs=len(recovered))
            for _, _, warehouse in recovered:
                self.poke(warehouse)

    def poke(self, warehouse: str) -> None:
        event = self.wake.get(warehouse)
        if event is not None:
            event.set()

    def _claimer(self, lane: str, warehouse: str, limit: int, lease: int) -> Callable[[Conn], list[ClaimedJob]]:
        def claim(conn: Conn) -> list[ClaimedJob]:
            ids = (uuid.uuid4().hex for _ in itertools.repeat(None))  # a job keeps its first request id
            return store.claim(conn, lane, warehouse, limit, self.owner, lease, now_us(), ids)
        return claim

    # -- the warehouse loop -----------------------------------------------------------------
    async def _warehouse_loop(self, wh: WarehouseConfig) -> None:
        breaker = self.breakers[wh.name]
        wake = self.wake[wh.name]
        slot = self._slots[wh.name]
        lease = int((wh.timeout + 120) * 1_000_000)
        batch = max(1, wh.concurrency // 4)
        lingered = False
        while not self._stopping:
            allow = breaker.allow()
            if allow == 0:
                await _wait(wake, min(1.0, max(0.05, breaker.seconds_until_probe())))
                continue
            free = wh.concurrency - self.inflight[wh.name]
            if free <= 0:
                slot.clear()
                await _wait(slot, 1.0)
                continue
            if free < batch and self.inflight[wh.name] and not lingered:
                # Busy: let a few more slots free up and claim them together. A claim is a write
                # (and on PostgreSQL a locking query): one per freed slot would cost more than the
                # few milliseconds this waits.
                lingered = True
                await asyncio.sleep(0.005)
                continue
            lingered = False
            limit = free if allow < 0 else min(free, allow)
            wake.clear()
            jobs = await self.db.write(self._claimer("wh", wh.name, limit, lease))
            if not jobs:
                if allow == 1:
                    breaker.probing = False
                await _wait(wake, 0.25)
                continue
            for job in jobs:
                self.inflight[wh.name] += 1
                task = asyncio.create_task(self._run(wh, job, breaker))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _run(self, wh: WarehouseConfig, job: ClaimedJob, breaker: Breaker) -> None:
        released = False
        try:
            try:
                with tracing.span("dockyard.deliver", job.trace_id, {
                        "dockyard.order_no": job.order_no, "dockyard.warehouse": wh.name, "dockyard.flow": job.kind,
                        "dockyard.attempt": job.attempts}):
                    result = await self._attempt(wh, job, breaker)
            except Exception as exc:  # a bug must not lose the job: keep it, in doubt, with the reason
                result = JobResult(job.id, job.owner, "ready", next_at=now_us() + 5_000_000, doubt=True,
                                   reason=f"internal error: {type(exc).__name__}: {self._redact(str(exc))}",
                                   order_no=job.order_no,
                                   rows=[JournalRow(now_us(), job.order_no, wh.name, job.kind, "error", "in_doubt",
                                                    detail={"error": f"{type(exc).__name__}: "
                                                                     f"{self._redact(str(exc))}"})])
            # The warehouse's slot is free once the exchange is over; the job itself stays
            # `sending` (so nothing later of this order starts) until its outcome is committed.
            released = True
            self._release(wh.name)
            await self.db.write(lambda c: store.finish(c, [result], now_us()))
            self.metrics.deliveries.labels(wh.name, job.kind, result.state).inc()
            if result.state in ("dead", "held"):
                logs.event(logging.WARNING, "dead-lettered" if result.state == "dead" else "held in doubt",
                           order_no=job.order_no, trace_id=job.trace_id, warehouse=wh.name, flow=job.kind,
                           job=job.id, reason=result.reason)
        finally:
            if not released:
                self._release(wh.name)

    def _release(self, warehouse: str) -> None:
        self.inflight[warehouse] -= 1
        self._slots[warehouse].set()

    async def _attempt(self, wh: WarehouseConfig, job: ClaimedJob, breaker: Breaker) -> JobResult:
        rows: list[JournalRow] = []
        flow = wh.flows.get(job.kind)
        if flow is None:
            return self._dead(job, wh, f"warehouse {wh.name} has no {job.kind!r} flow configured", rows)
        if job.order_payload is None:
            return self._dead(job, wh, f"order {job.order_no!r} is not in the store", rows)
        if job.kind == "cancel":
            create_state = await self.db.read(lambda c: c.execute(
                "SELECT state FROM dy_jobs WHERE order_no = ? AND lane = 'wh' AND kind = 'create' ORDER BY id LIMIT 1",
                (job.order_no,)))
            if create_state and create_state[0][0] in ("dead", "cancelled"):
                rows.append(JournalRow(now_us(), job.order_no, wh.name, "cancel", "cancelled", "ok",
                                       detail={"note": "the create never reached the warehouse: nothing to cancel"}))
                return JobResult(job.id, job.owner, "done", order_no=job.order_no, order_status="cancelled",
                                 delivery="cancelled", reason="cancelled before delivery", rows=rows)
        order = self.orders.pop(job.order_no, None) if job.attempts == 1 and job.kind == "create" else None
        if order is None:
            order = load_order(job.order_payload)
        t0 = now_us()
        try:
            prepared = build_request(self.ctx.mappings[flow.request], order, context=wh.context,
                                     secrets=self.ctx.secrets, request_id=job.request_id, describe=False)
        except DockyardError as exc:
            return self._dead(job, wh, f"the order cannot be turned into a {wh.name} request: "
                                       f"{self._redact(str(exc))}", rows, step="transformed")
        rule = prepared.idempotency_rule or "skip"
        self.metrics.stage.labels("transform", wh.name).observe((now_us() - t0) / 1e6)
        rows.append(JournalRow(now_us(), job.order_no, wh.name, job.kind, "transformed", "ok", now_us() - t0,
                               detail={"mapping": flow.request, "request_id": prepared.request_id,
                                       "idempotency_key": prepared.idempotency_key, "rule": rule,
                                       "attempt": job.attempts}))
        if job.doubt:
            if rule == "query":
                query = wh.flows.get("query")
                if query is not None:
                    return await self._query(wh, job, order, query, breaker, rows)
            if rule != "resend":
                why = (f"the outcome of an earlier attempt is unknown and the duplicate rule '{rule}' neither "
                       f"resends nor queries: check with {wh.name} whether order {job.order_no} arrived, then "
                       f"replay it (dockyard dlq replay {job.id}) or leave it")
                return self._held(job, wh, why, rows)
            rows.append(JournalRow(now_us(), job.order_no, wh.name, job.kind, "resend", "ok",
                                   detail={"note": "outcome unknown earlier; the warehouse dedupes on the request id, "
                                                   "so it is sent again with the same one",
                                           "request_id": prepared.request_id}))
        return await self._exchange(wh, job, flow, prepared, breaker, rows, rule)

    async def _exchange(self, wh: WarehouseConfig, job: ClaimedJob, flow: FlowConfig, prepared: PreparedRequest,
                        breaker: Breaker, rows: list[JournalRow], rule: str) -> JobResult:
        wire = prepared.request
        url = rewrite_url(wire.url, wh.endpoint)
        rows.append(JournalRow(now_us(), job.order_no, wh.name, job.kind, "sent", "ok",
                               detail=self._request_summary(wire, url, prepared)))
        try:
            answer = await self._http(wh.name, wire, url)
        except NotSent as exc:
            breaker.failure()
            return self._retry(job, wh, f"not sent: {exc}", rows, doubt=False)
        except OutcomeUnknown as exc:
            breaker.failure()
            rows.append(JournalRow(now_us(), job.order_no, wh.name, job.kind, "response", "unknown",
                                   detail={"error": str(exc)}))
            return self._unknown(job, wh, rule, f"no answer: {exc}", rows)
        rows.append(JournalRow(now_us(), job.order_no, wh.name, job.kind, "response",
                               str(answer.status), answer.elapsed_us, detail=self._answer_summary(answer)))
        if retry_status(answer.status):
            breaker.failure()
            return self._retry(job, wh, f"HTTP {answer.status} from {wh.name}", rows, doubt=False)
        try:
            outcome = self._outcome(wh, flow, answer)
        except DockyardError as exc:
            breaker.success()  # it answered; what it said is the problem
            return self._unknown(job, wh, rule, f"{wh.name} answered something unreadable: "
                                                f"{self._redact(str(exc))}", rows)
        breaker.success()
        return self._settle(job, wh, outcome, rows)

    def _settle(self, job: ClaimedJob, wh: WarehouseConfig, outcome: dict[str, Any],
                rows: list[JournalRow]) -> JobResult:
        result = outcome.get("result")
        message = " ".join(str(outcome.get(k)) for k in ("code", "message") if outcome.get(k))
        now = now_us()
        if result in ("accepted", "duplicate"):
            rows.append(JournalRow(now, job.order_no, wh.name, job.kind, "committed", str(result),
                                   detail={"warehouse_order_id": outcome.get("warehouse_order_id"),
                                           "waybills": outcome.get("waybills"), "attempt": job.attempts}))
            if job.kind == "cancel":
                return JobResult(job.id, job.owner, "done", outcome=outcome, order_no=job.order_no,
                                 order_status="cancelled", rows=rows)
            return JobResult(job.id, job.owner, "done", outcome=outcome, order_no=job.order_no,
                             order_status="delivered", delivery="delivered",
                             warehouse_order_id=outcome.get("warehouse_order_id"),
                             waybills=outcome.get("waybills"), rows=rows)
        if result == "rejected":
            if job.kind == "cancel":
                rows.append(JournalRow(now, job.order_no, wh.name, "cancel", "cancel-refused", "rejected",
                                       detail={"reason": message or "refused"}))
                return JobResult(job.id, job.owner, "done", outcome=outcome, reason=f"cancel refused: {message}",
                                 order_no=job.order_no, rows=rows)
            return self._dead(job, wh, f"rejected by {wh.name}: {message or 'no reason given'}", rows,
                              outcome=outcome)
        return self._retry(job, wh, f"{wh.name} asked to retry: {message or 'no reason given'}", rows,
                           doubt=False, outcome=outcome)

    async def _query(self, wh: WarehouseConfig, job: ClaimedJob, order: dict[str, Any], query: FlowConfig,
                     breaker: Breaker, rows: list[JournalRow]) -> JobResult:
        try:
            prepared = build_request(self.ctx.mappings[query.request], order, context=wh.context,
                                     secrets=self.ctx.secrets, describe=False)
        except DockyardError as exc:
            return self._held(job, wh, f"in doubt, and the recovery query cannot be built: {self._redact(str(exc))}",
                              rows)
        url = rewrite_url(prepared.request.url, wh.endpoint)
        rows.append(JournalRow(now_us(), job.order_no, wh.name, "query", "sent", "ok",
                               detail=self._request_summary(prepared.request, url, prepared)))
        try:
            answer = await self._http(wh.name, prepared.request, url)
            if retry_status(answer.status):
                raise OutcomeUnknown(f"HTTP {answer.status}")
            outcome = self._outcome(wh, query, answer)
        except (NotSent, OutcomeUnknown, DockyardError) as exc:
            breaker.failure()
            return self._retry(job, wh, f"in doubt; the recovery query failed: {self._redact(str(exc))}", rows,
                               doubt=True)
        breaker.success()
        rows.append(JournalRow(now_us(), job.order_no, wh.name, "query", "response", str(answer.status),
                               answer.elapsed_us, detail=self._answer_summary(answer)))
        result = outcome.get("result")
        if result in ("accepted", "duplicate"):
            rows.append(JournalRow(now_us(), job.order_no, wh.name, job.kind, "resolved", "delivered",
                                   detail={"note": "the recovery query found the order at the warehouse"}))
            return self._settle(job, wh, {**outcome, "result": "duplicate"}, rows)
        if result == "retryable":
            rows.append(JournalRow(now_us(), job.order_no, wh.name, job.kind, "resolved", "absent",
                                   detail={"note": "the warehouse does not have the order: it is sent again "
                                                   "with a new request id"}))
            return JobResult(job.id, job.owner, "ready", next_at=now_us(), doubt=False, reset_request_id=True,
                             reason="in doubt, resolved by query: not at the warehouse", order_no=job.order_no,
                             rows=rows)
        return self._dead(job, wh, f"in doubt, and the recovery query was refused: {outcome.get('message')}", rows,
                          outcome=outcome)

    # -- outcomes --------------------------------------------------------------------------
    def _retry(self, job: ClaimedJob, wh: WarehouseConfig, reason: str, rows: list[JournalRow], *, doubt: bool,
               outcome: dict[str, Any] | None = None) -> JobResult:
        if job.attempts >= wh.retry.max_attempts:
            if doubt:
                return self._held(job, wh, f"{reason}; out of attempts ({job.attempts}) with the outcome unknown",
                                  rows)
            return self._dead(job, wh, f"out of attempts ({job.attempts}); last: {reason}", rows, outcome=outcome)
        delay = backoff_seconds(wh.retry, job.attempts)
        rows.append(JournalRow(now_us(), job.order_no, wh.name, job.kind, "retry", "scheduled",
                               detail={"reason": reason, "attempt": job.attempts, "in_seconds": round(delay, 3)}))
        return JobResult(job.id, job.owner, "ready", next_at=now_us() + int(delay * 1_000_000), doubt=doubt,
                         reason=reason, outcome=outcome, order_no=job.order_no, rows=rows)

    def _unknown(self, job: ClaimedJob, wh: WarehouseConfig, rule: str, reason: str,
                 rows: list[JournalRow]) -> JobResult:
        """The request may have arrived. Resend and query rules come back to it (next claim);
        under `skip` nobody may send again without knowing: hold it for an operator."""
        rows.append(JournalRow(now_us(), job.order_no, wh.name, job.kind, "in-doubt", "unknown",
                               detail={"reason": reason, "rule": rule}))
        if rule in ("resend", "query"):
            return self._retry(job, wh, f"in doubt ({reason})", rows, doubt=True)
        return self._held(job, wh, f"in doubt: {reason}; the duplicate rule 'skip' neither resends nor queries: "
                                   f"check with {wh.name}, then replay (dockyard dlq replay {job.id}) or leave it",
                          rows)

    def _held(self, job: ClaimedJob, wh: WarehouseConfig, reason: str, rows: list[JournalRow]) -> JobResult:
        rows.append(JournalRow(now_us(), job.order_no, wh.name, job.kind, "held", "in_doubt",
                               detail={"reason": reason, "job": job.id}))
        return JobResult(job.id, job.owner, "held", doubt=True, reason=reason, order_no=job.order_no,
                         delivery="in_doubt" if job.kind == "create" else None, rows=rows)

    def _dead(self, job: ClaimedJob, wh: WarehouseConfig, reason: str, rows: list[JournalRow], *,
              step: str = "dead-lettered", outcome: dict[str, Any] | None = None) -> JobResult:
        if step != "dead-lettered":
            rows.append(JournalRow(now_us(), job.order_no, wh.name, job.kind, step, "error", detail={"reason": reason}))
        rows.append(JournalRow(now_us(), job.order_no, wh.name, job.kind, "dead-lettered", "dlq",
                               detail={"reason": reason, "job": job.id, "attempts": job.attempts}))
        return JobResult(job.id, job.owner, "dead", reason=reason, outcome=outcome, order_no=job.order_no,
                         delivery="dlq" if job.kind in ("create", "update") else None, rows=rows)

    # -- wire ------------------------------------------------------------------------------
    def _outcome(self, wh: WarehouseConfig, flow: FlowConfig, answer: HttpAnswer) -> dict[str, Any]:
        if flow.response is None:
            ok = 200 <= answer.status < 300
            return {"result": "accepted" if ok else "rejected", "retryable": False, "code": str(answer.status)}
        mapping = self.ctx.mappings[flow.response]
        document = mapping.parse_input(answer.body)
        outcome: dict[str, Any] = mapping.transform(document, wh.context)
        return outcome

    async def _http(self, name: str, wire: WireRequest, url: str) -> HttpAnswer:
        session = self._sessions[name]
        t0 = now_us()
        try:
            # encoded=True: the query string is sent byte for byte as it was signed.
            async with session.request(wire.method, URL(url, encoded=True), data=wire.body,
                                       headers=dict(wire.headers)) as response:
                body = await response.read()
                elapsed = now_us() - t0
                self.metrics.stage.labels("http", name).observe(elapsed / 1e6)
                return HttpAnswer(response.status, body, elapsed)
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError, aiohttp.InvalidURL) as exc:
            raise NotSent(f"{type(exc).__name__}: {origin(url)}") from None
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            took = (now_us() - t0) / 1e6
            raise OutcomeUnknown(f"{type(exc).__name__} after {took:.1f}s from {origin(url)}") from None

    def _request_summary(self, wire: WireRequest, url: str, prepared: PreparedRequest) -> dict[str, Any]:
        text = wire.body[:EXCERPT].decode(prepared.body_encoding, errors="replace")
        return {"method": wire.method, "url": url.split("?", 1)[0], "request_id": prepared.request_id,
                "bytes": len(wire.body), "sha256": hashlib.sha256(wire.body).hexdigest(),
                "sign_scheme": prepared.sign_scheme, "body": self._redact(_mask(text, prepared.signature))}

    def _answer_summary(self, answer: HttpAnswer) -> dict[str, Any]:
        return {"status": answer.status, "bytes": len(answer.body),
                "body": self._redact(answer.body[:EXCERPT].decode("utf-8", errors="replace"))}

    def _redact(self, text: str) -> str:
        return self.ctx.secrets.redact(text)

    # -- upstream --------------------------------------------------------------------------
    async def _upstream_loop(self) -> None:
        up = self.ctx.config.upstream
        assert up is not None
        wake = self.wake[UPSTREAM]
        lease = int((up.timeout + 120) * 1_000_000)
        secret = self.ctx.secrets.get(up.secret).reveal() if up.secret else None
        while not self._stopping:
            wake.clear()
            jobs = await self.db.write(self._claimer("up", UPSTREAM, up.batch, lease))
            if not jobs:
                await _wait(wake, 0.25)
                continue
            await self._forward(jobs, up.url, up.retry, secret)

    async def _forward(self, jobs: list[ClaimedJob], url: str, retry: RetryConfig, secret: str | None) -> None:
        body = ("[" + ",".join(j.payload or "null" for j in jobs) + "]").encode("utf-8")
        headers = {"Content-Type": "application/json"}
        if secret is not None:
            headers["X-Dockyard-Signature"] = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        wire = WireRequest("POST", url, tuple(headers.items()), body)
        try:
            answer = await self._http(UPSTREAM, wire, url)
            ok = 200 <= answer.status < 300
            why = "" if ok else f"HTTP {answer.status}"
        except (NotSent, OutcomeUnknown) as exc:
            ok, why = False, str(exc)
        now = now_us()
        results: list[JobResult] = []
        for job in jobs:
            if ok:
                results.append(JobResult(job.id, job.owner, "done", order_no=job.order_no, rows=[
                    JournalRow(now, job.order_no, UPSTREAM, "forward", "forwarded", "ok",
                               detail={"batch": len(jobs)})]))
            elif job.attempts >= retry.max_attempts:
                results.append(JobResult(job.id, job.owner, "dead", reason=f"upstream: out of attempts; last: {why}",
                                         order_no=job.order_no, rows=[
                                             JournalRow(now, job.order_no, UPSTREAM, "forward", "dead-lettered", "dlq",
                                                        detail={"reason": why, "job": job.id})]))
            else:
                delay = backoff_seconds(retry, job.attempts)
                results.append(JobResult(job.id, job.owner, "ready", next_at=now + int(delay * 1_000_000),
                                         reason=f"upstream: {why}", order_no=job.order_no, rows=[
                                             JournalRow(now, job.order_no, UPSTREAM, "forward", "forward-failed",
                                                        "retry", detail={"reason": why, "attempt": job.attempts})]))
        await self.db.write(lambda c: store.finish(c, results, now_us()))
        for r in results:
            self.metrics.forwards.labels(r.state).inc()


async def _wait(event: asyncio.Event, timeout: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), timeout)


def _mask(text: str, signature: str | None) -> str:
    return text.replace(signature, "<signature>") if signature else text

