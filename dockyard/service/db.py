"""The service's database: one schema on SQLite (the embedded default) or PostgreSQL, a single
writer with group commit, a pool of readers, short claim transactions, and the connection
handling that lets a node ride out a dropped connection or a restarted server.

Why a single writer with group commit: every accepted order, every delivery result and every
callback must be durable before the service answers, and a transaction (and on PostgreSQL a round
trip per statement) per request would cap the service at the commit rate. So writes are queued;
one thread takes everything queued and runs it in one transaction, then commits once and only
then answers each caller. Hot writes are *batch operations* (`BatchOp`): all queued operations of
one kind run as one set of statements, so a group of 200 callbacks costs a handful of statements,
not a thousand. Everything a group changes in `dy_orders` (the rows two nodes may both touch) is
applied last, in key order, right before COMMIT: rows are locked in the same order by every node
(no deadlock cycle) and only for the commit itself.

A write that fails alone is run again on its own (a savepoint each) so that only it fails. A group
that meets a deadlock or a serialisation failure (possible on PostgreSQL with several nodes) is
run again whole. A group that loses its connection reconnects and runs again: every batch
operation is written so that running it twice is safe (inserts skip what exists, state changes
check the state they expect), which also settles a COMMIT whose answer never arrived.

Claims run outside the group (PostgreSQL: their own short transaction on a pooled connection), so
no claim's row lock waits for a group commit of unrelated work.

The times written are the database's (PostgreSQL's clock, read once per transaction): nodes with
skewed clocks still agree on leases and due times.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import queue
import re
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol, TypeVar
from urllib.parse import quote, unquote, urlsplit

from dockyard.runtime.errors import DockyardError
from dockyard.runtime.idempotency.base import redact_url, scrub
from dockyard.service.schema import MIGRATIONS, SCHEMA_VERSION, ddl

__all__ = ["BatchOp", "Conn", "Database", "StoreError", "StoreUnavailable", "Tx", "now_us"]

T = TypeVar("T")
log = logging.getLogger("dockyard.store")

HEARTBEAT_S = 1.0  # how often a node says it is alive (dy_nodes)
GONE_AFTER_US = 4_000_000  # a node whose session lock is free and whose heartbeat is this old is gone
# SQLite: the size the WAL file is cut back to once a checkpoint has copied all of it and the
# writer starts it again (SQLite reuses the file and never shrinks it otherwise: a burst, or
# readers that held the checkpoint back, left it at hundreds of MB for the life of the store).
WAL_SIZE_LIMIT = 64 * 1024 * 1024
# Under a steady write load the checkpointer's PASSIVE checkpoints never catch up with the last
# commit (a new one lands while they copy), so the WAL is never started again and grows for as
# long as the load lasts (700 MB in two minutes of ingest). Past the limit, the writer itself, between
# two groups, finishes the checkpoint and restarts the WAL: the checkpointer has copied nearly
# everything by then, so the writer copies the last few commits' pages, then waits for the readers
# that began before the copy to finish (readers that begin after it read the database file and
# are not waited for), at most this long: then it tries again a second later.
WAL_RESTART_WAIT_MS = 100
RECONNECT_GRACE_S = 3.0  # how long writes wait, from the start of an outage, for the store to come back
_NOTIFY_CHANNEL = "dockyard_jobs"
_PG_NOW = "(extract(epoch from clock_timestamp()) * 1000000)::bigint"


class StoreError(DockyardError):
    """The state store is unusable (bad URL, wrong schema version, a failed write)."""


class StoreUnavailable(StoreError):
    """The state store cannot be reached right now; the same request may succeed later (503)."""


def now_us() -> int:
    return time.time_ns() // 1000


class Conn(Protocol):
    """What store operations see: one connection inside the current transaction (a read on
    PostgreSQL: in autocommit). `now` is the transaction's time in microseconds (the database's
    clock on PostgreSQL; for a read, read from the server when first asked for)."""

    dialect: str
    now: int

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None: ...

    def execute_returning(self, sql: str, rows: Sequence[Sequence[Any]]) -> list[bool]:
        """Run a statement with RETURNING once per row (pipelined on PostgreSQL); for each row,
        whether it returned anything (was inserted, was updated)."""
        ...


class BatchOp:
    """A write that runs together with the other queued operations of its class: `run` gets all
    of them and returns one result per operation, in order. Classes run in `phase` order inside a
    group, plain functions at phase 50. `run` must be safe to run twice (see the module text)."""

    phase: ClassVar[int] = 50

    @classmethod
    def run(cls, tx: Tx, ops: Sequence[Any]) -> list[Any]:
        raise NotImplementedError


@dataclass
class _OrderChange:
    status: list[str]
    delivery: str | None = None
    warehouse_order_id: str | None = None
    waybills: list[dict[str, Any]] | None = None


class Tx:
    """One write transaction as the writer's operations see it: the connection, its time, and
    what is applied once at the end of the group (journal rows, order changes, wake-ups)."""

    def __init__(self, raw: _Connection, now: int, owner: str = "") -> None:
        self.raw = raw
        self.owner = owner  # the process writing (its own rows of the dashboard's counters)
        self.dialect = raw.dialect
        self.now = now
        self.journal_rows: list[tuple[Any, ...]] = []
        self.accepted: list[tuple[str, int]] = []  # (warehouse, order's ingest time) per accepted create
        self.orders: dict[str, _OrderChange] = {}
        self.woken: set[str] = set()

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self.raw.execute(sql, params)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        self.raw.executemany(sql, rows)

    def execute_returning(self, sql: str, rows: Sequence[Sequence[Any]]) -> list[bool]:
        return self.raw.execute_returning(sql, rows)

    def journal(self, rows: Iterable[tuple[Any, ...]]) -> None:
        """Append journal rows (JournalRow.values() tuples); written in one statement at the end."""
        self.journal_rows.extend(rows)

    def count_accepted(self, warehouse: str, ingested_at: int) -> None:
        """Count an accepted create in the dashboard's ingest → accepted histogram (counters.py),
        as of this transaction's commit."""
        self.accepted.append((warehouse, ingested_at))

    def wake(self, lane_key: str) -> None:
        """Tell every node (this one included) that `lane_key` (a warehouse, or the upstream lane)
        has new ready work, once this transaction commits."""
        self.woken.add(lane_key)

    def change_order(self, order_no: str, *, status: str | None = None, delivery: str | None = None,
                     warehouse_order_id: str | None = None, waybills: list[dict[str, Any]] | None = None) -> None:
        """Record a change to an order, merged with the others of this group and applied last."""
        change = self.orders.get(order_no)
        if change is None:
            change = self.orders[order_no] = _OrderChange([])
        if status is not None:
            change.status.append(status)
        if delivery is not None:
            change.delivery = delivery
        if warehouse_order_id:
            change.warehouse_order_id = warehouse_order_id
        if waybills:
            change.waybills = [*(change.waybills or []), *waybills]

    def mark(self) -> tuple[int, int, dict[str, _OrderChange], set[str]]:
        return len(self.journal_rows), len(self.accepted), {
            k: _OrderChange(list(v.status), v.delivery, v.warehouse_order_id,
                            None if v.waybills is None else list(v.waybills))
            for k, v in self.orders.items()}, set(self.woken)

    def restore(self, mark: tuple[int, int, dict[str, _OrderChange], set[str]]) -> None:
        del self.journal_rows[mark[0]:]
        del self.accepted[mark[1]:]
        self.orders, self.woken = mark[2], mark[3]

    def flush(self) -> None:
        from dockyard.service.counters import tally, upsert
        from dockyard.service.store import apply_order_changes, write_journal

        if self.orders:
            apply_order_changes(self, self.orders)
            self.orders = {}
        if self.journal_rows:
            write_journal(self, self.journal_rows)
        if self.journal_rows or self.accepted:  # the dashboard's counters, in the same commit
            upsert(self, tally(self.journal_rows, self.now, self.accepted), self.owner)
            self.journal_rows, self.accepted = [], []
        if self.woken and self.dialect == "postgres":
            for key in sorted(self.woken):
                self.execute("SELECT pg_notify(?, ?)", (_NOTIFY_CHANNEL, key))


