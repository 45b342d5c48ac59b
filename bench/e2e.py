"""Benchmark: N orders end to end through `dockyard serve` into the simulated warehouses.

    python bench/e2e.py [-n 20000] [--store sqlite|postgres] [--pg-url URL] [--feedback|--no-feedback]
                        [--batch 200] [--parallel 4] [--workers N] [--profile] [--json FILE]
                        [--nodes N[,N…] [--rounds R]]
                        [--rate R | --rate-of-capacity F | --rate-of-open-capacity F [--capacity-start R]]

Three processes, as in production: the service (this file re-run as `--serve-child`, which does what
`dockyard serve` does and nothing more unless --profile is given), the simulated warehouses
(dockyard.demo.SimProcess: QIMEN, SF, JD LOP, Cainiao and the upstream webhook) and the load
generator (this process), each on its own CPU clock.

`--nodes N`: N service nodes on one PostgreSQL database, each the real `dockyard serve --config` in
a network namespace of its own with its own address (tests/multinode/netns.py; needs root and
`ip`), reaching the database through its unix socket. The simulated warehouses run in the root
namespace; their callbacks go through one TCP load balancer (tests/multinode/lb.py) that spreads
them over the nodes, and the load generator sends its requests to the nodes in turn. A list
(`--nodes 1,2,3`) runs each count in turn, `--rounds` times, interleaved, and ends with a table of
throughput and CPU per order by node count (best delivered/s of the rounds). `--node-cpu C` caps
each node at C CPUs (a cgroup of its own, bench/cpu_cap.py): one uncapped node fills a 2-core
machine together with PostgreSQL and the simulator, so only capped nodes show how delivery grows
with nodes that each bring their own CPU, as hosts do.

Open loop (`--rate R` orders/s, or `--rate-of-capacity F`: F × the delivered/s of a closed-loop run
of the same setup, measured first in the same invocation): one order per `POST /orders`, sent at
fixed arrival times (order i at i/R s) whatever the answers do, and its latency measured from its
scheduled time, so that a service (or a client) that falls behind shows in the figures instead of
slowing the arrivals down; p50/p95/p99, and how late the client itself sent (its lag).
`--rate-of-open-capacity F`: F × the open-loop capacity, found first by whole runs at rising rates
(open_capacity): a closed-loop run sends 200 orders per request, which costs the service less per
order than one request each, so its delivered/s overstates what the open loop can take. With
`--rounds R`, the capacity is found once and R runs are made at F × it; the table at the end gives
each round's POST p99 and their median (one run's p99 moves a lot on a shared machine).

Measured (every figure from the same run):
- accepted/s: the orders over the time until every request has its answer;
- delivered/s: orders committed as accepted by their warehouse (journal step `committed`, flow
  `create`) over the time from the first `received` to the last `committed` in the journal;
- latency ingest → ack (client side, per request) and ingest → warehouse-accepted (per
  order, journal `received` → `committed`), p50/p95/p99;
- feedback: status events recorded per second, and forwarded upstream;
- CPU µs per order of the service (all nodes; single node: main thread = event loop, writer
  thread, readers), PostgreSQL (the backends serving the run's database, from /proc; the whole
  server, other users included; and, when the server has pg_stat_statements loaded, the
  statements' execution + planning time), the simulator, the load balancer (--nodes) and the load
  generator, from /proc and getrusage;
- with --profile: the service's CPU split by stage: its stage functions are wrapped inside the
  service process and each call's thread CPU is charged to its stage (see instrument()).

Baselines, measured first in the same run:
- transform+sign: `build_request` (the order read back from its stored JSON, mapped, serialized,
  signed) in-process, for the same orders, routed the same way: the pure mapping ceiling;
- simulator round trip: the same signed requests sent straight to a fresh simulator process with
  the same per-warehouse concurrency and no service in between: the loopback HTTP ceiling.
delivered/s is printed as a ratio of both.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
MULTINODE = REPO / "tests" / "multinode"  # the namespace harness and the load balancer (--nodes)
TICK = os.sysconf("SC_CLK_TCK")
# -- CPU clocks ---------------------------------------------------------------------------------
def _stat_cpu(path: str) -> float:
    """utime + stime of a /proc stat file, in seconds."""
    with open(path, "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def proc_cpu(pid: int) -> float:
    return _stat_cpu(f"/proc/{pid}/stat")


def thread_cpu(pid: int) -> dict[int, float]:
    out: dict[int, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            out[int(task.name)] = _stat_cpu(f"{task}/stat")
    return out


def tree_cpu(pid: int) -> dict[int, float]:
    """CPU of every thread of a process and of its children (the workers of `serve`)."""
    out = thread_cpu(pid)
    with contextlib.suppress(OSError):
        for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
            out.update(thread_cpu(int(child)))
    return out


class PgCpu:
    """PostgreSQL's CPU over a run, from /proc, per process: every `postgres` process (the whole
    server, other users of a shared machine included) and, among them, the backends serving
    `database`, found by their process title (`postgres: 15/main: USER DATABASE …`). Processes
    come and go (a pool re-opens connections, the server forks a backend per connection), so a
    thread samples them every 0.2 s and each counts from its first sample (or from 0 when it was
    born during the run) to its last: one that exits counts up to its last sample."""

    def __init__(self, database: str) -> None:
        self.database = database.encode()
        self._first: dict[int, float] = {}  # pid -> CPU when first seen (0 for processes born during the run)
        self._last: dict[int, float] = {}
        self._ours: set[int] = set()  # pids serving the run's database
        self._retired = {"server": 0.0, "database": 0.0}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _scan(self, at_start: bool) -> None:
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            pid = int(entry.name)
            try:
                with open(f"/proc/{pid}/comm", "rb") as f:
                    if not f.read().startswith(b"postgres"):
                        continue
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    title = f.read().replace(b"\0", b" ").split()
                cpu = proc_cpu(pid)
            except OSError:
                continue
            last = self._last.get(pid)
            if last is not None and cpu < last:  # the pid was reused by a new process
                self._retire(pid)
                last = None
            if last is None:
                self._first[pid] = cpu if at_start else 0.0
                if self.database in title:
                    self._ours.add(pid)
            self._last[pid] = cpu

    def _retire(self, pid: int) -> None:
        spent = self._last.pop(pid) - self._first.pop(pid)
        self._retired["server"] += spent
        if pid in self._ours:
            self._ours.discard(pid)
            self._retired["database"] += spent

    def _loop(self) -> None:
        while not self._stop.wait(0.2):
            self._scan(False)

    def start(self) -> None:
        self._scan(True)
        self._thread = threading.Thread(target=self._loop, name="pg-cpu", daemon=True)
        self._thread.start()

    def stop(self) -> dict[str, float]:
        """{"database": CPU seconds of the run's backends, "server": of every postgres process}."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._scan(False)
        for pid in list(self._last):
            self._retire(pid)
        return dict(self._retired)


def pg_statements(url: str) -> tuple[float, int] | None:
    """(ms of execution + planning, calls) of the statements run in `url`'s database, from
    pg_stat_statements; None where the server does not load it (it needs shared_preload_libraries)."""
    import psycopg

    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
            row = conn.execute("SELECT COALESCE(SUM(total_exec_time + total_plan_time), 0), COALESCE(SUM(calls), 0) "
                               "FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database "
                               "WHERE datname = current_database())").fetchone()
    except psycopg.Error:
        return None
    return (float(row[0]), int(row[1])) if row else None


def self_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def pct(values: list[float], q: float) -> float:
    from dockyard.demo import percentile

    return percentile(values, q)


# -- the stage profiler (runs inside the service process, with --profile) ------------------------
# The service's own functions are wrapped (in the service process only; no file of dockyard/ is
# touched) and each call's *thread CPU time* is charged to its stage, exclusive of the wrapped calls
# it makes: a stack per thread. Coroutines are timed step by step (only while they run, not while
# they wait), so an async handler's figure is its own CPU, not its wall time. Whatever a thread
# spends outside every wrapped call (the event loop, uvloop's I/O, aiohttp's task machinery, the
# writer's queue) is what remains of its /proc CPU, reported by the parent as the remainder.
# An in-process stack *sampler* was tried first and dropped: it needs the GIL to look, so it
# only ever looks when the service releases the GIL (file reads, os.urandom, sqlite) and charges
# everything before to those points.
_TL = threading.local()
_TOTALS: dict[tuple[str, str], list[int]] = {}


def _enter(label: str, nested: bool) -> None:
    stack = _TL.__dict__.get("stack")
    if stack is None:
        stack = _TL.stack = []
        _TL.thread = threading.current_thread().name
    if nested and stack:
        label = stack[-1][0].split(" › ")[0] + " › " + label
    stack.append([label, time.thread_time_ns(), 0])


def _leave() -> None:
    now = time.thread_time_ns()
    stack = _TL.stack
    label, t0, inner = stack.pop()
    spent = now - t0
    entry = _TOTALS.get((_TL.thread, label))
    if entry is None:
        entry = _TOTALS[(_TL.thread, label)] = [0, 0]
    entry[0] += spent - inner
    entry[1] += 1
    if stack:
        stack[-1][2] += spent


def _timed(fn: Any, label: str, nested: bool = False) -> Any:
    import functools

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        _enter(label, nested)
        try:
            return fn(*args, **kwargs)
        finally:
            _leave()
    return wrapper


def _timed_async(fn: Any, label: str) -> Any:
    import functools
    import types

    @types.coroutine
    def drive(coro: Any) -> Any:
        value: Any = None
        error: BaseException | None = None
        while True:
            _enter(label, False)
            try:
                step = coro.send(value) if error is None else coro.throw(error)
            except StopIteration as stop:
                _leave()
                return stop.value
            except BaseException:
                _leave()
                raise
            _leave()
            try:
                value, error = (yield step), None
            except BaseException as exc:  # handed to the coroutine, as a Task would
                value, error = None, exc

    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        return await drive(fn(*args, **kwargs))
    return wrapper


def instrument() -> None:
    """Wrap the stage functions of the service (attribute patches in this process only)."""
    import inspect

    from aiohttp import web_protocol

    from dockyard.runtime import mapping as rt_mapping
    from dockyard.runtime import request as rt_request
    from dockyard.runtime import secrets as rt_secrets
    from dockyard.service import app, db, delivery, feedback, http_client, ingest, store

    def patch(owner: Any, name: str, label: str, *, nested: bool = False, coro: bool = False) -> None:
        fn = getattr(owner, name)
        wrapped = _timed_async(fn, label) if coro else _timed(fn, label, nested)
        # a classmethod (the store's batch operations) is taken bound and put back as a plain function
        static = isinstance(inspect.getattr_static(owner, name), classmethod)
        setattr(owner, name, staticmethod(wrapped) if static else wrapped)

    # ingest (event loop)
    patch(app.Service, "post_batch", "ingest: handler glue (per-order results)", coro=True)
    patch(app, "read_body", "ingest: JSON parse (Decimal, bounded) + depth check")
    patch(ingest.OrderChecker, "check", "ingest: validate (jsonschema) + route + ids")
    patch(ingest, "fingerprint", "ingest: fingerprint (sorted JSON + sha256)")
    patch(app, "dumps", "ingest: payload JSON for the store")
    patch(app, "_json", "HTTP answers: orjson")
    # delivery (event loop)
    patch(delivery.Deliverer, "_warehouse_loop", "deliver: claim loop (ids, tasks)", coro=True)
    patch(delivery.Deliverer, "_run", "deliver: attempt glue", coro=True)
    patch(delivery.Deliverer, "_send", "deliver: connect, mark sending, exchange", coro=True)
    patch(http_client.HttpPool, "exchange", "deliver: HTTP client request/response", coro=True)
    patch(delivery, "load_order", "deliver: stored order json.loads")
    patch(delivery, "build_request", "deliver: transform+sign (build_request)")
    patch(rt_request, "serialize", "serialize body", nested=True)
    patch(rt_request, "to_json_bytes", "document fingerprint", nested=True)
    patch(delivery.Deliverer, "_outcome", "deliver: response mapping")
    patch(delivery.Deliverer, "_request_summary", "deliver: journal detail (sha256, excerpt, redact)")
    patch(delivery.Deliverer, "_answer_summary", "deliver: journal detail (sha256, excerpt, redact)")
    patch(delivery.Deliverer, "_upstream_loop", "upstream: forward loop", coro=True)
    # callbacks (event loop)
    patch(app.Service, "post_callback", "callback: handler glue", coro=True)
    patch(feedback, "verify", "callback: verify signature")
    patch(feedback, "_decrypt", "callback: decrypt fields")
    patch(feedback, "_ack_or_error", "callback: ack render")
    patch(rt_mapping.CompiledMapping, "parse_input", "parse input (XML/JSON/form)", nested=True)
    patch(rt_mapping.CompiledMapping, "transform", "mapping transform", nested=True)
    patch(rt_secrets.Secrets, "get", "secret lookup (file read)", nested=True)
    patch(rt_secrets.Secrets, "redact", "redact", nested=True)
    # HTTP framing (event loop)
    patch(web_protocol.RequestHandler, "data_received", "HTTP server: parse requests")
    patch(http_client._Conn, "data_received", "HTTP client: parse responses")
    patch(db, "_settle", "store hand-off: resolve futures")
    # the writer thread (and the claim threads)
    patch(store, "ingest", "store: ingest orders")
    patch(store, "claim", "store: claim")
    patch(store, "finish", "store: finish delivery")
    patch(store.MarkSendingOp, "run", "store: mark sending")
    patch(store.RecordEventsOp, "run", "store: record callback events")
    patch(store, "quarantine", "store: quarantine")
    patch(store, "write_journal", "journal rows", nested=True)
    patch(store, "apply_order_changes", "update orders", nested=True)
    patch(store, "queue_jobs", "outbox insert", nested=True)
    patch(db.Database, "_commit_group", "store: group")
    for conn in (db._SqliteConn, db._PostgresConn):
        patch(conn, "commit", "store: COMMIT")
        patch(conn, "begin", "store: BEGIN")


async def _probe_lag(lags: list[float], every: float = 0.01) -> None:
    """How late a 10 ms timer fires: what any ready handler waits for its turn on the event loop."""
    loop = asyncio.get_running_loop()
    while True:
        due = loop.time() + every
        await asyncio.sleep(every)
        lags.append(max(0.0, loop.time() - due))
        if len(lags) > 200_000:
            del lags[:100_000]


class _Stalls:
    """DOCKYARD_BENCH_STALLS=MS: what the event loop's thread is doing whenever the loop has not
    ticked for MS milliseconds (a long synchronous stretch, or a wait for the GIL). A task ticks
    every 2 ms; a watcher thread looks every 2 ms and, while the loop is late, samples the main
    thread's stack (and, when the main thread is in no Python frame of ours, which other thread
    runs Python). Each sample stands for ~2 ms of stall; the report ranks stacks by samples, and
    counts the stalls by length. For finding causes, never for the figures."""

    def __init__(self, threshold_ms: float) -> None:
        self.threshold = threshold_ms / 1000
        self.beat = time.monotonic()
        self.samples: dict[str, int] = {}
        self.lengths: list[float] = []  # every stall's length, s
        self.main = threading.get_ident()

    async def tick(self) -> None:
        while True:
            self.beat = time.monotonic()
            await asyncio.sleep(0.002)

    def watch(self) -> None:
        last_beat, longest = self.beat, 0.0
        while True:
            time.sleep(0.002)
            beat = self.beat
            if beat != last_beat:
                if longest > 0:
                    self.lengths.append(longest)
                last_beat, longest = beat, 0.0
            late = time.monotonic() - beat
            if late < self.threshold:
                continue
            longest = late
            frames = sys._current_frames()
            stack = _stack(frames.get(self.main))
            if stack and stack[-1].startswith("runners.py:run:"):  # no Python code: the loop's C code, or a GIL wait
                others = []
                for t in threading.enumerate():
                    theirs = _stack(frames.get(t.ident or 0))
                    if t.ident in (self.main, threading.get_ident()) or not theirs or any(
                            w in theirs[-1] for w in _WAITING):
                        continue
                    others.append(f"{t.name}:" + ";".join(theirs[-3:]))
                stack = [*stack, "|others: " + " || ".join(sorted(others))]
            key = ";".join(stack[-14:])
            self.samples[key] = self.samples.get(key, 0) + 1

    def gc_timer(self) -> None:
        """The garbage collector's pauses, by generation (gc.callbacks)."""
        import gc

        self.gc: dict[int, list[float]] = {0: [], 1: [], 2: []}
        self.gc_cpu: dict[int, float] = {0: 0.0, 1: 0.0, 2: 0.0}  # the collecting thread's CPU, s
        started = [0.0, 0.0]

        def timed(phase: str, info: dict[str, int]) -> None:
            if phase == "start":
                started[0], started[1] = time.perf_counter(), time.thread_time()
            else:
                self.gc[info["generation"]].append(time.perf_counter() - started[0])
                self.gc_cpu[info["generation"]] += time.thread_time() - started[1]
        gc.callbacks.append(timed)

    def report(self) -> dict[str, Any]:
        ranked = sorted(self.samples.items(), key=lambda kv: -kv[1])[:60]
        lengths = sorted(self.lengths)
        gcs = {f"gen{g}": {"n": len(v), "total_ms": round(sum(v) * 1000, 1),
                           "cpu_ms": round(getattr(self, "gc_cpu", {}).get(g, 0.0) * 1000, 1),
                           "max_ms": round(max(v, default=0) * 1000, 1), "over_5ms": sum(1 for x in v if x > 0.005)}
               for g, v in getattr(self, "gc", {}).items()}
        return {"gc": gcs, "threshold_ms": self.threshold * 1000, "stalls": len(lengths),
                "by_length_ms": {f">={b}": sum(1 for x in lengths if x * 1000 >= b) for b in (10, 20, 50, 100)},
                "top": [[n, k] for k, n in ranked]}


_WAITING = ("threading.py:wait:", "queue.py:get:", "threading.py:_wait_for_tstate_lock", "selectors.py:select:",
            "e2e.py:watch:")


def _stack(frame: Any) -> list[str]:
    out: list[str] = []
    while frame is not None:
        code = frame.f_code
        out.append(f"{code.co_filename.rsplit('/', 1)[-1]}:{code.co_name}:{frame.f_lineno}")
        frame = frame.f_back
    return out[::-1]


def _schedstat(thread: threading.Thread) -> dict[str, float]:
    """A thread's time on a core and waiting in the run queue for one, s (Linux schedstat): the
    second is what the machine's other load made it wait."""
    with contextlib.suppress(OSError, ValueError):
        on_cpu, waiting, _ = Path(f"/proc/self/task/{thread.native_id}/schedstat").read_text().split()
        return {"on_cpu_s": int(on_cpu) / 1e9, "run_queue_s": int(waiting) / 1e9, "at": time.monotonic()}
    return {}


def _lag_summary(lags: list[float]) -> dict[str, float]:
    busy = sorted(lags)
    if not busy:
        return {}
    return {f"p{q}": busy[min(len(busy) - 1, int(q / 100 * len(busy)))] * 1000 for q in (50, 99)} | {
        "max": busy[-1] * 1000}


def _op_kind(op: Any) -> str:
    """A write's kind as the probe names it: its BatchOp class, or "fn" for a plain function."""
    return type(op).__name__ if hasattr(op, "run") else "fn"


class _WriterProbe:
    """DOCKYARD_BENCH_WRITER_PROBE=1: where each `POST /orders` write's time in the store went.
    Wraps the writer of this process's Database (instance attributes, so the store's code is the
    one measured): for every write its submit time, the start and end of the group commit that
    held it, and when the awaiting task had its answer back on the loop. The slow ingest writes'
    time is split into the wait before their group began (itself split into: the writer inside an
    earlier group, inside a WAL restart, or neither: the writer thread not yet running, a core or
    the GIL), their own group's duration, and the hand-back to the event loop. For finding causes;
    costs a few µs per write."""

    def __init__(self, db: Any) -> None:
        self.db = db
        self.writes: list[tuple[str, float, float, float, float, int]] = []  # kind, submit, start, end, answer, group
        self.groups: list[tuple[float, float, float, int, str]] = []  # start, end, thread CPU, size, kinds
        self.restarts: list[tuple[float, float]] = []
        self._pending: dict[int, float] = {}
        self._held: dict[int, tuple[float, float, int]] = {}
        submit, commit_group, restart, write = db._submit, db._commit_group, db._restart_wal_if_large, db.write
        clock = time.perf_counter

        def probed_submit(op: Any, done: Any) -> None:
            self._pending[id(op)] = clock()
            submit(op, done)

        def probed_commit_group(batch: list[Any], *args: Any) -> None:
            start, cpu = clock(), time.thread_time()
            commit_group(batch, *args)
            end = clock()
            kinds = Counter(_op_kind(op) for op, _ in batch)
            self.groups.append((start, end, time.thread_time() - cpu, len(batch),
                                ",".join(f"{k}:{v}" for k, v in sorted(kinds.items()))))
            for op, _ in batch:
                self._held[id(op)] = (start, end, len(self.groups) - 1)

        def probed_restart(**kwargs: Any) -> None:
            start = clock()
            before = db.wal_restarts
            restart(**kwargs)
            if db.wal_restarts != before or clock() - start > 0.005:
                self.restarts.append((start, clock()))

        async def probed_write(op: Any) -> Any:
            try:
                return await write(op)
            finally:
                answer = clock()
                submitted = self._pending.pop(id(op), answer)
                start, end, group = self._held.pop(id(op), (answer, answer, -1))
                self.writes.append((_op_kind(op), submitted, start, end, answer, group))

        db._submit, db._commit_group, db._restart_wal_if_large, db.write = (
            probed_submit, probed_commit_group, probed_restart, probed_write)

    def report(self) -> dict[str, Any]:
        import bisect

        from dockyard.service.report import percentile  # the nearest rank, as every figure of this script

        groups = sorted(self.groups)
        starts = [g[0] for g in groups]

        def overlap(a: float, b: float, spans: list[tuple[float, float]], first: int) -> float:
            total = 0.0
            for s, e in spans[first:]:
                if s >= b:
                    break
                total += max(0.0, min(b, e) - max(a, s))
            return total

        spans = [(g[0], g[1]) for g in groups]
        restarts = sorted(self.restarts)
        ingest = [w for w in self.writes if w[0] == "IngestOp" and w[5] >= 0]
        totals = sorted(w[4] - w[1] for w in ingest)

        def pct(seconds: list[float], q: float) -> float:  # in ms; 0 when there are none
            return 1000 * (percentile(seconds, q) or 0.0)

        out: dict[str, Any] = {"ingest_writes": len(ingest), "groups": len(groups),
                               "ingest_ms": {f"p{q}": pct(totals, q) for q in (50, 95, 99)},
                               "wal_restarts_ms": [round((e - s) * 1000, 1) for s, e in restarts]}
        p95 = pct(totals, 95) / 1000
        for name, chosen in (("slowest 5%", [w for w in ingest if w[4] - w[1] >= p95]),
                             ("over 20 ms", [w for w in ingest if w[4] - w[1] >= 0.020])):
            if not chosen:
                continue
            parts: Counter[str] = Counter()
            for _, submitted, start, end, answer, _g in chosen:
                first = max(0, bisect.bisect_right(starts, submitted) - 1)
                in_groups = overlap(submitted, start, spans, first)
                in_restart = overlap(submitted, start, restarts, 0)
                parts["wait: writer in earlier groups"] += in_groups
                parts["wait: writer in a WAL restart"] += in_restart
                rest = start - submitted - in_groups - in_restart
                parts["wait: writer between groups (not running)"] += max(0.0, rest)
                parts["own group"] += end - start
                parts["hand-back to the loop"] += answer - end
            n = len(chosen)
            out[name] = {"n": n, "mean_ms": {k: round(v / n * 1000, 2) for k, v in parts.items()}}
        slow = sorted(groups, key=lambda g: g[0] - g[1])[:8]
        out["slowest_groups"] = [{"ms": round((e - s) * 1000, 1), "cpu_ms": round(c * 1000, 1), "size": size,
                                  "kinds": kinds} for s, e, c, size, kinds in slow]
        durations = sorted(e - s for s, e, *_ in groups)
        out["group_ms"] = {f"p{q}": pct(durations, q) for q in (50, 95, 99)} | {"max": 1000 * max(durations, default=0)}
        sizes = [g[3] for g in groups]
        out["group_size"] = {f"p{q}": percentile(sizes, q) or 0 for q in (50, 95, 99)}
        return out


def serve_child(argv: list[str]) -> int:
    """The service process: what `dockyard serve --config` does, plus (with --profile) the stage
    profiler. SIGUSR1 ends the measured interval: thread names and stage totals go to --report."""
    ap = argparse.ArgumentParser()
    ap.add_argument("config")
    ap.add_argument("--report", required=True)
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args(argv)
    from dockyard.service.app import Service, install_uvloop, run_forever
    from dockyard.service.config import load_config
    from dockyard.service.context import ServiceContext

    lags: list[float] = []
    if args.profile:
        instrument()
    # DOCKYARD_BENCH_PG_STATEMENTS=FILE: the PostgreSQL server's CPU per statement of this process's
    # store (bench/pg_profile.py), written at SIGUSR1 (for finding costly statements, not for the figures)
    statements_to = os.environ.get("DOCKYARD_BENCH_PG_STATEMENTS")
    statements = None
    if statements_to:
        from pg_profile import StatementProfile  # bench/, beside this script

        statements = StatementProfile()
    from dockyard.service.logs import setup_logging

    ctx = ServiceContext.build(load_config(args.config))
    # as `dockyard serve` logs (JSON at info), into service.log beside the config: the run pays for
    # its logging, and the benchmark's own output stays readable
    log_file = (Path(args.config).parent / "service.log").open("a", encoding="utf-8")
    setup_logging(ctx.secrets, level="info", fmt="json", stream=log_file)
    service = Service(ctx)
    install_uvloop()
    probe = _WriterProbe(service.db) if os.environ.get("DOCKYARD_BENCH_WRITER_PROBE") else None

    if os.environ.get("DOCKYARD_BENCH_SWITCH_INTERVAL"):  # an experiment: the GIL's switch interval, s
        sys.setswitchinterval(float(os.environ["DOCKYARD_BENCH_SWITCH_INTERVAL"]))
    stalls = _Stalls(float(os.environ["DOCKYARD_BENCH_STALLS"])) if os.environ.get("DOCKYARD_BENCH_STALLS") else None

    def dump(*_: Any) -> None:
        report: dict[str, Any] = {"threads": {str(t.native_id): t.name for t in threading.enumerate()},
                  "stages": [[t, s, v[0] / 1e9, v[1]] for (t, s), v in list(_TOTALS.items())],
                  "store": {"groups": service.db.groups, "writes": service.db.writes},
                  "loop_lag_ms": _lag_summary(lags), "loop_schedstat": _schedstat(threading.main_thread())}
        if stalls is not None:
            report["stalls"] = stalls.report()
        if probe is not None:
            report["writer_probe"] = probe.report()
        if statements is not None and statements_to:
            Path(statements_to).write_text(json.dumps(statements.table()), encoding="utf-8")
        Path(args.report).write_text(json.dumps(report), encoding="utf-8")

    # DOCKYARD_BENCH_CPROFILE=FILE: the event loop's thread under cProfile, written at SIGUSR1 (slows
    # the service down; for finding hot functions, never for the figures)
    profile_to = os.environ.get("DOCKYARD_BENCH_CPROFILE")
    if profile_to:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
        plain_dump = dump

        def dump(*_: Any) -> None:
            profiler.disable()
            profiler.dump_stats(profile_to)
            plain_dump()

    signal.signal(signal.SIGUSR1, dump)

    def ready(url: str) -> None:
        # an experiment: the collector's thresholds, over the ones `serve` set (e.g. Python's 700,10,10)
        if os.environ.get("DOCKYARD_BENCH_GC_THRESHOLDS"):
            import gc

            gc.set_threshold(*(int(x) for x in os.environ["DOCKYARD_BENCH_GC_THRESHOLDS"].split(",")))
        with contextlib.suppress(RuntimeError):  # the event loop's lag, sampled every 10 ms
            asyncio.get_running_loop().create_task(_probe_lag(lags))
            if stalls is not None:
                asyncio.get_running_loop().create_task(stalls.tick())
                threading.Thread(target=stalls.watch, daemon=True, name="bench-stalls").start()
                stalls.gc_timer()
        sys.stdout.write(url + "\n")
        sys.stdout.flush()

    asyncio.run(run_forever(service, ready))
    return 0




def sim_child() -> int:
    """The simulated warehouses as `python -m dockyard.demo` runs them, but bound to the address
    the spec names (`host`): with --nodes, the root namespace's address on the bridge, where the
    nodes in their namespaces reach it."""
    from dockyard.simulate import Faults, Feedback, Simulator, SimWarehouse

    plan = json.loads(sys.stdin.readline())
    spec, feedback = plan["spec"], plan["feedback"]

    async def main() -> None:
        sim = Simulator([SimWarehouse(w["name"], w["kind"], w["secret"], w["callback_base"], Faults(**w["faults"]),
                                      w["context"]) for w in spec["warehouses"]],
                        feedback=Feedback(**feedback), upstream_secret=spec["upstream_secret"],
                        upstream_faults=Faults(**spec["upstream_faults"]))
        base = await sim.start(str(spec.get("host", "127.0.0.1")), int(plan.get("port", 0)))
        sys.stdout.write(base + "\n")
        sys.stdout.flush()
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # EOF: the parent is done
        await sim.stop()

    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    asyncio.run(main())
    return 0


# -- the load generator ---------------------------------------------------------------------------
async def send_orders(urls: list[str], bodies: list[tuple[int, bytes]], parallel: int) -> dict[str, Any]:
    """Closed loop: `parallel` POST /orders/batch requests in flight, each to the next node in turn."""
    import aiohttp
    import orjson

    counts: Counter[str] = Counter()
    accepted: list[str] = []
    latencies: list[float] = []
    queue = list(reversed(bodies))
    turn = iter(range(len(bodies)))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=parallel),
                                     timeout=aiohttp.ClientTimeout(total=300)) as session:
        async def worker() -> None:
            while queue:
                _, body = queue.pop()
                url = urls[next(turn) % len(urls)]
                t0 = time.perf_counter()
                async with session.post(f"{url}/orders/batch", data=body,
                                        headers={"Content-Type": "application/json"}) as resp:
                    data = orjson.loads(await resp.read())
                latencies.append((time.perf_counter() - t0) * 1000)
                for r in data["results"]:
                    counts[r["status"]] += 1
                    if r["status"] in ("accepted", "duplicate"):
                        accepted.append(r["order_no"])

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(parallel)))
        took = time.perf_counter() - start
    return {"counts": dict(counts), "accepted": accepted, "latencies": latencies, "seconds": took}


