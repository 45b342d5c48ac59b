"""The mixed-fault run (issue 10): orders with feedback (10,000 in the issue's run) against warehouses that answer 20%
of requests with a 5xx (not processed), time out on 5% after processing them and reset the
connection on 5% after processing them — on SQLite (one node, `workers: 2`) and on PostgreSQL
(three nodes in network namespaces on one database).

It must end with:
- 0 lost: every accepted order delivered or in the DLQ with a reason (held with a reason only
  where the integration cannot be asked); nothing left in the outbox;
- **0 orders held** at the integrations that have a query flow or a recognisable duplicate answer
  (resolution.py: the table of how each integration resolves an unknown outcome);
- 0 orders sent twice to a warehouse without dedupe (duplicate rule `skip`);
- every acknowledged callback recorded and forwarded upstream exactly once;
- each fault kind actually injected at every warehouse.

The issue asks for 10,000 orders: DOCKYARD_MIXED_ORDERS=10000. The default (2,000) keeps CI within
its time (with the code of this commit on a shared 2-core machine, 10,000 took 330 s on SQLite and
did not settle within 600 s on PostgreSQL).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from cluster import Cluster
from e2e import Outcome, Run, create_rules, run_async
from netns import Network
from resolution import IN_DOUBT_RESOLUTION

from dockyard.demo import WAREHOUSES
from dockyard.sample_orders import generate

SEED = 1111
# The run is 10,000 orders (DOCKYARD_MIXED_ORDERS=10000); the default keeps CI within its time.
ORDERS = int(os.environ.get("DOCKYARD_MIXED_ORDERS", "2000"))
FAULTS = {"error_rate": 0.20, "timeout_rate": 0.05, "timeout_seconds": 4.0, "reset_rate": 0.05}
SERVICE_TIMEOUT = 2.0  # the service gives up on a warehouse before the simulator's timeout answers
RETRY = {"max_attempts": 12, "base_delay": 0.1, "max_delay": 2.0, "jitter": 0.5}
FEEDBACK = {"step_delay": 0.05, "max_push_attempts": 60, "retry_delay": 0.05, "max_retry_delay": 0.5,
            "push_timeout": 5.0}
SETTLE = 600.0


async def _single(run: Run) -> list[str]:
    await run.start()
    sent = await run.harness.send(generate(ORDERS, SEED), batch=100, parallel=2)
    accepted = sorted(set(sent["accepted"]))
    await run.wait_settled(len(accepted), timeout=SETTLE)
    return accepted


async def _cluster(cluster: Cluster) -> list[str]:
    await cluster.start()
    accepted = sorted(set(await cluster.send(generate(ORDERS, SEED), batch=100, parallel=3)))
    await cluster.wait_settled(len(accepted), timeout=SETTLE)
    return accepted


@pytest.mark.parametrize("store", ["sqlite", "postgres-3-nodes"])
def test_mixed_faults_end_with_nothing_held_that_can_be_asked(store: str, tmp_path: Path,
                                                              request: pytest.FixtureRequest) -> None:
    faults = {name: dict(FAULTS) for name in WAREHOUSES}
    started = time.monotonic()
    run: Run
    if store == "sqlite":
        run = Run(tmp_path / "run", faults=faults, feedback=FEEDBACK, timeout=SERVICE_TIMEOUT, retry=RETRY,
                  workers=2)
    else:
        network: Callable[[int], Network] = request.getfixturevalue("network")
        pg_store: str = request.getfixturevalue("pg_store")
        run = Cluster(tmp_path / "run", store=pg_store, faults=faults, feedback=FEEDBACK, timeout=SERVICE_TIMEOUT,
                      retry=RETRY, network=network(3))
    try:
        accepted: list[str] = run_async(lambda: _cluster(run) if isinstance(run, Cluster) else _single(run))
        outcome: Outcome = run_async(run.outcome)
    finally:
        run.close()
    rules = create_rules()
    by = outcome.by_delivery()
    injected = {w: {k: int(s["faults"][k]) for k in ("error", "timeout", "reset")}
                for w, s in outcome.sim["warehouses"].items()}
    dead = sorted({(r or "").split(":")[0] for state, r in outcome.create_jobs.values() if state == "dead"})
    print(f"\n[mixed faults, {store}] orders {len(accepted)}, delivered {by.get('delivered', 0)}, dlq "
          f"{by.get('dlq', 0)} ({'; '.join(dead)}), held {outcome.held_by()}, marked in doubt {len(outcome.doubted)}, "
          f"resolved by query {outcome.resolved}, retries {outcome.retries}, injected {injected}, "
          f"received twice { {w: len(outcome.twice(w)) for w in WAREHOUSES} }, events {len(outcome.events)}, "
          f"{time.monotonic() - started:.1f}s")

    problems: list[str] = []

    def check(fn: Callable[[], None]) -> None:
        try:
            fn()
        except AssertionError as exc:
            problems.append(str(exc))

    if len(accepted) != ORDERS:
        problems.append(f"{len(accepted)} of {ORDERS} orders accepted")
    check(lambda: outcome.check_orders(accepted, rules))
    check(lambda: outcome.check_held_only_where_unresolvable(IN_DOUBT_RESOLUTION))
    check(lambda: outcome.check_no_duplicates(rules))
    check(outcome.check_feedback)
    missing = {w: [k for k, n in kinds.items() if n == 0] for w, kinds in injected.items()}
    missing = {w: kinds for w, kinds in missing.items() if kinds}
    if missing:
        problems.append(f"fault kinds never injected: {missing}")
    assert not problems, f"{len(problems)} properties failed:\n- " + "\n- ".join(problems)
