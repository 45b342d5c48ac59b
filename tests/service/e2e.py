"""End-to-end helpers for the service's reliability tests: the real `dockyard serve` in a child
process (so that it can be killed with SIGKILL and restarted on the same port and store), the
simulated warehouses in another child process, the demo's `Harness` to send orders, and one
`Outcome` read from the store, the simulator and the upstream webhook after everything settled,
with the checks every test shares.

The simulator child is the demo's (`dockyard.demo.sim_process_main`) plus one recording hook:
every callback a simulated warehouse builds, and whether the warehouse considered it acknowledged,
is kept and served on GET /_test/pushes. That is what "no feedback event is lost" is checked
against, event by event: an event the warehouse saw acknowledged must be in the store.

Run as a script (`python e2e.py`), this file is that simulator child.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import orjson
import yaml

from dockyard.demo import SimProcess

ROOT = Path(__file__).resolve().parents[2]
MAPPINGS = ROOT / "mappings"
POSTGRES_URL = os.environ.get("DOCKYARD_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")

# The simulator's step code of a callback -> the raw_status the service's inbound mapping keeps.
# Only Cainiao's consign confirm differs: its raw status is the message type.
_RAW_STATUS = {("cainiao", "CONFIRM"): "WMS_CONSIGN_ORDER_CONFIRM"}
# Journal steps that mark an order in doubt: held, an unknown outcome, and (lane 'wh' only: the
# upstream lane's recovery is journalled with outcome 'retry') a job found `sending` at restart.
IN_DOUBT_STEPS = ("held", "in-doubt", "recovered")


# -- the PostgreSQL rule (the same as tests/idempotency/conftest.py's `require_server`; conftest
# modules of sibling folders cannot be imported by name, so it is repeated here) ---------------
def require_postgres() -> str:
    """The server's URL; skip when unreachable and CI is unset, fail when CI is set."""
    import psycopg
    import pytest

    from dockyard.runtime.idempotency import redact_url

    try:
        with psycopg.connect(POSTGRES_URL, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except Exception as exc:
        detail = " ".join(str(exc).split())
        reason = f"PostgreSQL is not reachable at {redact_url(POSTGRES_URL)} ({type(exc).__name__}: {detail})"
        if "CI" in os.environ:
            pytest.fail(f"{reason}; CI is set, so a missing server is a failure", pytrace=False)
        pytest.skip(f"{reason}; with CI set this would fail")
    return POSTGRES_URL


@contextlib.contextmanager
def fresh_postgres_database() -> Iterator[str]:
    """A database of this test's own on the test server, dropped afterwards."""
    import psycopg
    from psycopg import sql

    server = require_postgres()
    name = f"dockyard_e2e_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    parts = urlsplit(server)
    try:
        yield urlunsplit(parts._replace(path="/" + name))
    finally:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


# -- the duplicate rule of each warehouse's create flow, from its spec --------------------------
def create_rules() -> dict[str, str]:
    """warehouse -> request.idempotency.rule of the spec its create flow uses."""
    from dockyard.demo import WAREHOUSES, spec_files

    by_name: dict[str, dict[str, Any]] = {}
    for path in spec_files(MAPPINGS):
        spec = yaml.safe_load(path.read_text(encoding="utf-8"))
        if isinstance(spec, dict) and "name" in spec:
            by_name[str(spec["name"])] = spec
    rules = {}
    for warehouse, w in WAREHOUSES.items():
        spec = by_name[w["flows"]["create"]["request"]]
        rules[warehouse] = str(((spec.get("request") or {}).get("idempotency") or {}).get("rule") or "skip")
    return rules


# -- the simulator child ------------------------------------------------------------------------
class SimChild(SimProcess):
    """`dockyard.demo.SimProcess`, but running this file's recording simulator, bound to `host`
    (the multi-node tests bind it to the root namespace's address on their bridge)."""

    def __init__(self, spec: dict[str, Any], feedback: dict[str, Any], host: str = "127.0.0.1") -> None:
        super().__init__({**spec, "host": host}, feedback, command=[sys.executable, str(Path(__file__).resolve())])


def _sim_main() -> None:
    from aiohttp import web

    from dockyard.simulate import Faults, Feedback, Simulator, SimWarehouse
    from dockyard.simulate import feedback as feedback_module
    from dockyard.simulate.feedback import Push

    plan = json.loads(sys.stdin.readline())
    spec = plan["spec"]
    built: list[tuple[str, str, str]] = []
    acked: set[tuple[str, str, str]] = set()
    original = feedback_module.build_push

    def recording_build_push(ws: Any, order: Any, code: str) -> Push | None:
        push = original(ws, order, code)
        if push is None:
            return None
        key = (ws.spec.name, order.order_no, code)
        built.append(key)
        check = push.acked

        def seen_acked(status: int, body: bytes) -> bool:
            ok = check(status, body)
            if ok:
                acked.add(key)
            return ok

        return push._replace(acked=seen_acked)

    feedback_module.build_push = recording_build_push  # Pusher.lifecycle looks it up at each step

    class RecordingSimulator(Simulator):
        def make_app(self) -> web.Application:
            app = super().make_app()

            async def pushes(request: web.Request) -> web.Response:
                return web.Response(body=orjson.dumps({"built": built, "acked": sorted(acked)}),
                                    content_type="application/json")

            app.router.add_get("/_test/pushes", pushes)
            return app

    async def main() -> None:
        sim = RecordingSimulator(
            [SimWarehouse(w["name"], w["kind"], w["secret"], w["callback_base"], Faults(**w["faults"]), w["context"])
             for w in spec["warehouses"]],
            feedback=Feedback(**plan["feedback"]), upstream_secret=spec["upstream_secret"],
            upstream_faults=Faults(**spec["upstream_faults"]), seed=int(plan.get("seed", 1)))
        base = await sim.start(str(spec.get("host", "127.0.0.1")), 0)
        sys.stdout.write(base + "\n")
        sys.stdout.flush()
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # EOF: the parent is done
        await sim.stop()

    asyncio.run(main())


# -- the service child --------------------------------------------------------------------------
class ServiceProcess:
    """`dockyard serve --config …` in a child process, always on the same port and store.

    For the multi-node tests: `host` is the address it listens on (`--host`), `prefix` what runs
    it (`ip netns exec NS`: the node's own network namespace), `env` what it adds to the
    environment (e.g. PGAPPNAME, which names the node's PostgreSQL sessions)."""

    def __init__(self, config: Path, port: int, log: Path, *, host: str | None = None,
                 prefix: Sequence[str] = (), env: Mapping[str, str] | None = None) -> None:
        self.config = config
        self.port = port
        self.log = log
        self.host = host
        self.prefix = list(prefix)
        self.env = dict(env or {})
        self.url = f"http://{host or '127.0.0.1'}:{port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.kills = 0
        self.recovered: list[int] = []  # in-flight jobs recovered at each start
        self.start_seconds: list[float] = []  # from exec to "serving" at each start

    async def start(self, timeout: float = 30.0) -> None:
        assert self.process is None
        offset = self.log.stat().st_size if self.log.exists() else 0
        command = [*self.prefix, sys.executable, "-m", "dockyard.cli", "serve", "--config", str(self.config),
                   "--port", str(self.port)] + (["--host", self.host] if self.host else [])
        began = time.monotonic()
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=self.config.parent,
                                            env={**os.environ, **self.env} if self.env else None,
                                            preexec_fn=_die_with_parent)
        self.starts += 1
        deadline = time.monotonic() + timeout
        while True:
            text = self.log.read_bytes()[offset:].decode("utf-8", errors="replace")
            if "dockyard serving on" in text:
                line = next(x for x in text.splitlines() if "dockyard serving on" in x)
                if line.endswith(" workers)"):  # `workers: N`: each worker says when it is ready
                    ready = re.findall(r" ready; (\d+) in-flight", text)
                    if len(ready) == int(line.rsplit("; ", 1)[1].split(" ", 1)[0]):
                        self.recovered.append(sum(int(n) for n in ready))
                        self.start_seconds.append(time.monotonic() - began)
                        return
                else:
                    self.recovered.append(int(line.split("; ", 1)[1].split(" ", 1)[0]))
                    self.start_seconds.append(time.monotonic() - began)
                    return
            if self.process.poll() is not None or time.monotonic() > deadline:
                if self.process.poll() is None:
                    self.process.kill()
                self._reap()
                raise RuntimeError(f"dockyard serve did not start:\n{self.log_text()}")
            await asyncio.sleep(0.02)

    def kill(self) -> None:
        """SIGKILL: no cleanup of any kind in the service."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.kills += 1
        self._reap()

    def stop(self) -> None:
        """SIGTERM: the service's own clean stop."""
        if self.process is None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(40)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self._reap()

    def _reap(self) -> None:
        if self.process is not None:
            self.process.wait()
            self.process = None

    def log_text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")[-6000:] if self.log.exists() else ""

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL it when the test process dies, however that happens, so
    that no service outlives a killed test run."""
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


# -- one run ------------------------------------------------------------------------------------
@dataclass
class Run:
    """A DemoPlan with its simulator and its service, both in child processes."""

    workdir: Path
    store: str | None = None
    faults: Mapping[str, Mapping[str, float]] | None = None
    feedback: dict[str, Any] = field(default_factory=dict)
    timeout: float = 5.0
    retry: dict[str, Any] | None = None
    workers: int = 1
    sim: SimChild | None = None
    service: ServiceProcess | None = None

    def __post_init__(self) -> None:
        from dockyard.demo import DemoPlan, build_demo_bundle, free_port

        self.plan = DemoPlan(self.workdir, MAPPINGS, store=self.store, timeout=self.timeout, workers=self.workers)
        if self.retry is not None:
            self.plan.retry = self.retry
        build_demo_bundle(MAPPINGS, self.plan.bundle)
        self.port = free_port()

    async def start(self) -> None:
        from dockyard.demo import Harness

        self.sim = SimChild(self.plan.sim_spec(f"http://127.0.0.1:{self.port}", self.faults), self.feedback)
        self.plan.sim_base = self.sim.base
        config = self.plan.write(self.port)
        self.service = ServiceProcess(config, self.port, self.workdir / "service.log")
        await self.service.start()
        self.harness = Harness(self.service.url, self.sim.base)

    def close(self) -> None:
        if self.service is not None:
            self.service.stop()
        if self.sim is not None:
            self.sim.stop()

    async def stats(self) -> dict[str, Any]:
        """{"service": GET /stats of the service, "sim": GET /_sim/stats of the simulator}."""
        stats: dict[str, Any] = await self.harness.stats()
        return stats

    async def wait_settled(self, accepted: int, timeout: float) -> None:
        """Until every accepted order is accounted for, the outbox is empty and no callback is
        pending, in two polls in a row with the same number of events (the service's and the
        simulator's counters are read one after the other, so one poll could fall between a
        callback's ack and its forward job)."""
        deadline = time.monotonic() + timeout
        last: tuple[int, int] | None = None
        while True:
            stats = await self.stats()
            service, sim = stats["service"], stats["sim"]
            by = service["orders_by_delivery"]
            accounted = sum(by.get(k, 0) for k in ("delivered", "dlq", "in_doubt", "cancelled"))
            pushed = sum(w["callbacks"]["pushed"] for w in sim["warehouses"].values())
            quiet = (accounted >= accepted and service["outbox_depth"] == 0
                     and int(sim.get("pending_lifecycles", 0)) == 0)
            now = (int(service["events"]), pushed)
            if quiet and now == last:
                return
            last = now if quiet else None
            if time.monotonic() > deadline:
                raise AssertionError(f"not settled after {timeout}s: accounted {accounted}/{accepted}, outbox "
                                     f"{service['outbox_depth']}, pending callbacks {sim.get('pending_lifecycles')}; "
                                     f"jobs {service['jobs']}; {self._stuck()}")
            await asyncio.sleep(0.3)

    def _stuck(self) -> str:
        """What a run that does not settle looks like in the store: the shared limits, and when the
        waiting jobs are due (for the failure message); every service process also writes where its
        tasks wait to its log (SIGUSR2)."""
        from dockyard.service.db import Database

        for node in getattr(self, "nodes", None) or [self.service]:
            process = getattr(node, "process", None)
            if process is not None and process.poll() is None:
                with contextlib.suppress(OSError):
                    os.kill(process.pid, signal.SIGUSR2)

        try:
            db = Database(_store_url(self.plan.config_path), readers=1, register=False)
        except Exception as exc:
            return f"(store not readable: {exc})"
        try:
            def read(c: Any) -> str:
                limits = c.execute("SELECT warehouse, paused_until - ?, opened_until - ?, probe_owner, "
                                   "probe_until - ? FROM dy_limits", (c.now, c.now, c.now))
                due = c.execute("SELECT warehouse, state, COUNT(*), MIN(next_at) - ?, MAX(next_at) - ? FROM dy_jobs "
                                "WHERE state NOT IN ('done', 'dead', 'cancelled') GROUP BY warehouse, state",
                                (c.now, c.now))
                nodes = c.execute("SELECT owner, ? - heartbeat_at FROM dy_nodes", (c.now,))
                recent = c.execute("SELECT warehouse, step, COUNT(*), MIN(at) - ?, MAX(at) - ? FROM dy_journal "
                                   "WHERE at > ? GROUP BY warehouse, step", (c.now, c.now, c.now - 30_000_000))
                return (f"limits (µs from now) {limits}; open jobs (state, n, due from now) {due}; nodes {nodes}; "
                        f"journal of the last 30 s {recent}")
            return db.read_sync(read)
        except Exception as exc:
            return f"(store not readable: {exc})"
        finally:
            db.close()

    async def outcome(self) -> Outcome:
        """Everything the checks need, read after the run settled; stops the service cleanly
        first so the store is read at rest."""
        assert self.sim is not None
        base = self.sim.base
        async with aiohttp.ClientSession() as session:
            async def get(path: str) -> Any:
                async with session.get(f"{base}{path}") as resp:
                    resp.raise_for_status()
                    return await resp.json(loads=orjson.loads)

            sim_stats = await get("/_sim/stats")
            received = {name: await get(f"/_sim/received/{name}") for name in self.plan.warehouses}
            pushes = await get("/_test/pushes")
            upstream = await get("/_sim/upstream/events")
        self.stop_services()
        return Outcome.read(self.plan.config_path, sim_stats, received, pushes, upstream)

    def stop_services(self) -> None:
        """Stop the service (every node, in a cluster) cleanly, so that the store is read at rest."""
        assert self.service is not None
        self.service.stop()


def _store_url(config: Path) -> str:
    data = yaml.safe_load(config.read_text(encoding="utf-8"))
    return str(data["store"])


@dataclass
class Outcome:
    orders: dict[str, tuple[str, str]]  # order_no -> (warehouse, delivery)
    create_jobs: dict[str, tuple[str, str | None]]  # order_no -> (state, reason) of its create job
    open_jobs: list[tuple[int, str, str, str]]  # (id, lane, state, order_no) still ready/sending
    doubted: set[str]  # orders marked in doubt at some point (journal, IN_DOUBT_STEPS)
    resolved: dict[str, int]  # outcome of 'resolved' (query) journal rows -> count
    retries: int
    events: set[tuple[str, str, str]]  # (service warehouse, order_no, raw_status) of dy_events
    event_documents: list[tuple[str, str, str, str]]  # (doc warehouse, order_no, raw_status, source)
    sim: dict[str, Any]
    received: dict[str, dict[str, int]]
    pushes_built: list[tuple[str, str, str]]
    pushes_acked: set[tuple[str, str, str]]
    upstream: list[dict[str, Any]]

    @classmethod
    def read(cls, config: Path, sim: dict[str, Any], received: dict[str, dict[str, int]], pushes: dict[str, Any],
             upstream: list[dict[str, Any]]) -> Outcome:
        from dockyard.service.db import Database

        db = Database(_store_url(config), readers=1)
        try:
            def read(conn: Any) -> dict[str, Any]:
                return {
                    "orders": conn.execute("SELECT order_no, warehouse, delivery FROM dy_orders"),
                    "creates": conn.execute("SELECT order_no, state, reason FROM dy_jobs "
                                            "WHERE lane = 'wh' AND kind = 'create'"),
                    "open": conn.execute("SELECT id, lane, state, order_no FROM dy_jobs "
                                         "WHERE state IN ('ready', 'sending')"),
                    "doubted": conn.execute("SELECT DISTINCT order_no FROM dy_journal WHERE step IN (?, ?) "
                                            "OR (step = ? AND outcome = 'in_doubt')", IN_DOUBT_STEPS),
                    "resolved": conn.execute("SELECT outcome, COUNT(*) FROM dy_journal WHERE step = 'resolved' "
                                             "GROUP BY outcome"),
                    "retries": conn.execute("SELECT COALESCE(SUM(attempts - 1), 0) FROM dy_jobs "
                                            "WHERE lane = 'wh' AND attempts > 1"),
                    "events": conn.execute("SELECT warehouse, order_no, document FROM dy_events"),
                }

            rows = db.read_sync(read)
        finally:
            db.close()
        events: set[tuple[str, str, str]] = set()
        documents: list[tuple[str, str, str, str]] = []
        for warehouse, order_no, text in rows["events"]:
            doc = json.loads(text)
            events.add((warehouse, order_no, str(doc.get("raw_status"))))
            documents.append(_doc_key(doc))
        return cls(
            orders={r[0]: (r[1], r[2]) for r in rows["orders"]},
            create_jobs={r[0]: (r[1], r[2]) for r in rows["creates"]},
            open_jobs=[(int(r[0]), r[1], r[2], r[3]) for r in rows["open"]],
            doubted={r[0] for r in rows["doubted"] if r[0]},
            resolved={r[0]: int(r[1]) for r in rows["resolved"]},
            retries=int(rows["retries"][0][0]),
            events=events, event_documents=documents, sim=sim, received=received,
            pushes_built=[(str(w), str(o), str(c)) for w, o, c in pushes["built"]],
            pushes_acked={(str(w), str(o), str(c)) for w, o, c in pushes["acked"]},
            upstream=upstream)

    # -- derived numbers -------------------------------------------------------------------
    def by_delivery(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for _, delivery in self.orders.values():
            out[delivery] = out.get(delivery, 0) + 1
        return out

    def twice(self, warehouse: str) -> set[str]:
        return {o for o, n in self.received.get(warehouse, {}).items() if n > 1}

    def held(self) -> set[str]:
        return {o for o, (_, d) in self.orders.items() if d == "in_doubt"}

    def held_by(self) -> dict[str, int]:
        """warehouse -> orders held in doubt there (every warehouse of the run, zeros included)."""
        out = dict.fromkeys(self.received, 0)
        for order_no in self.held():
            warehouse = self.orders[order_no][0]
            out[warehouse] = out.get(warehouse, 0) + 1
        return out

    def check_held_only_where_unresolvable(self, resolves: Mapping[str, str | None]) -> None:
        """Held in doubt only at a warehouse that has no way to be asked: `resolves` says, per
        warehouse, how its in-doubt work settles itself (a query flow, a resend answered by a
        recognisable duplicate) or None where it cannot."""
        held = self.held_by()
        wrong = {w: n for w, n in held.items() if n and resolves.get(w) is not None}
        examples = {w: sorted(o for o in self.held() if self.orders[o][0] == w)[:3] for w in wrong}
        reasons = {w: self.create_jobs.get(examples[w][0], ("", None))[1] for w in wrong if examples[w]}
        assert not wrong, (f"orders held for a person at warehouses that can be asked: {wrong} "
                           f"(how each resolves: { {w: resolves.get(w) for w in wrong} }); e.g. {examples}; "
                           f"reasons e.g. {reasons}")

    def check_no_duplicates(self, rules: Mapping[str, str]) -> None:
        """A warehouse whose duplicate rule is `skip` (no dedupe of its own we may rely on) got no
        order twice, whether or not the service marked it in doubt."""
        twice = {w: sorted(self.twice(w)) for w, rule in rules.items() if rule == "skip"}
        twice = {w: orders for w, orders in twice.items() if orders}
        assert not twice, ("orders sent twice to warehouses without dedupe: "
                           f"{ {w: len(o) for w, o in twice.items()} }, e.g. { {w: o[:3] for w, o in twice.items()} }")

    # -- the shared checks -----------------------------------------------------------------
    def check_orders(self, accepted: Sequence[str], rules: Mapping[str, str]) -> None:
        """Nothing lost: every accepted order is delivered (and the warehouse has it), in the
        DLQ with a reason, or held in doubt with a reason; no work is left in the outbox; an
        order received twice by a warehouse whose rule is `skip` was marked in doubt."""
        missing = [o for o in accepted if o not in self.orders]
        assert not missing, f"{len(missing)} accepted orders are not in the store, e.g. {missing[:5]}"
        assert not self.open_jobs, f"jobs left in the outbox: {self.open_jobs[:10]}"
        problems: list[str] = []
        for order_no in accepted:
            warehouse, delivery = self.orders[order_no]
            state, reason = self.create_jobs.get(order_no, ("(no create job)", None))
            if delivery == "delivered":
                if state != "done":
                    problems.append(f"{order_no}: delivered but its create job is {state}")
                if self.received.get(warehouse, {}).get(order_no, 0) < 1:
                    problems.append(f"{order_no}: delivered, but {warehouse} never received it")
            elif delivery == "dlq":
                if state != "dead" or not reason:
                    problems.append(f"{order_no}: in the DLQ but its create job is {state} with reason {reason!r}")
            elif delivery == "in_doubt":
                if state != "held" or not reason:
                    problems.append(f"{order_no}: in doubt but its create job is {state} with reason {reason!r}")
                if order_no not in self.doubted:
                    problems.append(f"{order_no}: held in doubt without an in-doubt journal entry")
            else:
                problems.append(f"{order_no}: delivery is {delivery!r} (create job {state}: {reason})")
        assert not problems, f"{len(problems)} orders not accounted for:\n  " + "\n  ".join(problems[:20])
        for warehouse, rule in rules.items():
            if rule != "skip":
                continue
            unexplained = sorted(self.twice(warehouse) - self.doubted)
            assert not unexplained, (f"{warehouse} (rule skip) received {len(unexplained)} orders twice that the "
                                     f"service never marked in doubt, e.g. {unexplained[:5]}")

    def check_feedback(self) -> None:
        """No feedback event lost: every callback a warehouse saw acknowledged is recorded, and the
        upstream webhook got exactly the recorded events."""
        recorded = {(w, o, _RAW_STATUS.get((w, c), c)) for w, o, c in self.pushes_acked}
        lost = sorted(recorded - self.events)
        assert not lost, f"{len(lost)} acknowledged callbacks are not in dy_events, e.g. {lost[:5]}"
        upstream = {_doc_key(e) for e in self.upstream}
        recorded_docs = set(self.event_documents)
        assert len(recorded_docs) == len(self.event_documents)
        assert upstream == recorded_docs, (
            f"upstream got {len(upstream)} distinct events, the store holds {len(recorded_docs)}: "
            f"{len(recorded_docs - upstream)} never forwarded (e.g. {sorted(recorded_docs - upstream)[:3]}), "
            f"{len(upstream - recorded_docs)} unknown")
        assert self.sim["upstream"]["unique_events"] == len(self.event_documents)


def _doc_key(doc: Mapping[str, Any]) -> tuple[str, str, str, str]:
    return (str(doc.get("warehouse")), str(doc.get("order_no")), str(doc.get("raw_status")), str(doc.get("source")))


def run_async(fn: Callable[[], Any]) -> Any:
    """asyncio.run with the default loop (the test process does not install uvloop)."""
    return asyncio.run(fn())


if __name__ == "__main__":
    _sim_main()