async def open_loop(urls: list[str], bodies: list[bytes], rate: float, inflight: int) -> dict[str, Any]:
    """Open loop: order i is due at start + i/rate and is sent as one POST /orders when due (to the
    next node in turn), whatever earlier requests are doing; at most `inflight` requests are on
    the wire, the others wait for a connection and that wait counts. Latency runs from the due
    time to the answer; the client's lag is how late after the due time it started the request."""
    import aiohttp
    import orjson

    loop = asyncio.get_running_loop()
    counts: Counter[str] = Counter()
    accepted: list[str] = []
    latencies: list[float] = []
    lags: list[float] = []
    tasks: set[asyncio.Task[None]] = set()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=inflight),
                                     timeout=aiohttp.ClientTimeout(total=120)) as session:
        async def one(i: int, due: float) -> None:
            lags.append((loop.time() - due) * 1000)
            try:
                async with session.post(f"{urls[i % len(urls)]}/orders", data=bodies[i],
                                        headers={"Content-Type": "application/json"}) as resp:
                    data = await resp.read()
                    status = resp.status
            except (aiohttp.ClientError, TimeoutError) as exc:
                counts[type(exc).__name__] += 1
                return
            latencies.append((loop.time() - due) * 1000)
            result = orjson.loads(data)
            counts[str(result.get("status", status))] += 1
            if result.get("status") in ("accepted", "duplicate"):
                accepted.append(str(result["order_no"]))

        start = loop.time() + 0.2
        i, n = 0, len(bodies)
        while i < n:
            now = loop.time()
            while i < n and start + i / rate <= now:
                task = asyncio.create_task(one(i, start + i / rate))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                i += 1
            if i < n:
                await asyncio.sleep(max(0.0, start + i / rate - loop.time()))
        sent_at = loop.time()
        while tasks:
            await asyncio.gather(*list(tasks))
        took = loop.time() - start
    return {"counts": dict(counts), "accepted": accepted, "latencies": latencies, "lags": lags, "seconds": took,
            "sent_per_s": n / max(1e-9, sent_at - start)}


