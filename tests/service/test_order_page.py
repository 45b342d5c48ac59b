"""An order's page (`GET /orders/{no}`, and the dashboard's order page) as the store reads it:
`queries.order_status` answers what the three plain SELECTs it once was answer, in one statement,
which on PostgreSQL is one round trip (no transaction around it, no clock): counted on the wire by
libpq's trace, on SQLite by the connection's statement trace. PostgreSQL's readers stay read-only."""

from __future__ import annotations

import collections
import contextlib
import json
import os
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import pytest

from dockyard.service import queries
from dockyard.service.db import Conn, Database


def _as_three_selects(conn: Conn, order_no: str) -> dict[str, Any] | None:
    """The order's page as it was read before it became one statement: the reference answer."""
    rows = conn.execute("SELECT order_no, tracking_id, warehouse, status, delivery, warehouse_order_id, waybills, "
                        "created_at, updated_at FROM dy_orders WHERE order_no = ?", (order_no,))
    if not rows:
        return None
    no, tracking, warehouse, status, delivery, wh_id, waybills, created, updated = rows[0]
    jobs = conn.execute("SELECT id, lane, kind, state, attempts, reason, outcome FROM dy_jobs WHERE order_no = ? "
                        "ORDER BY id", (order_no,))
    events = conn.execute("SELECT event_id, status, received_at FROM dy_events WHERE order_no = ? "
                          "ORDER BY received_at", (order_no,))
    iso = queries._iso
    return {
        "order_no": no, "tracking_id": tracking, "warehouse": warehouse, "status": status, "delivery": delivery,
        "warehouse_order_id": wh_id, "waybills": json.loads(waybills) if waybills else [],
        "created_at": iso(created), "updated_at": iso(updated),
        "jobs": [{"id": j[0], "lane": j[1], "kind": j[2], "state": j[3], "attempts": j[4], "reason": j[5],
                  "outcome": None if j[6] is None else json.loads(j[6])} for j in jobs],
        "events": [{"event_id": e[0], "status": e[1], "received_at": iso(e[2])} for e in events],
    }


def _fill(db: Database) -> None:
    def write(c: Any) -> None:
        t = 1_765_000_000_000_000
        for no, waybills in (("P-1", json.dumps([{"waybill_no": "SF1", "carrier": "顺丰"}])), ("P-2", None),
                             ("P-3", None)):
            c.execute("INSERT INTO dy_orders (order_no, tracking_id, warehouse, fingerprint, payload, status, "
                      "delivery, warehouse_order_id, waybills, created_at, updated_at) "
                      "VALUES (?, 't-' || ?, 'wh1', 'f', '{}', 'shipped', 'delivered', ?, ?, ?, ?)",
                      (no, no, "WH-" + no if waybills else None, waybills, t, t + 1234))
        # ids ascending wh, up, wh: the order's index is (order_no, lane, id), so a read that let
        # the index order the jobs would put the upstream job last
        for lane, kind, state, attempts, reason, outcome in (
                ("wh", "create", "done", 3, "HTTP 503 — 重试 \"quoted\"", json.dumps({"http_status": 200, "x": [1.5]})),
                ("up", "forward", "ready", 0, None, None),
                ("wh", "cancel", "dead", 1, "line\nbreak", json.dumps("plain"))):
            c.execute("INSERT INTO dy_jobs (lane, kind, order_no, warehouse, state, attempts, next_at, reason, "
                      "outcome, created_at, updated_at) VALUES (?, ?, 'P-1', 'wh1', ?, ?, ?, ?, ?, ?, ?)",
                      (lane, kind, state, attempts, t, reason, outcome, t, t))
        c.execute("INSERT INTO dy_jobs (lane, kind, order_no, warehouse, state, next_at, created_at, updated_at) "
                  "VALUES ('wh', 'create', 'P-3', 'wh1', 'done', ?, ?, ?)", (t, t, t))
        for event_id, status, at in (("e3", "SIGNED", t + 300), ("e1", "ACCEPT", t + 100), ("e2", None, t + 200)):
            c.execute("INSERT INTO dy_events (warehouse, event_id, order_no, status, document, received_at) "
                      "VALUES ('wh1', ?, 'P-1', ?, '<x/>', ?)", (event_id, status, at))
        c.execute("INSERT INTO dy_events (warehouse, event_id, order_no, status, document, received_at) "
                  "VALUES ('wh1', 'e9', 'P-3', 'ACCEPT', '<x/>', ?)", (t,))

    db.write_sync(write)