# -- connections ------------------------------------------------------------------------------
class _SqliteConn:
    dialect = "sqlite"
    now = 0

    def __init__(self, path: str) -> None:
        self.raw = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30.0)
        # WAL: readers never block the writer. synchronous=NORMAL in WAL mode keeps every committed
        # transaction across a process crash (SIGKILL); only an OS crash or power loss can lose the
        # last ones, which FULL would add an fsync per commit to prevent. See docs/service.md.
        self.raw.execute("PRAGMA journal_mode=WAL")
        self.raw.execute("PRAGMA synchronous=" + os.environ.get("DOCKYARD_SQLITE_SYNCHRONOUS", "NORMAL"))
        self.raw.execute("PRAGMA foreign_keys=OFF")
        self.raw.execute("PRAGMA busy_timeout=30000")
        # Writers of several processes (`workers: N`) queue on an flock before BEGIN IMMEDIATE:
        # the kernel wakes the next one as soon as the lock is free, where SQLite's own busy
        # handler would sleep in growing steps (1, 2, 5, 10 ms …) and leave the store idle.
        self._gate = open(path + ".write-lock", "a+")  # noqa: SIM115 - closed in close()
        self._gated = False

    @property
    def broken(self) -> bool:
        return False

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self.raw.execute(sql, params).fetchall()

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        self.raw.executemany(sql, rows)

    def execute_returning(self, sql: str, rows: Sequence[Sequence[Any]]) -> list[bool]:
        return [bool(self.raw.execute(sql, row).fetchall()) for row in rows]

    def clock(self) -> int:
        return now_us()

    def begin(self) -> None:
        fcntl.flock(self._gate, fcntl.LOCK_EX)
        self._gated = True
        try:
            self.raw.execute("BEGIN IMMEDIATE")
        except BaseException:
            self._ungate()
            raise

    def begin_at(self) -> int:
        """Begin a write transaction; its time."""
        self.begin()
        return self.clock()

    def _ungate(self) -> None:
        if self._gated:
            self._gated = False
            fcntl.flock(self._gate, fcntl.LOCK_UN)

    def commit(self) -> None:
        try:
            self.raw.execute("COMMIT")
        finally:
            if not self.raw.in_transaction:
                self._ungate()

    def rollback(self) -> None:
        try:
            if self.raw.in_transaction:
                self.raw.execute("ROLLBACK")
        finally:
            self._ungate()

    def close(self) -> None:
        self.raw.close()
        self._gate.close()