# -- baselines ------------------------------------------------------------------------------------
def transform_baseline(ctx: Any, orders: list[dict[str, Any]]) -> tuple[float, list[tuple[str, Any]]]:
    """build_request for every order as the delivery worker calls it; returns (orders/s, wires)."""
    import uuid

    from dockyard.runtime.errors import DockyardError
    from dockyard.runtime.request import build_request
    from dockyard.service.context import dumps, load_order, rewrite_url

    routed = []
    for order in orders:
        name = ctx.router.route(order)
        wh = ctx.config.warehouses[name]
        routed.append((wh, ctx.mappings[wh.flows["create"].request], dumps(order), uuid.uuid4().hex))
    wires: list[tuple[str, Any]] = []
    start = time.perf_counter()
    for wh, mapping, text, request_id in routed:
        try:
            prepared = build_request(mapping, load_order(text), context=wh.context, secrets=ctx.secrets,
                                     request_id=request_id)
        except DockyardError:
            continue
        wires.append((wh.name, prepared.request))
    took = time.perf_counter() - start
    for i, (name, wire) in enumerate(wires):
        wires[i] = (name, (wire.method, rewrite_url(wire.url, ctx.config.warehouses[name].endpoint), wire.headers,
                           wire.body))
    return len(routed) / took, wires


