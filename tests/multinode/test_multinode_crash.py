"""The multi-node crash test (issue 10): three `dockyard serve` nodes, each in a network namespace
of its own with its own address, on one PostgreSQL database; orders with feedback (10,000 in the
issue's run) spread over the nodes; the warehouses push their callbacks through one load balancer
to any node.

Faults, one kind per scenario, at moments drawn from a fixed seed:
- `sigkill`: a random node is killed with SIGKILL and restarted, twice while orders come in, once
  right after the last order and once in the middle of the drain (delivery and feedback);
- `terminate-backend`: `pg_terminate_backend` on every session of one node while orders come in,
  and of another node in the middle of the drain;
- `postgres-restart`: the PostgreSQL server is restarted in the middle of the drain; /healthz of
  every node is watched while it restarts.

Each ends, counted at the simulated warehouses and in the store, with:
- 0 lost: every accepted order delivered, in the DLQ with a reason, or held with a reason;
  nothing left in the outbox;
- 0 orders sent twice to a warehouse without dedupe (duplicate rule `skip`);
- every callback a warehouse saw acknowledged recorded, and forwarded upstream exactly once;
- held in doubt only where the integration has no way to ask (resolution.py);
- after a dropped connection or a restart, each node back to work within BACK_WITHIN seconds:
  ready on /healthz and taking a new order;
- /healthz telling live from ready: live all along (never 3 probes in a row unanswered, as a
  liveness check counts), not ready while the server is down, ready again after
  (`postgres-restart`; test_readiness.py covers it without a restart).

The issue asks for 10,000 orders: DOCKYARD_MULTINODE_ORDERS=10000. The default (2,000) keeps the
three scenarios within CI's time; the properties checked are the same. The `postgres-restart`
scenario restarts the machine's shared server: it runs under CI, and locally only with
DOCKYARD_TEST_PG_RESTART=1.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cluster import LIVENESS_MISSES, Cluster, Health, dead_spell, probe_health
from e2e import Outcome, create_rules, run_async
from netns import Network
from resolution import IN_DOUBT_RESOLUTION

from dockyard.sample_orders import generate

SEED = 20251111
# The run is 10,000 orders (DOCKYARD_MULTINODE_ORDERS=10000). The default is smaller so that
# the three scenarios fit CI's time: with the code of this commit, on a 2-core machine shared with
# other test runs, one 10,000-order scenario took 200-380 s.
ORDERS = int(os.environ.get("DOCKYARD_MULTINODE_ORDERS", "2000"))
PROBES = 100  # spare orders for the back-to-work probes
NODES = 3
BACK_WITHIN = 10.0  # seconds for a node to be back to work after a dropped connection or a restart
FEEDBACK = {"step_delay": 0.05, "max_push_attempts": 60, "retry_delay": 0.05, "max_retry_delay": 0.5,
            "push_timeout": 5.0}
SETTLE = 300.0  # bound on the drain after the last order, and on each wait within it


@dataclass
class Log:
    """What happened, for the assertions after the run and the line printed at the end."""

    events: list[str] = field(default_factory=list)
    back: list[dict[int, float]] = field(default_factory=list)
    restarted_in: list[float] = field(default_factory=list)
    health_at_start: dict[int, Health] = field(default_factory=dict)
    during_restart: dict[int, list[Health]] = field(default_factory=dict)
    terminated: list[int] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # failed properties, asserted after the run
    probes: list[dict[str, Any]] = field(default_factory=list)  # spare orders for back-to-work probes
    settled: bool = True

    async def back_to_work(self, cluster: Cluster, probes: list[dict[str, Any]], t0: float, after: str,
                           nodes: list[int] | None = None) -> None:
        back, missing = await cluster.back_to_work(probes, BACK_WITHIN, nodes)
        self.back.append(back)
        self.note(t0, f"back to work after {after}: {[f'node {i} {s:.2f}s' for i, s in sorted(back.items())]}")
        for i, last in missing.items():
            self.problems.append(f"node {i} not back to work within {BACK_WITHIN}s after {after}: {last}")

    async def kill(self, cluster: Cluster, index: int, down: float, t0: float, when: str) -> None:
        """SIGKILL node `index` and start it again. A node that fails to start is a finding; it is
        started once more (as a supervisor would) so that the run can go on to the other checks."""
        self.note(t0, f"SIGKILL node {index} ({when})")
        try:
            self.restarted_in.append(await cluster.kill(index, down))
        except RuntimeError as exc:
            why = [line for line in str(exc).splitlines() if line.startswith(("error:", "DETAIL:", "Process "))]
            self.problems.append(f"node {index} did not start again after a SIGKILL ({when}): "
                                 + (" ".join(why) or str(exc)[-500:]))
            self.note(t0, f"node {index} failed to start; starting it once more")
            await cluster.nodes[index].start(timeout=60)
        await self.back_to_work(cluster, self.probes, t0, "a SIGKILL and restart", [index])

    def note(self, t0: float, text: str) -> None:
        self.events.append(f"{time.monotonic() - t0:6.1f}s {text}")


async def _watch_health(cluster: Cluster, into: dict[int, list[Health]], stop: asyncio.Event) -> None:
    async with aiohttp.ClientSession() as session:
        while not stop.is_set():
            probes = await asyncio.gather(*(probe_health(session, n.url) for n in cluster.nodes))
            for i, h in enumerate(probes):
                into.setdefault(i, []).append(h)
            await asyncio.sleep(0.1)


async def _scenario(cluster: Cluster, scenario: str, rng: random.Random, log: Log) -> tuple[list[str], float]:
    orders = generate(ORDERS + PROBES, SEED)
    probes = log.probes = orders[ORDERS:]
    orders = orders[:ORDERS]
    await cluster.start()
    async with aiohttp.ClientSession() as session:
        for i, node in enumerate(cluster.nodes):
            log.health_at_start[i] = await probe_health(session, node.url)
    t0 = time.monotonic()
    sender = asyncio.create_task(cluster.send(orders, batch=50, parallel=3, pause=0.02))
    try:
        if scenario == "sigkill":
            for _ in range(2):
                await asyncio.sleep(rng.uniform(0.3, 1.2))
                await log.kill(cluster, rng.randrange(NODES), rng.uniform(0.0, 0.4), t0, "ingest")
        elif scenario == "terminate-backend":
            await asyncio.sleep(rng.uniform(0.3, 1.2))
            victim = rng.randrange(NODES)
            log.terminated.append(await cluster.terminate(victim))
            log.note(t0, f"pg_terminate_backend on node {victim}: {log.terminated[-1]} sessions (ingest)")
            await log.back_to_work(cluster, probes, t0, "pg_terminate_backend (ingest)")
        accepted = await sender
    finally:
        if not sender.done():
            sender.cancel()
    log.note(t0, f"last order accepted ({len(set(accepted))})")
    total = len(set(accepted))
    if scenario == "sigkill":
        await asyncio.sleep(rng.uniform(0.05, 0.6))
        await log.kill(cluster, rng.randrange(NODES), rng.uniform(0.0, 0.4), t0, "right after the last order")
        await cluster.until_delivered(int(total * rng.uniform(0.3, 0.7)), timeout=SETTLE)
        await log.kill(cluster, rng.randrange(NODES), rng.uniform(0.5, 2.0), t0, "drain")
    elif scenario == "terminate-backend":
        await cluster.until_delivered(int(total * rng.uniform(0.3, 0.7)), timeout=SETTLE)
        victim = rng.randrange(NODES)
        log.terminated.append(await cluster.terminate(victim))
        log.note(t0, f"pg_terminate_backend on node {victim}: {log.terminated[-1]} sessions (drain)")
        await log.back_to_work(cluster, probes, t0, "pg_terminate_backend (drain)")
    elif scenario == "postgres-restart":
        await cluster.until_delivered(int(total * rng.uniform(0.2, 0.6)), timeout=SETTLE)
        stop = asyncio.Event()
        watcher = asyncio.create_task(_watch_health(cluster, log.during_restart, stop))
        log.note(t0, "PostgreSQL restart")
        took = await cluster.restart_postgres()
        stop.set()
        await watcher
        log.note(t0, f"PostgreSQL back after {took:.1f}s")
        await log.back_to_work(cluster, probes, t0, "the PostgreSQL restart")
    log.note(t0, "drain")
    accepted += cluster.probed
    settle0 = time.monotonic()
    # A node that never came back cannot be waited for as long (the test fails on it anyway).
    stuck = any("not back to work" in p for p in log.problems)
    try:
        await cluster.wait_settled(len(set(accepted)), timeout=60.0 if stuck else SETTLE)
    except AssertionError as exc:
        log.settled = False
        log.problems.append(str(exc))
    log.note(t0, "settled" if log.settled else "NOT settled")
    return accepted, time.monotonic() - settle0


def _restart_allowed() -> bool:
    return "CI" in os.environ or os.environ.get("DOCKYARD_TEST_PG_RESTART") == "1"


@pytest.mark.parametrize("scenario", ["sigkill", "terminate-backend", "postgres-restart"])
def test_three_nodes_on_one_postgres_lose_nothing(scenario: str, tmp_path: Path,
                                                  network: Callable[[int], Network], pg_store: str) -> None:
    if scenario == "postgres-restart" and not _restart_allowed():
        pytest.skip("restarts the machine's shared PostgreSQL server: runs under CI, locally only with "
                    "DOCKYARD_TEST_PG_RESTART=1")
    rules = create_rules()
    rng = random.Random(f"{SEED}-{scenario}")
    net = network(NODES)
    cluster = Cluster(tmp_path / "run", store=pg_store, feedback=FEEDBACK, network=net)
    log = Log()
    started = time.monotonic()
    accepted: list[str] = []
    settle_seconds = 0.0
    outcome: Outcome | None = None
    try:
        try:
            accepted, settle_seconds = run_async(lambda: _scenario(cluster, scenario, rng, log))
        except (AssertionError, RuntimeError) as exc:  # stuck, or a node would not start: report the rest too
            log.problems.append(str(exc)[-3000:])
            log.settled = False
        if log.settled:
            outcome = run_async(cluster.outcome)
    finally:
        cluster.close()
    problems = list(log.problems)

    def check(fn: Callable[[], None]) -> None:
        try:
            fn()
        except AssertionError as exc:
            problems.append(str(exc))

    if outcome is not None:
        by = outcome.by_delivery()
        print(f"\n[{scenario}, {NODES} nodes, PostgreSQL] orders {ORDERS} (+{len(cluster.probed)} probes), "
              f"delivered {by.get('delivered', 0)}, dlq {by.get('dlq', 0)}, held {outcome.held_by()}, "
              f"marked in doubt {len(outcome.doubted)}, resolved {outcome.resolved}, "
              f"events {len(outcome.events)}, node restarts {[round(s, 1) for s in log.restarted_in]}, "
              f"back to work {[{i: round(s, 2) for i, s in b.items()} for b in log.back]}, "
              f"sends {dict(cluster.answers)}, drain {settle_seconds:.1f}s, "
              f"total {time.monotonic() - started:.1f}s")
        unique = sorted(set(accepted))
        if len(set(accepted) - set(cluster.probed)) != ORDERS:
            problems.append(f"{len(set(accepted) - set(cluster.probed))} of {ORDERS} orders accepted")
        check(lambda: outcome.check_orders(unique, rules))
        check(lambda: outcome.check_no_duplicates(rules))
        check(outcome.check_feedback)
        check(lambda: outcome.check_held_only_where_unresolvable(IN_DOUBT_RESOLUTION))
    for i, h in log.health_at_start.items():
        if h.ready is not True:
            problems.append(f"node {i} not ready on /healthz after it started: {h.status} {h.body}")
    if scenario == "terminate-backend" and not all(n > 0 for n in log.terminated):
        problems.append(f"a node had no session to terminate: {log.terminated}")
    for i, seen in log.during_restart.items():
        worst = dead_spell(seen)
        if worst >= LIVENESS_MISSES:
            dead = [h for h in seen if not h.live]
            problems.append(f"node {i}: /healthz did not answer {worst} probes in a row while PostgreSQL "
                            f"restarted: {dead[:3]}")
        if seen and not any(h.live and h.ready is False for h in seen):
            problems.append(f"node {i}: /healthz never said not-ready while PostgreSQL was down ({len(seen)} "
                            f"probes, e.g. {seen[len(seen) // 2].status} {seen[len(seen) // 2].body})")
    print(f"\n[{scenario}] timeline:\n  " + "\n  ".join(log.events))
    assert not problems, f"{len(problems)} properties failed:\n- " + "\n- ".join(problems)