class _PostgresConn:
    dialect = "postgres"

    def __init__(self, url: str, raw: Any = None) -> None:
        import psycopg

        self.raw = raw if raw is not None else psycopg.connect(url, autocommit=True, connect_timeout=5)
        self._now: int | None = None

    @property
    def now(self) -> int:
        """The database's clock, read when first asked for: a read that never asks (an order's page)
        does not pay a round trip for it."""
        if self._now is None:
            self._now = self.clock()
        return self._now

    @now.setter
    def now(self, value: int) -> None:
        self._now = value

    @property
    def broken(self) -> bool:
        return bool(self.raw.closed or self.raw.broken)

    @staticmethod
    def _q(sql: str) -> str:
        text = _PG_SQL.get(sql)
        if text is None:
            text = _PG_SQL[sql] = _ARRAY_PARAM.sub("%b", sql.replace("%", "%%")).replace("?", "%s")
        return text

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        cur = self.raw.execute(self._q(sql), params)
        return cur.fetchall() if cur.description is not None else []

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        with self.raw.cursor() as cur:
            cur.executemany(self._q(sql), list(rows))

    def execute_returning(self, sql: str, rows: Sequence[Sequence[Any]]) -> list[bool]:
        if len(rows) <= 1:
            return [bool(self.execute(sql, row)) for row in rows]
        out: list[bool] = []
        with self.raw.cursor() as cur:
            cur.executemany(self._q(sql), list(rows), returning=True)
            while True:
                out.append(cur.fetchone() is not None)
                if not cur.nextset():
                    break
        return out

    def clock(self) -> int:
        row = self.raw.execute("SELECT " + _PG_NOW).fetchone()
        assert row is not None
        return int(row[0])

    def begin(self) -> None:
        # READ WRITE said out loud: the pool's sessions (readers and claims) are read-only by default
        self.raw.execute("BEGIN READ WRITE")

    def begin_at(self) -> int:
        """Begin a write transaction and read the database's clock in one round trip (one simple
        query of two statements): each round trip costs the server a wake-up and a message, and every
        group commit and claim began with two."""
        cur = self.raw.execute("BEGIN READ WRITE; SELECT " + _PG_NOW)
        cur.nextset()
        row = cur.fetchone()
        assert row is not None
        return int(row[0])

    def commit(self) -> None:
        self.raw.execute("COMMIT")

    def rollback(self) -> None:
        if not self.broken:
            self.raw.execute("ROLLBACK")

    def close(self) -> None:
        self.raw.close()


_Connection = _SqliteConn | _PostgresConn
_PG_SQL: dict[str, str] = {}  # SQL written with `?` -> psycopg's `%s` form, made once per statement
# An array parameter (`?::text[]`, `?::bigint[]`, … — the group commit's `unnest` statements) goes
# in binary (`%b`): psycopg writes a text array in Python, escaping every element that holds a quote,
# a comma or a space through a regular expression — every JSON document, journal detail and order
# — which was a quarter of the writer's CPU on PostgreSQL (29 µs against 1.6 µs per row of a
# document and a number, measured with psycopg 3.3). Binary elements are sent as they are.
_ARRAY_PARAM = re.compile(r"\?(?=::[a-z ]+\[\])")


def _read_only(raw: Any) -> None:
    """A pooled PostgreSQL session (readers and claims) is read-only unless a transaction says READ
    WRITE (claims do, see _PostgresConn.begin): a reader, which runs in autocommit, cannot write by
    mistake. Once per connection, when the pool makes it."""
    raw.execute("SET default_transaction_read_only = on")


def _sqlite_path(url: str) -> str:
    parts = urlsplit(url)
    path = unquote(parts.path)
    if parts.netloc not in ("", "localhost"):
        raise StoreError(f"{url}: a sqlite URL names a file: sqlite:///relative/path or sqlite:////absolute/path")
    if path.startswith("/") and not path.startswith("//"):
        path = path[1:]  # sqlite:///x.db is x.db relative to the working folder
    elif path.startswith("//"):
        path = path[1:]
    if not path:
        raise StoreError(f"{url}: the sqlite URL names no file")
    return path


def _lost(conn: _Connection, exc: BaseException) -> bool:
    """Whether `exc` means the connection is gone (not that the statement was wrong)."""
    if conn.dialect != "postgres":
        return False
    import psycopg

    return conn.broken or isinstance(exc, psycopg.InterfaceError | psycopg.errors.AdminShutdown |
                                     psycopg.errors.CannotConnectNow)


def _is_connection_error(exc: BaseException) -> bool:
    try:
        import psycopg
    except ImportError:  # pragma: no cover - only PostgreSQL stores get here
        return False
    return isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError) and not _contended(exc)


def _contended(exc: BaseException) -> bool:
    """A deadlock or serialisation failure: the whole transaction may simply be run again."""
    return getattr(exc, "sqlstate", None) in ("40P01", "40001")


_Item = tuple[Any, Callable[[BaseException | None, Any], None]]