async def blast(wires: list[tuple[str, Any]], concurrency: int) -> tuple[float, dict[int, int]]:
    """The signed requests straight to the simulator, `concurrency` at a time per warehouse."""
    import aiohttp
    from yarl import URL

    by: dict[str, list[Any]] = defaultdict(list)
    for name, wire in wires:
        by[name].append(wire)
    statuses: Counter[int] = Counter()

    async def lane(items: list[Any]) -> None:
        items = list(reversed(items))
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency,
                                                                         limit_per_host=concurrency)) as session:
            async def worker() -> None:
                while items:
                    method, url, headers, body = items.pop()
                    async with session.request(method, URL(url, encoded=True), data=body,
                                               headers=dict(headers)) as resp:
                        await resp.read()
                        statuses[resp.status] += 1

            await asyncio.gather(*(worker() for _ in range(concurrency)))

    start = time.perf_counter()
    await asyncio.gather(*(lane(items) for items in by.values()))
    return len(wires) / (time.perf_counter() - start), dict(statuses)


# -- the run --------------------------------------------------------------------------------------
def fresh_postgres(url: str, name: str = "dockyard_e2e_bench") -> str:
    """A new, empty database `name` on the server of `url` (dropped first if it exists), so that
    the run neither sees nor disturbs another user of that server; returns its URL. It gets the
    pg_stat_statements extension where the server allows (the figures need the library preloaded)."""
    from urllib.parse import urlsplit, urlunsplit

    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {name}")
    target = urlunsplit(urlsplit(url)._replace(path="/" + name))
    with contextlib.suppress(psycopg.Error), psycopg.connect(target, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    if os.environ.get("DOCKYARD_BENCH_PG_LOG"):
        # every statement of this database with its duration in the server's log (where the server
        # has no pg_stat_statements): for finding the costly statements, never for the figures
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"ALTER DATABASE {name} SET log_min_duration_statement = 0")
    return target


