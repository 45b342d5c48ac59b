"""Retention on SQLite and PostgreSQL: what is past each class's retention goes, in bounded
batches (and on PostgreSQL as whole daily journal partitions); nothing of an order that is not
final goes, whatever its age; `--dry-run` counts and deletes nothing; a v2 PostgreSQL journal is
turned into the partitioned one with its history and its ids."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from dockyard.demo import DemoPlan, free_port
from dockyard.service import partitions, queries
from dockyard.service.db import Database
from dockyard.service.retention import RetentionConfig, purge

MAPPINGS = Path(__file__).resolve().parents[2] / "mappings"
DAY = partitions.DAY_US
KEEP_ALL = RetentionConfig(journal=30, jobs=30, events=30, quarantine=30, orders=30)


def _fill(conn: Any, now: int) -> None:
    """Orders of every kind, 40 days old and from today, with their jobs, events and journal."""
    old, new = now - 40 * DAY, now - 60_000_000
    orders = [  # order_no, delivery, job states, at
        ("OLD-DONE", "delivered", ("done",), old),
        ("OLD-CANCELLED", "cancelled", ("done", "cancelled"), old),
        ("OLD-DLQ", "dlq", ("dead",), old),  # not final: an operator may still replay it
        ("OLD-HELD", "delivered", ("done", "held"), old),  # delivered, but a cancel is held in doubt
        ("OLD-PENDING", "pending", ("ready",), old),
        ("NEW-DONE", "delivered", ("done",), new),
    ]
    for no, delivery, states, at in orders:
        conn.execute("INSERT INTO dy_orders (order_no, tracking_id, warehouse, fingerprint, payload, status, delivery, "
                     "created_at, updated_at) VALUES (?, 't', 'wh1', 'f', '{}', 'received', ?, ?, ?)",
                     (no, delivery, at, at))
        for state in states:
            conn.execute("INSERT INTO dy_jobs (lane, kind, order_no, warehouse, state, next_at, created_at, "
                         "updated_at) VALUES ('wh', 'create', ?, 'wh1', ?, ?, ?, ?)", (no, state, at, at, at))
        conn.execute("INSERT INTO dy_events (warehouse, event_id, order_no, status, document, received_at) "
                     "VALUES ('wh1', ?, ?, 'shipped', '{}', ?)", (f"ev-{no}", no, at))
        for step in ("received", "committed", "feedback"):
            conn.execute("INSERT INTO dy_journal (at, order_no, warehouse, flow, step, outcome) "
                         "VALUES (?, ?, 'wh1', 'create', ?, 'ok')", (at, no, step))
    for at in (old, old + 1, new):
        conn.execute("INSERT INTO dy_journal (at, order_no, warehouse, step, outcome) "
                     "VALUES (?, NULL, 'wh1', 'callback-rejected', 'forged')", (at,))
        conn.execute("INSERT INTO dy_quarantine (received_at, source, reasons, body) VALUES (?, 'order', '[]', '{}')",
                     (at,))


def _counts(db: Database) -> dict[str, int]:
    def read(conn: Any) -> dict[str, int]:
        return {t: int(conn.execute(f"SELECT COUNT(*) FROM dy_{t}")[0][0])
                for t in ("orders", "jobs", "events", "quarantine", "journal")}
    return db.read_sync(read)


def test_purge_keeps_open_orders_and_takes_the_rest(store_url: str) -> None:
    db = Database(store_url, readers=1)
    try:
        now = db.read_sync(lambda c: c.now)
        if db.dialect == "postgres":  # the day 40 days ago gets a partition of its own, as a live store's would
            made = db.claim_sync(lambda c: partitions.ensure(c, now - 40 * DAY, ahead=0))
            assert made == [partitions._name(now - 40 * DAY - (now - 40 * DAY) % DAY)]
        db.write_sync(lambda c: _fill(c, now))
        before = _counts(db)

        dry = {r.name: r for r in purge(db, KEEP_ALL, dry_run=True, now=now)}
        assert _counts(db) == before  # a dry run deletes nothing
        # journal: 2 final old orders x 3 rows + 2 rows of no order; the 3 open ones' 9 rows stay
        assert dry["journal"].rows == 8
        assert (dry["orders"].rows, dry["jobs"].rows, dry["events"].rows, dry["quarantine"].rows) == (2, 3, 2, 2)
        if db.dialect == "postgres":
            assert len(dry["journal"].partitions) == 1 and dry["journal"].kept == 9

        done = {r.name: r for r in purge(db, KEEP_ALL, batch=2, now=now)}  # small batches: several rounds
        assert {n: r.rows for n, r in done.items()} == {n: r.rows for n, r in dry.items()}
        left = db.read_sync(lambda c: sorted(r[0] for r in c.execute("SELECT order_no FROM dy_orders")))
        assert left == ["NEW-DONE", "OLD-DLQ", "OLD-HELD", "OLD-PENDING"]
        for no in ("OLD-DLQ", "OLD-HELD", "OLD-PENDING"):  # an open order keeps its whole history
            steps = db.read_sync(lambda c, n=no: [s["step"] for s in queries.timeline(c, n)])
            assert steps == ["received", "committed", "feedback"], no
            assert db.read_sync(lambda c, n=no: c.execute("SELECT COUNT(*) FROM dy_events WHERE order_no = ?",
                                                           (n,))[0][0]) == 1
        assert db.read_sync(lambda c: c.execute("SELECT COUNT(*) FROM dy_jobs WHERE order_no = 'OLD-DONE'"))[0][0] == 0
        after = _counts(db)
        assert after["quarantine"] == 1 and after["journal"] == before["journal"] - 8
        if db.dialect == "postgres":
            names = [p.name for p in db.read_sync(partitions.listing)]
            assert partitions._name(now - 40 * DAY - (now - 40 * DAY) % DAY) not in names
            assert "dy_journal_default" in names  # where the open orders' old rows went

        # a second run finds nothing more
        again = purge(db, KEEP_ALL, now=now)
        assert sum(r.rows for r in again) == 0
        # nothing configured: nothing goes, whatever the age
        assert sum(r.rows for r in purge(db, RetentionConfig(), now=now + 400 * DAY)) == 0
        assert _counts(db) == after
    finally:
        db.close()


def test_the_purge_command_and_its_dry_run(store_url: str, tmp_path: Path, bundle_dir: Path) -> None:
    from dockyard.cli import main

    db = Database(store_url, readers=1)
    try:
        now = db.read_sync(lambda c: c.now)
        db.write_sync(lambda c: _fill(c, now))
        before = _counts(db)
    finally:
        db.close()
    work = tmp_path / "work"
    plan = DemoPlan(work, MAPPINGS, store=store_url, warehouses=("qimen-std",))
    plan.sim_base = "http://127.0.0.1:9"  # never called: the command only reads the config
    work.mkdir()
    (work / "bundle").symlink_to(bundle_dir)
    config = plan.write(free_port())
    with config.open("a", encoding="utf-8") as f:
        f.write("\nretention: {quarantine: 30, orders: 30}\n")
    out = CliRunner().invoke(main, ["purge", "--dry-run", "--config", str(config)], catch_exceptions=False)
    assert out.exit_code == 0, out.output
    assert "quarantine  older than 30 d" in out.output and "2 row(s) would go" in out.output
    assert "journal     kept for ever" in out.output and "dry run: nothing was deleted" in out.output
    db = Database(store_url, readers=1)
    try:
        assert _counts(db) == before
    finally:
        db.close()
    out = CliRunner().invoke(main, ["purge", "--config", str(config), "--json"], catch_exceptions=False)
    assert out.exit_code == 0, out.output
    rows = {r["name"]: r["rows"] for r in json.loads(out.output)}
    assert rows == {"journal": 0, "jobs": 0, "events": 0, "quarantine": 2, "orders": 2}


@pytest.fixture
def pg_url() -> Any:
    from e2e import fresh_postgres_database

    with fresh_postgres_database() as url:
        yield url


def test_a_v2_postgres_journal_becomes_partitioned_with_its_history(pg_url: str) -> None:
    import psycopg

    from dockyard.service.schema import DDL, JOURNAL, JOURNAL_INDEXES

    v2 = DDL.replace("{journal}", JOURNAL.format(id="{serial} PRIMARY KEY", partitioned="") + ";\n"
                     + ";\n".join(JOURNAL_INDEXES)).format(serial="BIGSERIAL")
    with psycopg.connect(pg_url, autocommit=True) as conn:
        for stmt in v2.split(";"):
            if stmt.strip():
                conn.execute(stmt)
        conn.execute("INSERT INTO dy_meta VALUES ('schema_version', '2')")
        now = int(conn.execute("SELECT (extract(epoch from clock_timestamp()) * 1000000)::bigint").fetchone()[0])
        for i, at in enumerate((now - 50 * DAY, now - 10 * DAY, now - 1000)):
            conn.execute("INSERT INTO dy_journal (at, order_no, step, outcome) VALUES (%s, %s, 'received', 'ok')",
                         (at, f"V2-{i}"))
    for _ in range(2):  # the second open finds it done
        db = Database(pg_url, readers=1)
        try:
            assert db.read_sync(partitions.is_partitioned)
            parts = db.read_sync(partitions.listing)
            legacy = next(p for p in parts if p.name == "dy_journal_v2")
            assert legacy.lo is None and legacy.hi is not None and legacy.hi > now
            assert any(p.default for p in parts) and any(p.lo == legacy.hi for p in parts)
            rows = db.read_sync(lambda c: c.execute("SELECT id, order_no FROM dy_journal ORDER BY id"))
            assert [r[1] for r in rows[:3]] == ["V2-0", "V2-1", "V2-2"]
            db.write_sync(lambda c: c.execute("INSERT INTO dy_journal (at, order_no, step, outcome) "
                                              "VALUES (?, 'V3', 'received', 'ok')", (c.now,)))
            ids = db.read_sync(lambda c: [r[0] for r in c.execute("SELECT id FROM dy_journal ORDER BY at, id")])
            assert ids == sorted(ids) and len(set(ids)) == len(ids)  # the sequence went on
            # the old history is one partition: it goes when all of it has passed retention
            report = {r.name: r for r in purge(db, RetentionConfig(journal=30))}
            assert report["journal"].partitions == [] and report["journal"].rows == 0
            plan = db.read_sync(lambda c: c.execute("EXPLAIN SELECT * FROM dy_journal WHERE at >= ?", (now,)))
            assert "dy_journal_v2" in " ".join(r[0] for r in plan)  # pruning: the day's rows are in the legacy part
        finally:
            db.close()


def test_maintenance_makes_the_days_ahead_that_are_missing(pg_url: str) -> None:
    from dockyard.service.retention import maintain_once

    db = Database(pg_url, readers=1)
    try:
        now = db.read_sync(lambda c: c.now)
        days = [partitions._name(now - now % DAY + n * DAY) for n in range(partitions.AHEAD_DAYS + 1)]
        assert set(days) <= {p.name for p in db.read_sync(partitions.listing)}  # made with the schema
        db.claim_sync(lambda c: c.execute(f"DROP TABLE {days[-1]}"))
        assert maintain_once(db, RetentionConfig(), lambda: False) == []  # no retention: nothing purged
        assert set(days) <= {p.name for p in db.read_sync(partitions.listing)}
        # a day whose rows already went to the default partition (maintenance late) is left there
        late = now - now % DAY + (partitions.AHEAD_DAYS + 2) * DAY
        db.write_sync(lambda c: c.execute("INSERT INTO dy_journal (at, step, outcome) VALUES (?, 'x', 'ok')",
                                          (late + 5,)))
        assert db.claim_sync(lambda c: partitions.ensure(c, late, ahead=1)) == [partitions._name(late + DAY)]
        assert db.read_sync(lambda c: c.execute("SELECT COUNT(*) FROM dy_journal_default")[0][0]) == 1
    finally:
        db.close()


def test_maintenance_drops_the_dashboards_old_counters(store_url: str) -> None:
    from dockyard.service.counters import BUCKET_US, KEEP_US
    from dockyard.service.retention import maintain_once

    db = Database(store_url, readers=1)
    try:
        now = db.read_sync(lambda c: c.now)
        now -= now % BUCKET_US
        ages = [now - KEEP_US - 3 * 3600 * 1_000_000, now - KEEP_US - BUCKET_US, now - KEEP_US + BUCKET_US, now]
        db.write_sync(lambda c: c.executemany("INSERT INTO dy_counters (bucket, warehouse, kind, n) "
                                              "VALUES (?, ?, ?, ?)", [(b, "wh1", "received", 1) for b in ages]))
        maintain_once(db, RetentionConfig(), lambda: False)
        left = db.read_sync(lambda c: [r[0] for r in c.execute("SELECT bucket FROM dy_counters ORDER BY bucket")])
        assert left == ages[2:]
    finally:
        db.close()
