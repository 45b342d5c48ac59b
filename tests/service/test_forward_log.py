"""The upstream outbox (forward_log.py) on SQLite and PostgreSQL: events appended one row each in
the order they were recorded, partitions leased by one node at a time and shared between live
nodes, batches read oldest first past partitions that back off, a sent batch journaled once however
often it went, and a batch out of attempts dead-lettered as one forward job per order that the DLQ
shows and replays. Two `Database` objects on one store stand for two nodes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from typing import Any

from test_overview import _Recorder

from dockyard.service import forward_log, queries, store
from dockyard.service.db import Conn, Database
from dockyard.service.forward_log import FailedBatch, FinishForwardsOp, LogEvent
from dockyard.service.schema import FORWARD_PARTS
from dockyard.service.store import IngestItem

LEASE_US = 30_000_000


def _ingest(db: Database, *order_nos: str) -> None:
    items = [IngestItem(no, uuid.uuid4().hex, "wh1", None, None, "fp-" + no, json.dumps({"order_no": no}), 0,
                        "default", False) for no in order_nos]
    db.write_sync(store.IngestOp(items))


def _record(db: Database, *events: tuple[str, str]) -> None:
    db.write_sync(store.RecordEventsOp("wh1", "confirm", [store.EventRecord({"order_no": o, "status": s}, o + s)
                                                           for o, s in events], forward=True, received_at=0))


def _lease(db: Database, gone: bool = False) -> dict[int, str | None]:
    return db.claim_sync(lambda c: forward_log.lease(c, db.owner, LEASE_US, lambda _c, _o: gone))


def _read(db: Database, parts: Any, limit: int = 100) -> tuple[list[LogEvent], int | None]:
    return db.read_sync(lambda c: forward_log.read_batch(c, sorted(parts), limit))


def _statuses(batch: list[LogEvent]) -> list[tuple[str, str]]:
    return [(e.order_no, json.loads(e.document)["status"]) for e in batch]


def _journal(db: Database, step: str) -> list[tuple[str, str]]:
    return db.read_sync(lambda c: c.execute("SELECT order_no, step FROM dy_journal WHERE step = ? ORDER BY id",
                                            (step,)))


def test_events_go_to_the_outbox_one_row_each_in_order_and_no_job(db: Database) -> None:
    _ingest(db, "L-1", "L-2")
    _record(db, ("L-1", "accepted"), ("L-2", "accepted"))
    _record(db, ("L-1", "picking"), ("L-1", "packed"))
    rows = db.read_sync(lambda c: c.execute("SELECT part, order_no, document FROM dy_forwards ORDER BY id"))
    assert [(o, json.loads(d)["status"]) for _, o, d in rows] == [
        ("L-1", "accepted"), ("L-2", "accepted"), ("L-1", "picking"), ("L-1", "packed")]
    assert all(part == store.part_of(o) for part, o, _ in rows)
    assert db.read_sync(lambda c: c.execute("SELECT COUNT(*) FROM dy_jobs WHERE lane = 'up'")) == [(0,)]
    counts = db.read_sync(queries.job_counts)
    assert counts["outbox_up"] == 4  # the dashboard's upstream outbox counts the events waiting


def test_an_orders_partition_is_the_same_in_every_process() -> None:
    """Every node must agree which partition, and so which node, forwards an order's events: the
    partition may not depend on the process (as hash() of a str does, per PYTHONHASHSEED)."""
    numbers = [f"SO-{n}" for n in range(300)] + ["单号-1", "", "x" * 500]
    code = ("import json, sys; from dockyard.service.store import part_of; "
            "print(json.dumps([part_of(n) for n in json.load(sys.stdin)]))")
    seen = []
    for seed in ("1", "2"):
        out = subprocess.run([sys.executable, "-c", code], input=json.dumps(numbers), capture_output=True,
                             text=True, check=True, env={**os.environ, "PYTHONHASHSEED": seed})
        seen.append(json.loads(out.stdout))
    assert seen[0] == seen[1] == [store.part_of(n) for n in numbers]
    assert all(0 <= p < FORWARD_PARTS for p in seen[0])
    assert len(set(seen[0])) == FORWARD_PARTS  # 300 orders reach every partition


def test_one_node_leases_every_partition_and_two_share_them(store_url: str) -> None:
    a, b = Database(store_url, readers=1), Database(store_url, readers=1)
    try:
        for node in (a, b):  # both are live (their heartbeats are in dy_nodes)
            node.write_sync(lambda c: None)
        b.write_sync(lambda c: c.execute("UPDATE dy_nodes SET heartbeat_at = 0 WHERE owner = ?", (b.owner,)))
        assert sorted(_lease(a)) == list(range(FORWARD_PARTS))  # alone: all of them
        a.write_sync(lambda c: c.execute("UPDATE dy_nodes SET heartbeat_at = ? WHERE owner = ?", (c.now, b.owner)))
        assert _lease(b) == {}  # a holds them all, its leases run and it is not gone
        held_a = _lease(a)  # a sees two live nodes and gives back what is above its share
        held_b = _lease(b)
        assert len(held_a) == len(held_b) == FORWARD_PARTS // 2
        assert not set(held_a) & set(held_b)
        # b stops beating and its leases run out: a takes its partitions back
        b.write_sync(lambda c: c.execute("UPDATE dy_forward_parts SET lease_until = 0 WHERE owner = ?", (b.owner,)))
        a.write_sync(lambda c: c.execute("UPDATE dy_nodes SET heartbeat_at = 0 WHERE owner = ?", (b.owner,)))
        assert sorted(_lease(a)) == list(range(FORWARD_PARTS))
        # a node that is gone (its session ended) loses its partitions before its lease runs out
        b.write_sync(lambda c: c.execute("UPDATE dy_nodes SET heartbeat_at = 0 WHERE owner = ?", (a.owner,)))
        assert _lease(b, gone=False) == {}
        assert sorted(_lease(b, gone=True)) == list(range(FORWARD_PARTS))
        # a clean stop hands them over at once
        assert b.claim_sync(lambda c: forward_log.release(c, b.owner)) == FORWARD_PARTS
        assert sorted(_lease(a)) == list(range(FORWARD_PARTS))
    finally:
        a.close()
        b.close()


def test_a_batch_is_oldest_first_and_skips_partitions_that_back_off(db: Database) -> None:
    orders = [f"R-{n}" for n in range(40)]
    _ingest(db, *orders)
    for status in ("accepted", "picking"):
        _record(db, *((o, status) for o in orders))
    held = _lease(db)
    batch, _ = _read(db, held, limit=30)
    assert [e.id for e in batch] == sorted(e.id for e in batch) and len(batch) == 30
    assert _statuses(batch)[:len(orders)] == [(o, "accepted") for o in orders][:30]
    # one partition backs off: none of its events is read, the others' are; with every partition
    # backing off, nothing is read and the answer says when the first is due again
    stuck = store.part_of("R-0")
    db.write_sync(lambda c: c.execute("UPDATE dy_forward_parts SET next_at = ? WHERE part = ?", (c.now + 10_000_000,
                                                                                                  stuck)))
    batch, _ = _read(db, held)
    assert batch and all(e.part != stuck for e in batch)
    assert len(batch) == sum(1 for o in orders if store.part_of(o) != stuck) * 2
    batch, due_in = _read(db, [stuck])
    assert batch == [] and due_in is not None and 0 < due_in <= 10_000_000
    assert _read(db, []) == ([], None)


def test_a_sent_batch_is_deleted_and_journaled_once_however_often_it_went(store_url: str) -> None:
    a, b = Database(store_url, readers=1), Database(store_url, readers=1)
    try:
        _ingest(a, "S-1", "S-2")
        _record(a, ("S-1", "accepted"), ("S-2", "accepted"), ("S-1", "picking"))
        batch, _ = _read(a, range(FORWARD_PARTS))
        assert len(batch) == 3
        # two nodes sent the same batch (the first was slow past its lease): one journal row per event
        assert a.write_sync(FinishForwardsOp(batch, None)) == 3
        assert b.write_sync(FinishForwardsOp(batch, None)) == 0
        assert _journal(a, "forwarded") == [("S-1", "forwarded"), ("S-2", "forwarded"), ("S-1", "forwarded")]
        assert a.read_sync(forward_log.depth) == 0
    finally:
        a.close()
        b.close()


def test_a_failed_batch_backs_off_and_out_of_attempts_is_one_dead_job_per_order(db: Database) -> None:
    _ingest(db, "D-1", "D-2")
    _record(db, ("D-1", "accepted"), ("D-2", "accepted"), ("D-1", "picking"))
    held = _lease(db)
    batch, _ = _read(db, held)
    failed = FailedBatch("HTTP 503", 60_000_000, max_attempts=2)
    db.write_sync(FinishForwardsOp(batch, failed))
    assert _journal(db, "forward-failed") == [("D-1", "forward-failed"), ("D-2", "forward-failed")]
    again, due_in = _read(db, held)
    assert again == [] and due_in is not None and due_in > 50_000_000  # its partitions back off
    assert set(_lease(db).values()) >= {"HTTP 503"}
    db.write_sync(lambda c: c.execute("UPDATE dy_forward_parts SET next_at = 0"))  # the back-off is over
    again, _ = _read(db, held)
    assert [e.id for e in again] == [e.id for e in batch] and all(e.attempts == 1 for e in again)
    db.write_sync(FinishForwardsOp(again, failed))  # the second attempt of two fails: dead letters
    assert db.read_sync(forward_log.depth) == 0
    dead = db.read_sync(lambda c: c.execute(
        "SELECT id, order_no, state, payload, reason FROM dy_jobs WHERE lane = 'up' ORDER BY order_no"))
    assert [(o, s, [json.loads(e)["status"] for e in store.forward_events(p)]) for _, o, s, p, _ in dead] == [
        ("D-1", "dead", ["accepted", "picking"]), ("D-2", "dead", ["accepted"])]
    assert all("HTTP 503" in str(r[4]) for r in dead)
    journaled = db.read_sync(lambda c: c.execute("SELECT order_no, detail FROM dy_journal WHERE step = 'dead-lettered' "
                                                 "ORDER BY order_no"))
    assert [(o, json.loads(d)["job"]) for o, d in journaled] == [(r[1], r[0]) for r in dead]
    shown = db.read_sync(lambda c: queries.dlq_show(c, dead[0][0]))
    assert shown is not None and [e["status"] for e in shown["event"]] == ["accepted", "picking"]
    # replayed, the dead job is forwarded as a job; the order's next event waits behind it
    assert db.write_sync(lambda c: store.replay(c, [dead[0][0]])) == [(dead[0][0], "replayed")]
    _record(db, ("D-1", "packed"), ("D-2", "picking"))
    up = db.read_sync(lambda c: c.execute("SELECT order_no, state, payload FROM dy_jobs WHERE lane = 'up' "
                                          "AND state <> 'dead' ORDER BY id"))
    assert [(o, s, [json.loads(e)["status"] for e in store.forward_events(p)]) for o, s, p in up] == [
        ("D-1", "ready", ["accepted", "picking", "packed"])]
    assert [(o, json.loads(d)["status"]) for o, d in db.read_sync(
        lambda c: c.execute("SELECT order_no, document FROM dy_forwards"))] == [("D-2", "picking")]


def test_rows_left_over_by_an_isolation_back_off_without_counting_an_attempt(db: Database) -> None:
    """A refused batch's rows that were not found at fault (FailedBatch(counts=False)): their
    partitions back off, but they keep their attempts, are never dead-lettered however often this
    happens, and journal nothing."""
    _ingest(db, "L-1")
    _record(db, ("L-1", "accepted"))
    held = _lease(db)
    batch, _ = _read(db, held)
    left_over = FailedBatch("HTTP 422 for this event alone; more events of the batch not tried this round",
                            60_000_000, max_attempts=1, counts=False)
    for _ in range(3):
        db.write_sync(FinishForwardsOp(batch, left_over))
        again, due_in = _read(db, held)
        assert again == [] and due_in is not None and due_in > 50_000_000  # backed off
        db.write_sync(lambda c: c.execute("UPDATE dy_forward_parts SET next_at = 0"))
    again, _ = _read(db, held)
    assert [(e.id, e.attempts) for e in again] == [(e.id, 0) for e in batch]
    assert db.read_sync(lambda c: c.execute("SELECT COUNT(*) FROM dy_jobs WHERE lane = 'up'"))[0][0] == 0
    assert _journal(db, "forward-failed") == [] and _journal(db, "dead-lettered") == []


def test_a_successful_batch_ends_its_partitions_back_off(db: Database) -> None:
    _ingest(db, "C-1")
    _record(db, ("C-1", "accepted"))
    part = store.part_of("C-1")
    db.write_sync(lambda c: c.execute("UPDATE dy_forward_parts SET reason = 'HTTP 503' WHERE part = ?", (part,)))
    batch, _ = _read(db, [part])
    db.write_sync(FinishForwardsOp(batch, None, clear=[part]))

    def reason(c: Conn) -> Any:
        return c.execute("SELECT reason FROM dy_forward_parts WHERE part = ?", (part,))[0][0]
    assert db.read_sync(reason) is None


def test_a_batch_is_read_through_the_primary_key_under_a_large_backlog_without_statistics(db: Database) -> None:
    """An upstream outage leaves a backlog of hundreds of thousands of events in a table that was
    never analysed. Reading a batch of this node's partitions still walks the primary key in order
    and stops at the batch (no scan of the table into a sort), whatever share of them it holds."""
    n = 300_000
    if db.dialect == "postgres":
        series = f"SELECT g AS n FROM generate_series(1, {n}) g"
    else:
        series = f"WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < {n}) SELECT n FROM s"
    db.write_sync(lambda c: c.execute(f"INSERT INTO dy_forwards (part, order_no, document, created_at) "
                                      f"SELECT n % {FORWARD_PARTS}, 'B-' || n, '{{}}', n FROM ({series}) x"))
    explain = "EXPLAIN QUERY PLAN " if db.dialect == "sqlite" else "EXPLAIN "
    for held in (list(range(FORWARD_PARTS)), [1, 5, 9]):
        recorder: list[_Recorder] = []

        def read(conn: Any, held: list[int] = held, recorder: list[_Recorder] = recorder) -> Any:
            recorder.append(_Recorder(conn))
            return forward_log.read_batch(recorder[-1], held, 100)
        batch, _ = db.read_sync(read)
        assert len(batch) == 100 and {e.part for e in batch} <= set(held)
        assert [e.id for e in batch] == sorted(e.id for e in batch)
        sql, params = next((s, p) for s, p in recorder[0].statements if "FROM dy_forwards" in s)
        plan = "\n".join(" ".join(str(x) for x in row)
                         for row in db.read_sync(lambda c, s=sql, p=params: c.execute(explain + s, p)))
        assert "Seq Scan" not in plan and "Sort" not in plan and "TEMP B-TREE" not in plan, plan
        assert "dy_forwards_pkey" in plan or db.dialect == "sqlite", plan
