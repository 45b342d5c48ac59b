"""`GET /metrics` scrapes cleanly with Prometheus's own text parser and counts what happened,
on SQLite and PostgreSQL; with dashboard tokens configured it needs one."""

from __future__ import annotations

import asyncio
import functools
import platform
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families
from test_service import example

from dockyard.service.metrics import (
    ATTEMPT_OUTCOMES,
    CALLBACK_OUTCOMES,
    RETRY_REASONS,
    Metrics,
    outcome_class,
    read_backlog,
    retry_reason,
)

TOKEN = "test-only-metrics-token-0123456789"


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_metrics_count_orders_deliveries_callbacks_and_state(env: Any) -> None:
    async def main() -> None:
        async with env(warehouses=("qimen-std", "jd"), overrides={"dashboard": {"tokens": {TOKEN: "read"}}}) as run:
            good, jd, bad = example(), example("jd-three-decimal-discount"), example("all-lines-zero")
            broken = example("hostile-remark")
            del broken["buyer"]
            bad["channel"] = "jd"
            await run.post("/orders/batch", [good, jd, bad, broken, good])
            for order in (good, jd):
                await run.until(order["order_no"], lambda d: d["delivery"] == "delivered")
            await run.until(bad["order_no"], lambda d: d["delivery"] == "dlq")
            async with run.session.post(f"{run.url}/callbacks/qimen-std/deliveryorder.confirm?sign=x",
                                        data=b"<request/>") as resp:
                assert resp.status == 401
            async with run.session.post(f"{run.url}/callbacks/nobody/{'x' * 50}", data=b"") as resp:
                assert resp.status == 404
            async with run.session.get(f"{run.url}/metrics") as resp:
                assert resp.status == 401
            async with run.session.get(f"{run.url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}) as resp:
                assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/plain")
                text = await resp.text()
            m = _samples(text)
            assert m[("dockyard_orders_total", (("outcome", "accepted"), ("warehouse", "qimen-std")))] == 1
            assert m[("dockyard_orders_total", (("outcome", "accepted"), ("warehouse", "jd")))] == 2
            assert m[("dockyard_orders_total", (("outcome", "duplicate"), ("warehouse", "qimen-std")))] == 1
            assert m[("dockyard_orders_total", (("outcome", "quarantined"), ("warehouse", "none")))] == 1
            assert m[("dockyard_deliveries_total", (("flow", "create"), ("result", "done"),
                                                    ("warehouse", "qimen-std")))] == 1
            assert m[("dockyard_deliveries_total", (("flow", "create"), ("result", "dead"), ("warehouse", "jd")))] == 1
            assert m[("dockyard_callbacks_total", (("flow", "deliveryorder.confirm"), ("outcome", "forged"),
                                                   ("warehouse", "qimen-std")))] == 1
            assert m[("dockyard_callbacks_total", (("flow", "unknown"), ("outcome", "unknown-flow"),
                                                   ("warehouse", "unknown")))] == 1
            assert m[("dockyard_dead_letters", ())] == 1 and m[("dockyard_in_doubt", ())] == 0
            assert m[("dockyard_outbox_depth", (("lane", "wh"),))] == 0
            assert m[("dockyard_circuit_state", (("warehouse", "jd"),))] == 0
            assert m[("dockyard_stage_seconds_count", (("stage", "transform"), ("warehouse", "jd")))] >= 1
            # one exchange per delivery attempt, by outcome class (the other JD order never left: its
            # mapping refuses it), and the accepted one's time from ingest
            assert m[("dockyard_attempts_total", (("flow", "create"), ("outcome", "2xx"), ("warehouse", "jd")))] == 1
            assert m[("dockyard_attempt_seconds_count", (("flow", "create"), ("warehouse", "jd")))] == 1
            assert m[("dockyard_ingest_to_accepted_seconds_count", (("warehouse", "jd"),))] == 1
            # what this change adds: build info, the process, ingest and callback times, backlog
            from dockyard import __version__

            assert m[("dockyard_build_info", (("implementation", "cpython"), ("python", platform.python_version()),
                                              ("version", __version__)))] == 1
            assert m[("process_cpu_seconds_total", ())] > 0 and m[("process_resident_memory_bytes", ())] > 0
            assert m[("dockyard_ingest_seconds_count", (("endpoint", "batch"),))] == 1
            assert m[("dockyard_ingest_seconds_count", (("endpoint", "order"),))] == 0
            assert m[("dockyard_callback_seconds_count", (("flow", "deliveryorder.confirm"),
                                                          ("warehouse", "qimen-std")))] == 1
            assert ("dockyard_callback_seconds_count", (("flow", "unknown"), ("warehouse", "unknown"))) not in m
            for wh in ("qimen-std", "jd"):
                assert m[("dockyard_backlog_jobs", (("warehouse", wh),))] == 0
                assert m[("dockyard_backlog_age_seconds", (("warehouse", wh),))] == 0
                for outcome in ATTEMPT_OUTCOMES:  # declared at 0 from the start: rate() sees the first one
                    assert ("dockyard_attempts_total", (("flow", "create"), ("outcome", outcome),
                                                        ("warehouse", wh))) in m
                for reason in RETRY_REASONS:
                    assert ("dockyard_retries_total", (("reason", reason), ("warehouse", wh))) in m
            assert not any(name.endswith("_created") for name, _ in m)
            assert "x" * 50 not in text and good["order_no"] not in text  # no request-chosen labels
            for value in run.plan.secret_values.values():
                assert value not in text

    asyncio.run(main())


def test_the_grafana_dashboard_uses_only_metrics_the_service_exports() -> None:
    """docs/grafana/dockyard-dashboard.json queries names that /metrics really has."""
    import json
    import re
    from pathlib import Path

    exported = set()
    for family in text_string_to_metric_families(Metrics().render().decode()):
        exported.add(family.name)
        exported.update(s.name for s in family.samples)
        exported.update({f"{family.name}_total", f"{family.name}_bucket", f"{family.name}_count",
                         f"{family.name}_sum", f"{family.name}_info"})
    board = json.loads((Path(__file__).resolve().parents[2] / "docs" / "grafana" / "dockyard-dashboard.json")
                       .read_text(encoding="utf-8"))
    used = {name for panel in board["panels"] for target in panel.get("targets", [])
            for name in re.findall(r"\b((?:dockyard|process)_[a-z_]+)", target["expr"])}
    assert used and used <= exported, used - exported
    # every dockyard family the service exports is charted somewhere
    families = {f.name for f in text_string_to_metric_families(Metrics().render().decode())}
    missing = {f for f in families if f.startswith("dockyard_")
               and not any(u == f or u.startswith(f + "_") for u in used)}
    assert not missing, missing
    titles = [p["title"] for p in board["panels"]]
    assert len(titles) == len(set(titles)) and len({p["id"] for p in board["panels"]}) == len(titles)


def _config(folder: Any) -> Any:
    """The demo's config of all four warehouses (the bundle folder only has to exist)."""
    from pathlib import Path

    from dockyard.demo import DemoPlan
    from dockyard.service.config import load_config

    root = Path(__file__).resolve().parents[2]
    plan = DemoPlan(folder / "work", root / "mappings", sim_base="http://127.0.0.1:9")
    path = plan.write(9)
    plan.bundle.mkdir(exist_ok=True)
    return load_config(path)


def test_label_values_never_come_from_outside_the_config(tmp_path: Any) -> None:
    """Whatever a caller (or a bug) passes, only configured names and the fixed words make series."""
    config = _config(tmp_path)
    metrics = Metrics(config)
    before = _series(metrics)
    metrics.observe_callback("evil", "x" * 40, "applied", 0.01)
    metrics.observe_callback("qimen-std", "not-a-callback", "forged", 0.01)
    metrics.observe_attempt("qimen-std", "create", "418-teapot", 0.2)
    metrics.observe_retry("qimen-std", "because")
    metrics.observe_ingest("sideways", 0.1)
    metrics.observe_accepted("nowhere", 3.0)
    after = _series(metrics)
    new = after - before
    unknown = ("warehouse", "unknown")
    assert new == {("dockyard_callbacks_total", (("flow", "unknown"), ("outcome", "applied"), unknown)),
                   ("dockyard_callbacks_total", (("flow", "unknown"), ("outcome", "forged"), unknown)),
                   *{(f"dockyard_ingest_seconds{suffix}", tuple(sorted((("endpoint", "other"), *le))))
                     for suffix, le in _histogram_keys()},
                   *{(f"dockyard_ingest_to_accepted_seconds{suffix}", tuple(sorted((("warehouse", "unknown"), *le))))
                     for suffix, le in _histogram_keys(end_to_end=True)}}, new
    m = _samples(metrics.render().decode())
    assert m[("dockyard_attempts_total", (("flow", "create"), ("outcome", "error"), ("warehouse", "qimen-std")))] == 1
    assert m[("dockyard_retries_total", (("reason", "other"), ("warehouse", "qimen-std")))] == 1
    assert "x" * 40 not in metrics.render().decode()


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=30), st.text(max_size=30), st.text(max_size=30))
def test_any_callback_labels_fold_into_the_configured_set(warehouse: str, flow: str, outcome: str) -> None:
    metrics, known = _known()
    metrics.observe_callback(warehouse, flow, outcome, 0.001)
    for family in (metrics.callbacks, metrics.callback_seconds):
        for sample in family.collect()[0].samples:
            assert (sample.labels["warehouse"], sample.labels["flow"]) in known | {("unknown", "unknown")}
            assert sample.labels.get("outcome", "applied") in CALLBACK_OUTCOMES