def test_the_order_page_answers_as_its_three_selects_did(db: Database) -> None:
    _fill(db)
    for no in ("P-1", "P-2", "P-3", "nope", "P-%", "P-?", "' OR 1=1 --"):
        assert db.read_sync(lambda c, n=no: queries.order_status(c, n)) == \
            db.read_sync(lambda c, n=no: _as_three_selects(c, n)), no
    page = db.read_sync(lambda c: queries.order_status(c, "P-1"))
    assert page is not None
    assert [(j["lane"], j["kind"]) for j in page["jobs"]] == [("wh", "create"), ("up", "forward"), ("wh", "cancel")]
    assert [e["event_id"] for e in page["events"]] == ["e1", "e2", "e3"]
    assert page["jobs"][0]["outcome"] == {"http_status": 200, "x": [1.5]} and page["jobs"][2]["outcome"] == "plain"
    empty = db.read_sync(lambda c: queries.order_status(c, "P-2"))
    assert empty is not None and empty["jobs"] == [] and empty["events"] == [] and empty["waybills"] == []


def test_the_order_page_is_one_statement_and_on_postgresql_one_round_trip(db: Database) -> None:
    """Counted where the store sees them: SQLite's statement trace on the reader's connection;
    on PostgreSQL, libpq's trace of the protocol on the pooled connection (each round trip ends
    with the server's ReadyForQuery). A BEGIN, a clock or a ROLLBACK around the read, or a
    second SELECT, fails this."""
    _fill(db)

    def page(c: Any) -> Any:
        used.append(c.raw)
        return queries.order_status(c, "P-1")

    used: list[Any] = []
    # psycopg prepares a statement on a connection's sixth use of it: that round trip is not the
    # page's. The pool may hand out more than one connection, so warm until each has had six.
    for _ in range(200):
        db.read_sync(page)
        uses = collections.Counter(id(r) for r in used)
        if len(used) >= 12 and min(uses.values()) >= 6:
            break
    conns = list({id(r): r for r in used}.values())  # the pool may hand out more than one
    used.clear()
    if db.dialect == "sqlite":
        statements: list[str] = []
        for raw in conns:
            raw.set_trace_callback(statements.append)
        try:
            for _ in range(3):
                db.read_sync(page)
        finally:
            for raw in conns:
                raw.set_trace_callback(None)
        assert len(statements) == 3, statements
    else:
        messages: list[list[str]] = []
        with contextlib.ExitStack() as stack:
            traces = [stack.enter_context(tempfile.TemporaryFile()) for _ in conns]
            for raw, trace in zip(conns, traces, strict=True):
                raw.pgconn.trace(os.dup(trace.fileno()))  # libpq closes the copy it is given at untrace
            try:
                for _ in range(3):
                    db.read_sync(page)
            finally:
                for raw in conns:
                    raw.pgconn.untrace()
            for trace in traces:
                trace.seek(0)
                messages += [line.split("\t") for line in trace.read().decode("utf-8", "replace").splitlines()]
        sent = [m[3] for m in messages if len(m) > 3 and m[1] == "F"]
        received = [m[3] for m in messages if len(m) > 3 and m[1] == "B"]
        assert received.count("ReadyForQuery") == 3, messages
        assert sent.count("Query") + sent.count("Execute") == 3, sent
    assert len(used) == 3 and all(any(r is c for c in conns) for r in used), "a read got a connection not traced"


@pytest.fixture
def pg_url() -> Iterator[str]:
    from e2e import fresh_postgres_database

    with fresh_postgres_database() as url:
        yield url


