"""Kill the service with SIGKILL at any moment, then restart it (the issue's test, for real).

`dockyard serve` runs in a child process on SQLite (and on PostgreSQL, a database of the test's
own); the simulated warehouses run in another, pushing their status callbacks. Thousands of
orders are sent through POST /orders/batch by the demo's Harness, which sends a batch again while
the service is down. Meanwhile the service is killed with SIGKILL three times at moments drawn
from a fixed seed — twice while orders are still coming in, once while they are being delivered
and their feedback pushed — and restarted each time on the same port and store.

Then, counting at the simulated warehouses:
- every order accepted before a kill is delivered, in the dead-letter queue with a reason, or
  held in doubt with a reason; nothing is left in the outbox;
- a warehouse whose duplicate rule is `skip` (no dedupe of its own that we may rely on) received
  an order twice only if the service marked that order in doubt; the in-doubt count is printed;
- no feedback event is lost: every callback a warehouse saw acknowledged is in the store, and the
  upstream webhook received exactly the recorded events. A callback pushed while the service is
  down fails and is retried by the warehouse (max_push_attempts is raised so that the retries
  outlast a restart); one the warehouse gave up on was never acknowledged, so it is not "lost".
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e import Run, create_rules, fresh_postgres_database, run_async

from dockyard.sample_orders import generate

SEED = 20240611
ORDERS = 3000
CHUNK = 100  # orders per harness.send call; a short pause between calls spreads ingest over seconds
FEEDBACK = {"step_delay": 0.05, "max_push_attempts": 60, "retry_delay": 0.05, "max_retry_delay": 0.5,
            "push_timeout": 5.0}


@pytest.fixture(params=["sqlite", "sqlite-2-workers", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param.startswith("sqlite"):
        yield f"sqlite:///{tmp_path / 'state.db'}"
        return
    with fresh_postgres_database() as url:
        yield url


async def _crash_run(run: Run, rng: random.Random) -> tuple[list[str], float]:
    await run.start()
    assert run.service is not None
    service = run.service
    orders = generate(ORDERS, SEED)
    loop = asyncio.get_running_loop()

    async def send() -> list[str]:
        accepted: list[str] = []
        for i in range(0, len(orders), CHUNK):
            result = await run.harness.send(orders[i:i + CHUNK], batch=50, parallel=2)
            accepted += result["accepted"]
            await asyncio.sleep(0.05)
        return accepted

    async def crash(at: float) -> None:
        await asyncio.sleep(max(0.0, at - loop.time()))
        service.kill()
        await asyncio.sleep(rng.uniform(0.0, 0.4))  # down for a moment: the harness and the pushes retry
        await service.start()

    started = loop.time()
    sender = asyncio.create_task(send())
    try:
        await crash(started + rng.uniform(0.3, 1.2))  # while orders come in
        await crash(loop.time() + rng.uniform(0.4, 1.2))  # again, usually still during ingest
        accepted = await sender
    finally:
        if not sender.done():
            sender.cancel()
    await crash(loop.time() + rng.uniform(0.05, 0.6))  # during delivery and feedback
    t0 = time.monotonic()
    await run.wait_settled(len(set(accepted)), timeout=30)
    return accepted, time.monotonic() - t0


def test_sigkill_at_random_moments_loses_nothing(store_url: str, tmp_path: Path,
                                                 request: pytest.FixtureRequest) -> None:
    rules = create_rules()
    assert {rules[w] for w in ("sf", "qimen-std", "jd")} == {"query"} and rules["cainiao"] == "skip"
    rng = random.Random(SEED)
    # `workers: 2`: the SIGKILL hits the supervisor, and its workers die with it (PR_SET_PDEATHSIG)
    workers = 2 if "2-workers" in request.node.callspec.params["store_url"] else 1
    run = Run(tmp_path / "run", store=store_url, feedback=FEEDBACK, workers=workers)
    try:
        accepted, settle_seconds = run_async(lambda: _crash_run(run, rng))
        outcome = run_async(run.outcome)
        service = run.service
    finally:
        run.close()
    assert service is not None
    unique = sorted(set(accepted))
    assert len(unique) == ORDERS, f"the harness got {len(unique)} of {ORDERS} orders accepted"
    assert service.kills == 3 and service.starts == 4

    outcome.check_orders(unique, rules)
    outcome.check_feedback()

    by = outcome.by_delivery()
    twice = {w: len(outcome.twice(w)) for w in run.plan.warehouses}
    built, acked = len(outcome.pushes_built), len(outcome.pushes_acked)
    unacked_recorded = len({(w, o, c) for w, o, c in outcome.pushes_built} - outcome.pushes_acked)
    print(f"\n[crash {store_url.split(':', 1)[0]}, {workers} worker(s)] orders {len(unique)}, kills {service.kills}, "
          f"recovered in-flight jobs {service.recovered[1:]}, delivered {by.get('delivered', 0)}, "
          f"dlq {by.get('dlq', 0)}, in doubt (held) {by.get('in_doubt', 0)}, marked in doubt at some point "
          f"{len(outcome.doubted)}, received twice {twice}, callbacks built {built} acked {acked} "
          f"(given up {unacked_recorded}), events recorded {len(outcome.events)}, upstream unique "
          f"{outcome.sim['upstream']['unique_events']}, settled {settle_seconds:.1f}s after the last order")
