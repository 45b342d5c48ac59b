"""The service's database: one schema on SQLite (the embedded default) or PostgreSQL, a single
writer with group commit, and readers.

Why a single writer with group commit: every accepted order, every delivery result and every
callback must be durable before the service answers, and on SQLite a transaction per request would
cap the service at the disk's commit rate and serialise on the write lock anyway. So writes are
queued as functions; one thread takes everything queued, runs each in its own savepoint inside one
transaction, commits once, and only then resolves each caller's future. A failing function rolls
back its own savepoint and gets its exception; the others commit. On PostgreSQL the same writer is
used (several service processes may share one database: claims use `FOR UPDATE SKIP LOCKED`).

SQL is written once with `?` placeholders; the PostgreSQL connection rewrites them to `%s`.
Times are integers: microseconds since the epoch, UTC, so that both engines sort and compare them
the same way and the journal can be queried by time with a plain index.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import queue
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol, TypeVar
from urllib.parse import unquote, urlsplit

from dockyard.runtime.errors import DockyardError
from dockyard.runtime.idempotency.base import redact_url

__all__ = ["Conn", "Database", "StoreError", "now_us"]

T = TypeVar("T")

SCHEMA_VERSION = 1
_Item = tuple[Callable[[Any], Any], Callable[[BaseException | None, Any], None]]


class StoreError(DockyardError):
    """The state store is unusable (bad URL, unreachable, wrong schema version)."""


def now_us() -> int:
    return time.time_ns() // 1000


class Conn(Protocol):
    """What store operations see: one connection inside the current transaction."""

    dialect: str

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None: ...


# -- the schema -------------------------------------------------------------------------------
# Jobs are the outbox: one row per piece of work that must reach a warehouse (lane 'wh') or the
# upstream webhook (lane 'up'). Within a lane, an order's jobs run in id order: a cancel never
# overtakes its create. The job row is also the delivery's idempotency record: its request_id is
# fixed (durably) before the first byte is sent, and its state says whether the outcome is known.
_DDL = """
CREATE TABLE IF NOT EXISTS dy_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS dy_orders (
    order_no TEXT PRIMARY KEY,
    tracking_id TEXT NOT NULL,
    warehouse TEXT NOT NULL,
    shop_code TEXT,
    channel TEXT,
    fingerprint TEXT NOT NULL,
    payload TEXT NOT NULL,
    status TEXT NOT NULL,
    delivery TEXT NOT NULL,
    warehouse_order_id TEXT,
    waybills TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS dy_jobs (
    id {serial} PRIMARY KEY,
    lane TEXT NOT NULL,
    kind TEXT NOT NULL,
    order_no TEXT,
    warehouse TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at BIGINT NOT NULL,
    owner TEXT,
    lease_until BIGINT,
    request_id TEXT,
    doubt INTEGER NOT NULL DEFAULT 0,
    payload TEXT,
    reason TEXT,
    outcome TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS dy_jobs_ready ON dy_jobs (lane, state, next_at);
CREATE INDEX IF NOT EXISTS dy_jobs_order ON dy_jobs (order_no, lane, id);
CREATE INDEX IF NOT EXISTS dy_jobs_state ON dy_jobs (state, updated_at);
CREATE TABLE IF NOT EXISTS dy_events (
    warehouse TEXT NOT NULL,
    event_id TEXT NOT NULL,
    order_no TEXT,
    status TEXT,
    document TEXT NOT NULL,
    received_at BIGINT NOT NULL,
    PRIMARY KEY (warehouse, event_id)
);
CREATE INDEX IF NOT EXISTS dy_events_order ON dy_events (order_no, received_at);
CREATE TABLE IF NOT EXISTS dy_quarantine (
    id {serial} PRIMARY KEY,
    received_at BIGINT NOT NULL,
    source TEXT NOT NULL,
    order_no TEXT,
    reasons TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS dy_quarantine_at ON dy_quarantine (received_at);
CREATE TABLE IF NOT EXISTS dy_journal (
    id {serial} PRIMARY KEY,
    at BIGINT NOT NULL,
    order_no TEXT,
    warehouse TEXT,
    flow TEXT,
    step TEXT NOT NULL,
    outcome TEXT NOT NULL,
    elapsed_us BIGINT,
    detail TEXT
);
CREATE INDEX IF NOT EXISTS dy_journal_order ON dy_journal (order_no, id);
CREATE INDEX IF NOT EXISTS dy_journal_warehouse_at ON dy_journal (warehouse, at);
CREATE INDEX IF NOT EXISTS dy_journal_at ON dy_journal (at);
CREATE INDEX IF NOT EXISTS dy_journal_step_at ON dy_journal (step, at);
"""


class _SqliteConn:
    dialect = "sqlite"

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

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self.raw.execute(sql, params).fetchall()

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        self.raw.executemany(sql, rows)

    def begin(self) -> None:
        fcntl.flock(self._gate, fcntl.LOCK_EX)
        self._gated = True
        try:
            self.raw.execute("BEGIN IMMEDIATE")
        except BaseException:
            self._ungate()
            raise

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

    def __init__(self, url: str) -> None:
        import psycopg

        self._psycopg = psycopg
        self.raw = psycopg.connect(url, autocommit=True)
        self._sql: dict[str, str] = {}

    def _q(self, sql: str) -> str:
        text = self._sql.get(sql)
        if text is None:
            text = self._sql[sql] = sql.replace("%", "%%").replace("?", "%s")
        return text

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        cur = self.raw.execute(self._q(sql), params)
        return cur.fetchall() if cur.description is not None else []

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        with self.raw.cursor() as cur:
            cur.executemany(self._q(sql), list(rows))

    def begin(self) -> None:
        self.raw.execute("BEGIN")

    def commit(self) -> None:
        self.raw.execute("COMMIT")

    def rollback(self) -> None:
        self.raw.execute("ROLLBACK")

    def close(self) -> None:
        self.raw.close()


_Connection = _SqliteConn | _PostgresConn


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


class Database:
    """One state store. `await write(fn)` runs fn(conn) in the writer's next group commit;
    `await read(fn)` runs fn(conn) on a reader connection; `*_sync` do the same from plain threads
    (the CLI)."""

    def __init__(self, url: str, *, readers: int = 2, max_group: int = 512) -> None:
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
        self._queue: queue.SimpleQueue[tuple[Callable[[Any], Any], Callable[[BaseException | None, Any], None]] | None]
        self._queue = queue.SimpleQueue()
        # Who this process is to the store. On PostgreSQL the writer's session holds an advisory
        # lock on it for as long as the process lives: another process can then tell a dead owner's
        # `sending` jobs from a live one's at once, without waiting for leases (see store.recover).
        self.owner = uuid.uuid4().hex
        try:
            self._writer_conn = self._connect()
            self._migrate(self._writer_conn)
            if self.dialect == "postgres":
                self._writer_conn.execute("SELECT pg_advisory_lock(hashtextextended(?, 0))", (self.owner,))
            else:
                self._owners_dir = Path(_sqlite_path(url) + ".owners")
                self._owners_dir.mkdir(exist_ok=True)
                self._owner_lock = self._hold(self._owners_dir / self.owner)
        except StoreError:
            raise
        except Exception as exc:
            raise StoreError(f"cannot open the state store {self.shown_url}: {type(exc).__name__}: "
                             f"{_scrub(str(exc), url)}") from None
        self._local = threading.local()
        self._reader_conns: list[_Connection] = []
        self._readers = ThreadPoolExecutor(max_workers=readers, thread_name_prefix="dockyard-read")
        self._thread = threading.Thread(target=self._run_writer, name="dockyard-writer", daemon=True)
        self._closed = False
        self._thread.start()
        self.groups = 0  # commits made; with `writes`, how well group commit is batching
        self.writes = 0

    # -- who is alive ------------------------------------------------------------------------
    @staticmethod
    def _hold(path: Path) -> Any:
        handle = open(path, "a+")  # noqa: SIM115 - held (and locked) for the process's lifetime
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return handle

    def owner_gone(self, conn: Conn, owner: str) -> bool:
        """Whether the process `owner` is gone. Each live process holds a lock on its own id: an
        advisory lock of its PostgreSQL session, or an flock on `<db>.owners/<owner>` for SQLite.
        Both are released by the kernel or the server when the process dies, however it dies."""
        if owner == self.owner:
            return False
        if conn.dialect == "postgres":
            if not conn.execute("SELECT pg_try_advisory_lock(hashtextextended(?, 0))", (owner,))[0][0]:
                return False
            conn.execute("SELECT pg_advisory_unlock(hashtextextended(?, 0))", (owner,))
            return True
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
        serial = "INTEGER" if self.dialect == "sqlite" else "BIGSERIAL"
        conn.begin()
        try:
            if self.dialect == "postgres":
                conn.execute("SELECT pg_advisory_xact_lock(4242001)")  # two processes creating at once
            for stmt in _DDL.format(serial=serial).split(";"):
                if stmt.strip():
                    conn.execute(stmt)
            rows = conn.execute("SELECT value FROM dy_meta WHERE name = 'schema_version'")
            if not rows:
                conn.execute("INSERT INTO dy_meta (name, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            elif int(rows[0][0]) > SCHEMA_VERSION:
                raise StoreError(f"the state store {self.shown_url} has schema version {rows[0][0]}, newer than "
                                 f"this Dockyard's {SCHEMA_VERSION}: upgrade Dockyard")
            conn.commit()
        except BaseException:
            conn.rollback()
            raise

    # -- the writer -----------------------------------------------------------------------
    def _run_writer(self) -> None:
        conn = self._writer_conn
        while True:
            first = self._queue.get()
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
            self._commit_group(conn, batch)
            if stop:
                break
        conn.close()

    def _commit_group(self, conn: _Connection, batch: list[_Item]) -> None:
        results: list[tuple[BaseException | None, Any]] = []
        if len(batch) > 1 and self._commit_plain(conn, batch):
            return
        try:
            conn.begin()
            for fn, _ in batch:
                conn.execute("SAVEPOINT op")
                try:
                    value = fn(conn)
                except Exception as exc:
                    conn.execute("ROLLBACK TO SAVEPOINT op")
                    conn.execute("RELEASE SAVEPOINT op")
                    results.append((exc, None))
                else:
                    conn.execute("RELEASE SAVEPOINT op")
                    results.append((None, value))
            conn.commit()
        except Exception as exc:  # the commit itself failed: nobody's write is durable
            with contextlib.suppress(Exception):  # the connection is broken; the error below says why
                conn.rollback()
            failure = StoreError(f"the state store {self.shown_url} failed to commit: {type(exc).__name__}: "
                                 f"{_scrub(str(exc), self.url)}")
            for _, done in batch:
                done(failure, None)
            return
        self.groups += 1
        self.writes += len(batch)
        for (_, done), (error, value) in zip(batch, results, strict=True):
            done(error, value)

    def _commit_plain(self, conn: _Connection, batch: list[_Item]) -> bool:
        """The whole group in one transaction without a savepoint per write (a round trip each on
        PostgreSQL). If any write fails, nothing of it is kept and False sends the group down the
        careful path, where each write has its savepoint and only the failing ones fail."""
        values: list[Any] = []
        try:
            conn.begin()
            for fn, _ in batch:
                values.append(fn(conn))
            conn.commit()
        except Exception:
            with contextlib.suppress(Exception):
                conn.rollback()
            return False
        self.groups += 1
        self.writes += len(batch)
        for (_, done), value in zip(batch, values, strict=True):
            done(None, value)
        return True

    async def write(self, fn: Callable[[Conn], T]) -> T:
        """Run fn in the next group commit; returns after the commit made it durable."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()

        def done(error: BaseException | None, value: Any) -> None:
            loop.call_soon_threadsafe(_settle, future, error, value)

        self._submit(fn, done)
        return await future

    def write_sync(self, fn: Callable[[Conn], T]) -> T:
        box: list[tuple[BaseException | None, Any]] = []
        event = threading.Event()

        def done(error: BaseException | None, value: Any) -> None:
            box.append((error, value))
            event.set()

        self._submit(fn, done)
        event.wait()
        error, value = box[0]
        if error is not None:
            raise error
        return value  # type: ignore[no-any-return]

    def _submit(self, fn: Callable[[Any], Any], done: Callable[[BaseException | None, Any], None]) -> None:
        if self._closed:
            raise StoreError("the state store is closed")
        self._queue.put((fn, done))

    # -- readers --------------------------------------------------------------------------
    def _reader(self) -> _Connection:
        conn: _Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._connect()
            self._reader_conns.append(conn)
        return conn

    def read_sync(self, fn: Callable[[Conn], T]) -> T:
        conn = self._reader()
        if conn.dialect == "sqlite":
            return fn(conn)  # autocommit reads see the last committed state (WAL snapshot per statement)
        try:
            conn.begin()
            return fn(conn)
        finally:
            conn.rollback()

    async def read(self, fn: Callable[[Conn], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._readers, self.read_sync, fn)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        self._thread.join(timeout=30)
        self._readers.shutdown(wait=True)
        lock = getattr(self, "_owner_lock", None)
        if lock is not None:
            lock.close()
            (self._owners_dir / self.owner).unlink(missing_ok=True)
        for conn in self._reader_conns:
            with contextlib.suppress(Exception):  # closing a broken connection: nothing left to do
                conn.close()


def _settle(future: asyncio.Future[Any], error: BaseException | None, value: Any) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(value)


def _scrub(text: str, url: str) -> str:
    from dockyard.runtime.idempotency.base import scrub

    return scrub(text, url)