def test_a_postgresql_reader_cannot_write_and_its_clock_is_the_databases(pg_url: str,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Reads run in autocommit now, outside any BEGIN READ ONLY: the pool's sessions are read-only
    by default, so a reader still cannot write, while a claim (BEGIN READ WRITE) can. The clock a
    read asks for is still the server's, not this process's."""
    import psycopg

    db = Database(pg_url, readers=1)
    try:
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            db.read_sync(lambda c: c.execute("INSERT INTO dy_meta (name, value) VALUES ('reader', 'wrote')"))
        db.claim_sync(lambda c: c.execute("INSERT INTO dy_meta (name, value) VALUES ('claim', 'wrote')"))
        assert db.read_sync(lambda c: c.execute("SELECT name FROM dy_meta WHERE value = 'wrote'")) == [("claim",)]
        real = time.time_ns
        monkeypatch.setattr("time.time_ns", lambda: real() + 3_600 * 10**9)  # this process: an hour ahead
        now, server = db.read_sync(lambda c: (c.now, c.execute(
            "SELECT (extract(epoch from clock_timestamp()) * 1000000)::bigint")[0][0]))
        assert abs(server - now) < 60_000_000
    finally:
        with contextlib.suppress(Exception):
            db.close()


def test_an_order_number_no_store_can_hold_is_a_404_not_a_500(env: Any) -> None:
    """`/orders/a%00b` reaches the handler with a NUL in the number, which PostgreSQL's text cannot
    hold (psycopg refuses to send it): the order page, cancel, and the dashboard's order page and
    lineage answer that there is no such order, on both stores; the dashboard's search finds nothing."""
    import asyncio

    import aiohttp
    from yarl import URL

    token = "test-only-order-page-token-0123456789"

    async def main() -> None:
        async with env(overrides={"dashboard": {"tokens": {token: "operator"}}}) as run:
            headers = {"Authorization": f"Bearer {token}"}
            for method, path in (("GET", "/orders/a%00b"), ("POST", "/orders/a%00b/cancel"),
                                 ("GET", "/ui/api/orders/a%00b"), ("GET", "/ui/api/orders/a%00b/lineage"),
                                 ("GET", "/orders/%00"), ("GET", "/orders/%ED%A0%80")):
                async with run.session.request(method, URL(run.url + path, encoded=True), headers=headers,
                                               timeout=aiohttp.ClientTimeout(total=30)) as resp:
                    body = await resp.json()
                    assert resp.status == 404, (path, resp.status, body)
                    assert "no order" in json.dumps(body), (path, body)
            async with run.session.get(URL(run.url + "/ui/api/search?q=a%00b", encoded=True), headers=headers,
                                       timeout=aiohttp.ClientTimeout(total=30)) as resp:
                assert resp.status == 200 and (await resp.json()) == {"query": "a\x00b", "results": []}

    asyncio.run(main())


def test_the_order_page_rides_out_a_dropped_reader_connection(pg_url: str) -> None:
    """The server ends the session the order page is read on (pg_terminate_backend, a failover): the
    next page is asked again on a new session and answered, not a 500 (or a 503: the store is up)."""
    import psycopg

    db = Database(pg_url, readers=1)
    try:
        _fill(db)
        expected = db.read_sync(lambda c: _as_three_selects(c, "P-1"))
        assert db.read_sync(lambda c: queries.order_status(c, "P-1")) == expected
        pid = db.read_sync(lambda c: c.execute("SELECT pg_backend_pid()")[0][0])
        with psycopg.connect(pg_url, autocommit=True) as admin:
            assert admin.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone() == (True,)
            for _ in range(100):  # until the server has ended it
                if not admin.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchall():
                    break
                time.sleep(0.05)
        assert db.read_sync(lambda c: queries.order_status(c, "P-1")) == expected
        assert db.read_sync(lambda c: c.execute("SELECT pg_backend_pid()")[0][0]) != pid
    finally:
        db.close()