def _series(metrics: Metrics) -> set[tuple[str, tuple[tuple[str, str], ...]]]:
    return set(_samples(metrics.render().decode()))


def _histogram_keys(end_to_end: bool = False) -> list[tuple[str, tuple[tuple[str, str], ...]]]:
    from dockyard.service import metrics as module

    buckets = module._END_TO_END if end_to_end else module._LATENCY
    keys: list[tuple[str, tuple[tuple[str, str], ...]]] = [("_count", ()), ("_sum", ())]
    keys += [("_bucket", (("le", str(float(b))),)) for b in buckets]
    keys.append(("_bucket", (("le", "+Inf"),)))
    return keys


@functools.cache
def _known() -> tuple[Metrics, set[tuple[str, str]]]:
    """One Metrics of the demo config for all examples (hypothesis runs them in one test)."""
    import atexit
    import shutil
    import tempfile
    from pathlib import Path

    folder = Path(tempfile.mkdtemp(prefix="dockyard-metrics-"))
    atexit.register(shutil.rmtree, folder, True)
    config = _config(folder)
    return Metrics(config), {(w.name, c) for w in config.warehouses.values() for c in w.callbacks}


def test_outcome_and_retry_classes() -> None:
    assert [outcome_class(s) for s in (200, 204, 302, 404, 429, 500, 503)] == [
        "2xx", "2xx", "3xx", "4xx", "4xx", "5xx", "5xx"]
    assert [outcome_class(None, e) for e in ("timeout", "reset", "refused", "dns", None)] == [
        "timeout", "reset", "refused", "error", "error"]
    assert outcome_class(200, "reset") == "reset" and outcome_class(99) == "error" and outcome_class(600) == "error"
    # the journal's own error words (delivery.py)
    assert outcome_class(None, "not_sent") == "refused" and outcome_class(None, "no_answer") == "no-answer"
    assert outcome_class(None, "http_503") == "5xx" and outcome_class(200, "retryable") == "2xx"
    assert outcome_class(200, "unreadable") == "2xx" and outcome_class(None, "store") == "error"
    assert outcome_class(None, "http_x") == "error"
    assert retry_reason(503) == "server-error" and retry_reason(429) == "rate-limited"
    assert retry_reason(408) == "timeout" and retry_reason(None, "reset") == "reset"
    assert retry_reason(None, "dns") == "other" and retry_reason(200, asked=True) == "warehouse-asked"
    assert retry_reason(503, "timeout", in_doubt=True) == "in-doubt" and retry_reason(400) == "other"
    assert retry_reason(None, "not_sent") == "not-sent" and retry_reason(None, "http_429") == "rate-limited"
    assert retry_reason(None, "http_502") == "server-error" and retry_reason(200, "retryable") == "warehouse-asked"
    assert retry_reason(None, "no_answer") == "in-doubt" and retry_reason(None, "query") == "in-doubt"


