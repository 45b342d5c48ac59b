"""Delivery workers: take jobs from the outbox and carry each one through transform → policies
(signing, encryption, the duplicate rule) → HTTP → the response mapping → commit, retry, the
dead-letter queue or an honest in-doubt.

One loop per warehouse claims only what the warehouse may take now. Its limits are shared by
every node on the store (see store.claim): the circuit (one probe at a time across all nodes
when half-open), a `Retry-After` pause, a calls-per-second bucket and the concurrency, counted
over all nodes' jobs in flight. So a slow or failing warehouse keeps its orders waiting in the
outbox and never takes the others' workers, however many nodes there are.

A job goes `claimed` (nothing written) → `sending` (durably marked right before its request is
written) → an outcome. That split is what keeps orders away from operators: a job that fails or
dies before its request was written is simply sent again; only one that was on the wire with no
answer is in doubt, and in-doubt work follows the warehouse's duplicate rule: `query` asks the
warehouse (its `query` flow), `resend` sends again with the same request id (the warehouse answers
a recognisable duplicate), and only `skip` — no way to ask — holds the job for a person.

A separate loop forwards recorded status events to the upstream webhook in batches, from the
upstream outbox (forward_log.py: this node's partitions, oldest first, one batch in flight), with
the same retry and dead-letter handling. Forward jobs (queued before schema v7, or dead ones an
operator replays) go through the job loop of the upstream lane, as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import hmac
import itertools
import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable, Collection, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from dockyard.runtime.delivery import NotSent, OutcomeUnknown, retry_status
from dockyard.runtime.errors import DockyardError
from dockyard.runtime.request import PreparedRequest, build_request
from dockyard.service import forward_log, logs, store, tracing
from dockyard.service.config import FlowConfig, RetryConfig, WarehouseConfig
from dockyard.service.context import MappingVersion, ServiceContext, load_order, rewrite_url
from dockyard.service.db import BatchOp, Conn, Database, StoreError, StoreUnavailable, now_us
from dockyard.service.http_client import HttpAnswer, HttpPool, failure_kind, prepare
from dockyard.service.metrics import Metrics, outcome_class, retry_reason
from dockyard.service.resilience import SharedCircuit, backoff_seconds, retry_after_seconds
from dockyard.service.store import ClaimedJob, ClaimOutcome, JobResult, JournalRow, WarehouseLimits

__all__ = ["Deliverer", "HttpAnswer"]

UPSTREAM = store.UPSTREAM
EXCERPT = 2000
# Answers of the upstream webhook that refuse a batch for what it holds (not for being away, or for
# our signature): a batch refused so is sent in parts to find the events it refuses (_isolate).
REFUSED_BATCH = frozenset({400, 404, 409, 413, 422})
ISOLATE_REFUSED = 3  # events refused alone that one round isolates, at most
LEASE_RENEW_S = 1.0  # how often the upstream outbox's loop renews (and rebalances) its partitions' leases
log = logging.getLogger("dockyard.delivery")


@dataclass
class _Attempt:
    """What one attempt learned, for its single journal row."""

    job: ClaimedJob
    warehouse: str
    detail: dict[str, Any] = field(default_factory=dict)
    written: bool = False  # the request bytes were handed to the socket
    elapsed_us: int | None = None


class Deliverer:
    def __init__(self, ctx: ServiceContext, db: Database, *, owner: str | None = None,
                 metrics: Metrics | None = None) -> None:
        self.ctx = ctx
        self.metrics = metrics or Metrics()
        self.db = db
        self.owner = owner or uuid.uuid4().hex
        self.breakers = {name: SharedCircuit(wh.circuit) for name, wh in ctx.config.warehouses.items()}
        self.wake: dict[str, asyncio.Event] = {}
        self.inflight: Counter[str] = Counter()
        self.finishing: Counter[str] = Counter()  # exchange over, outcome not yet committed
        self._pools: dict[str, HttpPool] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        # Jobs this process claimed and is still working on (until their outcome is committed or
        # the attempt is abandoned): the recovery loop takes back any other job the store says is
        # claimed by this process (see store.recover's `holding`).
        self._holding: set[int] = set()
        self._loops: list[asyncio.Task[None]] = []
        self._stopping = False
        self._slots: dict[str, asyncio.Event] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        # Orders this process accepted and has not sent yet, as parsed at ingest: the first attempt
        # uses them instead of parsing the stored JSON again. Bounded; a miss reads the store.
        self.orders: dict[str | None, dict[str, Any]] = {}
        self.orders_cap = 50_000

    # -- lifecycle --------------------------------------------------------------------------
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        for name, wh in self.ctx.config.warehouses.items():
            # A few connections beyond `concurrency`: recovery queries share the pool.
            self._pools[name] = HttpPool(limit=wh.concurrency + 4, connect_timeout=wh.connect_timeout,
                                         timeout=wh.timeout)
            self.wake[name] = asyncio.Event()
            self._slots[name] = asyncio.Event()
            self._loops.append(self._supervise(f"deliver-{name}", functools.partial(self._warehouse_loop, wh)))
        self._loops.append(self._supervise("recover", self._recovery_loop))
        up = self.ctx.config.upstream
        if up is not None:
            self._pools[UPSTREAM] = HttpPool(limit=4, connect_timeout=min(3.0, up.timeout), timeout=up.timeout)
            self.wake[UPSTREAM] = asyncio.Event()
            self.wake[store.FORWARD_LOG_KEY] = asyncio.Event()
            self._loops.append(self._supervise("forward-upstream", self._upstream_loop))
            self._loops.append(self._supervise("forward-outbox", self._forward_log_loop))
        self.db.listen(self._woken)

    def _supervise(self, name: str, body: Callable[[], Coroutine[Any, Any, None]]) -> asyncio.Task[None]:
        """Run a loop for the life of the service: a bug that escapes it is logged and the loop
        starts again (a dead loop would strand its claimed jobs until their lease ran out)."""
        async def run() -> None:
            while not self._stopping:
                try:
                    await body()
                except Exception:
                    log.exception("the %s loop failed inside the service; it starts again", name)
                    await asyncio.sleep(1.0)
        return asyncio.create_task(run(), name=name)

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
        if self.ctx.config.upstream is not None:  # hand the upstream outbox's partitions over at once
            with contextlib.suppress(Exception):
                await self.db.claim(functools.partial(forward_log.release, me=self.owner))
        if self._tasks:  # let attempts on the wire finish and record their outcome
            await asyncio.wait(self._tasks, timeout=30)
        for pool in self._pools.values():
            await pool.close()

    def _woken(self, key: str) -> None:
        """A wake-up from the store (any node committed ready work): called from another thread."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._poke_key, key)

    def _poke_key(self, key: str) -> None:
        if key == "*":
            for event in self.wake.values():
                event.set()
        else:
            self.poke(key)

    async def _recovery_loop(self, every: float = 2.0) -> None:
        """Take back the jobs of workers that died (another process on the same store, or a lease
        that ran out), while this process runs: claimed ones simply, sending ones as in doubt."""
        while not self._stopping:
            await asyncio.sleep(every)
            holding = frozenset(self._holding)
            try:
                recovered = await self.db.write(functools.partial(store.recover, me=self.owner,
                                                                  gone=self.db.owner_gone, holding=holding))
            except StoreError:
                continue  # the store is away; the next turn tries again
            if recovered:
                logs.event(logging.WARNING, "recovered in-flight jobs of a stopped worker", jobs=len(recovered))

    def poke(self, warehouse: str) -> None:
        event = self.wake.get(warehouse)
        if event is not None:
            event.set()

    def _limits(self, wh: WarehouseConfig) -> WarehouseLimits:
        rate = getattr(wh, "rate_limit", None)
        per_second = getattr(rate, "per_second", None) if rate is not None else None
        burst = getattr(rate, "burst", None) if rate is not None else None
        return WarehouseLimits(concurrency=wh.concurrency, rate=per_second,
                               burst=float(burst or max(1.0, per_second or 1.0)),
                               probe_us=int((wh.timeout + wh.connect_timeout + 5) * 1_000_000))

    def _claimer(self, lane: str, warehouse: str, limit: int, lease: int,
                 limits: WarehouseLimits | None) -> Callable[[Conn], ClaimOutcome]:
        finishing = self.finishing[warehouse]

        def claim(conn: Conn) -> ClaimOutcome:
            ids = (uuid.uuid4().hex for _ in itertools.repeat(None))  # a job keeps its first request id
            return store.claim(conn, lane, warehouse, limit, self.owner, lease, ids, limits, finishing)
        return claim

    # -- the warehouse loop -----------------------------------------------------------------
    async def _warehouse_loop(self, wh: WarehouseConfig) -> None:
        circuit = self.breakers[wh.name]
        wake = self.wake[wh.name]
        slot = self._slots[wh.name]
        lease = int((wh.timeout + wh.connect_timeout + 120) * 1_000_000)
        limits = self._limits(wh)
        batch = max(1, wh.concurrency // 4)
        lingered = False
        while not self._stopping:
            free = wh.concurrency - self.inflight[wh.name]
            if free <= 0:
                slot.clear()
                await _wait(slot, 1.0)
                continue
            if free < batch and self.inflight[wh.name] and not lingered:
                # Busy: let a few more slots free up and claim them together. A claim is a
                # transaction (on PostgreSQL a locking one): one per freed slot would cost more
                # than the few milliseconds this waits.
                lingered = True
                await asyncio.sleep(0.005)
                continue
            lingered = False
            wake.clear()
            try:
                outcome = await self.db.claim(self._claimer("wh", wh.name, free, lease, limits))
            except StoreError:
                await _wait(wake, 0.5)  # the store is away: readiness says so; try again soon
                continue
            circuit.observe(outcome.circuit)
            if not outcome.jobs:
                await _wait(wake, await self._idle_for(wh.name, "wh", outcome))
                continue
            for job in outcome.jobs:
                self.inflight[wh.name] += 1
                self._holding.add(job.id)
                task = asyncio.create_task(self._run(wh, job, circuit))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _idle_for(self, warehouse: str, lane: str, outcome: ClaimOutcome) -> float:
        """How long a loop may sleep when it got nothing: until the limits let it claim, or until its
        earliest queued job is due (a wake-up from any node cuts it short)."""
        if outcome.wait_us:
            wait = min(5.0, max(0.005, outcome.wait_us / 1e6))
            if outcome.reason in ("rate limit", "paused (Retry-After)"):
                self.metrics.observe_throttled(warehouse, wait)
            return wait
        if outcome.reason:  # at the concurrency limit: a finishing job frees a slot (and pokes)
            return 0.05
        due = outcome.next_due_us  # read by the claim (store.claim)
        if due is None:
            return 5.0
        return min(5.0, max(0.002, due / 1e6))

    async def _run(self, wh: WarehouseConfig, job: ClaimedJob, circuit: SharedCircuit) -> None:
        attempt = _Attempt(job, wh.name)
        released = False
        try:
            try:
                if tracing.enabled():
                    with tracing.span("dockyard.deliver", job.trace_id, {
                            "dockyard.order_no": job.order_no, "dockyard.warehouse": wh.name,
                            "dockyard.flow": job.kind, "dockyard.attempt": job.attempts}):
                        result = await self._attempt(wh, job, attempt)
                else:
                    result = await self._attempt(wh, job, attempt)
            except Exception as exc:  # a bug must not lose the job: keep it, with the reason
                why = f"internal error: {type(exc).__name__}: {self._redact(str(exc))}"
                log.exception("delivery attempt failed inside the service (job %s)", job.id)
                result = self._finish(attempt, "ready", "error", "in_doubt" if attempt.written else "error",
                                      reason=why, delay_us=5_000_000, doubt=attempt.written)
            if result is None:  # the job is no longer ours (another node recovered it)
                return
            await self._circuit_after(wh, job, circuit, attempt)
            # The warehouse's slot is free once the exchange is over; the job itself stays open
            # (so nothing later of this order starts) until its outcome is committed.
            released = True
            self.finishing[wh.name] += 1
            self._release(wh.name)
            try:
                await self._commit(result)
            finally:
                self.finishing[wh.name] -= 1
            self.metrics.child(self.metrics.deliveries, wh.name, job.kind, result.state).inc()
            if result.state in ("dead", "held"):
                logs.event(logging.WARNING, "dead-lettered" if result.state == "dead" else "held in doubt",
                           order_no=job.order_no, trace_id=job.trace_id, warehouse=wh.name, flow=job.kind,
                           job=job.id, reason=result.reason)
        finally:
            self._holding.discard(job.id)
            if not released:
                self._release(wh.name)

    async def _commit(self, result: JobResult) -> None:
        """Record an outcome; while the store is away, keep trying (the outcome is only in memory;
        if this process dies meanwhile, the job comes back from the store as it was marked)."""
        delay = 0.2
        while True:
            try:
                await self.db.write(store.FinishOp([result]))
                return
            except StoreUnavailable:
                if self._stopping and delay > 5:
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    def _release(self, warehouse: str) -> None:
        self.inflight[warehouse] -= 1
        self._slots[warehouse].set()

    async def _circuit_after(self, wh: WarehouseConfig, job: ClaimedJob, circuit: SharedCircuit,
                             attempt: _Attempt) -> None:
        """Tell every node when this node's failures open the warehouse's circuit, or when a
        probe (or any success) closes it again."""
        failed = attempt.detail.get("failure")
        change: int | str | None = "none"
        if failed:
            if circuit.failure() or job.probe:
                change = int(wh.circuit.open_for * 1_000_000)
        elif attempt.written or attempt.detail.get("http_status") is not None:
            circuit.success()
            if job.probe or circuit.state != "closed":
                change = None
        if change == "none":
            return
        open_for = change if isinstance(change, int) else None
        with contextlib.suppress(StoreError):
            await self.db.claim(lambda c: store.set_circuit(c, wh.name, open_for_us=open_for, by=self.owner))
        circuit.observe("open" if open_for is not None else "closed", opened=open_for is not None)

    # -- one attempt ------------------------------------------------------------------------
    async def _attempt(self, wh: WarehouseConfig, job: ClaimedJob, attempt: _Attempt) -> JobResult | None:
        flow = wh.flows.get(job.kind)
        if flow is None:
            return self._dead(attempt, f"warehouse {wh.name} has no {job.kind!r} flow configured")
        if job.order_payload is None:
            return self._dead(attempt, f"order {job.order_no!r} is not in the store")
        if job.kind == "cancel":
            create_state = await self.db.read(lambda c: c.execute(
                "SELECT state FROM dy_jobs WHERE order_no = ? AND lane = 'wh' AND kind = 'create' ORDER BY id LIMIT 1",
                (job.order_no,)))
            if create_state and create_state[0][0] in ("dead", "cancelled"):
                attempt.detail["note"] = "the create never reached the warehouse: nothing to cancel"
                return self._finish(attempt, "done", "cancelled", "ok", order_status="cancelled",
                                    delivery="cancelled", reason="cancelled before delivery")
        order = self.orders.pop(job.order_no, None) if job.attempts == 1 and job.kind == "create" else None
        if order is None:
            order = load_order(job.order_payload)
        t0 = time.perf_counter_ns()
        # One fixed clock per transform, journaled with the mapping's version: the order page
        # explains what was sent with both, not with today's mapping at the time of viewing.
        clock = datetime.now(UTC)
        mapping, version = self.ctx.mappings[flow.request], self.ctx.versions.get(flow.request)
        # a retry keeps the version that began the job (only a reload since start can make them differ)
        if job.attempts > 1 and job.order_no is not None and len(self.ctx.archive) > len(self.ctx.versions):
            mapping, version = await _pinned(self.ctx, self.db, job.order_no, job.kind, mapping, version)
        try:
            prepared = build_request(mapping, order, context=wh.context, clock=clock,
                                     secrets=self.ctx.secrets, request_id=job.request_id, describe=False,
                                     wire=wh.wire)
        except DockyardError as exc:
            return self._dead(attempt, f"the order cannot be turned into a {wh.name} request: "
                                       f"{self._redact(str(exc))}", stage="transform")
        rule = prepared.idempotency_rule or "skip"
        took = (time.perf_counter_ns() - t0) / 1e9
        self.metrics.child(self.metrics.stage, "transform", wh.name).observe(took)
        attempt.detail.update({"attempt": job.attempts, "mapping": flow.request, "request_id": prepared.request_id,
                               "idempotency_key": prepared.idempotency_key, "rule": rule,
                               "transform_ms": round(took * 1000, 2), "clock": clock.isoformat(timespec="microseconds"),
                               **(version.as_detail() if version is not None else {})})
        if job.doubt:
            if rule == "query":
                query = wh.flows.get("query")
                if query is not None:
                    return await self._query(wh, job, order, query, attempt)
            if rule != "resend":
                why = (f"the outcome of an earlier attempt is unknown and the duplicate rule '{rule}' neither "
                       f"resends nor queries: check with {wh.name} whether order {job.order_no} arrived, then "
                       f"replay it (dockyard dlq replay {job.id}) or leave it")
                return self._held(attempt, why)
            attempt.detail["resend"] = ("outcome unknown earlier; the warehouse dedupes on the request id, so it is "
                                        "sent again with the same one")
        return await self._exchange(wh, job, flow, prepared, attempt, rule)

    async def _send(self, wh: WarehouseConfig, job: ClaimedJob, prepared: PreparedRequest,
                    attempt: _Attempt, *, mark: bool = True) -> HttpAnswer:
        """Connect, durably mark the job as on the wire (when `mark`), write, read the answer.
        NotSent before the write, OutcomeUnknown after it; StoreUnavailable when the mark could not
        be made (nothing was written)."""
        wire = prepared.request
        url = rewrite_url(wire.url, wh.endpoint)
        attempt.detail["request"] = self._request_summary(wire.method, url, wire.body, prepared)
        request = prepare(wire.method, url, wire.headers, wire.body)
        pool = self._pools[wh.name]
        conn = await pool.connect(request)
        if mark:
            try:
                ours: bool = await self.db.write(store.MarkSendingOp(job.id, job.owner))
            except BaseException:
                pool.release(conn, request)
                raise
            if not ours:
                pool.release(conn, request)
                raise _NotOurs
        attempt.written = True
        if not tracing.enabled():
            return await pool.exchange(conn, request)
        with tracing.http_span(wire.method, url, attempt=job.attempts, request_bytes=len(wire.body)) as call:
            try:
                answer = await pool.exchange(conn, request)
            except (NotSent, OutcomeUnknown) as exc:
                tracing.http_result(call, error=failure_kind(exc))
                raise
            tracing.http_result(call, status=answer.status, response_bytes=len(answer.body))
            return answer

    async def _exchange(self, wh: WarehouseConfig, job: ClaimedJob, flow: FlowConfig, prepared: PreparedRequest,
                        attempt: _Attempt, rule: str) -> JobResult | None:
        try:
            answer = await self._send(wh, job, prepared, attempt)
        except _NotOurs:
            return None
        except StoreUnavailable as exc:
            return self._retry(attempt, wh, f"not sent: the state store is away ({exc})", doubt=False,
                               error="store", failure=False)
        except NotSent as exc:
            attempt.written = False
            return self._retry(attempt, wh, f"not sent: {exc}", doubt=False, error=failure_kind(exc))
        except OutcomeUnknown as exc:
            return self._unknown(attempt, wh, rule, f"no answer: {exc}", error=failure_kind(exc))
        attempt.elapsed_us = answer.elapsed_us
        attempt.detail["http_status"] = answer.status
        attempt.detail["response"] = self._answer_summary(answer)
        if retry_status(answer.status):
            pause = retry_after_seconds(answer.headers.get("retry-after"))
            if pause:
                with contextlib.suppress(StoreError):
                    await self.db.claim(lambda c: store.set_pause(c, wh.name, int(pause * 1_000_000),
                                                                  f"HTTP {answer.status} Retry-After"))
            return self._retry(attempt, wh, f"HTTP {answer.status} from {wh.name}", doubt=False,
                               error=f"http_{answer.status}", at_least=pause)
        try:
            outcome = self._outcome(wh, flow, answer)
        except DockyardError as exc:  # it answered; what it said is the problem
            return self._unknown(attempt, wh, rule, f"{wh.name} answered something unreadable: "
                                                    f"{self._redact(str(exc))}", failure=False)
        return self._settle(attempt, wh, outcome)

    def _settle(self, attempt: _Attempt, wh: WarehouseConfig, outcome: dict[str, Any], *,
                via: str | None = None) -> JobResult:
        job = attempt.job
        result = outcome.get("result")
        message = " ".join(str(outcome.get(k)) for k in ("code", "message") if outcome.get(k))
        if result in ("accepted", "duplicate"):
            attempt.detail.update({"warehouse_order_id": outcome.get("warehouse_order_id"),
                                   "waybills": outcome.get("waybills")})
            if via:
                attempt.detail["resolved_by"] = via
            if job.kind == "cancel":
                return self._finish(attempt, "done", "committed", str(result), outcome=outcome,
                                    order_status="cancelled")
            return self._finish(attempt, "done", "committed", str(result), outcome=outcome, order_status="delivered",
                                delivery="delivered", warehouse_order_id=outcome.get("warehouse_order_id"),
                                waybills=outcome.get("waybills"))
        if result == "rejected":
            if job.kind == "cancel":
                attempt.detail["reason"] = message or "refused"
                return self._finish(attempt, "done", "cancel-refused", "rejected", outcome=outcome,
                                    reason=f"cancel refused: {message}")
            return self._dead(attempt, f"rejected by {wh.name}: {message or 'no reason given'}", outcome=outcome)
        return self._retry(attempt, wh, f"{wh.name} asked to retry: {message or 'no reason given'}", doubt=False,
                           outcome=outcome, error="retryable", failure=False)

    async def _query(self, wh: WarehouseConfig, job: ClaimedJob, order: dict[str, Any], query: FlowConfig,
                     attempt: _Attempt) -> JobResult | None:
        """In doubt, and the warehouse can be asked: ask it (a query changes nothing at the
        warehouse, so it needs no on-the-wire mark and always goes with a new request id)."""
        try:
            prepared = build_request(self.ctx.mappings[query.request], order, context=wh.context,
                                     secrets=self.ctx.secrets, describe=False, wire=wh.wire)
        except DockyardError as exc:
            return self._held(attempt, f"in doubt, and the recovery query cannot be built: {self._redact(str(exc))}")
        attempt.detail["query"] = {"mapping": query.request, "request_id": prepared.request_id}
        try:
            answer = await self._send(wh, job, prepared, attempt, mark=False)
            attempt.written = False  # the create itself was not sent again
            attempt.elapsed_us = answer.elapsed_us
            attempt.detail["http_status"] = answer.status
            attempt.detail["response"] = self._answer_summary(answer)
            if retry_status(answer.status):
                raise OutcomeUnknown(f"HTTP {answer.status}")
            outcome = self._outcome(wh, query, answer)
        except (NotSent, OutcomeUnknown, DockyardError) as exc:
            attempt.written = False
            attempt.detail["failure"] = True
            return self._retry(attempt, wh, f"in doubt; the recovery query failed: {self._redact(str(exc))}",
                               doubt=True, step="resolved", outcome_word="failed", error="query")
        result = outcome.get("result")
        if result in ("accepted", "duplicate"):
            settled = self._settle(attempt, wh, {**outcome, "result": "duplicate"}, via="query: found at the warehouse")
            settled.rows.insert(0, JournalRow(None, job.order_no, wh.name, job.kind, "resolved", "delivered",
                                              detail={"note": "the recovery query found the order at the warehouse",
                                                      "query": attempt.detail.get("query")}))
            return settled
        if result == "retryable":
            attempt.detail["note"] = "the warehouse does not have the order: it is sent again with a new request id"
            return self._finish(attempt, "ready", "resolved", "absent", doubt=False, reset_request_id=True,
                                reason="in doubt, resolved by query: not at the warehouse")
        return self._dead(attempt, f"in doubt, and the recovery query was refused: {outcome.get('message')}",
                          outcome=outcome)

    # -- outcomes --------------------------------------------------------------------------
    def _finish(self, attempt: _Attempt, state: str, step: str, outcome_word: str, *, reason: str | None = None,
                delay_us: int = 0, doubt: bool = False, outcome: dict[str, Any] | None = None,
                reset_request_id: bool = False, order_status: str | None = None, delivery: str | None = None,
                warehouse_order_id: str | None = None, waybills: list[dict[str, Any]] | None = None,
                extra_rows: list[JournalRow] | None = None) -> JobResult:
        """The attempt's JobResult with its one journal row (plus `held`/`dead-lettered` rows)."""
        job = attempt.job
        if reason is not None:
            attempt.detail.setdefault("reason", reason)
        detail = {k: v for k, v in attempt.detail.items() if k != "failure"}
        self._observe(attempt, step, state, doubt)
        rows = [JournalRow(None, job.order_no, attempt.warehouse, job.kind, step, outcome_word, attempt.elapsed_us,
                           detail=detail), *(extra_rows or [])]
        accepted = step == "committed" and job.kind == "create" and job.created_at
        return JobResult(job.id, job.owner, state, delay_us=delay_us, doubt=doubt, reason=reason, outcome=outcome,
                         reset_request_id=reset_request_id, order_no=job.order_no, lane=job.lane,
                         warehouse=attempt.warehouse, order_status=order_status, delivery=delivery,
                         warehouse_order_id=warehouse_order_id, waybills=waybills, rows=rows,
                         ingested_at=job.created_at if accepted else None)

    def _observe(self, attempt: _Attempt, step: str, state: str, doubt: bool) -> None:
        """The attempt's metrics: one exchange by its outcome class, a retry by its reason, and for
        an accepted create the time since its order came in."""
        detail, job = attempt.detail, attempt.job
        status, error = detail.get("http_status"), detail.get("error")
        exchanged = status is not None or error in ("timeout", "reset", "refused", "not_sent", "no_answer")
        if exchanged:
            self.metrics.observe_attempt(attempt.warehouse, job.kind, outcome_class(status, error),
                                         (attempt.elapsed_us or 0) / 1e6)
        if step in ("retry", "in-doubt") and state == "ready" and error != "store":
            self.metrics.observe_retry(attempt.warehouse, retry_reason(status, error, in_doubt=doubt))
        if step == "committed" and job.kind == "create" and job.created_at:
            self.metrics.observe_accepted(attempt.warehouse, (now_us() - job.created_at) / 1e6)

    def _retry(self, attempt: _Attempt, wh: WarehouseConfig, reason: str, *, doubt: bool,
               outcome: dict[str, Any] | None = None, error: str | None = None, failure: bool = True,
               at_least: float = 0.0, step: str = "retry", outcome_word: str = "scheduled") -> JobResult:
        job = attempt.job
        if error:
            attempt.detail["error"] = error
        if failure:
            attempt.detail["failure"] = True
        if job.attempts >= wh.retry.max_attempts:
            if doubt:
                return self._held(attempt, f"{reason}; out of attempts ({job.attempts}) with the outcome unknown")
            return self._dead(attempt, f"out of attempts ({job.attempts}); last: {reason}", outcome=outcome)
        delay = max(at_least, backoff_seconds(wh.retry, job.attempts))
        attempt.detail["in_seconds"] = round(delay, 3)
        return self._finish(attempt, "ready", step, outcome_word, reason=reason, delay_us=int(delay * 1_000_000),
                            doubt=doubt, outcome=outcome)

    def _unknown(self, attempt: _Attempt, wh: WarehouseConfig, rule: str, reason: str, *,
                 failure: bool = True, error: str = "no_answer") -> JobResult:
        """The request may have arrived. Resend and query rules come back to it (next claim);
        under `skip` nobody may send again without knowing: hold it for an operator."""
        attempt.detail.update({"error": error if failure else "unreadable", "rule": rule})
        if failure:
            attempt.detail["failure"] = True
        if rule in ("resend", "query"):
            return self._retry(attempt, wh, f"in doubt ({reason})", doubt=True, step="in-doubt",
                               outcome_word="unknown", failure=failure)
        return self._held(attempt, f"in doubt: {reason}; the duplicate rule 'skip' neither resends nor queries: "
                                   f"check with {wh.name}, then replay (dockyard dlq replay {attempt.job.id}) "
                                   f"or leave it", step="in-doubt", outcome_word="unknown")

    def _held(self, attempt: _Attempt, reason: str, *, step: str | None = None,
              outcome_word: str = "in_doubt") -> JobResult:
        job = attempt.job
        held = JournalRow(None, job.order_no, attempt.warehouse, job.kind, "held", "in_doubt",
                          detail={"reason": reason, "job": job.id})
        if step is None:  # the attempt's own row is the held row
            attempt.detail.update({"job": job.id})
            return self._finish(attempt, "held", "held", "in_doubt", reason=reason, doubt=True,
                                delivery="in_doubt" if job.kind == "create" else None)
        return self._finish(attempt, "held", step, outcome_word, reason=reason, doubt=True,
                            delivery="in_doubt" if job.kind == "create" else None, extra_rows=[held])

    def _dead(self, attempt: _Attempt, reason: str, *, stage: str | None = None,
              outcome: dict[str, Any] | None = None) -> JobResult:
        job = attempt.job
        attempt.detail.update({"job": job.id, "attempts": job.attempts})
        if stage:
            attempt.detail["stage"] = stage
        return self._finish(attempt, "dead", "dead-lettered", "dlq", reason=reason, outcome=outcome,
                            delivery="dlq" if job.kind in ("create", "update") else None)

    # -- wire ------------------------------------------------------------------------------
    def _outcome(self, wh: WarehouseConfig, flow: FlowConfig, answer: HttpAnswer) -> dict[str, Any]:
        if flow.response is None:
            ok = 200 <= answer.status < 300
            return {"result": "accepted" if ok else "rejected", "retryable": False, "code": str(answer.status)}
        mapping = self.ctx.mappings[flow.response]
        document = mapping.parse_input(answer.body)
        outcome: dict[str, Any] = mapping.transform(document, wh.context)
        return outcome

    def _request_summary(self, method: str, url: str, body: bytes, prepared: PreparedRequest) -> dict[str, Any]:
        text = body[:EXCERPT].decode(prepared.body_encoding, errors="replace")
        return {"method": method, "url": url.split("?", 1)[0], "bytes": len(body),
                "sha256": hashlib.sha256(body).hexdigest(), "sign_scheme": prepared.sign_scheme,
                "body": self._redact(_mask(text, prepared.signature))}

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
        while not self._stopping:
            wake.clear()
            readable, secret = self._upstream_secret(up.secret)  # nothing is claimed without it
            if not readable:
                await _wait(wake, 5.0)
                continue
            try:
                outcome = await self.db.claim(self._claimer("up", UPSTREAM, up.batch, lease, None))
            except StoreError:
                await _wait(wake, 0.5)
                continue
            if not outcome.jobs:
                await _wait(wake, await self._idle_for(UPSTREAM, "up", outcome))
                continue
            self._holding.update(j.id for j in outcome.jobs)
            try:
                await self._forward(outcome.jobs, up.url, up.retry, secret)
            finally:
                self._holding.difference_update(j.id for j in outcome.jobs)

    async def _post_upstream(self, url: str, body: bytes, secret: str | None) -> tuple[bool, str, int | None]:
        """POST a batch of events (a JSON array) to the upstream webhook: (taken, why not, the
        answer's HTTP status or None when there was none)."""
        headers = [("Content-Type", "application/json")]
        if secret is not None:
            headers.append(("X-Dockyard-Signature", hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()))
        try:
            answer = await self._pools[UPSTREAM].request(prepare("POST", url, headers, body))
            ok = 200 <= answer.status < 300
            return ok, "" if ok else f"HTTP {answer.status}", answer.status
        except (NotSent, OutcomeUnknown) as exc:
            return False, str(exc), None
        except Exception as exc:  # a bug must not strand the batch: it is retried like a failure
            log.exception("forwarding to the upstream webhook failed inside the service")
            return False, f"internal error: {type(exc).__name__}", None

    def _upstream_secret(self, name: str | None) -> tuple[bool, str | None]:
        """The upstream webhook's signing secret, read per batch (the secrets cache makes it cheap)
        so that a rotated value signs the next batch after a reload: (readable, value)."""
        if not name:
            return True, None
        try:
            return True, str(self.ctx.secrets.get(name).reveal())
        except DockyardError as exc:
            log.error("the upstream webhook's secret cannot be read; forwarding waits: %s",
                      self.ctx.secrets.redact(str(exc)))
            return False, None

    async def _forward(self, jobs: list[ClaimedJob], url: str, retry: RetryConfig, secret: str | None) -> None:
        events = {j.id: store.forward_events(j.payload) or ["null"] for j in jobs}
        body = ("[" + ",".join(e for j in jobs for e in events[j.id]) + "]").encode("utf-8")
        sent = sum(len(e) for e in events.values())
        ok, why, _status = await self._post_upstream(url, body, secret)
        results: list[JobResult] = []
        for job in jobs:
            if ok:  # a row per event, as `dockyard trace` shows each event's forwarding
                results.append(JobResult(job.id, job.owner, "done", order_no=job.order_no, lane="up",
                                         warehouse=UPSTREAM, rows=[
                                             JournalRow(None, job.order_no, UPSTREAM, "forward", "forwarded", "ok",
                                                        detail={"batch": sent}) for _ in events[job.id]]))
            elif job.attempts >= retry.max_attempts:
                results.append(JobResult(job.id, job.owner, "dead", reason=f"upstream: out of attempts; last: {why}",
                                         order_no=job.order_no, lane="up", warehouse=UPSTREAM, rows=[
                                             JournalRow(None, job.order_no, UPSTREAM, "forward", "dead-lettered", "dlq",
                                                        detail={"reason": why, "job": job.id})]))
            else:
                delay = backoff_seconds(retry, job.attempts)
                results.append(JobResult(job.id, job.owner, "ready", delay_us=int(delay * 1_000_000),
                                         reason=f"upstream: {why}", order_no=job.order_no, lane="up",
                                         warehouse=UPSTREAM, rows=[
                                             JournalRow(None, job.order_no, UPSTREAM, "forward", "forward-failed",
                                                        "retry", detail={"reason": why, "attempt": job.attempts})]))
        await self._write_until_stored(store.FinishOp(results))
        for r in results:
            self.metrics.forwards.labels(r.state).inc(len(events[r.job_id]))

    async def _forward_log_loop(self) -> None:
        """Forward the upstream outbox (forward_log.py): lease this node's share of its partitions
        (renewed every LEASE_RENEW_S), send their oldest events in one batch, commit what became of
        it, and again. A batch goes only while its leases surely hold until its answer is in: the
        database's lease runs `lease_us` from the renewal, and a batch starts at most `lease_us`
        less the webhook's timeout and a second after it (otherwise another node could take the
        partitions and send the same events while this one still waits for its answer)."""
        up = self.ctx.config.upstream
        assert up is not None
        wake = self.wake[store.FORWARD_LOG_KEY]
        lease_us = int((up.timeout + 15) * 1_000_000)
        parts: dict[int, str | None] = {}  # held partition -> why its last batch failed (None: it went)
        renew_at = trusted_until = 0.0  # monotonic
        lease = functools.partial(forward_log.lease, me=self.owner, lease_us=lease_us, gone=self.db.owner_gone)
        while not self._stopping:
            wake.clear()
            if time.monotonic() >= renew_at:
                started = time.monotonic()
                try:
                    parts = await self.db.claim(lease)
                except StoreError:
                    parts, trusted_until = {}, 0.0
                    await _wait(wake, 0.5)
                    continue
                renew_at, trusted_until = started + LEASE_RENEW_S, started + lease_us / 1e6 - up.timeout - 1.0
            readable, secret = self._upstream_secret(up.secret)
            if not readable:
                await _wait(wake, 5.0)
                continue
            try:
                batch, due_in = await self.db.read(functools.partial(forward_log.read_batch, parts=sorted(parts),
                                                                     limit=up.batch))
            except StoreError:
                await _wait(wake, 0.5)
                continue
            if not batch:
                until_renewal = max(0.0, renew_at - time.monotonic())
                await _wait(wake, until_renewal if due_in is None else min(until_renewal, due_in / 1e6))
                continue
            if time.monotonic() >= trusted_until:
                renew_at = 0.0
                continue
            await self._forward_batch(batch, parts, up.url, up.retry, secret, trusted_until)

    async def _forward_batch(self, batch: list[forward_log.LogEvent], parts: dict[int, str | None], url: str,
                             retry: RetryConfig, secret: str | None, trusted_until: float = float("inf")) -> None:
        ok, why, status = await self._post_upstream(url, _events_body(batch), secret)
        if ok:
            await self._forwarded(batch, parts)
        elif status in REFUSED_BATCH and len(batch) > 1:
            await self._isolate(batch, parts, url, retry, secret, trusted_until)
        else:
            await self._forward_failed(batch, parts, retry, why)

    async def _isolate(self, batch: list[forward_log.LogEvent], parts: dict[int, str | None], url: str,
                       retry: RetryConfig, secret: str | None, trusted_until: float) -> None:
        """The webhook refused a batch for what it holds (REFUSED_BATCH): find the events it refuses
        by sending parts of the batch, so that one bad event holds back its own order, not every
        order that shared its batch (which, out of attempts, would all wait for a person).

        The events are tried in order, a leading part at a time, halving the part on a refusal: a
        part that goes is done, a single event refused is the culprit. A culprit's order is held
        for this round (its later events stay in the log, untried, so they are not sent before
        it); the culprit counts an attempt and backs off its partition like a failed batch, and
        dead-letters when out of attempts, as before. Bounded: at most ISOLATE_REFUSED culprits and
        a few requests per halving of the batch per round; past that, what is left backs off with
        the culprits without counting an attempt (it was not found at fault), and on a failure that
        is not a refusal (the webhook away) it fails as a batch, as before. Each request starts only while
        the partitions' leases surely hold until its answer (`trusted_until`); when they may not,
        what is left stays in the log untouched, for the next round."""
        sent: list[forward_log.LogEvent] = []
        refused: list[forward_log.LogEvent] = []
        held: set[str] = set()  # orders with a culprit: their later events are not tried
        rest = list(batch)
        size = max(1, len(rest) // 2)
        budget = 4 * len(batch).bit_length() + 2 * ISOLATE_REFUSED  # requests this round may make
        why = ""
        while rest and budget > 0 and len(refused) < ISOLATE_REFUSED and time.monotonic() < trusted_until:
            budget -= 1
            part = rest[:size]
            ok, answer, status = await self._post_upstream(url, _events_body(part), secret)
            if ok:
                sent += part
                rest = rest[len(part):]
                size = max(1, min(size * 2, len(rest)))
            elif status not in REFUSED_BATCH:
                await self._forwarded(sent, parts, keep_back_off={e.part for e in refused})
                await self._forward_failed(refused, parts, retry, why)
                await self._forward_failed([e for e in rest if e.order_no not in held], parts, retry, answer)
                return
            elif len(part) > 1:
                size = max(1, len(part) // 2)
            else:
                why = f"{answer} for this event alone"
                refused.append(part[0])
                held.add(part[0].order_no)
                rest = [e for e in rest[1:] if e.order_no not in held]
                size = max(1, min(size, len(rest)))
        await self._forwarded(sent, parts, keep_back_off={e.part for e in refused})
        await self._forward_failed(refused, parts, retry, why)
        if rest and (budget <= 0 or len(refused) >= ISOLATE_REFUSED):
            # Past this round's bounds: what is left was not found at fault, so it counts no attempt
            # (it must not be dead-lettered for its neighbours), but its partitions back off like the
            # culprits', so that a webhook refusing everything is not asked again at once.
            await self._forward_failed(rest, parts, retry, f"{why or 'refused'}; more events of the batch not tried "
                                       "this round", counts=False, attempts=max(e.attempts for e in refused or rest))
        # else: out of lease time; what is left stays in the log for the next round, untouched

    async def _forwarded(self, events: list[forward_log.LogEvent], parts: dict[int, str | None],
                         keep_back_off: Collection[int] = ()) -> None:
        if not events:
            return
        touched = sorted({e.part for e in events}.difference(keep_back_off))  # a culprit's partition backs off
        await self._write_until_stored(forward_log.FinishForwardsOp(events, None,
                                                                    clear=[p for p in touched if parts.get(p)]))
        for p in touched:
            parts[p] = None
        self.metrics.forwards.labels("done").inc(len(events))

    async def _forward_failed(self, events: list[forward_log.LogEvent], parts: dict[int, str | None],
                              retry: RetryConfig, why: str, *, counts: bool = True,
                              attempts: int | None = None) -> None:
        if not events:
            return
        delay = backoff_seconds(retry, (max(e.attempts for e in events) if attempts is None else attempts) + 1)
        failed = forward_log.FailedBatch(why, int(delay * 1_000_000), retry.max_attempts, counts)
        await self._write_until_stored(forward_log.FinishForwardsOp(events, failed))
        for p in {e.part for e in events}:
            parts[p] = why
        if not counts:
            return
        dead = sum(1 for e in events if e.attempts + 1 >= retry.max_attempts)
        self.metrics.forwards.labels("ready").inc(len(events) - dead)
        if dead:
            self.metrics.forwards.labels("dead").inc(dead)

    async def _write_until_stored(self, op: BatchOp) -> None:
        """Write what became of a forwarded batch, waiting out a store that is away (the batch
        went: its outcome must not be lost)."""
        delay = 0.2
        while True:
            try:
                await self.db.write(op)
                return
            except StoreUnavailable:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)


def _events_body(events: list[forward_log.LogEvent]) -> bytes:
    return ("[" + ",".join(e.document for e in events) + "]").encode("utf-8")


class _NotOurs(Exception):
    """The job was taken back by another node before its request was written."""


async def _wait(event: asyncio.Event, timeout: float) -> None:
    if event.is_set():
        return
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), timeout)


def _mask(text: str, signature: str | None) -> str:
    return text.replace(signature, "<signature>") if signature else text


async def _pinned(ctx: ServiceContext, db: Database, order_no: str, kind: str, mapping: Any,
                  version: MappingVersion | None) -> tuple[Any, MappingVersion | None]:
    """The mapping that transformed the job's earlier attempt, when a reload has since loaded
    another version (from the archive; after a restart it is gone, and the loaded one is used).
    A replay starts the job afresh (attempts from 1), so a fixed mapping does reach it."""
    from dockyard.service.queries import sent_version

    sent = await db.read(lambda c: sent_version(c, order_no, kind))
    sha = (sent or {}).get("mapping_sha")
    if not sha or version is None or sha == version.module or sent is None or sent["mapping"] != version.name:
        return mapping, version
    earlier = ctx.archive.get(sha)
    if earlier is None:
        return mapping, version
    return earlier, MappingVersion(version.name, str(sent["mapping_version"]), sha, str(sent["bundle"]))