class Database:
    """One state store. `await write(op)` runs op (a function of a Tx, or a BatchOp) in the
    writer's next group commit; `await read(fn)` runs fn(conn) on a reader connection; `await
    claim(fn)` runs fn(conn) in a short transaction of its own; `*_sync` do the same from plain
    threads (the CLI)."""

    def __init__(self, url: str, *, readers: int = 4, max_group: int = 512, register: bool = True) -> None:
        self.url = url
        self.shown_url = redact_url(url)
        scheme = urlsplit(url).scheme
        if scheme == "sqlite":
            path = _sqlite_path(url)
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            self._connect: Callable[[], _Connection] = lambda: _SqliteConn(path)
            self.dialect = "sqlite"
        elif scheme in ("postgresql", "postgres"):
            self._connect = lambda: _PostgresConn(url)
            self.dialect = "postgres"
        else:
            raise StoreError(f"unknown state store {self.shown_url!r}: use sqlite:///file.db or postgresql://…")
        self._max_group = max_group
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        # Who this process is to the store. Each live process holds a lock on its own id (an
        # advisory lock of its writer session on PostgreSQL, an flock on `<db>.owners/<owner>` for
        # SQLite) and a heartbeat row in dy_nodes: another process can then tell a dead owner's
        # in-flight jobs from a live one's (see store.recover).
        self.owner = uuid.uuid4().hex
        self.ready = False
        self.unready_reason = "starting"
        self._register = register
        self._waker: Callable[[str], None] | None = None
        self.server_warnings: list[str] = []  # see _server_warnings
        try:
            self._writer_conn = self._connect()
            self._migrate(self._writer_conn)
            self.server_warnings = self._server_warnings(self._writer_conn)
            self._claim_in_session(self._writer_conn)
            if self.dialect == "sqlite":
                self._owners_dir = Path(_sqlite_path(url) + ".owners")
                self._owners_dir.mkdir(exist_ok=True)
                self._owner_lock = self._hold(self._owners_dir / self.owner)
        except StoreError:
            raise
        except Exception as exc:
            raise StoreError(f"cannot open the state store {self.shown_url}: {type(exc).__name__}: "
                             f"{scrub(str(exc), url)}") from None
        self.ready, self.unready_reason = True, ""
        self._local = threading.local()
        self._conns: list[_Connection] = []
        self._conns_lock = threading.Lock()
        self._readers = ThreadPoolExecutor(max_workers=max(1, readers), thread_name_prefix="dockyard-read")
        # PostgreSQL readers and claims take connections from a pool (psycopg_pool): a connection
        # that drops is discarded and replaced, and a caller waits at most a few seconds for one.
        self._readers_n = max(1, readers)
        self._pool: Any = self._new_pool() if self.dialect == "postgres" else None
        # PostgreSQL claims run on connections of their own, in threads of their own (two: one per
        # core is plenty for statements that take a millisecond).
        self._claimers = (ThreadPoolExecutor(max_workers=2, thread_name_prefix="dockyard-claim")
                          if self.dialect == "postgres" else None)
        self._closed = False
        self._last_beat = 0.0
        self._lost_at = 0.0
        self._peers: list[str] = []
        self._peers_at = 0.0
        self.groups = 0  # commits made; with `writes`, how well group commit is batching
        self.writes = 0
        # SQLite: the WAL is checkpointed by a thread of its own, not by whichever COMMIT of the
        # writer crosses SQLite's 1,000-page mark (that COMMIT then copies pages into the database
        # and syncs it: 10–40 ms, while every write of the next group waits).
        self._checkpointer: _Checkpointer | None = None
        if self.dialect == "sqlite":
            self._writer_conn.raw.execute("PRAGMA wal_autocheckpoint=0")
            self._writer_conn.raw.execute(f"PRAGMA journal_size_limit={int(WAL_SIZE_LIMIT)}")
            self._checkpointer = _Checkpointer(_sqlite_path(url))
        self._wal_path = _sqlite_path(url) + "-wal" if self.dialect == "sqlite" else ""
        self._wal_checked_at = 0.0
        self.wal_restarts = 0
        self._thread = threading.Thread(target=self._run_writer, name="dockyard-writer", daemon=True)
        self._thread.start()
        self._listener: _Listener | None = None

    def _new_pool(self) -> Any:
        from psycopg_pool import ConnectionPool

        return ConnectionPool(self.url, min_size=1, max_size=self._readers_n + 2, open=True, timeout=5.0,
                              kwargs={"autocommit": True, "connect_timeout": 5}, configure=_read_only,
                              name="dockyard", reconnect_timeout=3600.0)

    def _ready_again(self) -> None:
        """The store is reachable again after an outage (the writer has reconnected or committed).
        The readers' and claims' pool has been reconnecting on its own meanwhile, waiting twice as
        long after every failed try (1, 2, 4, … s): after an outage of a minute it could wait most of
        a minute more, and every read (an order's page, the dashboard, /metrics) answered 503 while
        /healthz said ready. So a new pool connects now; the old one is closed in the background
        (a connection in use is closed when it comes back)."""
        self.ready, self.unready_reason = True, ""
        if self._pool is None or self._closed:
            return
        old, self._pool = self._pool, self._new_pool()
        threading.Thread(target=old.close, kwargs={"timeout": 5.0}, name="dockyard-pool-close", daemon=True).start()

    # -- who is alive ------------------------------------------------------------------------
    @staticmethod
    def _hold(path: Path) -> Any:
        handle = open(path, "a+")  # noqa: SIM115 - held (and locked) for the process's lifetime
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return handle

    def _claim_in_session(self, conn: _Connection) -> None:
        """Take this process's liveness lock in the writer's session and beat once."""
        if conn.dialect == "postgres":
            conn.execute("SELECT pg_advisory_lock(hashtextextended(?, 0))", (self.owner,))
        if self._register:
            self._beat(conn)

    def _beat(self, conn: _Connection) -> None:
        now = conn.clock()
        conn.execute("INSERT INTO dy_nodes (owner, host, pid, started_at, heartbeat_at) VALUES (?, ?, ?, ?, ?) "
                     "ON CONFLICT (owner) DO UPDATE SET heartbeat_at = excluded.heartbeat_at",
                     (self.owner, socket.gethostname(), os.getpid(), now, now))
        self._last_beat = time.monotonic()

    def owner_gone(self, conn: Conn, owner: str) -> bool:
        """Whether the process `owner` is gone. On PostgreSQL: its session lock is free (its
        session ended) and it has not beaten for GONE_AFTER_US of the database's clock (a node
        whose connection merely dropped reconnects and beats again well within that). On SQLite
        (one host): its flock on `<db>.owners/<owner>` is free, which the kernel guarantees when the
        process dies, however it dies."""
        if owner == self.owner:
            return False
        if conn.dialect == "postgres":
            beat = conn.execute("SELECT heartbeat_at FROM dy_nodes WHERE owner = ?", (owner,))
            if beat and conn.now - int(beat[0][0]) < GONE_AFTER_US:
                return False
            # Free only when the owner's session (its writer connection) has ended.
            return bool(conn.execute("SELECT pg_try_advisory_xact_lock(hashtextextended(?, 0))", (owner,))[0][0])
        path = self._owners_dir / owner
        if not path.exists():
            return True
        try:
            handle = self._hold(path)
        except OSError:
            return False
        handle.close()
        path.unlink(missing_ok=True)
        return True

    # -- schema ---------------------------------------------------------------------------
    def _migrate(self, conn: _Connection) -> None:
        """Create the schema, or bring an older one up to date. A store already at this version is
        only read: the DDL takes table locks (CREATE INDEX IF NOT EXISTS locks the table even when
        the index exists), and a node starting next to running ones must not stop their writes, or
        deadlock with them."""
        if self._version(conn) == SCHEMA_VERSION:
            return
        conn.begin()
        try:
            if self.dialect == "postgres":
                conn.execute("SELECT pg_advisory_xact_lock(4242001)")  # two processes creating at once
            version = self._version(conn)
            if version > SCHEMA_VERSION:
                raise StoreError(f"the state store {self.shown_url} has schema version {version}, newer than "
                                 f"this Dockyard's {SCHEMA_VERSION}: upgrade Dockyard")
            if version < SCHEMA_VERSION:
                for stmt in ddl(self.dialect):
                    conn.execute(stmt)
                for step in range(version or SCHEMA_VERSION, SCHEMA_VERSION):
                    for change in MIGRATIONS.get(step, ()):
                        if callable(change):  # a step that reads the schema first (schema.py)
                            change(conn)
                        else:
                            conn.execute(change)
                if self.dialect == "postgres":  # v3: the journal by day (a v2 one is converted)
                    from dockyard.service import partitions

                    partitions.convert(conn, conn.clock())
                    partitions.ensure(conn, conn.clock())
                conn.execute("DELETE FROM dy_meta WHERE name = 'schema_version'")
                conn.execute("INSERT INTO dy_meta (name, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            conn.commit()
        except BaseException:
            conn.rollback()
            raise

    def _server_warnings(self, conn: _Connection) -> list[str]:
        """What in the PostgreSQL server's settings will slow this store down as it runs, each
        logged once at start. Autovacuum (and the statistics it needs, track_counts) off: the
        upstream outbox and the jobs are queues, rows inserted and deleted or updated within
        seconds, and without vacuum their dead rows stay where every claim and every forwarding
        read walks past them (six minutes of a 60 orders/s run on such a server left 51,712 dead
        rows in dy_forwards, none alive, and ingest's median rose from 4 to 26-52 ms). Dockyard
        does not change the server's settings: it says so, and docs/operations.md says what to set."""
        if self.dialect != "postgres":
            return []
        found: list[str] = []
        for name, value in conn.execute("SELECT name, setting FROM pg_settings WHERE name IN "
                                        "('autovacuum', 'track_counts') ORDER BY name"):
            if value != "on":
                found.append(f"the PostgreSQL server runs with {name} = {value}: the store's queue tables "
                             "(dy_forwards, dy_jobs) keep their dead rows, and claims and forwarding slow down "
                             f"as they grow; set {name} = on (docs/operations.md, \"Autovacuum\")")
        for warning in found:
            log.warning("%s", warning)
        return found

    def _version(self, conn: _Connection) -> int:
        """The store's schema version; 0 for an empty store."""
        if not self._has_meta(conn):
            return 0
        found = conn.execute("SELECT value FROM dy_meta WHERE name = 'schema_version'")
        return int(found[0][0]) if found else 0

    def _has_meta(self, conn: _Connection) -> bool:
        if self.dialect == "postgres":
            return bool(conn.execute("SELECT to_regclass('dy_meta') IS NOT NULL")[0][0])
        return bool(conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'dy_meta'"))

    # -- the writer -----------------------------------------------------------------------
    def _run_writer(self) -> None:
        try:
            self._write_loop()
        except BaseException:  # the writer must never die quietly: every write would wait forever
            log.critical("the state store's writer stopped", exc_info=True)
            self.ready, self.unready_reason = False, "the state store's writer stopped (see the log)"
            raise

    def _write_loop(self) -> None:
        while True:
            try:
                first = self._queue.get(timeout=HEARTBEAT_S)
            except queue.Empty:
                self._idle()
                continue
            if first is None:
                break
            batch = [first]
            stop = False
            while len(batch) < self._max_group:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                batch.append(item)
            self._commit_group(batch)
            if self._wal_path:
                self._restart_wal_if_large()
            if time.monotonic() - self._last_beat >= HEARTBEAT_S:
                self._idle()
            if stop:
                break
        with contextlib.suppress(Exception):
            self._writer_conn.close()

    def _restart_wal_if_large(self) -> None:
        """SQLite, between groups, at most once a second: a WAL past WAL_SIZE_LIMIT is checkpointed
        whole and started again (RESTART), so the next commit writes from its beginning and cuts
        the file back to the limit (journal_size_limit)."""
        now = time.monotonic()
        if now - self._wal_checked_at < 1.0:
            return
        self._wal_checked_at = now
        try:
            if Path(self._wal_path).stat().st_size <= WAL_SIZE_LIMIT:
                return
        except OSError:
            return
        conn = self._writer_conn
        if not isinstance(conn, _SqliteConn):
            return
        raw = conn.raw
        try:
            raw.execute(f"PRAGMA busy_timeout={WAL_RESTART_WAIT_MS}")
            busy = raw.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()[0]
            if not busy:
                self.wal_restarts += 1
        except sqlite3.Error as exc:  # another checkpoint under way, a busy store: a second later
            log.debug("WAL restart skipped: %s", exc)
        finally:
            with contextlib.suppress(sqlite3.Error):
                raw.execute("PRAGMA busy_timeout=30000")

    def _idle(self) -> None:
        """Between groups: beat, and on a lost connection try to come back (readiness)."""
        try:
            if self._writer_conn.broken:
                self._reconnect()
            elif self._register and self.dialect == "postgres":
                self._beat(self._writer_conn)
        except Exception as exc:
            self._unready(exc)

    def _unready(self, exc: BaseException) -> None:
        reason = f"the state store {self.shown_url} is unreachable: {type(exc).__name__}: {scrub(str(exc), self.url)}"
        if self.ready:
            log.warning(reason)
            self._lost_at = time.monotonic()
        self.ready, self.unready_reason = False, reason

    def _reconnect(self) -> None:
        with contextlib.suppress(Exception):
            self._writer_conn.close()
        conn = self._connect()
        self._claim_in_session(conn)
        self._writer_conn = conn
        if not self.ready:
            log.warning("the state store %s is reachable again", self.shown_url)
            self._ready_again()

    def _commit_group(self, batch: list[_Item]) -> None:
        # A blip (a killed session, a failover) is ridden out by reconnecting and running the group
        # again; an outage that lasts fails writes within RECONNECT_GRACE_S of its start, so callers
        # hear 503 at once instead of waiting on a store that is known to be away.
        deadline = (self._lost_at if not self.ready else time.monotonic()) + RECONNECT_GRACE_S
        contended = 0
        careful = False
        while True:
            conn = self._writer_conn
            try:
                if conn.broken:
                    self._reconnect()
                    conn = self._writer_conn
                results = self._run_careful(conn, batch) if careful else self._run_group(conn, batch)
                break
            except _CarefulNeeded:
                careful = True
                continue
            except Exception as exc:
                with contextlib.suppress(Exception):
                    conn.rollback()
                error: StoreError
                if _lost(conn, exc):
                    self._unready(exc)
                    if time.monotonic() < deadline and not self._closed:
                        time.sleep(0.2)
                        continue
                    error = StoreUnavailable(self.unready_reason)
                elif _contended(exc) and contended < 5:
                    contended += 1
                    continue
                else:
                    error = StoreError(f"the state store {self.shown_url} failed to commit: {type(exc).__name__}: "
                                       f"{scrub(str(exc), self.url)}")
                log.error("a group commit of %d writes failed: %s", len(batch), error,
                          exc_info=not isinstance(error, StoreUnavailable))
                for _, done in batch:
                    done(error, None)
                return
        self.groups += 1
        self.writes += len(batch)
        if not self.ready:
            self._ready_again()
        _deliver(batch, results)

    def _run_group(self, conn: _Connection, batch: list[_Item]) -> list[tuple[BaseException | None, Any]]:
        """The whole group in one transaction, batch operations together. Any failure that is not
        the connection's or contention raises _CarefulNeeded: the group is then run item by item."""
        tx = Tx(conn, conn.begin_at(), self.owner)
        values: list[Any] = [None] * len(batch)
        try:
            for run in _phases(batch):
                kind = run[0][2]
                if kind is None:
                    values[run[0][0]] = run[0][1](tx)
                    continue
                outs = kind.run(tx, [op for _, op, _ in run])
                for (index, _, _), out in zip(run, outs, strict=True):
                    values[index] = out
            tx.flush()
            conn.commit()
        except Exception as exc:
            if _lost(conn, exc) or _contended(exc):
                raise
            with contextlib.suppress(Exception):
                conn.rollback()
            if len(batch) == 1 and not isinstance(batch[0][0], BatchOp):
                return [(exc, None)]
            raise _CarefulNeeded from exc
        self._after_commit(tx)
        return [(None, v) for v in values]

    def _run_careful(self, conn: _Connection, batch: list[_Item]) -> list[tuple[BaseException | None, Any]]:
        """Each item in its own savepoint: only the failing ones fail."""
        tx = Tx(conn, conn.begin_at(), self.owner)
        results: list[tuple[BaseException | None, Any]] = []
        for op, _ in batch:
            mark = tx.mark()
            conn.execute("SAVEPOINT op")
            try:
                value = op.run(tx, [op])[0] if isinstance(op, BatchOp) else op(tx)
                if tx.orders:  # order changes are applied inside the savepoint here: a failure stays its own
                    from dockyard.service.store import apply_order_changes

                    apply_order_changes(tx, tx.orders)
                    tx.orders = {}
            except Exception as exc:
                if _lost(conn, exc) or _contended(exc):
                    raise
                conn.execute("ROLLBACK TO SAVEPOINT op")
                conn.execute("RELEASE SAVEPOINT op")
                tx.restore(mark)
                results.append((exc, None))
            else:
                conn.execute("RELEASE SAVEPOINT op")
                results.append((None, value))
        tx.flush()
        conn.commit()
        self._after_commit(tx)
        return results

    def _after_commit(self, tx: Tx) -> None:
        """Wake-ups once the work is durable: this process at once, the other processes of a SQLite
        store by datagram (PostgreSQL's NOTIFY, sent in the transaction, reaches every node)."""
        if not tx.woken:
            return
        waker = self._waker
        if waker is not None and self.dialect == "sqlite":
            for key in tx.woken:
                waker(key)
        if self.dialect == "sqlite":
            now = time.monotonic()
            if now - self._peers_at > 1.0:  # who else is on this store, looked up at most once a second
                self._peers_at = now
                self._peers = [p.name for p in self._owners_dir.iterdir()
                               if len(p.name) == 32 and p.name != self.owner]
            if self._peers:
                _sqlite_wake(self._owners_dir, self._peers, tx.woken)

    async def write(self, op: Callable[[Tx], T] | BatchOp) -> T:
        """Run op in the next group commit; returns after the commit made it durable."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._submit(op, _Awaited(loop, future))
        return await future

    def write_sync(self, op: Callable[[Tx], T] | BatchOp) -> T:
        box: list[tuple[BaseException | None, Any]] = []
        event = threading.Event()

        def done(error: BaseException | None, value: Any) -> None:
            box.append((error, value))
            event.set()

        self._submit(op, done)
        event.wait()
        error, value = box[0]
        if error is not None:
            raise error
        return value  # type: ignore[no-any-return]

    def _submit(self, op: Any, done: Callable[[BaseException | None, Any], None]) -> None:
        if self._closed:
            raise StoreError("the state store is closed")
        self._queue.put((op, done))

    # -- readers and claims ---------------------------------------------------------------
    def _thread_conn(self) -> _Connection:
        conn: _Connection | None = getattr(self._local, "conn", None)
        if conn is None or conn.broken:
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.close()
            conn = self._local.conn = self._connect()
            with self._conns_lock:
                self._conns.append(conn)
        return conn

    def _in_transaction(self, fn: Callable[[Conn], T], *, write: bool) -> T:
        """fn in a transaction of its own if `write`, else in autocommit on a read-only session;
        one retry on a fresh connection when the one it got turns out to be gone."""
        if self._pool is None:
            conn = self._thread_conn()
            conn.now = now_us()
            if not write:
                return fn(conn)  # autocommit reads see the last committed state (WAL snapshot per statement)
            return self._run_in(conn, fn, write=True)
        from psycopg_pool import PoolTimeout

        for attempt in (1, 2, 3):
            try:
                with self._pool.connection() as raw:
                    conn = _PostgresConn(self.url, raw)
                    try:
                        return self._run_in(conn, fn, write=write)
                    except Exception as exc:
                        if not _lost(conn, exc) or attempt == 3:
                            raise
                # the server dropped this connection, and likely the pool's other idle ones with it:
                # have the pool test its idle connections before the next try takes one
                with contextlib.suppress(Exception):
                    self._pool.check()
            except PoolTimeout as exc:
                raise StoreUnavailable(f"the state store {self.shown_url} is unreachable: no connection within "
                                       f"the pool's timeout ({scrub(str(exc), self.url)})") from None
            except Exception as exc:
                if isinstance(exc, StoreError) or not _is_connection_error(exc):
                    raise
                raise StoreUnavailable(f"the state store {self.shown_url} is unreachable: {type(exc).__name__}: "
                                       f"{scrub(str(exc), self.url)}") from None
        raise AssertionError("unreachable")

    @staticmethod
    def _run_in(conn: _Connection, fn: Callable[[Conn], T], *, write: bool) -> T:
        if not write:
            # A read on PostgreSQL runs in autocommit, each statement a read-only transaction of its
            # own (the pool's sessions default to read-only, see _read_only). It sees what it saw in
            # the BEGIN READ ONLY … ROLLBACK this was: at READ COMMITTED every statement takes its own
            # snapshot either way. The clock is read only if fn asks for conn.now. A read of one
            # statement (an order's page) is one round trip where it was four (BEGIN, the clock, ROLLBACK).
            return fn(conn)
        try:
            conn.now = conn.begin_at()
            value = fn(conn)
            conn.commit()
        except BaseException:
            with contextlib.suppress(Exception):
                conn.rollback()
            raise
        return value

    def read_sync(self, fn: Callable[[Conn], T]) -> T:
        return self._in_transaction(fn, write=False)

    async def read(self, fn: Callable[[Conn], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._readers, self.read_sync, fn)

    def claim_sync(self, fn: Callable[[Conn], T]) -> T:
        return self.write_sync(fn) if self._claimers is None else self._in_transaction(fn, write=True)

    async def claim(self, fn: Callable[[Conn], T]) -> T:
        """fn in a short transaction of its own: on PostgreSQL on a claim connection (never inside a
        group commit, so a claim's row locks end with the claim); on SQLite, where there is one
        writer anyway, through the writer."""
        if self._claimers is None:
            return await self.write(fn)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._claimers, lambda: self._in_transaction(fn, write=True))

    # -- wake-ups across nodes ----------------------------------------------------------------
    def listen(self, waker: Callable[[str], None]) -> None:
        """Call `waker(lane_key)` (from any thread) when any node commits new ready work for it."""
        self._waker = waker
        if self._listener is None:
            self._listener = _Listener(self, waker)
            self._listener.start()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._listener is not None:
            self._listener.stop()
        self._queue.put(None)
        self._thread.join(timeout=30)
        if self._checkpointer is not None:
            self._checkpointer.stop()
        self._readers.shutdown(wait=True)
        if self._claimers is not None:
            self._claimers.shutdown(wait=True)
        if self._pool is not None:
            with contextlib.suppress(Exception):
                self._pool.close(timeout=5)
        lock = getattr(self, "_owner_lock", None)
        if lock is not None:
            lock.close()
            (self._owners_dir / self.owner).unlink(missing_ok=True)
        with self._conns_lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(Exception):  # closing a broken connection: nothing left to do
                conn.close()


class _Checkpointer:
    """Checkpoints a SQLite store's WAL from a connection and thread of its own, twice a second,
    and ten times a second while the WAL is past a quarter of WAL_SIZE_LIMIT (PASSIVE: it copies
    what no reader still needs and never waits for, or blocks, the writer or the readers). Keeping
    up under load is what keeps the writer's own restart of a large WAL short (Database
    ._restart_wal_if_large): it then copies only the last few commits. The writer's connection has
    automatic checkpoints off. Should this thread stop, the WAL only grows until the writer's
    restart takes it back."""

    INTERVAL_S = 0.5
    BUSY_INTERVAL_S = 0.1

    def __init__(self, path: str) -> None:
        self._path = path
        self._stop = threading.Event()
        self.runs = 0
        self._thread = threading.Thread(target=self._run, name="dockyard-checkpoint", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        last = time.monotonic()
        while not self._stop.wait(self.BUSY_INTERVAL_S):
            if time.monotonic() - last < self.INTERVAL_S:
                try:
                    if Path(self._path + "-wal").stat().st_size <= WAL_SIZE_LIMIT // 4:
                        continue
                except OSError:
                    continue
            last = time.monotonic()
            try:
                if conn is None:  # mode=rw: a store that is gone is never made again, empty, by this thread
                    conn = sqlite3.connect(f"file:{quote(self._path)}?mode=rw", uri=True,
                                           isolation_level=None, check_same_thread=False, timeout=5.0)
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                self.runs += 1
            except sqlite3.Error as exc:  # a busy or locked store: the next round tries again
                log.debug("WAL checkpoint skipped: %s", exc)
        if conn is not None:
            with contextlib.suppress(sqlite3.Error):
                conn.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


class _CarefulNeeded(Exception):
    """A group failed for a reason of one of its items: run it again item by item."""


def _phases(batch: list[_Item]) -> list[list[tuple[int, Any, type[BatchOp] | None]]]:
    """The group's items as runs in phase order: all operations of one BatchOp class together
    (kind = the class), each plain function alone (kind None, phase 50). The sort is stable, so
    plain functions keep their queue order."""
    by_class: dict[type[BatchOp], list[tuple[int, Any, type[BatchOp] | None]]] = {}
    runs: list[tuple[int, list[tuple[int, Any, type[BatchOp] | None]]]] = []
    for index, (op, _) in enumerate(batch):
        if isinstance(op, BatchOp):
            kind = type(op)
            if kind not in by_class:
                by_class[kind] = []
                runs.append((kind.phase, by_class[kind]))
            by_class[kind].append((index, op, kind))
        else:
            runs.append((BatchOp.phase, [(index, op, None)]))
    runs.sort(key=lambda run: run[0])
    return [items for _, items in runs]


def _settle(future: asyncio.Future[Any], error: BaseException | None, value: Any) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(value)


class _Awaited:
    """The `done` of a write awaited on an event loop: settles its future on that loop."""

    __slots__ = ("future", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any]) -> None:
        self.loop = loop
        self.future = future

    def __call__(self, error: BaseException | None, value: Any) -> None:
        self.loop.call_soon_threadsafe(_settle, self.future, error, value)


def _settle_all(settled: list[tuple[asyncio.Future[Any], BaseException | None, Any]]) -> None:
    for future, error, value in settled:
        _settle(future, error, value)


def _deliver(batch: list[_Item], results: list[tuple[BaseException | None, Any]]) -> None:
    """Hand a committed group's results to their writers: the futures of one event loop in one
    call_soon_threadsafe (each call wakes the loop through its self-pipe, a system call per write
    when made one by one), any other `done` (write_sync's) directly."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], BaseException | None, Any]]] = {}
    for (_, done), (failure, value) in zip(batch, results, strict=True):
        if done.__class__ is _Awaited:
            by_loop.setdefault(done.loop, []).append((done.future, failure, value))
        else:
            done(failure, value)
    for loop, settled in by_loop.items():
        loop.call_soon_threadsafe(_settle_all, settled)


# -- wake-ups ---------------------------------------------------------------------------------
def _sqlite_wake(owners_dir: Path, peers: Iterable[str], keys: Iterable[str]) -> None:
    """Tell the other processes on this SQLite store (one host) that keys have new work: a datagram
    to each one's wake-up socket. Best effort: a process that misses one finds the work when its
    loop next looks (at the latest when its earliest job is due)."""
    payload = "\n".join(sorted(keys)).encode("utf-8")[:4000]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender:
        sender.setblocking(False)
        for peer in peers:
            with contextlib.suppress(OSError):
                sender.sendto(payload, _wake_address(owners_dir, peer))


def _wake_address(owners_dir: Path, owner: str) -> str:
    """A process's wake-up socket: in Linux's abstract namespace (no file, no path length limit,
    gone with the process), named after the store and the owner."""
    import hashlib

    store = hashlib.sha256(str(owners_dir.resolve()).encode("utf-8")).hexdigest()[:20]
    return f"\0dockyard-wake-{store}-{owner}"


class _Listener:
    """Receives other nodes' wake-ups: LISTEN on PostgreSQL (its own connection, re-opened when it
    drops), a datagram socket on SQLite."""

    def __init__(self, db: Database, waker: Callable[[str], None]) -> None:
        self.db = db
        self.waker = waker
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dockyard-listen", daemon=True)
        self._sock: socket.socket | None = None

    def start(self) -> None:
        if self.db.dialect == "sqlite":
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._sock.bind(_wake_address(self.db._owners_dir, self.db.owner))
            self._sock.settimeout(0.5)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        if self._sock is not None:
            self._sock.close()

    def _run(self) -> None:
        if self._sock is not None:
            while not self._stop.is_set():
                try:
                    data = self._sock.recv(4096)
                except TimeoutError:
                    continue
                except OSError:
                    return
                for key in data.decode("utf-8", errors="replace").split("\n"):
                    if key:
                        self.waker(key)
            return
        import psycopg

        while not self._stop.is_set():
            try:
                with psycopg.connect(self.db.url, autocommit=True, connect_timeout=5) as conn:
                    conn.execute(f"LISTEN {_NOTIFY_CHANNEL}")
                    # A notification may have been missed while we were away: wake everything.
                    self.waker("*")
                    while not self._stop.is_set():
                        for note in conn.notifies(timeout=0.5):
                            self.waker(note.payload)
            except Exception:  # the connection dropped: come back after a pause
                if self._stop.wait(0.5):
                    return
