"""Prometheus metrics of one service process (`GET /metrics`), with prometheus_client.

Counters are kept where things happen (ingest, delivery outcomes, callbacks, forwards); gauges
that describe state — outbox depth, dead-letter and in-doubt counts — are read from the store at
scrape time, so they are right even across restarts and workers. Each worker of `workers: N` has
its own registry: scrape each, or sum them. Label values are warehouse and flow names from the
config and fixed outcome words: never order numbers, never anything a request can choose.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]

_LATENCY = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BREAKER_STATE = {"closed": 0, "half_open": 1, "open": 2}


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.orders = Counter("dockyard_orders", "Orders taken in, by what became of them at ingest "
                              "(accepted, duplicate, conflict, updated, quarantined).", ["warehouse", "outcome"],
                              registry=r)
        self.deliveries = Counter("dockyard_deliveries", "Attempts finished, by result (done, retry, dead, held).",
                                  ["warehouse", "flow", "result"], registry=r)
        self.stage = Histogram("dockyard_stage_seconds", "Time spent per stage (ingest, transform, http, "
                               "callback).", ["stage", "warehouse"], buckets=_LATENCY, registry=r)
        self.inflight = Gauge("dockyard_inflight_requests", "Requests to a warehouse in flight now.",
                              ["warehouse"], registry=r)
        self.breaker = Gauge("dockyard_circuit_state", "Circuit breaker: 0 closed, 1 half open, 2 open.",
                             ["warehouse"], registry=r)
        self.callbacks = Counter("dockyard_callbacks", "Warehouse callbacks by outcome (applied, duplicate, "
                                 "forged, unreadable, unknown-flow, error).", ["warehouse", "flow", "outcome"],
                                 registry=r)
        self.forwards = Counter("dockyard_forwarded_events", "Status events sent to the upstream webhook, by "
                                "result (done, retry, dead).", ["result"], registry=r)
        self.outbox = Gauge("dockyard_outbox_depth", "Jobs waiting or being sent, from the store.", ["lane"],
                            registry=r)
        self.dlq = Gauge("dockyard_dead_letters", "Jobs in the dead-letter queue, from the store.", registry=r)
        self.in_doubt = Gauge("dockyard_in_doubt", "Jobs held in doubt for an operator, from the store.", registry=r)

    def refresh(self, store_counts: dict[str, Any], breakers: dict[str, str], inflight: dict[str, int]) -> None:
        for lane in ("wh", "up"):
            self.outbox.labels(lane).set(store_counts.get(f"outbox_{lane}", 0))
        self.dlq.set(store_counts.get("dead", 0))
        self.in_doubt.set(store_counts.get("held", 0))
        for name, state in breakers.items():
            self.breaker.labels(name).set(BREAKER_STATE.get(state, 0))
        for name, n in inflight.items():
            self.inflight.labels(name).set(n)

    def render(self) -> bytes:
        return generate_latest(self.registry)
