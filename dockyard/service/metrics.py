"""Prometheus metrics of one service process (`GET /metrics`), with prometheus_client.

Counters and histograms are kept where things happen (ingest, each delivery attempt, retries,
acceptance, callbacks, forwards) through the `observe_*` methods; gauges that describe state —
outbox depth, dead letters, jobs in doubt, each warehouse's backlog and the age of its oldest
ready job — are read from the store at scrape time, so they are right even across restarts and
workers.

The workers of `workers: N` share one listening socket, so a scrape reaches whichever worker
accepts it. They therefore keep their figures in prometheus_client's multiprocess files (the
directory PROMETHEUS_MULTIPROC_DIR, made by `serve` for its workers), and every worker answers
with the sum of all: counters and histograms add up (a restarted worker's old counts stay in),
requests in flight add up over the live workers, a circuit shows its most open state in any of
them, the store's figures are the latest read, and the process_* figures are the live workers'
CPU and memory together.

Cardinality is bounded by construction: label values are warehouse, flow and callback names from
the config and fixed words from the tuples below. A value outside them — a bug, never a request —
is counted under `other` (or `unknown` for a name) instead of making a new series. The series of
every configured warehouse and flow exist from the start at 0, so `rate()` and the alert rules see
the first failure, not only the second.
"""

from __future__ import annotations

import functools
import os
import platform
import re
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
    values,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.multiprocess import MultiProcessCollector

if TYPE_CHECKING:
    from dockyard.service.config import ServiceConfig
    from dockyard.service.db import Conn

__all__ = ["ATTEMPT_OUTCOMES", "CALLBACK_OUTCOMES", "CONTENT_TYPE_LATEST", "INGEST_ENDPOINTS", "RETRY_REASONS",
           "Metrics", "outcome_class", "read_backlog", "retry_reason"]

_LATENCY = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# Ingest → accepted spans retries and backoff: from tens of milliseconds to hours.
_END_TO_END = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
               7200.0)
BREAKER_STATE = {"closed": 0, "half_open": 1, "open": 2}

# What became of one exchange with a warehouse: the HTTP status class, or how it failed
# (no-answer: a timeout or a reset after the request was written, when they are not told apart).
ATTEMPT_OUTCOMES = ("2xx", "3xx", "4xx", "5xx", "timeout", "reset", "refused", "no-answer", "error")
# Why a delivery is tried again.
RETRY_REASONS = ("server-error", "rate-limited", "timeout", "reset", "refused", "not-sent", "warehouse-asked",
                 "in-doubt", "other")
INGEST_ENDPOINTS = ("order", "batch")
_CHILDREN_KEPT = 4096  # labelled children kept (Metrics.child); beyond that, looked up each time
# What became of a warehouse callback (feedback.CallbackReply.outcome).
CALLBACK_OUTCOMES = ("applied", "duplicate", "forged", "unreadable", "unknown-flow", "error")
UPSTREAM = "_upstream"
# The journal's `error` words (delivery.py) for failures without an HTTP answer, as attempt outcomes.
_FAILURES = {"timeout": "timeout", "reset": "reset", "refused": "refused", "not_sent": "refused",
             "no_answer": "no-answer"}


def _status(http_status: int | None, error: str | None) -> int | None:
    """The HTTP status, from the argument or from an `http_503`-style error word."""
    if http_status is None and error and error.startswith("http_") and error[5:].isascii() and error[5:].isdigit():
        return int(error[5:])
    return http_status


def outcome_class(http_status: int | None, error: str | None = None) -> str:
    """The `outcome` label of an attempt, from the journal row's `http_status` and `error`: a
    failure without an answer by its kind (timeout, reset, refused — `not_sent` is a connection
    that was never made —, no-answer), else the answer's status class 2xx…5xx (whatever the
    answer then meant), else `error`."""
    if error in _FAILURES:
        return _FAILURES[error]
    status = _status(http_status, error)
    if status is None or not 200 <= status <= 599:
        return "error"
    return f"{status // 100}xx"


