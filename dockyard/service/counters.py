"""The dashboard's counters, kept as the service works: every group commit adds what its journal
rows say to `dy_counters`, in the same transaction (so a counter never counts what did not
commit), per 5-second bucket, warehouse and kind:

- `received`, `delivered` (committed), `failed` (dead-lettered) — the overview's throughput;
- `a:2xx` … `a:5xx`, `a:timeout`, `a:reset`, … — exchanges with the warehouse by outcome class
  (as `dockyard_attempts_total` counts them), with their summed time;
- `retry` — attempts scheduled again;
- `l:<ms>` — exchange times in histogram buckets (upper bounds in ms), for p50/p99;
- `i:<ms>` — ingest → accepted: for each accepted create, the time from its order's ingest to the
  commit that records the warehouse's acceptance, in histogram buckets (ACCEPTED_MS), for the
  overview's p50/p99. Counted here, where the delivery result is written, so that the overview adds
  up a few buckets instead of joining every accepted create of the window to its order (that join
  was most of the overview's cost, in a reader thread that competes with ingest for the CPU and the
  GIL, and the cost grew with the window's traffic).

Why in the store and not in each process's memory: every node and worker writes its own rows of
the same table, so any of them answers for all (the overview adds them up); and why per bucket:
the overview reads the last five minutes by the primary key (bucket first) — a few hundred rows
whatever the history. Buckets older than KEEP_US are deleted by the hourly maintenance.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from dockyard.service.metrics import UPSTREAM, outcome_class

__all__ = ["ACCEPTED_MS", "BUCKET_US", "KEEP_US", "LATENCY_MS", "percentile_from_buckets", "tally", "upsert"]

BUCKET_US = 5_000_000
KEEP_US = 3600 * 1_000_000  # an hour of buckets; the overview shows five minutes
LATENCY_MS = (5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10_000, 30_000)
# Ingest → accepted spans one exchange (milliseconds) to retries and backoff (hours); steps of about
# 1.5× keep an interpolated p50/p99 within a few tens of percent of the exact figure, with a handful
# of distinct buckets (rows) per warehouse and 5-second bucket.
ACCEPTED_MS = (1, 2, 3, 5, 7, 10, 15, 20, 30, 50, 70, 100, 150, 200, 300, 500, 700, 1000, 1500, 2000, 3000, 5000,
               7000, 10_000, 15_000, 20_000, 30_000, 60_000, 120_000, 300_000, 600_000, 1_800_000, 3_600_000,
               7_200_000)
_ATTEMPTS = ("committed", "retry", "in-doubt", "dead-lettered", "cancel-refused")
_EXCHANGE_ERRORS = ("timeout", "reset", "refused", "not_sent", "no_answer")
_THROUGHPUT = {"committed": "delivered", "dead-lettered": "failed"}
_UPSERT = ("INSERT INTO dy_counters (bucket, warehouse, kind, node, n, sum_us) VALUES (?, ?, ?, ?, ?, ?) "
           "ON CONFLICT (bucket, warehouse, kind, node) DO UPDATE SET n = dy_counters.n + excluded.n, "
           "sum_us = dy_counters.sum_us + excluded.sum_us")


def tally(rows: Iterable[tuple[Any, ...]], now: int,
          accepted: Iterable[tuple[str, int]] = ()) -> dict[tuple[int, str, str], list[int]]:
    """(bucket, warehouse, kind) -> [count, summed µs] for journal rows (JournalRow.values()) and
    for accepted creates committed at `now`, given as (warehouse, when their order was ingested)."""
    out: dict[tuple[int, str, str], list[int]] = {}

    def add(bucket: int, warehouse: str, kind: str, us: int = 0) -> None:
        entry = out.get((bucket, warehouse, kind))
        if entry is None:
            out[(bucket, warehouse, kind)] = [1, us]
        else:
            entry[0] += 1
            entry[1] += us

    for at, _order, warehouse, _flow, step, outcome, elapsed, detail in rows:
        if not warehouse or warehouse == UPSTREAM:
            continue
        stamp = now if at is None else int(at)
        bucket = stamp - stamp % BUCKET_US
        if step == "received":
            if outcome == "ok":
                add(bucket, warehouse, "received")
            continue
        if step in _THROUGHPUT:
            add(bucket, warehouse, _THROUGHPUT[step])
        if step not in _ATTEMPTS:
            continue
        if step in ("retry", "in-doubt") and outcome != "held":
            add(bucket, warehouse, "retry")
        if not detail:
            continue
        info = orjson.loads(detail) if isinstance(detail, str | bytes) else detail
        status, error = info.get("http_status"), info.get("error")
        if status is None and error not in _EXCHANGE_ERRORS:
            continue  # nothing was exchanged (a transform failure, a store error)
        us = int(elapsed or 0)
        add(bucket, warehouse, "a:" + outcome_class(status, error), us)
        ms = us / 1000
        add(bucket, warehouse, "l:" + str(next((b for b in LATENCY_MS if ms <= b), "inf")))
    bucket = now - now % BUCKET_US
    for warehouse, ingested in accepted:
        if not warehouse or warehouse == UPSTREAM:
            continue
        us = max(0, now - int(ingested))
        ms = us / 1000
        add(bucket, warehouse, "i:" + str(next((b for b in ACCEPTED_MS if ms <= b), "inf")), us)
    return out


_UPSERT_PG = ("INSERT INTO dy_counters (bucket, warehouse, kind, node, n, sum_us) "
              "SELECT * FROM unnest(?::bigint[], ?::text[], ?::text[], ?::text[], ?::bigint[], ?::bigint[]) "
              "ON CONFLICT (bucket, warehouse, kind, node) DO UPDATE SET n = dy_counters.n + excluded.n, "
              "sum_us = dy_counters.sum_us + excluded.sum_us")


def upsert(conn: Any, counts: Mapping[tuple[int, str, str], list[int]], node: str = "") -> None:
    """Add the counts to the writing process's own rows (`node`): no other process's writer ever
    waits for them. The overview sums the nodes. On PostgreSQL one statement over arrays (each
    key appears once: `tally` merged them), as the group's journal rows go in."""
    rows = [(b, w, k, node, n, us) for (b, w, k), (n, us) in sorted(counts.items())]
    if not rows:
        return
    if conn.dialect == "postgres" and len(rows) > 1:
        conn.execute(_UPSERT_PG, [list(column) for column in zip(*rows, strict=True)])
    else:
        conn.executemany(_UPSERT, rows)


def percentile_from_buckets(buckets: Mapping[str, int], q: float) -> float | None:
    """The q-th percentile (ms) of a latency histogram {upper bound in ms (or "inf"): count},
    interpolated within its bucket as Prometheus' histogram_quantile does."""
    bounds = sorted((float(k), n) for k, n in buckets.items() if k != "inf")
    total = sum(buckets.values())
    if total == 0:
        return None
    rank, seen, lower = q / 100 * total, 0, 0.0
    for upper, n in bounds:
        if n and seen + n >= rank:
            return lower + (upper - lower) * (rank - seen) / n
        seen += n
        lower = upper
    return lower  # in the open bucket above the last bound: say the last bound (at least that)
