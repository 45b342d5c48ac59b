"""/healthz tells live from ready, and a node comes back by itself when its store does (issue 10).

Two nodes in network namespaces on one PostgreSQL database. The test's own database is then made
unreachable — it refuses new connections (ALLOW_CONNECTIONS false) and every session on it is
terminated — while the server stays up for every other user of the machine. Meanwhile:
- each node stays live (/healthz answers; never 3 probes in a row unanswered) and says it is not
  ready, for as long as the store is unreachable (see `cluster.probe_health` for the contract);
- an order posted then is refused with 503 within ANSWER_WITHIN seconds, never a 500 and never a
  202 that could not be kept;
then the database takes connections again, and:
- each node is back to work within BACK_WITHIN seconds: ready, and taking new orders;
- every order accepted before, and after, is delivered (or in the DLQ / held with a reason).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from cluster import LIVENESS_MISSES, Cluster, Health, dead_spell, probe_health
from e2e import create_rules, run_async
from netns import Network

from dockyard.sample_orders import generate

SEED = 1010
NODES = 2
BEFORE, AFTER = 300, 300
BACK_WITHIN = 10.0
NOT_READY_WITHIN = 5.0  # seconds after the store became unreachable
ANSWER_WITHIN = 10.0  # seconds a client waits for POST /orders (then it has no answer at all)
FEEDBACK = {"step_delay": 0.05, "max_push_attempts": 60, "retry_delay": 0.05, "max_retry_delay": 0.5}


async def _outage(cluster: Cluster, problems: list[str], notes: list[str]) -> list[str]:
    orders = generate(BEFORE + AFTER + 50, SEED)
    probes = orders[BEFORE + AFTER:]
    await cluster.start()
    accepted = await cluster.send(orders[:BEFORE], batch=50, parallel=2)
    async with aiohttp.ClientSession() as session:
        for i, node in enumerate(cluster.nodes):
            h = await probe_health(session, node.url)
            if h.ready is not True:
                problems.append(f"node {i} not ready before the outage: {h.status} {h.body}")

        ended = await cluster.block_store()
        t0 = time.monotonic()
        notes.append(f"store blocked: {ended} sessions terminated")
        seen: dict[int, list[tuple[float, Health]]] = {i: [] for i in range(NODES)}
        answers: dict[int, list[str]] = {i: [] for i in range(NODES)}
        while time.monotonic() - t0 < NOT_READY_WITHIN + 2.0:  # bounded: 7 s of probes
            for i, node in enumerate(cluster.nodes):
                seen[i].append((time.monotonic() - t0, await probe_health(session, node.url)))
            await asyncio.sleep(0.1)
        async def post(i: int, order: dict[str, Any]) -> None:
            t = time.monotonic()
            try:  # waited for longer than a client would, to say how long the answer took
                async with session.post(f"{cluster.nodes[i].url}/orders", data=orjson.dumps(order),
                                        timeout=aiohttp.ClientTimeout(total=3 * ANSWER_WITHIN)) as resp:
                    text = (await resp.read())[:200].decode(errors="replace")
                    answers[i].append(f"{resp.status} after {time.monotonic() - t:.1f}s: {text}")
                    if resp.status in (200, 202):
                        accepted.append(str(order["order_no"]))  # it said so: then it must be kept
                    elif resp.status == 503 and time.monotonic() - t > ANSWER_WITHIN:
                        answers[i][-1] = "late " + answers[i][-1]
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                answers[i].append(f"{type(exc).__name__} after {time.monotonic() - t:.1f}s")

        await asyncio.gather(*(post(i, probes.pop()) for i in range(NODES)))
        for i in range(NODES):
            worst = dead_spell([h for _, h in seen[i]])
            if worst >= LIVENESS_MISSES:
                dead = [(round(t, 1), h.body) for t, h in seen[i] if not h.live]
                problems.append(f"node {i}: /healthz did not answer {worst} probes in a row while the store was "
                                f"unreachable: {dead[:3]}")
            first = next((t for t, h in seen[i] if h.live and h.ready is False), None)
            if first is None or first > NOT_READY_WITHIN:
                last = seen[i][-1][1]
                problems.append(f"node {i}: /healthz did not say not-ready within {NOT_READY_WITHIN}s of the store "
                                f"becoming unreachable (first at {first}); it said {last.status} {last.body}")
            else:
                flapped = [round(t, 1) for t, h in seen[i] if t > first and h.ready is not False]
                if flapped:
                    problems.append(f"node {i}: /healthz stopped saying not-ready while the store was still "
                                    f"unreachable, at {flapped[:5]}s")
            if not answers[i][0].startswith("503"):
                problems.append(f"node {i}: POST /orders while the store was unreachable answered "
                                f"{answers[i][0]!r}; expected 503 within {ANSWER_WITHIN}s (never a 500, never an "
                                f"acceptance it cannot keep, and soon enough for a client that waits {ANSWER_WITHIN}s)")
        notes.append(f"answers while unreachable: {answers}")

    await cluster.unblock_store()
    back, missing = await cluster.back_to_work(probes, BACK_WITHIN)
    notes.append(f"back to work after the store returned: {back}")
    for i, last_answer in missing.items():
        problems.append(f"node {i} not back to work within {BACK_WITHIN}s after the store returned: {last_answer}")
    if missing:
        return accepted  # the outcome below needs nodes that work
    accepted += await cluster.send(orders[BEFORE:BEFORE + AFTER], batch=50, parallel=2)
    accepted += cluster.probed
    await cluster.wait_settled(len(set(accepted)), timeout=120)
    return accepted


def test_healthz_tells_live_from_ready_and_nodes_come_back(tmp_path: Path, network: Callable[[int], Network],
                                                           pg_store: str) -> None:
    net = network(NODES)
    cluster = Cluster(tmp_path / "run", store=pg_store, feedback=FEEDBACK, network=net)
    problems: list[str] = []
    notes: list[str] = []
    outcome: Any = None
    try:
        accepted = run_async(lambda: _outage(cluster, problems, notes))
        if not any("not back to work" in p for p in problems):
            outcome = run_async(cluster.outcome)
    finally:
        run_async(cluster.unblock_store)  # also when the test failed before it could
        cluster.close()
    print("\n[readiness] " + "\n  ".join(notes))
    if outcome is not None:
        try:
            outcome.check_orders(sorted(set(accepted)), create_rules())
            outcome.check_feedback()
        except AssertionError as exc:
            problems.append(str(exc))
    assert not problems, f"{len(problems)} properties failed:\n- " + "\n- ".join(problems)
