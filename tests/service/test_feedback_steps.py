"""An applied status event is its own `feedback ok` step (schema v9): its row in dy_events holds
what that step's journal row held, and `dockyard trace` (queries.timeline), the order page and
the UI show the same steps as when it was a journal row, in the same order, with the same
details. The unusual outcomes (duplicate, unknown or foreign order) stay journal rows. On SQLite
and PostgreSQL."""

from __future__ import annotations

import json
import uuid
from typing import Any

from test_store import _reopened_twice

from dockyard.service import queries, store
from dockyard.service.db import Conn, Database
from dockyard.service.forward_log import FinishForwardsOp, read_batch
from dockyard.service.schema import FORWARD_PARTS
from dockyard.service.store import EventRecord, IngestItem, RecordEventsOp


def _ingest(db: Database, order_no: str) -> None:
    db.write_sync(store.IngestOp([IngestItem(order_no, uuid.uuid4().hex, "wh1", None, None, "fp-" + order_no,
                                             json.dumps({"order_no": order_no}), 0, "default", False)]))


def _callback(db: Database, *events: tuple[str, dict[str, Any]], warehouse: str = "wh1",
              verified_with: str | None = None, received_at: int = 1_000) -> None:
    db.write_sync(RecordEventsOp(warehouse, "confirm", [EventRecord({"order_no": "T-1", **e}, i) for i, e in events],
                                 forward=True, received_at=received_at, verified_with=verified_with))


def _forward(db: Database) -> None:
    batch, _ = db.read_sync(lambda c: read_batch(c, list(range(FORWARD_PARTS)), 100))
    db.write_sync(FinishForwardsOp(batch, None))


def _timeline(db: Database) -> list[dict[str, Any]]:
    return db.read_sync(lambda c: queries.timeline(c, "T-1"))


def test_an_orders_feedback_steps_are_shown_as_they_always_were(db: Database) -> None:
    """Applied events, duplicates (of an earlier commit, and of the same callback), a foreign
    warehouse's event and the forwards, as the timeline shows them: steps, order and details.
    (This test passes unchanged on a tree before v9, where every step was a journal row.)"""
    _ingest(db, "T-1")
    _callback(db, ("a", {"status": "accepted"}), ("b", {"status": "picking", "raw_status": "PICK"}),
              verified_with="current")
    # one commit: a duplicate of an earlier commit's event, a new one, that one again, another new one
    _callback(db, ("a", {"status": "accepted"}), ("c", {"status": "packed"}), ("c", {"status": "packed"}),
              ("d", {"status": "shipped", "raw_status": "OUT", "waybills": [{"no": "SF1", "carrier": "SF"}]}))
    _callback(db, ("e", {"status": "signed"}), warehouse="wh2")  # another warehouse's event for the order
    _forward(db)
    steps = _timeline(db)
    ok = {"raw_status": None, "waybills": None}
    sqlite = db.dialect == "sqlite"
    assert [(s["step"], s["outcome"], s["warehouse"], s["flow"], s["detail"]) for s in steps
            if s["step"] in ("feedback", "forwarded")] == [
        ("feedback", "ok", "wh1", "confirm", {"event_id": "a", "status": "accepted", **ok, "verified_with": "current"}),
        ("feedback", "ok", "wh1", "confirm", {"event_id": "b", "status": "picking", "raw_status": "PICK",
                                              "waybills": None, "verified_with": "current"}),
        ("feedback", "duplicate", "wh1", "confirm", {"event_id": "a", "status": "accepted"}),
        ("feedback", "ok", "wh1", "confirm", {"event_id": "c", "status": "packed", **ok}),
        ("feedback", "duplicate", "wh1", "confirm", {"event_id": "c", "status": "packed"}),
        ("feedback", "ok", "wh1", "confirm", {"event_id": "d", "status": "shipped", "raw_status": "OUT",
                                              "waybills": [{"no": "SF1", "carrier": "SF"}]}),
        ("feedback", "foreign-order", "wh2", "confirm", {
            "event_id": "e", "status": "signed",
            "reason": "order 'T-1' was routed to another warehouse, not wh2"}),
        *[("forwarded", "ok", store.UPSTREAM, "forward", {"batch": 4})] * 4,
    ]
    for s in steps:
        if s["step"] == "feedback" and s["outcome"] == "ok":  # received → recorded, as SQLite journaled it
            assert s["elapsed_ms"] == (round((s["at_us"] - 1_000) / 1000, 3) if sqlite else None)
    assert [s["at_us"] for s in steps] == sorted(s["at_us"] for s in steps)
    assert all(s["at"] == queries._iso(s["at_us"]) for s in steps)
    text = queries.format_timeline("T-1", steps)
    assert text.count(" feedback ") == 7 and '"waybills": [{"no": "SF1", "carrier": "SF"}]' in text


def test_an_applied_event_writes_no_journal_row(db: Database) -> None:
    """The unusual outcomes are journaled; an applied event is its row, with the step's fields."""
    _ingest(db, "T-1")
    _callback(db, ("a", {"status": "accepted"}), ("a", {"status": "accepted"}), verified_with="previous")
    _callback(db, ("x", {"status": "accepted", "order_no": "NOPE"}))
    journaled = db.read_sync(lambda c: c.execute("SELECT order_no, outcome FROM dy_journal WHERE step = 'feedback' "
                                                 "ORDER BY id"))
    assert journaled == [("T-1", "duplicate"), ("NOPE", "unknown-order")]
    row = db.read_sync(lambda c: c.execute("SELECT flow, verified_with, slot, recorded_at >= received_at "
                                           "FROM dy_events"))
    assert row == [("confirm", "previous", 0, True)]


