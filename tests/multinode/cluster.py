"""A multi-node deployment for the tests, built from the crash test's pieces (tests/service/e2e.py):

- N nodes, each the real `dockyard serve --config` (one config for all) in a network namespace
  of its own (netns.py), listening on its own address, all on one PostgreSQL database reached
  through the server's unix socket; each node's sessions are named by PGAPPNAME
  (`application_name`), so that the test can find and terminate exactly one node's sessions;
- the simulated warehouses (e2e.py's recording simulator) in the root namespace, bound to the
  bridge's address;
- a TCP load balancer (lb.py) on the bridge: the one callback address the warehouses know,
  spreading their pushes over the nodes and skipping a node that is down;
- a load generator (`send`) that spreads batches of orders over the nodes and takes a batch to
  the next node when one refuses, fails or is down, a bounded number of times.

Faults: `kill` (SIGKILL, then restart), `terminate` (pg_terminate_backend on every session of a
node), `restart_postgres` (pg_ctlcluster … restart: the whole server, used sparingly, it is shared)
and `block_store`/`unblock_store` (the test's own database refuses connections, the server stays
up for everyone else). What the service must do about each is checked by the tests.

The readiness contract the tests hold `/healthz` to is `probe_health` below: one place to adjust.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp
import orjson
from e2e import POSTGRES_URL, Run, ServiceProcess, SimChild
from netns import Network, pdeathsig

HERE = Path(__file__).resolve().parent
PG_SOCKET = os.environ.get("DOCKYARD_TEST_POSTGRES_SOCKET", "/var/run/postgresql")
OK_INGEST = (200, 202, 207)


def socket_url(url: str) -> str:
    """The same database as `url`, through the server's unix socket (PG_SOCKET): reachable from
    any network namespace of this machine."""
    parts = urlsplit(url)
    user = parts.username or "postgres"
    return f"postgresql://{quote(user)}@/{parts.path.lstrip('/')}?host={quote(PG_SOCKET, safe='')}"


# -- /healthz: live and ready -------------------------------------------------------------------
@dataclass(frozen=True)
class Health:
    live: bool  # the process answered /healthz at all (within the probe's timeout)
    ready: bool | None  # True: it says it can work; False: it says it cannot (store unreachable); None: silent
    status: int | None
    body: Any
    seconds: float


async def probe_health(session: aiohttp.ClientSession, url: str, timeout: float = 2.0) -> Health:
    """The contract (issue 10: "/healthz tells live from ready"): GET /healthz always answers while
    the process runs (live), without waiting for the store; the JSON body carries `"ready": true`
    with HTTP 200 when the node can take and deliver orders, and `"ready": false` (HTTP 503) while
    its store is unreachable. A body without `ready` tells neither (None): it passes neither check."""
    t0 = time.monotonic()
    try:
        async with session.get(f"{url}/healthz", timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
            raw = await resp.read()
            status = resp.status
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        return Health(False, None, None, f"{type(exc).__name__}: {exc}", time.monotonic() - t0)
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        body = raw[:200].decode("utf-8", errors="replace")
    said = body.get("ready") if isinstance(body, dict) else None
    ready = True if said is True and status == 200 else False if said is False else None
    return Health(True, ready, status, body, time.monotonic() - t0)


LIVENESS_MISSES = 3  # probes in a row without an answer that make a node dead (as Kubernetes' failureThreshold)


def dead_spell(seen: Sequence[Health]) -> int:
    """The longest run of probes without an answer: a node is dead to a liveness check when this
    reaches LIVENESS_MISSES; one slow answer on a loaded machine is not death."""
    run = worst = 0
    for h in seen:
        run = 0 if h.live else run + 1
        worst = max(worst, run)
    return worst


@dataclass
class Cluster(Run):
    """`Run` (tests/service/e2e.py) with N nodes in network namespaces: `service` is node 0."""

    network: Network | None = None
    nodes: list[ServiceProcess] = field(default_factory=list)
    answers: Counter[tuple[int, str]] = field(default_factory=Counter)  # (node, HTTP status or error) of sends
    probed: list[str] = field(default_factory=list)  # probe orders taken by back_to_work
    lb: subprocess.Popen[str] | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        assert self.network is not None and self.network.hosts, "a Cluster needs a Network that is up"
        self.net = self.network
        self.admin_url = POSTGRES_URL
        self.database = urlsplit(self.plan.store or "").path.lstrip("/")
        self.lb_url = ""

    def app_name(self, index: int) -> str:
        return f"dockyard-{self.net.run_id}-node{index}"

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        from dockyard.demo import Harness

        backends = [f"{h.address}:{self.port}" for h in self.net.hosts]
        self.lb = subprocess.Popen([sys.executable, str(HERE / "lb.py"), self.net.gateway, "0", *backends],
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, preexec_fn=pdeathsig)
        assert self.lb.stdout is not None
        line = self.lb.stdout.readline().split()
        if line[:1] != ["ready"]:
            raise RuntimeError("the load balancer did not start")
        self.lb_url = f"http://{line[1]}"
        self.sim = SimChild(self.plan.sim_spec(self.lb_url, self.faults), self.feedback, host=self.net.gateway)
        self.plan.sim_base = self.sim.base
        # the client and the simulator send from the test network's gateway: let it through the guards
        self.plan.networks = (*self.plan.networks, str(self.net.subnet))
        config = self.plan.write(self.port)
        self.nodes = [ServiceProcess(config, self.port, self.workdir / f"node{h.index}.log", host=h.address,
                                     prefix=h.command([]), env={"PGAPPNAME": self.app_name(h.index)})
                      for h in self.net.hosts]
        await asyncio.gather(*(node.start(timeout=60) for node in self.nodes))
        self.service = self.nodes[0]
        self.harness = Harness(self.nodes[0].url, self.sim.base)

    def stop_services(self) -> None:
        for node in self.nodes:
            node.stop()

    def close(self) -> None:
        self.stop_services()
        if self.sim is not None:
            self.sim.stop()
        if self.lb is not None:
            if self.lb.stdin is not None:
                with contextlib.suppress(OSError):
                    self.lb.stdin.close()
            try:
                self.lb.wait(5)
            except subprocess.TimeoutExpired:
                self.lb.kill()
                self.lb.wait()
            if self.lb.stdout is not None:
                self.lb.stdout.close()
            self.lb = None

    def logs(self) -> str:
        return "\n".join(f"--- node {i} ({n.url}) ---\n{n.log_text()[-2500:]}" for i, n in enumerate(self.nodes))

    async def stats(self) -> dict[str, Any]:
        """/stats of the first node that answers (they share one store) and the simulator's."""
        assert self.sim is not None
        errors = []
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            for attempt in range(40):
                for node in self.nodes:
                    if not node.alive:
                        continue
                    try:
                        async with session.get(f"{node.url}/stats") as resp:
                            if resp.status != 200:
                                errors.append(f"{node.url}: HTTP {resp.status}")
                                continue
                            service = await resp.json(loads=orjson.loads)
                        async with session.get(f"{self.sim.base}/_sim/stats") as resp:
                            sim = await resp.json(loads=orjson.loads)
                        return {"service": service, "sim": sim}
                    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                        errors.append(f"{node.url}: {type(exc).__name__}")
                await asyncio.sleep(min(1.0, 0.1 * (attempt + 1)))
        raise AssertionError(f"no node answered /stats: {errors[-6:]}")

    async def delivered(self) -> int:
        stats = await self.stats()
        return int(stats["service"]["orders_by_delivery"].get("delivered", 0))

    async def until_delivered(self, count: int, timeout: float) -> float:
        """Until `count` orders are delivered; seconds waited. Bounded: fails after `timeout`."""
        t0 = time.monotonic()
        while (done := await self.delivered()) < count:
            if time.monotonic() - t0 > timeout:
                raise AssertionError(f"delivery stalled: {done} of the {count} orders awaited delivered after "
                                     f"{timeout}s\n{self.logs()}")
            await asyncio.sleep(0.2)
        return time.monotonic() - t0

    # -- load ------------------------------------------------------------------------------
    async def send(self, orders: Sequence[dict[str, Any]], *, batch: int = 50, parallel: int = 3,
                   pause: float = 0.0, deadline: float = 180.0) -> list[str]:
        """POST /orders/batch, batches spread over the nodes in turn; a batch a node does not take
        (connection refused or reset, timeout, any status but 200/202/207) goes to the next node
        after a short pause, at most 200 times and within `deadline` seconds. Re-sending is safe:
        a repeated order is answered `duplicate`. Returns the order numbers accepted."""
        chunks = [list(orders[i:i + batch]) for i in range(0, len(orders), batch)]
        queue = list(reversed(list(enumerate(chunks))))
        accepted: list[str] = []
        refused: list[dict[str, Any]] = []
        end = time.monotonic() + deadline
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
            async def worker() -> None:
                while queue:
                    k, chunk = queue.pop()
                    body = orjson.dumps(chunk)
                    for attempt in range(200):
                        index = (k + attempt) % len(self.nodes)
                        node = self.nodes[index]
                        try:
                            async with session.post(f"{node.url}/orders/batch", data=body,
                                                    headers={"Content-Type": "application/json"}) as resp:
                                status = resp.status
                                raw = await resp.read()
                        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                            self.answers[(index, type(exc).__name__)] += 1
                        else:
                            self.answers[(index, str(status))] += 1
                            if status in OK_INGEST:
                                for r in orjson.loads(raw)["results"]:
                                    if r["status"] in ("accepted", "duplicate"):
                                        accepted.append(r["order_no"])
                                    else:
                                        refused.append(r)
                                break
                        if time.monotonic() > end:
                            raise AssertionError(f"orders still not taken after {deadline}s; answers "
                                                 f"{dict(self.answers)}\n{self.logs()}")
                        await asyncio.sleep(min(0.5, 0.02 * (attempt + 1)))
                    else:
                        raise AssertionError(f"no node took a batch in 200 tries; answers {dict(self.answers)}")
                    if pause:
                        await asyncio.sleep(pause)

            await asyncio.gather(*(worker() for _ in range(parallel)))
        assert not refused, f"{len(refused)} orders refused, e.g. {refused[:3]}"
        return accepted

    async def back_to_work(self, probes: list[dict[str, Any]], within: float,
                           nodes: Sequence[int] | None = None) -> tuple[dict[int, float], dict[int, str]]:
        """Whether each node (all, or `nodes`) is back to work within `within` seconds of this call:
        it takes a new order (POST /orders → 202, or 200 for one it already has) and says it is
        ready on /healthz. Returns (seconds per node that was back, what each other node last
        answered on both); probe orders taken are appended to `self.probed`."""
        t0 = time.monotonic()
        which = list(range(len(self.nodes))) if nodes is None else list(nodes)
        back: dict[int, float] = {}
        last: dict[int, dict[str, str]] = {i: {} for i in which}

        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
            async def one(index: int) -> None:
                node = self.nodes[index]
                order = probes.pop()
                took = ready = False
                while time.monotonic() - t0 < within:
                    if not ready:
                        health = await probe_health(session, node.url)
                        ready = health.ready is True
                        last[index]["healthz"] = f"{health.status} {health.body}"
                    if not took:
                        try:
                            async with session.post(f"{node.url}/orders", data=orjson.dumps(order),
                                                    headers={"Content-Type": "application/json"}) as resp:
                                text = (await resp.read())[:300].decode("utf-8", errors="replace")
                                last[index]["POST /orders"] = f"{resp.status} {text}"
                                if resp.status in (200, 202):
                                    took = True
                                    self.probed.append(str(order["order_no"]))
                        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                            last[index]["POST /orders"] = type(exc).__name__
                    if took and ready:
                        back[index] = time.monotonic() - t0
                        return
                    await asyncio.sleep(0.1)

            await asyncio.gather(*(one(i) for i in which))
        missing = {i: "; ".join(f"{k}: {v}" for k, v in last[i].items()) for i in which if i not in back}
        return back, missing

    # -- the store's side ------------------------------------------------------------------
    def _admin(self, sql: Any, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        import psycopg

        with psycopg.connect(self.admin_url, autocommit=True, connect_timeout=10) as conn:
            cur = conn.execute(sql, params)
            return cur.fetchall() if cur.description is not None else []

    def sessions(self, index: int) -> int:
        return int(self._admin("SELECT COUNT(*) FROM pg_stat_activity WHERE datname = %s AND application_name = %s",
                               (self.database, self.app_name(index)))[0][0])

    async def terminate(self, index: int) -> int:
        """pg_terminate_backend on every session node `index` has open; how many there were."""
        rows = await asyncio.to_thread(
            self._admin, "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity "
                         "WHERE datname = %s AND application_name = %s", (self.database, self.app_name(index)))
        return int(rows[0][0])

    async def block_store(self) -> int:
        """The test's database refuses every new connection (ALLOW_CONNECTIONS false, which holds
        for superusers too) and its sessions are terminated: for the nodes the store is
        unreachable, while the server stays up for everyone else. Returns the sessions ended."""
        from psycopg import sql

        def block() -> int:
            self._admin(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false").format(sql.Identifier(self.database)))
            return int(self._admin("SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                   "WHERE datname = %s AND pid <> pg_backend_pid()", (self.database,))[0][0])

        return await asyncio.to_thread(block)

    async def unblock_store(self) -> None:
        from psycopg import sql

        await asyncio.to_thread(self._admin, sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS true")
                                .format(sql.Identifier(self.database)))

    async def restart_postgres(self) -> float:
        """Restart the PostgreSQL server (all of it: shared with every other user of this machine);
        seconds the restart took."""
        versions = sorted(p.name for p in Path("/etc/postgresql").iterdir())
        t0 = time.monotonic()
        done = await asyncio.to_thread(
            subprocess.run, ["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1], "main", "restart"],
            capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, f"pg_ctlcluster restart failed: {done.stdout} {done.stderr}"
        return time.monotonic() - t0

    # -- SIGKILL -------------------------------------------------------------------------------
    async def kill(self, index: int, down: float) -> float:
        """SIGKILL node `index`, leave it down `down` seconds, start it again; seconds it took
        from exec to serving."""
        node = self.nodes[index]
        node.kill()
        await asyncio.sleep(down)
        await node.start(timeout=60)
        return node.start_seconds[-1]