def socket_url(url: str, socket_dir: str) -> str:
    """The same database through the server's unix socket: nodes in network namespaces reach it there."""
    from urllib.parse import quote, urlsplit

    parts = urlsplit(url)
    user, database = quote(parts.username or "postgres"), parts.path.lstrip("/")
    return f"postgresql://{user}@/{database}?host={quote(socket_dir, safe='')}"


def journal_figures(url: str) -> dict[str, Any]:
    from dockyard.service.db import Database

    db = Database(url, readers=1)

    def read(conn: Any) -> dict[str, Any]:
        received = dict(conn.execute("SELECT order_no, at FROM dy_journal WHERE step = 'received' AND outcome = 'ok'"))
        committed = conn.execute("SELECT order_no, at FROM dy_journal WHERE step = 'committed' AND flow = 'create'")
        settled = conn.execute("SELECT MAX(at) FROM dy_journal WHERE step IN ('committed', 'dead-lettered', 'held')")
        events = conn.execute("SELECT COUNT(*), MIN(received_at), MAX(received_at) FROM dy_events")[0]
        fwd = conn.execute("SELECT COUNT(*), MAX(at) FROM dy_journal WHERE step = 'forwarded'")[0]
        by = dict(conn.execute("SELECT delivery, COUNT(*) FROM dy_orders GROUP BY delivery"))
        dup = conn.execute("SELECT COUNT(*) FROM dy_journal WHERE step = 'feedback' AND outcome = 'duplicate'")[0][0]
        last = conn.execute("SELECT MAX(at) FROM dy_journal")[0][0]
        return {"received": received, "committed": committed, "settled_at": settled[0][0], "events": events,
                "forwarded": fwd, "by_delivery": by, "dup_events": dup, "last_at": last}

    try:
        return db.read_sync(read)
    finally:
        db.close()


def _wait_for_line(log: Path, text: str, count: int, process: subprocess.Popen[Any], timeout: float) -> str:
    """The log's content once `text` occurs `count` times in it; fails if the process ends first."""
    deadline = time.monotonic() + timeout
    while True:
        content = log.read_text("utf-8", errors="replace") if log.exists() else ""
        if content.count(text) >= count:
            return content
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{process.args[-8:]} did not start:\n{content[-3000:]}")
        time.sleep(0.05)