def _as_v8(db: Database) -> None:
    """Set the store back to schema v8: each applied event's step becomes the journal row v8 wrote
    for it (the same time, detail and elapsed time), and v9's columns go."""
    def back(c: Conn) -> None:
        rows = c.execute("SELECT recorded_at, order_no, warehouse, flow, event_id, verified_with, received_at, "
                         "document FROM dy_events WHERE recorded_at IS NOT NULL ORDER BY recorded_at, slot")
        for at, order_no, warehouse, flow, event_id, verified_with, received_at, document in rows:
            event = json.loads(document)
            detail = {"event_id": event_id, "status": event.get("status"), "raw_status": event.get("raw_status"),
                      "waybills": event.get("waybills"), **({"verified_with": verified_with} if verified_with else {})}
            store.write_journal(c, [store.JournalRow(
                at, order_no, warehouse, flow, "feedback", "ok",
                max(0, at - received_at) if c.dialect == "sqlite" else None, detail).values()])
        for column in ("recorded_at", "flow", "verified_with", "slot"):
            c.execute(f"ALTER TABLE dy_events DROP COLUMN {column}")
        c.execute("UPDATE dy_meta SET value = '8' WHERE name = 'schema_version'")
    db.write_sync(back)


def test_a_version_8_store_keeps_its_feedback_history(store_url: str) -> None:
    """v9 adds the step's columns to dy_events. A v8 store (its applied events journaled) is
    migrated once: its timeline is what it was; an event applied after the upgrade is its row."""
    db = Database(store_url, readers=1)
    try:
        _ingest(db, "T-1")
        _callback(db, ("a", {"status": "accepted"}), verified_with="current")
        _callback(db, ("b", {"status": "picking", "waybills": [{"no": "1"}]}))
        _forward(db)
        before = _timeline(db)
        _as_v8(db)
    finally:
        db.close()
    for db in _reopened_twice(store_url):
        assert db.read_sync(lambda c: c.execute("SELECT recorded_at, flow, verified_with, slot FROM dy_events")) == [
            (None, None, None, None)] * 2
        assert [{**s, "id": None} for s in _timeline(db)] == [{**s, "id": None} for s in before]
    db = Database(store_url, readers=1)
    try:
        _callback(db, ("c", {"status": "packed"}))
        steps = _timeline(db)
        assert [{**s, "id": None} for s in steps[:len(before)]] == [{**s, "id": None} for s in before]
        assert [(s["step"], s["outcome"], s["id"], s["detail"]["event_id"]) for s in steps[len(before):]] == [
            ("feedback", "ok", None, "c")]
        assert db.read_sync(lambda c: c.execute("SELECT COUNT(*) FROM dy_journal WHERE step = 'feedback'")) == [(2,)]
    finally:
        db.close()


def test_steps_of_one_commit_keep_their_order_among_the_other_ops_rows(db: Database) -> None:
    """One commit that ingests the order and applies its first event (the `received` row of the
    ingest came first); one that applies an event and forwards the earlier one (the forward's row
    came after). (This test, too, passes unchanged on a tree before v9.)"""
    item = IngestItem("T-1", uuid.uuid4().hex, "wh1", None, None, "fp-T-1", json.dumps({"order_no": "T-1"}), 0,
                      "default", False)
    first = RecordEventsOp("wh1", "confirm", [EventRecord({"order_no": "T-1", "status": "accepted"}, "a")],
                           forward=True, received_at=1_000)
    db.write_sync(lambda tx: (store.IngestOp.run(tx, [store.IngestOp([item])]), RecordEventsOp.run(tx, [first])))
    batch, _ = db.read_sync(lambda c: read_batch(c, list(range(FORWARD_PARTS)), 100))
    second = RecordEventsOp("wh1", "confirm", [EventRecord({"order_no": "T-1", "status": "picking"}, "b"),
                                               EventRecord({"order_no": "T-1", "status": "accepted"}, "a")],
                            forward=True, received_at=1_000)
    db.write_sync(lambda tx: (RecordEventsOp.run(tx, [second]),
                              FinishForwardsOp.run(tx, [FinishForwardsOp(batch, None)])))
    steps = _timeline(db)
    moments = sorted({s["at_us"] for s in steps})
    assert [[(s["step"], s["outcome"], (s["detail"] or {}).get("event_id")) for s in steps if s["at_us"] == at]
            for at in moments] == [
        [("received", "ok", None), ("validated", "ok", None), ("routed", "ok", None), ("feedback", "ok", "a")],
        [("feedback", "ok", "b"), ("feedback", "duplicate", "a"), ("forwarded", "ok", None)],
    ]


def test_a_foreign_event_in_the_same_commit_stands_where_its_journal_row_stood(db: Database) -> None:
    """One commit holds an applied event for the order and another warehouse's event for it: the
    other warehouse's row was journaled before any applied or duplicate step of that commit (it is
    known before the events are inserted), and the timeline keeps that order. (This test, too,
    passes unchanged on a tree before v9.)"""
    _ingest(db, "T-1")
    applied = RecordEventsOp("wh1", "confirm", [EventRecord({"order_no": "T-1", "status": "accepted"}, "a"),
                                                EventRecord({"order_no": "T-1", "status": "picking"}, "b")],
                             forward=False, received_at=1_000)
    foreign = RecordEventsOp("wh2", "confirm", [EventRecord({"order_no": "T-1", "status": "signed"}, "e")],
                             forward=False, received_at=1_000)
    db.write_sync(lambda tx: RecordEventsOp.run(tx, [applied, foreign]))
    assert [(s["outcome"], s["detail"]["event_id"]) for s in _timeline(db) if s["step"] == "feedback"] == [
        ("foreign-order", "e"), ("ok", "a"), ("ok", "b")]