def retry_reason(http_status: int | None = None, error: str | None = None, *, asked: bool = False,
                 in_doubt: bool = False) -> str:
    """The `reason` label of a retry, from the attempt's `http_status` and `error` (the journal's
    words are understood: not_sent, no_answer, http_NNN, retryable, query). `in_doubt`: the outcome
    of an earlier attempt is unknown (a resend or a recovery query); `asked`: the warehouse
    answered and its answer said "retry"."""
    if in_doubt or error in ("no_answer", "query"):
        return "in-doubt"
    if error in ("timeout", "reset", "refused"):
        return error
    if error in ("not_sent", "not-sent"):
        return "not-sent"
    if asked or error == "retryable":
        return "warehouse-asked"
    status = _status(http_status, error)
    if status in (425, 429):
        return "rate-limited"
    if status == 408:
        return "timeout"
    if status is not None and status >= 500:
        return "server-error"
    return "other"


def read_backlog(conn: Conn, now_us: int) -> dict[str, tuple[int, float]]:
    """Per warehouse: jobs in its outbox (ready, waiting behind an earlier job of their order,
    claimed or being sent), and the age in seconds of the oldest job that is due (ready, its time
    come) and not sent — 0 when none is overdue. The ready jobs are read through the claim's
    partial index (warehouse and due time in it: no table access), the others through theirs. The
    cost follows the backlog, never the history."""
    out: dict[str, list[Any]] = {}
    for warehouse, n, oldest in conn.execute(
            "SELECT warehouse, COUNT(*), MIN(next_at) FROM dy_jobs WHERE lane = 'wh' AND state = 'ready' "
            "GROUP BY warehouse"):
        entry = out.setdefault(warehouse, [0, 0.0])
        entry[0] += int(n)
        if oldest is not None and oldest <= now_us:
            entry[1] = (now_us - int(oldest)) / 1e6
    for states in ("state IN ('claimed', 'sending')", "state = 'waiting'"):  # each the predicate of a partial index
        for warehouse, n in conn.execute(f"SELECT warehouse, COUNT(*) FROM dy_jobs WHERE {states} AND lane = 'wh' "
                                         "GROUP BY warehouse"):
            out.setdefault(warehouse, [0, 0.0])[0] += int(n)
    return {name: (int(depth), float(age)) for name, (depth, age) in out.items()}


MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
_LIVE_FILE = re.compile(r"gauge_live[a-z]+_(\d+)\.db")