@given(st.one_of(st.none(), st.integers(-10, 1000)), st.one_of(st.none(), st.text(max_size=12),
                                                             st.sampled_from(["http_503", "not_sent", "no_answer"])),
       st.booleans(), st.booleans())
def test_any_attempt_falls_in_a_fixed_class(status: int | None, error: str | None, asked: bool,
                                            in_doubt: bool) -> None:
    """Whatever a row holds, the labels are fixed words: no new series from data."""
    assert outcome_class(status, error) in ATTEMPT_OUTCOMES
    assert retry_reason(status, error, asked=asked, in_doubt=in_doubt) in RETRY_REASONS


def test_backlog_age_is_the_oldest_overdue_ready_job(store_url: str) -> None:
    """Read from a real store (SQLite and PostgreSQL): depth counts ready and sending jobs per
    warehouse; the age is that of the oldest ready job whose time has come; dead, held and done
    jobs and the upstream lane do not count."""
    from dockyard.service.db import Database

    now = 1_800_000_000_000_000
    rows = [("wh", "jd", "ready", now - 90_000_000), ("wh", "jd", "ready", now - 30_000_000),
            ("wh", "jd", "sending", now - 500_000_000), ("wh", "jd", "dead", now - 900_000_000),
            ("wh", "jd", "held", now - 900_000_000), ("wh", "jd", "done", now - 900_000_000),
            ("wh", "jd", "waiting", now - 800_000_000), ("wh", "jd", "cancelled", now - 900_000_000),
            ("wh", "sf", "ready", now + 60_000_000), ("wh", "sf", "sending", now - 5_000_000),
            ("wh", "sf", "claimed", now - 700_000_000), ("wh", "cainiao", "claimed", now - 700_000_000),
            ("up", "_upstream", "ready", now - 900_000_000)]
    db = Database(store_url, readers=1)
    try:
        def fill(conn: Any) -> None:
            for i, (lane, warehouse, state, next_at) in enumerate(rows):
                conn.execute("INSERT INTO dy_jobs (lane, kind, order_no, warehouse, state, attempts, next_at, "
                             "created_at, updated_at) VALUES (?, 'create', ?, ?, ?, 1, ?, ?, ?)",
                             (lane, f"B-{i}", warehouse, state, next_at, next_at, next_at))

        db.write_sync(fill)
        backlog = db.read_sync(lambda c: read_backlog(c, now))
    finally:
        db.close()
    assert backlog == {"jd": (4, 90.0), "sf": (3, 0.0), "cainiao": (1, 0.0)}
    metrics = Metrics()
    metrics.refresh({}, {}, {}, backlog)
    m = _samples(metrics.render().decode())
    assert m[("dockyard_backlog_age_seconds", (("warehouse", "jd"),))] == 90.0
    assert m[("dockyard_backlog_jobs", (("warehouse", "sf"),))] == 3


