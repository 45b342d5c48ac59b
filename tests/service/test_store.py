"""The state store on its own, on SQLite and PostgreSQL: the claim, the claimed/sending split and
what recovery makes of each, per-order job chains, and the limits every node shares (concurrency,
circuit, rate, Retry-After). Two `Database` objects on one store stand for two nodes."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dockyard.service import queries as store_queries
from dockyard.service import store
from dockyard.service.db import Conn, Database
from dockyard.service.schema import FORWARD_PARTS, SCHEMA_VERSION
from dockyard.service.store import ClaimOutcome, IngestItem, JobResult, WarehouseLimits


def _ids() -> Iterator[str]:
    return (uuid.uuid4().hex for _ in itertools.repeat(None))


def _ingest(db: Database, *order_nos: str, warehouse: str = "wh1") -> None:
    items = [IngestItem(no, uuid.uuid4().hex, warehouse, None, None, "fp-" + no, json.dumps({"order_no": no}),
                        0, "default", False) for no in order_nos]
    results = db.write_sync(store.IngestOp(items))
    assert [r.status for r in results] == ["accepted"] * len(order_nos)


def _claim(db: Database, limit: int = 10, *, warehouse: str = "wh1", owner: str | None = None,
           limits: WarehouseLimits | None = None, finishing: int = 0) -> ClaimOutcome:
    who = owner or db.owner
    return db.claim_sync(lambda c: store.claim(c, "wh", warehouse, limit, who, 60_000_000, _ids(), limits,
                                               finishing))


def _states(db: Database) -> dict[str, str]:
    return dict(db.read_sync(lambda c: c.execute("SELECT order_no, state FROM dy_jobs WHERE lane = 'wh' "
                                                 "AND kind = 'create'")))


def test_a_claimed_job_that_never_left_comes_back_ready_and_a_sending_one_in_doubt(store_url: str) -> None:
    gone = Database(store_url, readers=1)
    survivor = Database(store_url, readers=1)
    try:
        _ingest(survivor, "A-1", "A-2")
        jobs = _claim(gone, 2).jobs
        assert sorted(j.order_no for j in jobs) == ["A-1", "A-2"]  # type: ignore[type-var]
        on_wire = next(j for j in jobs if j.order_no == "A-2")
        assert gone.write_sync(store.MarkSendingOp(on_wire.id, gone.owner)) is True
        assert _states(survivor) == {"A-1": "claimed", "A-2": "sending"}
    finally:
        gone.close()  # its session lock and its flock go with it: the process is gone

    def settle(c: Conn) -> list[tuple[int, str | None, str]]:
        # heartbeats are in the database's clock: pretend the old one stopped beating long ago
        c.execute("UPDATE dy_nodes SET heartbeat_at = 0 WHERE owner <> ?", (survivor.owner,))
        return store.recover(c, me=survivor.owner, gone=survivor.owner_gone)

    try:
        # The server ends a closed session's backend (and frees its lock) a moment after the client
        # hangs up; on a busy machine the first sweep may come before that, so sweep as the
        # service does, again until it finds them (bounded).
        deadline = time.monotonic() + 10
        recovered = survivor.write_sync(settle)
        while not recovered and time.monotonic() < deadline:
            time.sleep(0.1)
            recovered = survivor.write_sync(settle)
        assert sorted(r[1] for r in recovered) == ["A-1", "A-2"]  # type: ignore[type-var]
        rows = dict(survivor.read_sync(lambda c: c.execute(
            "SELECT order_no, doubt FROM dy_jobs WHERE state = 'ready'")))
        assert rows == {"A-1": 0, "A-2": 1}  # only the one that may have left is in doubt
        journal = survivor.read_sync(lambda c: c.execute(
            "SELECT order_no, outcome FROM dy_journal WHERE step = 'recovered' ORDER BY order_no"))
        assert journal == [("A-1", "retry"), ("A-2", "in_doubt")]
    finally:
        survivor.close()


def test_a_live_process_takes_back_its_own_jobs_it_no_longer_holds(db: Database) -> None:
    """A claim that committed while its answer was lost with the connection, or an outcome that
    could not be written while the store was away: the store says the job is claimed (or on the
    wire) by this process, but no task of it holds the job. Recovery takes it back after a grace
    (a claim's answer may still be on its way to the loop), as it would for a dead process; the
    jobs it does hold, and fresh ones, it leaves alone."""
    _ingest(db, "O-1", "O-2", "O-3", "O-4")
    jobs = {j.order_no: j for j in _claim(db, 3).jobs}
    assert sorted(jobs) == ["O-1", "O-2", "O-3"]  # type: ignore[type-var]
    assert db.write_sync(store.MarkSendingOp(jobs["O-2"].id, db.owner)) is True
    db.write_sync(lambda c: c.execute("UPDATE dy_jobs SET updated_at = updated_at - ?", (store.ORPHAN_GRACE_US + 1,)))
    [fresh] = _claim(db, 1).jobs  # O-4: claimed just now, not (yet) held
    holding = frozenset({jobs["O-3"].id})
    recovered = db.write_sync(lambda c: store.recover(c, me=db.owner, gone=db.owner_gone, holding=holding))
    assert sorted(r[1] for r in recovered) == ["O-1", "O-2"]  # type: ignore[type-var]
    rows = dict(db.read_sync(lambda c: c.execute("SELECT order_no, state || ':' || doubt FROM dy_jobs")))
    assert rows == {"O-1": "ready:0", "O-2": "ready:1", "O-3": "claimed:0", fresh.order_no: "claimed:0"}
    # without `holding` (another process's sweep, or an old caller) nothing of a live owner moves
    db.write_sync(lambda c: c.execute("UPDATE dy_jobs SET updated_at = updated_at - ?", (store.ORPHAN_GRACE_US + 1,)))
    assert db.write_sync(lambda c: store.recover(c, me=db.owner, gone=db.owner_gone)) == []


def test_a_cancel_waits_behind_its_create_and_starts_when_it_ends(db: Database) -> None:
    _ingest(db, "C-1")
    [create] = _claim(db).jobs
    status, _ = db.write_sync(lambda c: store.request_cancel(c, "C-1", has_cancel_flow=True))
    assert status == "queued"
    assert db.read_sync(lambda c: c.execute("SELECT kind, state FROM dy_jobs ORDER BY id")) == [
        ("create", "claimed"), ("cancel", "waiting")]
    assert _claim(db).jobs == []  # the cancel may not overtake its create
    db.write_sync(store.FinishOp([JobResult(create.id, db.owner, "done", order_no="C-1", warehouse="wh1")]))
    [cancel] = _claim(db).jobs
    assert (cancel.kind, cancel.order_no) == ("cancel", "C-1")


def test_a_waiting_job_left_without_an_open_predecessor_is_repaired(db: Database) -> None:
    """Two nodes can queue and end at the same moment without seeing each other's change; the
    recovery sweep makes such a job ready."""
    _ingest(db, "R-1")
    db.write_sync(lambda c: c.execute("UPDATE dy_jobs SET state = 'done'"))
    db.write_sync(lambda c: c.execute(
        "INSERT INTO dy_jobs (lane, kind, order_no, warehouse, state, next_at, created_at, updated_at) "
        "VALUES ('wh', 'cancel', 'R-1', 'wh1', 'waiting', 0, 0, 0)"))
    db.write_sync(lambda c: store.recover(c, me=db.owner, gone=db.owner_gone))
    [job] = _claim(db).jobs
    assert job.kind == "cancel"


def test_concurrency_holds_across_nodes(store_url: str) -> None:
    nodes = [Database(store_url, readers=1) for _ in range(3)]
    try:
        _ingest(nodes[0], *[f"N-{i}" for i in range(40)])
        limits = WarehouseLimits(concurrency=7)
        taken = [len(_claim(node, 5, limits=limits).jobs) for node in nodes for _ in range(2)]
        assert sum(taken) == 7, taken
        # a node whose exchanges are over (outcomes being committed) may claim their slots again
        assert len(_claim(nodes[1], 5, limits=limits, finishing=2).jobs) == 2
    finally:
        for node in nodes:
            node.close()


def test_an_open_circuit_stops_every_node_and_half_open_lets_one_probe(store_url: str) -> None:
    a, b = Database(store_url, readers=1), Database(store_url, readers=1)
    try:
        _ingest(a, *[f"P-{i}" for i in range(10)])
        limits = WarehouseLimits(concurrency=10, probe_us=60_000_000)
        a.claim_sync(lambda c: store.set_circuit(c, "wh1", open_for_us=60_000_000, by=a.owner))
        for node in (a, b):
            outcome = _claim(node, limits=limits)
            assert (outcome.jobs, outcome.circuit) == ([], "open") and outcome.wait_us > 0
        b.claim_sync(lambda c: c.execute("UPDATE dy_limits SET opened_until = 1"))  # the open time is over
        first, second = _claim(a, limits=limits), _claim(b, limits=limits)
        assert len(first.jobs) == 1 and first.jobs[0].probe and first.circuit == "half_open"
        assert second.jobs == [] and second.circuit == "half_open"  # one probe across all nodes
        a.claim_sync(lambda c: store.set_circuit(c, "wh1", open_for_us=None, by=a.owner))
        assert len(_claim(b, limits=limits).jobs) == 9
    finally:
        a.close()
        b.close()


def test_the_rate_limit_and_retry_after_are_shared(store_url: str) -> None:
    a, b = Database(store_url, readers=1), Database(store_url, readers=1)
    try:
        _ingest(a, *[f"T-{i}" for i in range(20)])
        limits = WarehouseLimits(concurrency=20, rate=0.001, burst=3)  # three now, then one per 1000 s
        assert len(_claim(a, limits=limits).jobs) == 3
        outcome = _claim(b, limits=limits)
        assert outcome.jobs == [] and outcome.reason == "rate limit" and outcome.wait_us > 0
        loose = WarehouseLimits(concurrency=20)
        b.claim_sync(lambda c: store.set_pause(c, "wh1", 60_000_000, "HTTP 429 Retry-After"))
        paused = _claim(a, limits=loose)
        assert paused.jobs == [] and paused.wait_us > 50_000_000
    finally:
        a.close()
        b.close()


def test_the_claim_reads_the_due_index_without_statistics(store_url: str, tmp_path: Path) -> None:
    """A million ready jobs in a table that was never analysed: the claim's plan still walks the
    partial index in due order (no scan of the table, no sort of the backlog)."""
    db = Database(store_url, readers=1)
    try:
        if db.dialect == "postgres":
            db.write_sync(lambda c: c.execute(
                "INSERT INTO dy_jobs (lane, kind, order_no, warehouse, state, next_at, created_at, updated_at) "
                "SELECT 'wh', 'create', 'B-' || g, 'wh' || (g % 4), CASE WHEN g % 10 = 0 THEN 'done' ELSE 'ready' END, "
                "g, 0, 0 FROM generate_series(1, 1000000) g"))
            plan = db.read_sync(lambda c: c.execute(
                "EXPLAIN " + store._CLAIM + " FOR UPDATE OF j SKIP LOCKED",
                ("wh", "wh1", 10**12, 64)))
        else:
            db.write_sync(lambda c: c.execute(
                "WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < 1000000) "
                "INSERT INTO dy_jobs (lane, kind, order_no, warehouse, state, next_at, created_at, updated_at) "
                "SELECT 'wh', 'create', 'B-' || n, 'wh' || (n % 4), CASE WHEN n % 10 = 0 THEN 'done' ELSE 'ready' END, "
                "n, 0, 0 FROM g"))
            plan = db.read_sync(lambda c: c.execute("EXPLAIN QUERY PLAN " + store._CLAIM,
                                                    ("wh", "wh1", 10**12, 64)))
        text = "\n".join(" ".join(str(x) for x in row) for row in plan)
        assert "dy_jobs_due" in text, text
        assert "Seq Scan on dy_jobs" not in text and "SCAN j" not in text and "TEMP B-TREE" not in text, text
        jobs = _claim(db, 64).jobs
        assert len(jobs) == 64 and [j.order_no for j in jobs][:2] == ["B-1", "B-5"]
    finally:
        db.close()


def test_a_claim_counts_the_jobs_in_flight_only_when_there_is_work_and_says_when_to_look_again(db: Database) -> None:
    """The concurrency count runs after the due jobs are read: what is read beyond the allowance
    stays ready, a claim at the limit takes nothing, and a claim that finds nothing says when the
    earliest queued job is due (the loop's wait) in the same transaction."""
    limits = WarehouseLimits(concurrency=2)
    empty = _claim(db, 10, limits=limits)
    assert (empty.jobs, empty.reason, empty.next_due_us) == ([], "", None)
    _ingest(db, "C-1", "C-2", "C-3")
    first = _claim(db, 10, limits=limits)
    assert [j.order_no for j in first.jobs] == ["C-1", "C-2"]
    assert _states(db) == {"C-1": "claimed", "C-2": "claimed", "C-3": "ready"}
    full = _claim(db, 10, limits=limits)
    assert (full.jobs, full.reason) == ([], "concurrency") and _states(db)["C-3"] == "ready"
    retry = JobResult(first.jobs[0].id, db.owner, "ready", delay_us=60_000_000)
    done = JobResult(first.jobs[1].id, db.owner, "done")
    assert db.write_sync(store.FinishOp([retry, done])) == 2
    assert [j.order_no for j in _claim(db, 10, limits=limits).jobs] == ["C-3"]
    later = _claim(db, 10, limits=limits)
    assert later.jobs == [] and later.reason == "" and later.next_due_us is not None
    assert 50_000_000 < later.next_due_us <= 60_000_000, later.next_due_us


def _generic_plan(db: Database, sql: str, params: tuple[Any, ...], types: str) -> str:
    """PostgreSQL's generic plan of a statement written with `?` (what a prepared statement runs
    after its fifth execution), on a table that was never analysed."""
    parts = sql.split("?")
    text = parts[0] + "".join(f"${i}{part}" for i, part in enumerate(parts[1:], start=1))

    def explain(c: Any) -> list[tuple[Any, ...]]:
        import psycopg

        cur = psycopg.ClientCursor(c.raw)  # EXPLAIN EXECUTE takes its arguments as literals
        cur.execute("SET plan_cache_mode = force_generic_plan")
        cur.execute(f"PREPARE plan_probe ({types}) AS {text}")
        try:
            marks = ", ".join("%s" for _ in params)
            return cur.execute(f"EXPLAIN EXECUTE plan_probe ({marks})", params).fetchall()
        finally:
            cur.execute("DEALLOCATE plan_probe")
            cur.execute("RESET plan_cache_mode")
    return "\n".join(str(row[0]) for row in db.claim_sync(explain))


def test_finish_and_mark_sending_find_their_jobs_by_primary_key_without_statistics(pg_url: str) -> None:
    """Hundreds of one node's jobs in flight, in a table never analysed: the finish and the
    mark-sending updates probe the primary key per job. With the owner in the in-flight index
    (schema v7), PostgreSQL's generic plan walked that index, all of the owner's jobs in flight for
    every job of the group (three times the server's CPU of the finish in bench/e2e.py)."""
    db = Database(pg_url, readers=1)
    try:
        db.write_sync(lambda c: c.execute(
            "INSERT INTO dy_jobs (lane, kind, order_no, warehouse, state, next_at, owner, created_at, updated_at) "
            "SELECT 'wh', 'create', 'F-' || g, 'wh' || (g % 4), CASE WHEN g % 10 = 0 THEN 'sending' ELSE 'done' END, "
            "0, CASE WHEN g % 10 = 0 THEN 'node-a' END, 0, 0 FROM generate_series(1, 20000) g"))
        finish = _generic_plan(db, store._FINISH_PG_SQL,
                               (["done"], [0], [0], [None], [None], [0], [0], [10], ["node-a"]),
                               "text[], bigint[], integer[], text[], text[], integer[], bigint[], bigint[], text[]")
        assert "dy_jobs_pkey" in finish and "owner =" not in finish.split("Filter")[0], finish
        mark = _generic_plan(db, "UPDATE dy_jobs SET state = 'sending', updated_at = ? WHERE id = ANY(?) AND owner = ? "
                             "AND state IN ('claimed', 'sending') RETURNING id", (0, [10, 20], "node-a"),
                             "bigint, bigint[], text")
        assert "dy_jobs_pkey" in mark and "Index Cond: (owner" not in mark, mark
    finally:
        db.close()


def test_a_version_7_store_gets_the_narrow_in_flight_index_and_room_for_order_updates(store_url: str) -> None:
    """v8 replaces the in-flight index (warehouse, owner) by one of the warehouse alone, and on
    PostgreSQL leaves a fifth of each new dy_orders page free for its rows' updates. A v7 store
    is migrated once; its jobs in flight still count against the warehouse's concurrency."""
    db = Database(store_url, readers=1)
    try:
        _ingest(db, "S-1", "S-2", "S-3")
        assert len(_claim(db, 2).jobs) == 2
        db.write_sync(lambda c: c.execute("DROP INDEX dy_jobs_inflight"))
        db.write_sync(lambda c: c.execute("CREATE INDEX dy_jobs_active ON dy_jobs (warehouse, owner) "
                                          "WHERE state IN ('claimed', 'sending')"))
        if db.dialect == "postgres":
            db.write_sync(lambda c: c.execute("ALTER TABLE dy_orders RESET (fillfactor)"))
        _pretend_version(db, 7)
    finally:
        db.close()
    for db in _reopened_twice(store_url):
        found = _indexes(db)
        assert "dy_jobs_inflight" in found and "dy_jobs_active" not in found, found
        if db.dialect == "postgres":
            options = db.read_sync(lambda c: c.execute(
                "SELECT reloptions FROM pg_class WHERE relname = 'dy_orders'"))[0][0]
            assert "fillfactor=80" in options, options
    db = Database(store_url, readers=1)
    try:  # the two jobs claimed before the migration are in flight, as the new index counts them
        assert _claim(db, 10, limits=WarehouseLimits(concurrency=2)).reason == "concurrency"
        assert [j.order_no for j in _claim(db, 10, limits=WarehouseLimits(concurrency=3)).jobs] == ["S-3"]
    finally:
        db.close()


_V1 = """
CREATE TABLE dy_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE dy_jobs (id {serial} PRIMARY KEY, lane TEXT NOT NULL, kind TEXT NOT NULL, order_no TEXT,
    warehouse TEXT NOT NULL, state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, next_at BIGINT NOT NULL,
    owner TEXT, lease_until BIGINT, request_id TEXT, doubt INTEGER NOT NULL DEFAULT 0, payload TEXT, reason TEXT,
    outcome TEXT, created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL);
CREATE INDEX dy_jobs_ready ON dy_jobs (lane, state, next_at);
INSERT INTO dy_meta VALUES ('schema_version', '1');
INSERT INTO dy_jobs (lane, kind, order_no, warehouse, state, next_at, created_at, updated_at)
    VALUES ('wh', 'create', 'M-1', 'wh1', 'ready', 0, 0, 0), ('wh', 'cancel', 'M-1', 'wh1', 'ready', 0, 0, 0),
           ('wh', 'create', 'M-2', 'wh1', 'done', 0, 0, 0), ('wh', 'cancel', 'M-2', 'wh1', 'ready', 0, 0, 0)
"""


def test_a_version_1_store_is_migrated_and_its_queues_keep_their_order(store_url: str) -> None:
    """v1 made a job wait behind its order's open predecessor only at claim time; v2 stores that as
    `waiting`. Opening a v1 store migrates it once; opening it again changes nothing."""
    statements = [s for s in _V1.split(";") if s.strip()]
    if store_url.startswith("sqlite"):
        import sqlite3

        from dockyard.service.db import _sqlite_path

        raw = sqlite3.connect(_sqlite_path(store_url))
        for stmt in statements:
            raw.execute(stmt.format(serial="INTEGER"))
        raw.commit()
        raw.close()
    else:
        import psycopg

        with psycopg.connect(store_url, autocommit=True) as conn:
            for stmt in statements:
                conn.execute(stmt.format(serial="BIGSERIAL"))
    for db in _reopened_twice(store_url):
        assert db.read_sync(lambda c: c.execute("SELECT order_no, kind, state FROM dy_jobs ORDER BY id")) == [
            ("M-1", "create", "ready"), ("M-1", "cancel", "waiting"),
            ("M-2", "create", "done"), ("M-2", "cancel", "ready")]


def _pretend_version(db: Database, version: int) -> None:
    """Mark the store as one of an older schema version (its shape was set back by the caller)."""
    db.write_sync(lambda c: c.execute("UPDATE dy_meta SET value = ? WHERE name = 'schema_version'", (str(version),)))


def _reopened_twice(store_url: str) -> Iterator[Database]:
    """The store opened twice in turn, each time at the current schema version: a migration runs
    once, and opening a migrated store again changes nothing (the caller checks what it wants of
    each opening)."""
    for _ in range(2):
        db = Database(store_url, readers=1)
        try:
            assert db.read_sync(lambda c: c.execute("SELECT value FROM dy_meta WHERE name = 'schema_version'")) == [
                (str(SCHEMA_VERSION),)]
            yield db
        finally:
            db.close()


def _indexes(db: Database) -> set[str]:
    if db.dialect == "sqlite":
        return {r[0] for r in db.read_sync(lambda c: c.execute("SELECT name FROM sqlite_master WHERE type = 'index'"))}
    return {r[0] for r in db.read_sync(lambda c: c.execute("SELECT indexname FROM pg_indexes"))}


def test_a_version_5_store_loses_the_journals_warehouse_index_and_keeps_its_rows(store_url: str) -> None:
    """v6 drops dy_journal (warehouse, at), which no query reads and every journal row paid for.
    A v5 store (the index there, version 5) is migrated once; its journal is kept."""
    db = Database(store_url, readers=1)
    try:
        _ingest(db, "V-1")
        db.write_sync(lambda c: c.execute("CREATE INDEX dy_journal_warehouse_at ON dy_journal (warehouse, at)"))
        _pretend_version(db, 5)
        before = db.read_sync(lambda c: c.execute("SELECT order_no, step FROM dy_journal ORDER BY id"))
        assert before and "dy_journal_warehouse_at" in _indexes(db)
    finally:
        db.close()
    for db in _reopened_twice(store_url):
        found = _indexes(db)
        assert not any("warehouse_at" in name for name in found), found
        assert {"dy_journal_order", "dy_journal_at", "dy_journal_step_at"} <= found
        assert db.read_sync(lambda c: c.execute("SELECT order_no, step FROM dy_journal ORDER BY id")) == before


def test_a_version_6_store_gets_the_upstream_outbox_and_keeps_its_forward_jobs(store_url: str) -> None:
    """v7 adds the upstream outbox (dy_forwards and its partitions). A v6 store is migrated once:
    its forward jobs stay jobs, and an order that has one keeps its next events behind it, while
    other orders' events go to the outbox."""
    db = Database(store_url, readers=1)
    try:
        _ingest(db, "U-1", "U-2")
        _legacy_forwards(db, ("U-1", "accepted"))
        db.write_sync(lambda c: c.execute("DROP TABLE dy_forwards"))
        db.write_sync(lambda c: c.execute("DROP TABLE dy_forward_parts"))
        _pretend_version(db, 6)
    finally:
        db.close()
    for db in _reopened_twice(store_url):
        assert db.read_sync(lambda c: c.execute("SELECT COUNT(*), MIN(part), MAX(part) FROM dy_forward_parts")) == [
            (FORWARD_PARTS, 0, FORWARD_PARTS - 1)]
        if db.dialect == "postgres":  # a queue table, vacuumed by a fixed number of dead rows
            options = db.read_sync(lambda c: c.execute(
                "SELECT reloptions FROM pg_class WHERE relname = 'dy_forwards'"))[0][0]
            assert "autovacuum_vacuum_threshold=20000" in options, options
    db = Database(store_url, readers=1)
    try:
        db.write_sync(store.RecordEventsOp("wh1", "confirm", [
            store.EventRecord({"order_no": "U-1", "status": "picking"}, "u1"),
            store.EventRecord({"order_no": "U-2", "status": "accepted"}, "u2")], forward=True, received_at=0))
        up = db.read_sync(lambda c: c.execute("SELECT order_no, state, payload FROM dy_jobs WHERE lane = 'up'"))
        assert [(o, st, [json.loads(e)["status"] for e in store.forward_events(p)]) for o, st, p in up] == [
            ("U-1", "ready", ["accepted", "picking"])]
        assert _outbox(db) == [("U-2", "accepted")]
    finally:
        db.close()


@pytest.fixture
def pg_url() -> Iterator[str]:
    from e2e import fresh_postgres_database

    with fresh_postgres_database() as url:
        yield url


def test_a_node_with_a_skewed_clock_keeps_to_the_databases_time(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Leases, due times and heartbeats are written in the database's clock on PostgreSQL, so a
    node whose own clock runs an hour ahead neither takes a job before it is due nor treats a live
    node's lease as run out."""
    # (SQLite is one host: its processes share one clock.)
    store_url = pg_url
    honest = Database(store_url, readers=1)
    try:
        _ingest(honest, "K-1", "K-2")
        [held] = _claim(honest, 1).jobs  # a live lease of a live node
        honest.write_sync(lambda c: c.execute(
            "UPDATE dy_jobs SET next_at = ? WHERE order_no = 'K-2'", (c.now + 600_000_000,)))  # due in 10 min
        real = __import__("time").time_ns
        monkeypatch.setattr("time.time_ns", lambda: real() + 3_600 * 10**9)  # this process: an hour ahead
        skewed = Database(store_url, readers=1)
        try:
            assert _claim(skewed, 10).jobs == []  # K-2 is not due in the database's time
            recovered = skewed.write_sync(lambda c: store.recover(c, me=skewed.owner, gone=skewed.owner_gone))
            assert recovered == []  # the honest node's lease has not run out, and it is alive
            assert _states(honest) == {"K-1": "claimed", "K-2": "ready"} and held.order_no == "K-1"
        finally:
            skewed.close()
    finally:
        honest.close()


def test_batched_writes_of_one_group_keep_each_writes_own_answer(store_url: str) -> None:
    """One group commit holding many writes of a kind (what the writer batches into single
    statements): events with a repeat inside the group and one already stored, mark-sending of
    jobs of two owners (one lost), and ends that promote each order's next waiting job. Each write
    gets the answer it would get alone, and the totals stay exact."""
    from dockyard.service import queries

    db = Database(store_url, readers=1)
    other = Database(store_url, readers=1)
    try:
        _ingest(db, "B-1", "B-2", "B-3")
        ev = store.EventRecord
        first = db.write_sync(store.RecordEventsOp("wh1", "confirm", [ev({"order_no": "B-1", "status": "accepted"},
                                                                          "e0")], forward=False, received_at=0))
        assert [o.outcome for o in first] == ["applied"]
        _legacy_forwards(db, ("B-1", "accepted"))
        # its forward job is taken (claimed), so B-1's next events wait behind it rather than join it
        early = db.claim_sync(lambda c: store.claim(c, "up", "_upstream", 10, db.owner, 60_000_000, _ids())).jobs

        async def group() -> list[Any]:
            ops: list[Any] = [
                store.RecordEventsOp("wh1", "confirm", [ev({"order_no": "B-1", "status": "accepted"}, "e0"),
                                                        ev({"order_no": "B-1", "status": "picking"}, "e1")],
                                     forward=True, received_at=0),
                store.RecordEventsOp("wh1", "confirm", [ev({"order_no": "B-1", "status": "picking"}, "e1"),
                                                        ev({"order_no": "B-2", "status": "accepted"}, "e2")],
                                     forward=True, received_at=0),
                store.RecordEventsOp("wh1", "confirm", [ev({"order_no": "NOPE", "status": "accepted"}, "e3")],
                                     forward=True, received_at=0),
            ]
            return list(await asyncio.gather(*(db.write(op) for op in ops)))

        outcomes = asyncio.run(group())
        assert [[o.outcome for o in out] for out in outcomes] == [
            ["duplicate", "applied"], ["duplicate", "applied"], ["unknown-order"]]
        assert db.read_sync(lambda c: c.execute("SELECT COUNT(*) FROM dy_events")) == [(3,)]
        # B-1's forwards: the first taken, the next one waiting behind it; B-2's in the outbox
        up = db.read_sync(lambda c: c.execute("SELECT order_no, state FROM dy_jobs WHERE lane = 'up' ORDER BY id"))
        assert up == [("B-1", "claimed"), ("B-1", "waiting")]
        assert _outbox(db) == [("B-2", "accepted")]

        mine = early + db.claim_sync(lambda c: store.claim(c, "up", "_upstream", 10, db.owner, 60_000_000,
                                                           _ids())).jobs
        assert [j.order_no for j in mine] == ["B-1"]  # the waiting one is not due

        async def mark() -> list[bool]:
            ops = [store.MarkSendingOp(j.id, db.owner) for j in mine] + [store.MarkSendingOp(mine[0].id, other.owner)]
            return list(await asyncio.gather(*(db.write(op) for op in ops)))

        assert asyncio.run(mark()) == [True, False]  # a job that is not the owner's is not marked

        async def finish() -> None:
            await asyncio.gather(*(db.write(store.FinishOp([JobResult(j.id, db.owner, "done", order_no=j.order_no,
                                                                      lane="up", warehouse="_upstream")]))
                                   for j in mine))

        asyncio.run(finish())
        up = db.read_sync(lambda c: c.execute("SELECT order_no, state FROM dy_jobs WHERE lane = 'up' ORDER BY id"))
        assert up == [("B-1", "done"), ("B-1", "ready")]  # the next one
        counted = db.read_sync(lambda c: c.execute(
            "SELECT warehouse, state, COUNT(*) FROM dy_jobs GROUP BY warehouse, state ORDER BY 1, 2"))
        summary = db.read_sync(queries.summary)["jobs"]
        assert {(w, s): n for w, s, n in counted} == {
            (w, s): n for w, states in summary.items() for s, n in states.items() if s != "attempts"}
    finally:
        other.close()
        db.close()


def test_a_groups_orders_are_recorded_as_one_by_one(db: Database) -> None:
    """The orders of one group go in as one statement on PostgreSQL (sorted by number, so nodes
    take the unique index's locks in one order): each still gets the answer it would get alone,
    in the order it came, repeats inside the group included, and only new orders get a job."""
    _ingest(db, "G-0")

    def item(no: str, fp: str) -> IngestItem:
        return IngestItem(no, uuid.uuid4().hex, "wh1", None, None, fp, json.dumps({"order_no": no}), 0, "default",
                          False)

    batch = [item("G-9", "fp-9"), item("G-3", "fp-3"), item("G-9", "fp-9"), item("G-3", "other"),
             item("G-0", "fp-G-0"), item("G-5", "fp-5")]

    async def group() -> list[list[store.IngestResult]]:
        return list(await asyncio.gather(db.write(store.IngestOp(batch[:3])), db.write(store.IngestOp(batch[3:]))))

    results = [r for op in asyncio.run(group()) for r in op]
    assert [r.status for r in results] == ["accepted", "accepted", "duplicate", "conflict", "duplicate", "accepted"]
    # an accepted order answers with its own tracking id; a repeat with the first one's
    assert [results[i].tracking_id for i in (0, 1, 5)] == [batch[i].tracking_id for i in (0, 1, 5)]
    assert results[2].tracking_id == batch[0].tracking_id and results[3].tracking_id == batch[1].tracking_id
    stored = dict(db.read_sync(lambda c: c.execute("SELECT order_no, tracking_id FROM dy_orders")))
    assert stored["G-9"] == batch[0].tracking_id and stored["G-3"] == batch[1].tracking_id
    jobs = db.read_sync(lambda c: c.execute(
        "SELECT order_no, kind, state FROM dy_jobs ORDER BY order_no"))
    assert jobs == [("G-0", "create", "ready"), ("G-3", "create", "ready"), ("G-5", "create", "ready"),
                    ("G-9", "create", "ready")]
    assert db.read_sync(lambda c: c.execute("SELECT COUNT(*) FROM dy_quarantine")) == [(1,)]


def test_an_orders_events_join_its_open_forward_job_and_go_out_in_order(store_url: str) -> None:
    """An order with an open forward job (queued before schema v7, or replayed) keeps its next
    events behind it: they join its job that has not left yet (not a job each) — its ready job
    while no one has taken it, else the one waiting behind the job that is out. Events of one order
    in one group are one job; a job carries them in the order they were recorded; a claimed job
    (maybe on the wire) and a retried one (its attempts partly used) are never joined; the next
    order's forwards are untouched, and once an order has no open job its events go to the outbox."""
    db = Database(store_url, readers=1)
    try:
        _ingest(db, "F-1", "F-2")
        ev = store.EventRecord

        def record(*events: tuple[str, str, str]) -> None:
            db.write_sync(store.RecordEventsOp("wh1", "confirm", [ev({"order_no": o, "status": s}, i)
                                                                   for o, s, i in events],
                                               forward=True, received_at=0))

        def up() -> list[tuple[str, str, list[str]]]:
            rows = db.read_sync(lambda c: c.execute(
                "SELECT order_no, state, payload FROM dy_jobs WHERE lane = 'up' ORDER BY id"))
            return [(o, s, [json.loads(e)["status"] for e in store.forward_events(p)]) for o, s, p in rows]

        def claim() -> list[Any]:
            return db.claim_sync(lambda c: store.claim(c, "up", "_upstream", 10, db.owner, 60_000_000, _ids())).jobs

        _legacy_forwards(db, ("F-1", "accepted"), ("F-2", "accepted"))
        record(("F-1", "picking", "b"))  # F-1's ready job has not left: joined
        assert up() == [("F-1", "ready", ["accepted", "picking"]), ("F-2", "ready", ["accepted"])]
        first = claim()
        assert sorted(str(j.order_no) for j in first) == ["F-1", "F-2"]
        record(("F-1", "packed", "d"), ("F-1", "shipped", "e"))  # F-1's job is out: one job waits behind it
        record(("F-1", "delivered", "g"))  # and joins it
        assert up() == [("F-1", "claimed", ["accepted", "picking"]), ("F-2", "claimed", ["accepted"]),
                        ("F-1", "waiting", ["packed", "shipped", "delivered"])]
        # F-1's first job fails (retried later); F-2's is done
        db.write_sync(store.FinishOp([
            JobResult(first[0].id if first[0].order_no == "F-1" else first[1].id, db.owner, "ready",
                      delay_us=60_000_000, reason="upstream: HTTP 503", order_no="F-1", lane="up",
                      warehouse="_upstream"),
            JobResult(first[1].id if first[0].order_no == "F-1" else first[0].id, db.owner, "done",
                      order_no="F-2", lane="up", warehouse="_upstream")]))
        record(("F-2", "picking", "h"))  # F-2 has no job left open: to the outbox
        record(("F-1", "signed", "f"))  # F-1's retried job is not joined; its waiting one is
        assert up() == [("F-1", "ready", ["accepted", "picking"]), ("F-2", "done", ["accepted"]),
                        ("F-1", "waiting", ["packed", "shipped", "delivered", "signed"])]
        assert _outbox(db) == [("F-2", "picking")]
        detail = db.read_sync(lambda c: store_queries.dlq_show(c, up_ids(db)[2]))
        assert detail is not None and [e["status"] for e in detail["event"]] == [
            "packed", "shipped", "delivered", "signed"]
    finally:
        db.close()


def _legacy_forwards(db: Database, *events: tuple[str, str]) -> None:
    """Forward jobs as a store before schema v7 queued them (one per order, its events in order)."""
    db.write_sync(lambda c: store.queue_jobs(c, [("up", "forward", o, "_upstream", json.dumps(
        {"order_no": o, "status": st})) for o, st in events]))


def _outbox(db: Database) -> list[tuple[str, str]]:
    """The upstream outbox's events, oldest first: (order_no, status)."""
    rows = db.read_sync(lambda c: c.execute("SELECT order_no, document FROM dy_forwards ORDER BY id"))
    return [(o, json.loads(d)["status"]) for o, d in rows]


def up_ids(db: Database) -> list[int]:
    rows = db.read_sync(lambda c: c.execute("SELECT id FROM dy_jobs WHERE lane = 'up' ORDER BY id"))
    return [int(r[0]) for r in rows]


def test_events_of_several_orders_join_each_orders_own_forward(db: Database) -> None:
    """One callback's events for several orders whose forward jobs have not left (one statement on
    PostgreSQL): each order's events join that order's job and no other, ready or waiting."""
    _ingest(db, "H-1", "H-2", "H-3")
    ev = store.EventRecord
    _legacy_forwards(db, ("H-1", "accepted"), ("H-2", "accepted"), ("H-3", "accepted"))

    def record(*events: tuple[str, str]) -> None:
        db.write_sync(store.RecordEventsOp("wh1", "confirm", [ev({"order_no": o, "status": st}, o + st)
                                                               for o, st in events], forward=True, received_at=0))

    def up() -> list[tuple[str, str, list[str]]]:
        rows = db.read_sync(lambda c: c.execute("SELECT order_no, state, payload FROM dy_jobs WHERE lane = 'up' "
                                                "ORDER BY id"))
        return [(o, st, [json.loads(e)["status"] for e in store.forward_events(p)]) for o, st, p in rows]

    record(("H-2", "picking"), ("H-1", "picking"))  # their ready jobs, not taken yet
    assert up() == [("H-1", "ready", ["accepted", "picking"]), ("H-2", "ready", ["accepted", "picking"]),
                    ("H-3", "ready", ["accepted"])]
    assert len(db.claim_sync(lambda c: store.claim(c, "up", "_upstream", 10, db.owner, 60_000_000, _ids())).jobs) == 3
    record(("H-1", "packed"), ("H-2", "shipped"), ("H-3", "picking"))  # behind the claimed ones
    record(("H-3", "packed"), ("H-2", "signed"))
    assert up()[3:] == [("H-1", "waiting", ["packed"]), ("H-2", "waiting", ["shipped", "signed"]),
                        ("H-3", "waiting", ["picking", "packed"])]


def test_sqlite_wal_is_checkpointed_off_the_writers_path(tmp_path: Path) -> None:
    """The writer's COMMITs never checkpoint (a checkpoint copies pages and syncs the database: a
    stall of the group that happens to cross SQLite's mark); a thread of the store's own does it.
    Shown by the database file alone, without its WAL: once the checkpointer has run, it holds
    what was committed."""
    import shutil
    import sqlite3
    import time

    path = tmp_path / "state.db"
    db = Database(f"sqlite:///{path}", readers=1)
    try:
        assert db._writer_conn.raw.execute("PRAGMA wal_autocheckpoint").fetchone() == (0,)  # type: ignore[union-attr]
        _ingest(db, *(f"W-{i}" for i in range(50)))
        checkpointer = db._checkpointer
        assert checkpointer is not None
        seen = checkpointer.runs
        deadline = time.monotonic() + 10
        while checkpointer.runs < seen + 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert checkpointer.runs >= seen + 2
        shutil.copy(path, tmp_path / "alone.db")  # the main file only: no -wal beside it
        copy = sqlite3.connect(tmp_path / "alone.db")
        try:
            assert copy.execute("SELECT COUNT(*) FROM dy_orders").fetchone() == (50,)
        finally:
            copy.close()
    finally:
        db.close()
    assert not checkpointer._thread.is_alive()


def test_sqlite_wal_file_is_cut_back_after_a_burst(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A burst grows the WAL file; once the checkpointer has copied it all, the writer's next
    transaction starts the WAL again and cuts the file back to the limit (SQLite otherwise keeps
    the file at its largest for the life of the store)."""
    from dockyard.service import db as db_module

    limit = 256 * 1024
    monkeypatch.setattr(db_module, "WAL_SIZE_LIMIT", limit)
    path = tmp_path / "state.db"
    wal = tmp_path / "state.db-wal"
    db = Database(f"sqlite:///{path}", readers=1)
    try:
        for start in range(0, 2_000, 500):
            _ingest(db, *(f"B-{i}" for i in range(start, start + 500)))
        grown = wal.stat().st_size
        assert grown > 4 * limit
        checkpointer = db._checkpointer
        assert checkpointer is not None
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            seen = checkpointer.runs
            while checkpointer.runs < seen + 2 and time.monotonic() < deadline:
                time.sleep(0.05)
            _ingest(db, f"A-{seen}")  # the next write starts the WAL again, once all of it was copied
            if wal.stat().st_size <= limit:
                break
        assert wal.stat().st_size <= limit < grown
        assert db.read_sync(lambda c: c.execute("SELECT COUNT(*) FROM dy_orders WHERE order_no LIKE 'B-%'")) == [
            (2_000,)]
    finally:
        db.close()


def test_sqlite_wal_stays_bounded_under_steady_writes_and_readers(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Writes that never pause, and a reader that never stops (a dashboard): the checkpointer's
    PASSIVE checkpoints never catch up with the last commit, so before the writer restarted a
    large WAL itself the file only grew for as long as the load lasted. Now it is cut back while
    the writes go on, and nothing written is lost."""
    import threading

    from dockyard.service import db as db_module

    limit = 1024 * 1024
    monkeypatch.setattr(db_module, "WAL_SIZE_LIMIT", limit)
    wal = tmp_path / "state.db-wal"
    db = Database(f"sqlite:///{tmp_path / 'state.db'}", readers=2)
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            db.read_sync(lambda c: c.execute("SELECT COUNT(*) FROM dy_orders WHERE created_at > 0"))

    def cut_back(sizes: list[int]) -> bool:
        """The file shrank (a restart cut it back) after it had grown past the limit."""
        return any(sizes[i - 1] > limit and sizes[i] < sizes[i - 1] // 2 for i in range(1, len(sizes)))

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    try:
        sizes: list[int] = []
        written = 0
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (cut_back(sizes) and written >= 4_000):
            _ingest(db, *(f"S-{i}" for i in range(written, written + 50)))
            written += 50
            sizes.append(wal.stat().st_size)
        # without the writer's restart the file never shrinks while writes go on (SQLite reuses it)
        assert cut_back(sizes), sizes
    finally:
        stop.set()
        thread.join(timeout=10)
        db.close()
    db = Database(f"sqlite:///{tmp_path / 'state.db'}", readers=1)
    try:
        assert db.read_sync(lambda c: c.execute("SELECT COUNT(*) FROM dy_orders")) == [(written,)]
    finally:
        db.close()


def test_the_checkpointer_never_makes_a_store_that_is_gone(tmp_path: Path) -> None:
    """A store whose file was removed under a running service is not made again, empty, by the
    checkpointer's own connection (it opens the file read-write, never create)."""
    import time

    path = tmp_path / "state.db"
    db = Database(f"sqlite:///{path}", readers=1)
    checkpointer = db._checkpointer
    assert checkpointer is not None
    try:
        checkpointer._stop.set()  # stop it before its first connection, then start a fresh one
        checkpointer._thread.join(timeout=5)
        for suffix in ("", "-wal", "-shm"):
            Path(str(path) + suffix).unlink(missing_ok=True)
        fresh = type(checkpointer)(str(path))
        time.sleep(fresh.INTERVAL_S * 3)
        fresh.stop()
        assert not path.exists() and fresh.runs == 0
    finally:
        db.close()


def test_the_store_says_when_the_server_will_not_vacuum_its_queues(store_url: str,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    """A PostgreSQL server with autovacuum (or the statistics it needs) off leaves the outbox's and
    the jobs' dead rows in place: the store says so once, at start, naming the setting; a server
    with both on, and SQLite, get no such warning."""
    with caplog.at_level(logging.WARNING, logger="dockyard.store"):
        db = Database(store_url, readers=1)
    try:
        if db.dialect == "sqlite":
            assert db.server_warnings == []
            return
        settings = dict(db.read_sync(lambda c: c.execute(
            "SELECT name, setting FROM pg_settings WHERE name IN ('autovacuum', 'track_counts')")))
        assert set(settings) == {"autovacuum", "track_counts"}
        for name, value in settings.items():
            said = [w for w in db.server_warnings if f"runs with {name} = " in w]
            assert len(said) == (value != "on"), (name, value, db.server_warnings)
        for warning in db.server_warnings:
            assert warning in caplog.text
            assert "docs/operations.md" in warning
    finally:
        db.close()