class _LiveWorkers:
    """process_* of every live worker together: CPU seconds, memory and open files summed, the
    earliest start. A worker is live while its live-gauge files exist (`serve` removes them when
    it ends, with prometheus_client's mark_process_dead)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def describe(self) -> list[Metric]:
        return []

    def pids(self) -> list[int]:
        try:
            names = [p.name for p in Path(self.path).iterdir()]
        except OSError:
            return []
        return sorted({int(m[1]) for m in map(_LIVE_FILE.fullmatch, names) if m})

    def collect(self) -> list[Metric]:
        totals: dict[str, float] = {}
        started: float | None = None
        for pid in self.pids():
            for family in ProcessCollector(pid=functools.partial(int, pid), registry=None).collect():
                for sample in family.samples:
                    if sample.name == "process_start_time_seconds":
                        started = sample.value if started is None else min(started, sample.value)
                    elif sample.name != "process_max_fds":
                        totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
        out: list[Metric] = []
        for name, text in (("process_cpu_seconds_total", "User and system CPU seconds of the live workers."),
                           ("process_resident_memory_bytes", "Resident memory of the live workers, in bytes."),
                           ("process_virtual_memory_bytes", "Virtual memory of the live workers, in bytes."),
                           ("process_open_fds", "Open file descriptors of the live workers.")):
            if name in totals:
                kind = CounterMetricFamily if name.endswith("_total") else GaugeMetricFamily
                out.append(kind(name.removesuffix("_total"), text, value=totals[name]))
        if started is not None:
            out.append(GaugeMetricFamily("process_start_time_seconds", "Start of the longest-running live worker, "
                                         "in seconds since the epoch.", value=started))
        return out


class Metrics:
    def __init__(self, config: ServiceConfig | None = None) -> None:
        # No `_created` twin of every counter and histogram series: half the scrape, no information.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.shared = os.environ.get(MULTIPROC_ENV) or None
        if self.shared:  # a worker of `serve`: figures go to the shared files (set before any metric exists)
            values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        if self.shared:
            self._shown = CollectorRegistry()
            MultiProcessCollector(self._shown, path=self.shared)  # type: ignore[no-untyped-call]
            self._shown.register(_LiveWorkers(self.shared))
            PlatformCollector(registry=self._shown)
        else:
            self._shown = r
            ProcessCollector(registry=r)
            PlatformCollector(registry=r)
        from dockyard import __version__

        # A gauge of 1, not an Info: Info has no multiprocess form.
        Gauge("dockyard_build_info", "The running Dockyard: its version and Python's (always 1).",
              ["version", "python", "implementation"], registry=r, multiprocess_mode="max").labels(
            __version__, platform.python_version(), sys.implementation.name).set(1)
        # -- ingest
        self.orders = Counter("dockyard_orders", "Orders taken in, by what became of them at ingest "
                              "(accepted, duplicate, conflict, updated, quarantined).", ["warehouse", "outcome"],
                              registry=r)
        self.ingest = Histogram("dockyard_ingest_seconds", "Time to answer POST /orders (endpoint order) or "
                                "/orders/batch (batch): from the request read to the answer, the durable commit "
                                "included.", ["endpoint"], buckets=_LATENCY, registry=r)
        # -- delivery
        self.deliveries = Counter("dockyard_deliveries", "Delivery jobs' attempts finished, by what the job became: "
                                  "done, ready (to be tried again), dead (dead-lettered), held (in doubt, for an "
                                  "operator).", ["warehouse", "flow", "result"], registry=r)
        self.attempts = Counter("dockyard_attempts", "Exchanges with a warehouse, by outcome: the HTTP status class "
                                "(2xx, 3xx, 4xx, 5xx) or the failure (timeout, reset, refused = no connection, "
                                "no-answer = timeout or reset not told apart, error).",
                                ["warehouse", "flow", "outcome"], registry=r)
        self.attempt_seconds = Histogram("dockyard_attempt_seconds", "Time of one exchange with a warehouse, from "
                                         "sending the request to the end of the answer (or the failure).",
                                         ["warehouse", "flow"], buckets=_LATENCY, registry=r)
        self.retries = Counter("dockyard_retries", "Delivery attempts scheduled again, by reason (server-error, "
                               "rate-limited, timeout, reset, refused, not-sent, warehouse-asked, in-doubt, other).",
                               ["warehouse", "reason"], registry=r)
        self.accepted = Histogram("dockyard_ingest_to_accepted_seconds", "From an order's ingest to the warehouse's "
                                  "acceptance of its create (retries and backoff included).", ["warehouse"],
                                  buckets=_END_TO_END, registry=r)
        self.throttled = Counter("dockyard_throttled_seconds", "Seconds delivery to a warehouse waited for its rate "
                                 "limit or a Retry-After.", ["warehouse"], registry=r)
        self.stage = Histogram("dockyard_stage_seconds", "Time spent per stage: transform (an order into a "
                               "request) and http (one exchange with a warehouse or the upstream).",
                               ["stage", "warehouse"], buckets=_LATENCY, registry=r)
        self.inflight = Gauge("dockyard_inflight_requests", "Requests to a warehouse in flight now.",
                              ["warehouse"], registry=r, multiprocess_mode="livesum")
        self.breaker = Gauge("dockyard_circuit_state", "Circuit breaker: 0 closed, 1 half open, 2 open (with "
                             "workers: the most open of them).", ["warehouse"], registry=r,
                             multiprocess_mode="livemax")
        # -- feedback and upstream
        self.callbacks = Counter("dockyard_callbacks", "Warehouse callbacks by outcome (applied, duplicate, "
                                 "forged, unreadable, unknown-flow, error).", ["warehouse", "flow", "outcome"],
                                 registry=r)
        self.callback_secrets = Counter("dockyard_callback_verified", "Callbacks whose signature verified, by the "
                                        "secret that verified it: current, or previous (a rotation's overlap "
                                        "window; once it is 0 for a while the previous secret can go).",
                                        ["warehouse", "flow", "secret"], registry=r)
        self.callback_seconds = Histogram("dockyard_callback_seconds", "Time to answer a warehouse callback, from "
                                          "the request read to the acknowledgement.", ["warehouse", "flow"],
                                          buckets=_LATENCY, registry=r)
        self.forwards = Counter("dockyard_forwarded_events", "Status events sent to the upstream webhook, by "
                                "result (done, ready = to be sent again, dead).", ["result"], registry=r)
        # -- from the store, at scrape time
        store: Literal["livemostrecent"] = "livemostrecent"  # read from the store at scrape time: the latest wins
        self.outbox = Gauge("dockyard_outbox_depth", "Jobs waiting or being sent, from the store; for lane up, also "
                            "the status events waiting in the upstream outbox (counted up to 100000).", ["lane"],
                            registry=r, multiprocess_mode=store)
        self.dlq = Gauge("dockyard_dead_letters", "Jobs in the dead-letter queue, from the store.", registry=r,
                         multiprocess_mode=store)
        self.in_doubt = Gauge("dockyard_in_doubt", "Jobs held in doubt for an operator, from the store.", registry=r,
                              multiprocess_mode=store)
        self.backlog = Gauge("dockyard_backlog_jobs", "A warehouse's jobs waiting or being sent, from the store.",
                             ["warehouse"], registry=r, multiprocess_mode=store)
        self.backlog_age = Gauge("dockyard_backlog_age_seconds", "Age of a warehouse's oldest job that is due and "
                                 "not sent yet (0 when none is overdue), from the store.", ["warehouse"], registry=r,
                                 multiprocess_mode=store)
        self._warehouses: frozenset[str] | None = None
        self._callback_flows: frozenset[tuple[str, str]] | None = None
        # The labelled children the hot paths use, looked up once (see `child`): `labels()` takes a
        # lock and builds the label tuple on every call (half of what counting a callback cost).
        self._children: dict[tuple[Any, tuple[object, ...]], Any] = {}
        if config is not None:
            self._declare(config)

    def _declare(self, config: ServiceConfig) -> None:
        """Every series of the configured warehouses, flows and callbacks, at 0."""
        self._warehouses = frozenset(config.warehouses) | {UPSTREAM}
        self._callback_flows = frozenset((w.name, c) for w in config.warehouses.values() for c in w.callbacks)
        for endpoint in INGEST_ENDPOINTS:
            self.ingest.labels(endpoint)
        for wh in config.warehouses.values():
            for reason in RETRY_REASONS:
                self.retries.labels(wh.name, reason)
            self.accepted.labels(wh.name)
            self.throttled.labels(wh.name)
            self.backlog.labels(wh.name)
            self.backlog_age.labels(wh.name)
            self.breaker.labels(wh.name)
            self.inflight.labels(wh.name)
            for flow in wh.flows:
                self.attempt_seconds.labels(wh.name, flow)
                for outcome in ATTEMPT_OUTCOMES:
                    self.attempts.labels(wh.name, flow, outcome)
            for name in wh.callbacks:
                self.callback_seconds.labels(wh.name, name)
                for outcome in CALLBACK_OUTCOMES[:4]:  # unknown-flow and error are rare: made when they happen
                    self.callbacks.labels(wh.name, name, outcome)

    def _warehouse(self, name: str) -> str:
        return name if self._warehouses is None or name in self._warehouses else "unknown"

    def child(self, metric: Any, *values: object) -> Any:
        """`metric.labels(*values)`, kept after its first lookup (for the paths that run per order,
        attempt or callback). The keys are bounded: callers pass label values from the config or
        from fixed lists (a warehouse or flow a request named is folded to "unknown" first), never
        from a request; past _CHILDREN_KEPT series, the rest are looked up each time."""
        key = (metric, values)
        found = self._children.get(key)
        if found is None:
            found = metric.labels(*values)
            if len(self._children) < _CHILDREN_KEPT:
                self._children[key] = found
        return found

    # -- what the service calls where things happen ---------------------------------------------
    def observe_ingest(self, endpoint: str, seconds: float) -> None:
        self.child(self.ingest, endpoint if endpoint in INGEST_ENDPOINTS else "other").observe(seconds)

    def observe_attempt(self, warehouse: str, flow: str, outcome: str, seconds: float) -> None:
        """One exchange with a warehouse ended: `outcome` from `outcome_class()`, `seconds` the
        exchange's time (the journal row's elapsed_us / 1e6)."""
        name = self._warehouse(warehouse)
        self.child(self.attempts, name, flow, outcome if outcome in ATTEMPT_OUTCOMES else "error").inc()
        self.child(self.attempt_seconds, name, flow).observe(seconds)

    def observe_retry(self, warehouse: str, reason: str) -> None:
        """A delivery was scheduled again; `reason` from `retry_reason()`."""
        self.retries.labels(self._warehouse(warehouse), reason if reason in RETRY_REASONS else "other").inc()

    def observe_accepted(self, warehouse: str, seconds: float) -> None:
        """The warehouse accepted an order's create (or confirmed it had it): `seconds` since ingest."""
        self.accepted.labels(self._warehouse(warehouse)).observe(max(0.0, seconds))

    def observe_throttled(self, warehouse: str, seconds: float) -> None:
        """Delivery to `warehouse` waited `seconds` for its rate limit or a Retry-After."""
        if seconds > 0:
            self.throttled.labels(self._warehouse(warehouse)).inc(seconds)

    def observe_callback(self, warehouse: str, flow: str, outcome: str, seconds: float,
                         secret: str | None = None) -> None:
        """A callback was answered. A warehouse or flow that is not configured (the request named
        it) is counted as unknown/unknown, without its time. `secret` says which one verified it
        (current | previous), when one did."""
        known = self._callback_flows
        if secret in ("current", "previous") and (known is None or (warehouse, flow) in known):
            self.child(self.callback_secrets, warehouse, flow, secret).inc()
        if outcome not in CALLBACK_OUTCOMES:
            outcome = "error"
        if known is not None and (warehouse, flow) not in known:
            self.callbacks.labels("unknown", "unknown", outcome).inc()
            return
        self.child(self.callbacks, warehouse, flow, outcome).inc()
        self.child(self.callback_seconds, warehouse, flow).observe(seconds)

    # -- at scrape time ---------------------------------------------------------------------------
    def refresh(self, store_counts: dict[str, Any], breakers: dict[str, str], inflight: dict[str, int],
                backlog: Mapping[str, tuple[int, float]] | None = None) -> None:
        for lane in ("wh", "up"):
            self.outbox.labels(lane).set(store_counts.get(f"outbox_{lane}", 0))
        self.dlq.set(store_counts.get("dead", 0))
        self.in_doubt.set(store_counts.get("held", 0))
        for name, state in breakers.items():
            self.breaker.labels(name).set(BREAKER_STATE.get(state, 0))
        for name, n in inflight.items():
            self.inflight.labels(name).set(n)
        if backlog is not None:
            self._set_backlog(backlog)

    def _set_backlog(self, backlog: Mapping[str, tuple[int, float]]) -> None:
        names: Iterable[str] = self._warehouses - {UPSTREAM} if self._warehouses is not None else backlog
        for name in names:
            depth, age = backlog.get(name, (0, 0.0))
            self.backlog.labels(name).set(depth)
            self.backlog_age.labels(name).set(age)

    def render(self) -> bytes:
        return generate_latest(self._shown)