def _stop(process: subprocess.Popen[Any], sig: int = signal.SIGTERM, wait: float = 60) -> None:
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(wait)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _stop_piped(process: subprocess.Popen[str]) -> None:
    """A child that runs until its stdin closes (the load balancer)."""
    if process.stdin is not None:
        with contextlib.suppress(OSError):
            process.stdin.close()
    try:
        process.wait(5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    if process.stdout is not None:
        process.stdout.close()


class Prepared:
    """What every run of one invocation shares: the plan, the bundle, the orders and the baselines."""

    def __init__(self, args: argparse.Namespace) -> None:
        import orjson

        from dockyard.demo import DemoPlan, SimProcess, build_demo_bundle, free_port
        from dockyard.sample_orders import generate
        from dockyard.service.config import load_config
        from dockyard.service.context import ServiceContext

        self.work = Path(args.workdir or tempfile.mkdtemp(prefix="dockyard-e2e-"))
        self.work.mkdir(parents=True, exist_ok=True)
        self.plan = DemoPlan(self.work, args.mappings, store=f"sqlite:///{(self.work / 'state.db').resolve()}",
                             concurrency=args.concurrency, workers=args.workers)
        t0 = time.perf_counter()
        build_demo_bundle(args.mappings, self.plan.bundle)
        self.orders = generate(args.n, args.seed)
        print(f"bundle + {len(self.orders)} orders generated in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
        self.bodies = [(len(self.orders[i:i + args.batch]), orjson.dumps(self.orders[i:i + args.batch]))
                       for i in range(0, len(self.orders), args.batch)]
        self.singles = [orjson.dumps(o) for o in self.orders]
        self.out: dict[str, Any] = {
            "n": len(self.orders), "store": args.store, "feedback": args.feedback, "workers": args.workers,
            "batch": args.batch, "parallel": args.parallel, "concurrency": args.concurrency, "cpus": os.cpu_count(),
            "python": platform.python_version(), "command": " ".join(sys.argv)}

        # Baseline 1: transform + sign in-process.
        self.plan.sim_base = "http://127.0.0.1:9"  # replaced below; the wires are re-pointed at the real simulator
        ctx = ServiceContext.build(load_config(self.plan.write(free_port())))
        transform_rate, wires = transform_baseline(ctx, self.orders[:args.baseline_n])
        self.out["transform_sign_per_s"] = transform_rate

        # Baseline 2: the same signed requests straight to a fresh simulator (no feedback, no service).
        sim = SimProcess(self.plan.sim_spec("http://127.0.0.1:9"), {"enabled": False})
        try:
            wires = [(name, (m, sim.base + u[len("http://127.0.0.1:9"):], h, b)) for name, (m, u, h, b) in wires]
            c_sim, c_self = proc_cpu(sim.process.pid), self_cpu()
            rate, statuses = asyncio.run(blast(wires, args.concurrency))
            self.out["sim_roundtrip_per_s"] = rate
            self.out["sim_roundtrip_cpu_us"] = {"simulator": (proc_cpu(sim.process.pid) - c_sim) / len(wires) * 1e6,
                                                "client": (self_cpu() - c_self) / len(wires) * 1e6}
            self.out["sim_roundtrip_statuses"] = statuses
        finally:
            sim.stop()
        print(f"baselines: transform+sign {transform_rate:,.0f}/s, simulator round trip {rate:,.0f}/s",
              file=sys.stderr)


def one_run(args: argparse.Namespace, prep: Prepared, *, nodes: int, rate: float | None) -> dict[str, Any]:
    """One end-to-end run on a fresh store: the service (one process as before, or `nodes` nodes in
    namespaces), the simulator, closed loop or open loop at `rate`; every figure of the run."""
    from dockyard.demo import Harness, SimProcess, free_port

    plan, work, n = prep.plan, prep.work, len(prep.orders)
    admin = ""
    if args.store == "postgres":
        admin = fresh_postgres(args.pg_url, args.pg_db)
        store = socket_url(admin, args.pg_socket) if nodes else admin
    else:
        for p in work.glob("state.db*"):  # the database, its WAL and its owners' lock folder
            shutil.rmtree(p) if p.is_dir() else p.unlink()
        store = f"sqlite:///{(work / 'state.db').resolve()}"
    plan.store = store
    out = dict(prep.out, nodes=nodes, rate=rate)
    port = free_port()
    feedback = ({"step_delay": args.step_delay, "route_batch": args.route_batch} if args.feedback
                else {"enabled": False})
    report_path = work / "service-report.json"
    report_path.unlink(missing_ok=True)
    with contextlib.ExitStack() as stack:
        lb: subprocess.Popen[str] | None = None
        if nodes:
            sys.path.insert(0, str(MULTINODE))
            from netns import Network, pdeathsig

            net = stack.enter_context(Network(nodes))
            # the load generator and the simulator reach the nodes from the bridge's network: the
            # ingest and unsigned-callback guards must let it in
            plan.networks = (*plan.networks, str(net.subnet))
            lb = subprocess.Popen([sys.executable, str(MULTINODE / "lb.py"), net.gateway, "0",
                                   *(f"{h.address}:{port}" for h in net.hosts)],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, preexec_fn=pdeathsig)
            stack.callback(_stop_piped, lb)
            assert lb.stdout is not None
            callback = "http://" + lb.stdout.readline().split()[1]
            sim = SimProcess({**plan.sim_spec(callback), "host": net.gateway}, feedback,
                             command=[sys.executable, str(Path(__file__).resolve()), "--sim-child"])
        else:
            sim = SimProcess(plan.sim_spec(f"http://127.0.0.1:{port}"), feedback)
        stack.callback(sim.stop)
        plan.sim_base = sim.base
        config_path = plan.write(port)
        children: list[subprocess.Popen[Any]] = []
        caps = None
        if nodes and args.node_cpu:
            from cpu_cap import CpuCaps

            caps = CpuCaps(f"dockyard-e2e-{os.getpid()}")
            stack.callback(caps.close)  # after the nodes have stopped (callbacks run last first)
        if nodes:
            for h in net.hosts:
                log = work / f"node{h.index}.log"
                log.unlink(missing_ok=True)
                with open(log, "ab") as sink:
                    child = subprocess.Popen(h.command([sys.executable, "-m", "dockyard.cli", "serve", "--config",
                                                        str(config_path), "--host", h.address, "--port", str(port)]),
                                             stdout=sink, stderr=subprocess.STDOUT, preexec_fn=pdeathsig)
                if caps is not None:  # before it starts its threads: they, and its workers, inherit it
                    caps.cap(child.pid, args.node_cpu, f"node{h.index}")
                children.append(child)
                stack.callback(_stop, child)
            for h, child in zip(net.hosts, children, strict=True):
                _wait_for_line(work / f"node{h.index}.log", "serving on", 1, child, 60)
                if args.workers > 1:
                    _wait_for_line(work / f"node{h.index}.log", ") ready; ", args.workers, child, 60)
            urls = [f"http://{h.address}:{port}" for h in net.hosts]
        elif args.workers > 1:  # the real `dockyard serve` with its workers (no stage profile)
            log = work / "service.log"
            log.unlink(missing_ok=True)
            with open(log, "ab") as sink:
                child = subprocess.Popen([sys.executable, "-m", "dockyard.cli", "serve", "--config", str(config_path)],
                                         stdout=sink, stderr=subprocess.STDOUT,
                                         env={**os.environ, "PYTHONUNBUFFERED": "1"})
            children.append(child)
            stack.callback(_stop, child)
            _wait_for_line(log, "serving on", 1, child, 60)
            _wait_for_line(log, ") ready; ", args.workers, child, 60)
            urls = [f"http://127.0.0.1:{port}"]
        else:
            child = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--serve-child", str(config_path),
                                      "--report", str(report_path)] + (["--profile"] if args.profile else []),
                                     stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
            children.append(child)
            stack.callback(_stop, child)
            assert child.stdout is not None
            urls = [child.stdout.readline().strip()]
            if not urls[0].startswith("http"):
                raise RuntimeError("the service did not start")

        harness = Harness(urls[0], sim.base)
        database = admin.rsplit("/", 1)[-1].split("?")[0] if admin else ""
        pg = PgCpu(database) if admin else None
        stm0 = pg_statements(admin) if admin else None
        if pg is not None:
            pg.start()
        svc0 = {c.pid: tree_cpu(c.pid) for c in children}
        sim0, me0 = proc_cpu(sim.process.pid), self_cpu()
        lb0 = proc_cpu(lb.pid) if lb is not None else 0.0
        wall0 = time.perf_counter()
        if rate:
            sent = asyncio.run(open_loop(urls, prep.singles, rate, args.inflight))
        else:
            sent = asyncio.run(send_orders(urls, prep.bodies, args.parallel))
        me_send = self_cpu() - me0
        accepted = len(sent["accepted"])
        stats = asyncio.run(harness.settle(accepted, args.timeout, feedback=args.feedback))
        wall = time.perf_counter() - wall0
        svc1 = {c.pid: tree_cpu(c.pid) for c in children}
        throttled = caps.throttled_s() if caps is not None else None
        sim1, me1 = proc_cpu(sim.process.pid), self_cpu()
        lb1 = proc_cpu(lb.pid) if lb is not None else 0.0
        pg_cpu = pg.stop() if pg is not None else {"database": 0.0, "server": 0.0}
        stm1 = pg_statements(admin) if admin else None
        if not nodes and args.workers == 1:
            child.send_signal(signal.SIGUSR1)
            for _ in range(100):
                if report_path.exists():
                    break
                time.sleep(0.05)
            time.sleep(0.2)
    report = (json.loads(report_path.read_text("utf-8")) if report_path.exists()
              else {"threads": {}, "stages": []})
    names = report["threads"]
    per_thread: Counter[str] = Counter()
    for i, c in enumerate(children):
        for tid, cpu in svc1[c.pid].items():
            name = names.get(str(tid), "?")
            kind = ("main (event loop)" if name == "MainThread" else "writer" if name == "dockyard-writer"
                    else "readers" if name.startswith("dockyard-read")
                    else "claims" if name.startswith("dockyard-claim") else "other")
            if nodes:
                kind = f"node {i} (all threads)"
            elif args.workers > 1:
                kind = f"{args.workers} workers (all threads)"
            per_thread[kind] += cpu - svc0[c.pid].get(tid, 0.0)
    j = journal_figures(store)
    received, committed = j["received"], j["committed"]
    first = min(received.values())
    last_commit = max(at for _, at in committed)
    lat = [(at - received[o]) / 1000 for o, at in committed if o in received]
    cpu = {"service": sum(per_thread.values()) / n * 1e6,
           **{f"service {k}": v / n * 1e6 for k, v in sorted(per_thread.items())}}
    if admin:
        cpu["postgres (this database's backends)"] = pg_cpu["database"] / n * 1e6
        cpu["postgres (whole server)"] = pg_cpu["server"] / n * 1e6
        if stm0 is not None and stm1 is not None:
            cpu["postgres statements (pg_stat_statements)"] = (stm1[0] - stm0[0]) / n * 1e3
    else:
        cpu["postgres"] = 0.0
    cpu.update({"simulator": (sim1 - sim0) / n * 1e6, "client": (me1 - me0) / n * 1e6,
                "client (sending)": me_send / n * 1e6})
    if lb is not None:
        cpu["load balancer"] = (lb1 - lb0) / n * 1e6
    out.update({
        "counts": sent["counts"], "accepted": accepted, "delivered": len(committed),
        "by_delivery": j["by_delivery"], "outbox_left": stats["service"]["outbox_depth"],
        "accept_seconds": sent["seconds"], "accepted_per_s": n / sent["seconds"],
        "delivered_per_s": len(committed) / ((last_commit - first) / 1e6),
        "settled_seconds": (j["settled_at"] - first) / 1e6, "all_done_seconds": (j["last_at"] - first) / 1e6,
        "wall_seconds": wall,
        "ack_ms": {q: pct(sent["latencies"], q) for q in (50, 95, 99)},
        # the median answer time of the run's middle and last thirds (answers in the order they
        # came): a queue that grows shows as a last third slower than the middle one
        "ack_p50_thirds_ms": [pct(sent["latencies"][len(sent["latencies"]) * k // 3:
                                                   len(sent["latencies"]) * (k + 1) // 3] or [0.0], 50)
                              for k in (1, 2)],
        "wh_accepted_ms": {q: pct(lat, q) for q in (50, 95, 99)},
        "events": j["events"][0], "dup_events": j["dup_events"],
        "events_per_s": j["events"][0] / max(1e-9, (j["events"][2] - j["events"][1]) / 1e6) if j["events"][0] else 0,
        "forwarded": j["forwarded"][0],
        "cpu_us_per_order": cpu,
        # --node-cpu: each node's CPU cap (cores) and the seconds it spent throttled at it
        "node_cpu": args.node_cpu if nodes else None, "throttled_s": throttled,
        "commits": report.get("store"),  # group commits and the writes they held (single node)
        "loop_lag_ms": report.get("loop_lag_ms"),
        "writer_probe": report.get("writer_probe"),
        "profile": {"on": args.profile and not nodes and args.workers == 1, "stages": report["stages"],
                    "threads_cpu": dict(per_thread)},
    })
    if rate:
        out["open_loop"] = {"rate": rate, "sent_per_s": sent["sent_per_s"], "inflight": args.inflight,
                            "lag_ms": {q: pct(sent["lags"], q) for q in (50, 99)}}
    return out


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every run of this invocation: each node count in turn, `rounds` times (interleaved); with
    --rate-of-capacity, a closed-loop run then an open-loop run at that fraction of its delivered/s;
    with --rate-of-open-capacity, the capacity is searched once per node count (in the first
    round), and each round runs at that fraction of it."""
    prep = Prepared(args)
    runs: list[dict[str, Any]] = []
    capacities: dict[int, float] = {}
    try:
        for _ in range(args.rounds):
            for nodes in args.nodes or [0]:
                if args.rate_of_capacity:
                    closed = one_run(args, prep, nodes=nodes, rate=None)
                    runs.append(closed)
                    runs.append(one_run(args, prep, nodes=nodes,
                                        rate=args.rate_of_capacity * closed["delivered_per_s"]))
                elif args.rate_of_open_capacity:
                    if nodes not in capacities:
                        capacities[nodes] = open_capacity(args, prep, nodes)
                    capacity = capacities[nodes]
                    runs.append(one_run(args, prep, nodes=nodes, rate=args.rate_of_open_capacity * capacity))
                    runs[-1]["open_capacity"] = capacity
                else:
                    runs.append(one_run(args, prep, nodes=nodes, rate=args.rate))
                show(runs[-1])
    finally:
        # A folder of our own making (stores, bundles, logs: ~40 MB a run) goes when the runs are
        # done; one given with --workdir, or kept with --keep-workdir, stays for a look afterwards.
        if args.workdir is None and not args.keep_workdir:
            shutil.rmtree(prep.work, ignore_errors=True)
        else:
            print(f"working folder kept: {prep.work}", file=sys.stderr)
    return runs


def keeps_up(r: dict[str, Any]) -> tuple[bool, str]:
    """Whether an open-loop run kept up with its rate: the client sent on time (at least 98% of the
    rate), the warehouses accepted at least 95% of it, and no queue grew in front of the answers:
    the median answer of the run's last third is not later than that of its middle third by more
    than half and 5 ms (a service that falls behind answers later and later), and under 50 ms.
    Why not, when not."""
    rate = r["rate"]
    middle, last = r["ack_p50_thirds_ms"]
    if r["open_loop"]["sent_per_s"] < 0.98 * rate:
        return False, f"the client sent {r['open_loop']['sent_per_s']:,.0f}/s"
    if r["delivered_per_s"] < 0.95 * rate:
        return False, f"delivered {r['delivered_per_s']:,.0f}/s"
    if last > 1.5 * middle + 5 or last >= 50:
        return False, f"POST p50 {middle:,.1f} ms in the middle third, {last:,.1f} ms in the last"
    return True, (f"POST p50 {r['ack_ms'][50]:,.1f} ms ({middle:,.1f} → {last:,.1f} ms), "
                  f"p99 {r['ack_ms'][99]:,.1f} ms")


def open_capacity(args: argparse.Namespace, prep: Prepared, nodes: int) -> float:
    """The highest open-loop rate (one order per POST /orders) this setup keeps up with: rates
    raised by a quarter from --capacity-start until a run falls behind (keeps_up), then bisected
    three times between the last rate kept up with and the first that was not. Each try is a whole
    run of -n orders on a fresh store. This, not the closed loop's delivered/s, is the capacity
    that "80% of capacity" means for an open-loop figure: a batch of 200 orders per request costs
    the service less per order than 200 requests do."""
    def kept_up(rate: float) -> bool:
        ok, why = keeps_up(one_run(args, prep, nodes=nodes, rate=rate))
        print(f"capacity search: {rate:,.0f}/s {'kept up' if ok else 'fell behind'} ({why})", file=sys.stderr)
        return ok

    good, bad = 0.0, 0.0
    rate = args.capacity_start
    for _ in range(16):
        if not kept_up(rate):
            bad = rate
            break
        good, rate = rate, rate * 1.25
    if not bad:
        raise SystemExit(f"capacity search: no rate up to {good:,.0f}/s was too much; raise --capacity-start")
    for _ in range(3):
        rate = (good + bad) / 2
        good, bad = (rate, bad) if kept_up(rate) else (good, rate)
    if not good:
        raise SystemExit(f"capacity search: {args.capacity_start:,.0f}/s was already too much; lower --capacity-start")
    print(f"open-loop capacity: {good:,.0f} orders/s (the next rate tried, {bad:,.0f}/s, fell behind)", file=sys.stderr)
    return good


def show(r: dict[str, Any]) -> None:
    n = r["n"]
    where = f"{r['nodes']} node(s) in network namespaces" if r["nodes"] else "one service"
    load = (f"open loop at {r['rate']:,.0f} orders/s, one order per POST /orders" if r["rate"] else
            f"closed loop, batch {r['batch']} x {r['parallel']} parallel")
    print(f"\n{n} orders, {where}, store {r['store']}, feedback {'on' if r['feedback'] else 'off'}, {load}, "
          f"warehouse concurrency {r['concurrency']}, {r['cpus']} CPUs, Python {r['python']}")
    print(f"results: {r['counts']}; delivery: {r['by_delivery']}; outbox left: {r['outbox_left']}")
    if r.get("node_cpu"):
        held = ", ".join(f"{name.rsplit('-', 1)[-1]} {s:.1f} s" for name, s in (r["throttled_s"] or {}).items())
        print(f"each node capped at {r['node_cpu']:g} CPU (its own cgroup); throttled at the cap: {held}")
    print(f"\n{'':34} {'per s':>10} {'vs sim RTT':>11} {'vs transform':>13}")
    sim, tr = r["sim_roundtrip_per_s"], r["transform_sign_per_s"]
    rows = [("baseline: transform+sign in-process", tr), ("baseline: simulator round trip", sim),
            ("accepted (all 202s back)", r["accepted_per_s"]), ("delivered (warehouse accepted)", r["delivered_per_s"]),
            ("settled incl. feedback+forwarding", n / r["all_done_seconds"])]
    for name, value in rows:
        print(f"{name:34} {value:10,.0f} {value / sim:10.2f}x {value / tr:12.3f}x")
    print(f"\nfirst received → last delivered {r['delivered'] / r['delivered_per_s']:.2f}s; → last journal entry "
          f"(feedback forwarded) {r['all_done_seconds']:.2f}s; wall incl. settle polling {r['wall_seconds']:.1f}s")
    a, w = r["ack_ms"], r["wh_accepted_ms"]
    if r["rate"]:
        o = r["open_loop"]
        print(f"latency POST /orders → answer, from the scheduled time: p50 {a[50]:8.1f} ms  p95 {a[95]:8.1f} ms  "
              f"p99 {a[99]:8.1f} ms  (sent at {o['sent_per_s']:,.0f}/s of {o['rate']:,.0f}/s due; client lag "
              f"p50 {o['lag_ms'][50]:.1f} ms p99 {o['lag_ms'][99]:.1f} ms; at most {o['inflight']} in flight)")
        if r.get("open_capacity"):
            print(f"  at {r['rate'] / r['open_capacity']:.0%} of the open-loop capacity found first, "
                  f"{r['open_capacity']:,.0f} orders/s")
    else:
        print(f"latency ingest → ack (per batch of {r['batch']}):   p50 {a[50]:8.1f} ms  p95 {a[95]:8.1f} ms  "
              f"p99 {a[99]:8.1f} ms")
    print(f"latency ingest → warehouse accepted: p50 {w[50]:8.1f} ms  p95 {w[95]:8.1f} ms  p99 {w[99]:8.1f} ms")
    print(f"feedback: {r['events']} events recorded ({r['events'] / n:.2f}/order, {r['dup_events']} duplicates), "
          f"{r['events_per_s']:,.0f} events/s; {r['forwarded']} forwarded upstream")
    print("\nCPU µs per order:")
    for k, v in r["cpu_us_per_order"].items():
        print(f"  {k:40} {v:8.0f}")
    rt = r["sim_roundtrip_cpu_us"]
    print(f"  (baseline round trip, per request: simulator {rt['simulator']:.0f}, client {rt['client']:.0f})")
    lag = r.get("loop_lag_ms")
    if lag:
        print(f"event loop lag (a 10 ms timer, whole process life): p50 {lag['p50']:.1f} ms, p99 {lag['p99']:.1f} ms, "
              f"max {lag['max']:.1f} ms")
    st = r.get("commits")
    if st and st.get("groups"):
        groups, writes = st["groups"], st["writes"]
        print(f"store: {groups:,} group commits holding {writes:,} writes ({writes / groups:.1f} per commit, "
              f"{groups / n:.1f} commits and {writes / n:.1f} writes per order; whole process life)")
    probe = r.get("writer_probe")
    if probe:
        ms, gms = probe["ingest_ms"], probe["group_ms"]
        print(f"writer probe: {probe['ingest_writes']:,} ingest writes, submit → answer on the loop p50 "
              f"{ms['p50']:.1f} ms p95 {ms['p95']:.1f} ms p99 {ms['p99']:.1f} ms; {probe['groups']:,} groups, "
              f"duration p50 {gms['p50']:.1f} ms p95 {gms['p95']:.1f} ms p99 {gms['p99']:.1f} ms max "
              f"{gms['max']:.1f} ms, size {probe['group_size']}; WAL restarts {probe['wal_restarts_ms']} ms")
        for name in ("slowest 5%", "over 20 ms"):
            if probe.get(name):
                parts = "; ".join(f"{k} {v:.1f}" for k, v in probe[name]["mean_ms"].items())
                print(f"  {name} ({probe[name]['n']} writes), mean ms: {parts}")
        for g in probe["slowest_groups"]:
            print(f"  slow group {g['ms']:.1f} ms (writer CPU {g['cpu_ms']:.1f} ms), {g['size']} writes: {g['kinds']}")
    prof = r["profile"]
    if prof["on"]:
        threads = {"MainThread": "main (event loop)", "dockyard-writer": "writer"}
        by_thread: Counter[str] = Counter()
        rows = []
        for thread, stage, seconds, calls in prof["stages"]:
            kind = threads.get(thread, "readers" if thread.startswith("dockyard-read")
                               else "claims" if thread.startswith("dockyard-claim") else "other")
            by_thread[kind] += seconds
            rows.append((kind, stage, seconds, calls))
        for kind, cpu in prof["threads_cpu"].items():
            rest = cpu - by_thread.get(kind, 0.0)
            label = {"main (event loop)": "event loop, uvloop I/O, aiohttp tasks (not wrapped)",
                     "writer": "store: writer queue + sqlite/psycopg outside the wrapped calls",
                     "readers": "reads: /stats polling (settle)",
                     "claims": "claims: psycopg/sqlite outside the wrapped calls"}.get(kind, "other")
            rows.append((kind, label, rest, 0))
        total = sum(prof["threads_cpu"].values())
        print(f"\nservice CPU by stage (--profile: exclusive thread CPU of wrapped calls; total {total / n * 1e6:.0f} "
              f"µs/order):")
        for kind, stage, seconds, calls in sorted(rows, key=lambda x: -x[2]):
            if abs(seconds) / total < 0.002:
                continue
            per_call = f"{seconds / calls * 1e6:7.1f} µs/call" if calls else ""
            print(f"  {kind:18} {stage:62} {seconds / n * 1e6:6.0f} µs/order {seconds / total:6.1%} {per_call}")


def show_table(runs: list[dict[str, Any]]) -> None:
    """By node count and load: the best delivered/s of the rounds, with that run's CPU per order."""
    groups: dict[tuple[int, bool], list[dict[str, Any]]] = defaultdict(list)
    for r in runs:
        groups[(r["nodes"], bool(r["rate"]))].append(r)
    if len(runs) < 2:
        return
    print(f"\n{'nodes':>5} {'load':>14} {'delivered/s':>12} {'(range)':>15} {'accepted/s':>11} {'p99 ms':>8}  "
          "CPU µs/order: service · PG backends · PG server · PG statements · simulator · LB · client")
    for (nodes, open_loop), rs in sorted(groups.items()):
        best = max(rs, key=lambda r: r["delivered_per_s"])
        c = best["cpu_us_per_order"]
        rates = sorted(r["delivered_per_s"] for r in rs)
        load = f"open {best['rate']:,.0f}/s" if open_loop else "closed"

        keys = ("service", "postgres (this database's backends)", "postgres (whole server)",
                "postgres statements (pg_stat_statements)", "simulator", "load balancer", "client")
        figures = " · ".join(f"{c[k]:,.0f}" if k in c else "–" for k in keys)
        span = f"{rates[0]:,.0f}–{rates[-1]:,.0f}"
        print(f"{nodes or 'plain':>5} {load:>14} {best['delivered_per_s']:12,.0f} {span:>15} "
              f"{best['accepted_per_s']:11,.0f} {best['ack_ms'][99]:8.1f}  {figures}")
    # An open loop's p99 moves a lot from run to run on a shared machine: every round's, and their
    # median, rather than the best run's alone.
    for (nodes, open_loop), rs in sorted(groups.items()):
        if open_loop and len(rs) > 1:
            p99s = [r["ack_ms"][99] for r in rs]
            print(f"{nodes or 'plain':>5} open loop at {rs[0]['rate']:,.0f}/s: POST p99 by round "
                  f"{', '.join(f'{v:.1f}' for v in p99s)} ms; median {statistics.median(p99s):.1f} ms")


def _counts(text: str) -> list[int]:
    counts = [int(x) for x in text.split(",") if x.strip()]
    if not counts or any(not 1 <= c <= 16 for c in counts):
        raise argparse.ArgumentTypeError("node counts from 1 to 16, e.g. 3 or 1,2,3")
    return counts


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--serve-child"]:
        return serve_child(argv[1:])
    if argv[:1] == ["--sim-child"]:
        return sim_child()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("-n", type=int, default=20000)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--store", choices=("sqlite", "postgres"), default="sqlite")
    ap.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/test",
                    help="a PostgreSQL server the benchmark may use: it runs in a new database "
                         "dockyard_e2e_bench there (dropped and created for each run)")
    ap.add_argument("--pg-db", default="dockyard_e2e_bench",
                    help="the database the run makes on that server (dropped first): one per user of a shared server")
    ap.add_argument("--pg-socket", default="/var/run/postgresql",
                    help="the folder of that server's unix socket (how nodes in namespaces reach it)")
    ap.add_argument("--feedback", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--step-delay", type=float, default=0.05, help="simulator feedback: seconds between steps")
    ap.add_argument("--route-batch", type=int, default=1,
                    help="simulator feedback: SF routes (of any orders) per route push at most, as SF batches "
                         "its pushes (1: a push per route)")
    ap.add_argument("--batch", type=int, default=200, help="orders per POST /orders/batch")
    ap.add_argument("--parallel", type=int, default=4, help="batch requests in flight")
    ap.add_argument("--concurrency", type=int, default=64, help="requests in flight per warehouse (service config)")
    ap.add_argument("--workers", type=int, default=1, help="service processes (`workers:` in the config)")
    ap.add_argument("--nodes", type=_counts, default=None,
                    help="N service nodes in network namespaces on one PostgreSQL (implies --store postgres; "
                         "needs root); a list such as 1,2,3 runs each count in turn")
    ap.add_argument("--node-cpu", type=float, default=None,
                    help="with --nodes: cap each node at this many CPUs (a cgroup of its own; root), as a host of "
                         "its own would be, so that node counts compare on a machine that one node fills")
    ap.add_argument("--rounds", type=int, default=1, help="repeat the runs (interleaved) and keep the best")
    ap.add_argument("--rate", type=float, default=None,
                    help="open loop: orders/s, one order per POST /orders at fixed arrival times")
    ap.add_argument("--rate-of-capacity", type=float, default=None,
                    help="open loop at this fraction of the delivered/s of a closed-loop run measured first "
                         "(e.g. 0.8)")
    ap.add_argument("--rate-of-open-capacity", type=float, default=None,
                    help="open loop at this fraction (e.g. 0.8) of the open-loop capacity, found first by a search "
                         "of whole runs (see open_capacity)")
    ap.add_argument("--capacity-start", type=float, default=200.0,
                    help="the capacity search's first rate (orders/s)")
    ap.add_argument("--inflight", type=int, default=256, help="open loop: requests on the wire at most")
    ap.add_argument("--baseline-n", type=int, default=5000, help="orders for the two baselines")
    ap.add_argument("--profile", action="store_true",
                    help="split the service's CPU by stage (wraps its stage functions; costs some CPU itself)")
    ap.add_argument("--timeout", type=float, default=600.0)
    ap.add_argument("--mappings", type=Path, default=REPO / "mappings")
    ap.add_argument("--workdir", type=Path, default=None,
                    help="the working folder (kept afterwards); default: a new temporary one, removed at the end")
    ap.add_argument("--keep-workdir", action="store_true",
                    help="keep the temporary working folder for a look afterwards")
    ap.add_argument("--json", type=Path, default=None, help="also write every figure as JSON")
    args = ap.parse_args(argv)
    if args.nodes:
        args.store = "postgres"
        if args.profile:
            ap.error("--profile wraps one service process; it does not combine with --nodes")
    if sum(x is not None for x in (args.rate, args.rate_of_capacity, args.rate_of_open_capacity)) > 1:
        ap.error("--rate, --rate-of-capacity and --rate-of-open-capacity: one of them")
    if any(r is not None and r <= 0 for r in (args.rate, args.rate_of_capacity, args.rate_of_open_capacity,
                                                args.capacity_start)):
        ap.error("the open-loop rate must be positive")
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")
    runs = run(args)
    show_table(runs)
    if args.json is not None:
        data: Any = runs[0] if len(runs) == 1 else runs
        args.json.write_text(json.dumps(data, indent=1, default=str), encoding="utf-8")
    ok = True
    for r in runs:
        lost = r["accepted"] - sum(r["by_delivery"].get(k, 0) for k in ("delivered", "dlq", "in_doubt"))
        ok = ok and lost == 0 and r["outbox_left"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