@pytest.mark.parametrize("seconds", [0.0, -1.0])
def test_throttled_time_counts_only_real_waits(seconds: float) -> None:
    metrics = Metrics()
    metrics.observe_throttled("jd", seconds)
    metrics.observe_throttled("jd", 1.5)
    assert _samples(metrics.render().decode())[("dockyard_throttled_seconds_total", (("warehouse", "jd"),))] == 1.5


def test_a_kept_child_is_the_labelled_series_itself() -> None:
    """`Metrics.child` keeps what `labels()` returns: the same series, counted in the same place,
    however often it is asked for; past the bound it still counts (looked up each time)."""
    metrics = Metrics()
    first = metrics.child(metrics.deliveries, "jd", "create", "done")
    assert first is metrics.deliveries.labels("jd", "create", "done")
    assert metrics.child(metrics.deliveries, "jd", "create", "done") is first
    for _ in range(3):
        metrics.child(metrics.deliveries, "jd", "create", "done").inc()
    metrics.child(metrics.stage, "transform", "jd").observe(0.25)
    m = _samples(metrics.render().decode())
    assert m[("dockyard_deliveries_total", (("flow", "create"), ("result", "done"), ("warehouse", "jd")))] == 3
    metrics._children.clear()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("dockyard.service.metrics._CHILDREN_KEPT", 0)
        metrics.child(metrics.deliveries, "jd", "create", "done").inc()
        assert not metrics._children
    m = _samples(metrics.render().decode())
    assert m[("dockyard_deliveries_total", (("flow", "create"), ("result", "done"), ("warehouse", "jd")))] == 4


def test_with_workers_every_scrape_answers_for_all_of_them(tmp_path: Any) -> None:
    """`serve` with `workers: 2`: a scrape reaches one worker or the other, and each answers with
    the figures of both (multiprocess files): orders taken in by either, deliveries made by both,
    and the live workers' CPU together, the same on every scrape."""
    import aiohttp
    from e2e import Run, run_async

    from dockyard.sample_orders import generate

    run = Run(tmp_path / "run", workers=2)
    orders = generate(120, seed=5)

    async def main() -> list[dict[tuple[str, tuple[tuple[str, str], ...]], float]]:
        await run.start()
        for chunk in (orders[:40], orders[40:80], orders[80:]):
            await run.harness.send(chunk)
        await run.wait_settled(len(orders), timeout=60)
        assert run.service is not None
        scrapes = []
        for _ in range(12):  # a new connection each time: the kernel hands it to either worker
            async with aiohttp.ClientSession() as session, session.get(
                    f"{run.service.url}/metrics", headers={"Connection": "close"}) as resp:
                assert resp.status == 200
                scrapes.append(_samples(await resp.text()))
        return scrapes

    try:
        scrapes = run_async(main)
    finally:
        run.close()
    delivered = {m.get(("dockyard_deliveries_total", (("flow", "create"), ("result", "done"), ("warehouse", w))), 0)
                 for m in scrapes for w in ("qimen-std", "sf", "jd", "cainiao")}
    for m in scrapes:
        taken = sum(v for (name, labels), v in m.items() if name == "dockyard_orders_total")
        assert taken == len(orders)
        done = sum(v for (name, labels), v in m.items()
                   if name == "dockyard_deliveries_total" and dict(labels)["result"] in ("done", "dead"))
        assert done == len(orders)
        assert m[("dockyard_ingest_seconds_count", (("endpoint", "batch"),))] == 3
        assert m[("process_cpu_seconds_total", ())] > 0 and m[("process_resident_memory_bytes", ())] > 0
        assert m[("dockyard_outbox_depth", (("lane", "wh"),))] == 0
        assert sum(1 for name, _ in m if name == "dockyard_build_info") == 1
    assert len(delivered) > 1  # several warehouses delivered: the figures are real, not all zero
