"""The SQLite idempotency store (`sqlite:///relative.db`, `sqlite:////absolute.db`): the embedded
default, stdlib only, safe for every thread and process on one host that shares the file.

Atomicity comes from SQLite's single writer: every write runs in `BEGIN IMMEDIATE`, which takes the
write lock before reading anything (waiting up to `timeout` for it), so a check and the write that
follows it see the same database. `reserve` is one upsert, `INSERT … ON CONFLICT(key) DO UPDATE …
WHERE <the stored row has expired>`: it inserts a fresh key, replaces an expired row in the same
statement, and leaves a live row alone; the row is then read back in the same transaction.

Times are the process clock, stored as microseconds since the epoch (UTC). The journal is WAL, so
readers never block the writer; `synchronous` stays at SQLite's default (FULL), since a
reservation lost to a power cut would let a key be sent twice.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Self
from urllib.parse import parse_qsl, unquote, urlsplit

from dockyard.runtime.idempotency._pool import Pool, PoolClosed
from dockyard.runtime.idempotency.base import (
    IdempotencyError,
    IdempotencyStore,
    Record,
    Reservation,
    State,
    Status,
    check_key,
    check_moment,
    check_reserve,
    classify,
    closed_error,
    decode_summary,
    encode_summary,
    from_micros,
    ownership_error,
    redact_url,
    resolve_error,
    store_failure,
    to_micros,
    utcnow,
)

__all__ = ["SqliteStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS dockyard_idempotency (
    key         TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('reserved', 'committed', 'in_doubt')),
    owner       TEXT NOT NULL,
    request_id  TEXT NOT NULL,
    summary     TEXT,              -- JSON
    reason      TEXT,
    created_us  INTEGER NOT NULL,  -- microseconds since the epoch, UTC
    updated_us  INTEGER NOT NULL,
    expires_us  INTEGER            -- NULL: keep until released
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS dockyard_idempotency_expires
    ON dockyard_idempotency (expires_us) WHERE expires_us IS NOT NULL;
"""

_COLUMNS = "key, fingerprint, state, owner, request_id, summary, reason, created_us, updated_us, expires_us"
_LIVE = "(expires_us IS NULL OR expires_us > :now)"

# Inserts a fresh key; replaces a row that has expired (expired counts as absent); leaves a live
# row untouched, in which case no row changes and the caller reads the live one back.
_RESERVE = f"""
INSERT INTO dockyard_idempotency ({_COLUMNS})
VALUES (:key, :fingerprint, 'reserved', :owner, :request_id, NULL, NULL, :now, :now, :expires)
ON CONFLICT (key) DO UPDATE SET
    fingerprint = excluded.fingerprint, state = 'reserved', owner = excluded.owner,
    request_id = excluded.request_id, summary = NULL, reason = NULL,
    created_us = excluded.created_us, updated_us = excluded.updated_us, expires_us = excluded.expires_us
WHERE expires_us IS NOT NULL AND expires_us <= excluded.created_us
"""
_SELECT = f"SELECT {_COLUMNS} FROM dockyard_idempotency WHERE key = :key AND {_LIVE}"
_OWNED = f"key = :key AND owner = :owner AND state = 'reserved' AND {_LIVE}"


class SqliteStore(IdempotencyStore):
    def __init__(self, path: str | os.PathLike[str], *, timeout: float = 30.0, max_idle: int = 8) -> None:
        self.path = os.fspath(path)
        if self.path in ("", ":memory:") or self.path.startswith("file:"):
            # Each pooled connection would get its own private database: reservations would not be shared.
            raise IdempotencyError(f"a sqlite store needs a file path, not {self.path!r}")
        self.timeout = timeout
        self._url = f"sqlite:///{self.path}"
        self._pool: Pool[sqlite3.Connection] = Pool(self._connect, sqlite3.Connection.close, max_idle=max_idle)
        with self._guard("opening"), self._pool.connection() as conn:
            self._prepare(conn)

    def _prepare(self, conn: sqlite3.Connection) -> None:
        """WAL mode and the schema. WAL is a property of the file: set once here, it holds for every
        later connection. Turning it on needs the file to itself, and SQLite answers "database is
        locked" at once, without its busy timeout, while another connection is opening the same
        fresh file: so that step is tried again, with a short growing pause, until the timeout."""
        deadline = time.monotonic() + self.timeout
        pause = 0.005
        while True:
            try:
                conn.execute("PRAGMA journal_mode = WAL")
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() + pause > deadline:
                    raise
                time.sleep(pause)
                pause = min(pause * 2, 0.1)
        conn.executescript(_SCHEMA)

    @classmethod
    def from_url(cls, url: str) -> Self:
        parts = urlsplit(url)
        if parts.scheme.lower() != "sqlite" or parts.netloc or len(parts.path) < 2 or parts.path[0] != "/":
            raise IdempotencyError(f"a sqlite store URL is sqlite:///relative.db or sqlite:////absolute.db, "
                                   f"not {redact_url(url)!r}")
        options = dict(parse_qsl(parts.query))
        unknown = sorted(set(options) - {"timeout"})
        if unknown:
            raise IdempotencyError(f"unknown sqlite store option(s) {', '.join(unknown)} in {redact_url(url)!r} "
                                   f"(known: timeout)")
        try:
            timeout = float(options.get("timeout", "30"))
        except ValueError:
            raise IdempotencyError(f"the sqlite store timeout is a number of seconds, "
                                   f"not {options['timeout']!r}") from None
        # sqlite:///x.db → "x.db" (relative to the working directory); sqlite:////tmp/x.db → "/tmp/x.db".
        return cls(Path(unquote(parts.path[1:])), timeout=timeout)

    def __repr__(self) -> str:
        return f"SqliteStore({self.path!r})"

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: no implicit transactions, every write says BEGIN IMMEDIATE itself.
        # check_same_thread=False: the pool hands a connection to one thread at a time, not always the same one.
        # timeout sets SQLite's busy timeout: how long BEGIN IMMEDIATE waits for another writer.
        return sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None, check_same_thread=False)

    @contextmanager
    def _guard(self, action: str) -> Iterator[None]:
        try:
            yield
        except PoolClosed:
            raise closed_error(self) from None
        except sqlite3.Error as exc:
            store_failure(self._url, action, exc)

    @contextmanager
    def _write(self, action: str) -> Iterator[sqlite3.Connection]:
        """A write transaction. BEGIN IMMEDIATE takes the write lock up front, waiting for it under
        the busy timeout, so every statement inside (the read-back included) runs under that lock.
        A deferred transaction that read before it wrote would have to upgrade its lock, and in WAL
        mode that upgrade fails at once (SQLITE_BUSY, no waiting) if another writer committed in
        between: immediate rules that out whatever order the statements come in."""
        with self._guard(action), self._pool.connection() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                if conn.in_transaction:  # SQLite rolls back by itself on some errors (SQLITE_FULL, …)
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def reserve(self, key: str, fingerprint: str, *, owner: str, request_id: str,
                ttl: timedelta | None = None) -> Reservation:
        millis = check_reserve(key, fingerprint, owner, request_id, ttl)
        with self._write("reserve") as conn:
            now = to_micros(utcnow())  # read under the write lock: no other writer is between now and the write
            expires = None if millis is None else now + millis * 1000
            changed = conn.execute(_RESERVE, {"key": key, "fingerprint": fingerprint, "owner": owner,
                                              "request_id": request_id, "now": now, "expires": expires}).rowcount
            row = conn.execute(_SELECT, {"key": key, "now": now}).fetchone()
        if row is None:  # pragma: no cover - the row was written or found live under the same lock
            raise IdempotencyError(f"key {key!r} vanished while it was reserved")
        record = _record(row)
        return Reservation(Status.NEW if changed == 1 else classify(record, fingerprint), record)

    def _transition(self, action: str, key: str, owner: str, assignments: str, values: dict[str, Any]) -> Record:
        with self._write(action) as conn:
            params = {"key": key, "owner": owner, "now": to_micros(utcnow()), **values}
            changed = conn.execute(f"UPDATE dockyard_idempotency SET {assignments}, updated_us = :now WHERE {_OWNED}",
                                   params).rowcount
            row = conn.execute(_SELECT, params).fetchone()
        found = None if row is None else _record(row)
        if changed != 1 or found is None:
            raise ownership_error(action, key, owner, found)
        return found

    def commit(self, key: str, owner: str, summary: Mapping[str, Any] | None) -> Record:
        return self._transition("commit", key, owner, "state = 'committed', summary = :summary",
                                {"summary": encode_summary(summary)})

    def mark_in_doubt(self, key: str, owner: str, reason: str) -> Record:
        check_key(reason, "in-doubt reason")
        return self._transition("mark in doubt", key, owner, "state = 'in_doubt', reason = :reason", {"reason": reason})

    def release(self, key: str, owner: str) -> None:
        with self._write("release") as conn:
            params = {"key": key, "owner": owner, "now": to_micros(utcnow())}
            deleted = conn.execute(f"DELETE FROM dockyard_idempotency WHERE {_OWNED}", params).rowcount
            row = None if deleted else conn.execute(_SELECT, params).fetchone()
        if deleted != 1:
            raise ownership_error("release", key, owner, None if row is None else _record(row))

    def resolve(self, key: str, summary: Mapping[str, Any] | None) -> Record:
        text = encode_summary(summary)
        with self._write("resolve") as conn:
            params = {"key": key, "summary": text, "now": to_micros(utcnow())}
            changed = conn.execute(
                "UPDATE dockyard_idempotency SET state = 'committed', summary = :summary, updated_us = :now "
                f"WHERE key = :key AND state IN ('reserved', 'in_doubt') AND {_LIVE}", params).rowcount
            row = conn.execute(_SELECT, params).fetchone()
        found = None if row is None else _record(row)
        if changed != 1 or found is None:
            raise resolve_error(key, found)
        return found

    def get(self, key: str) -> Record | None:
        # A single SELECT needs no write lock: WAL gives it a consistent snapshot.
        with self._guard("get"), self._pool.connection() as conn:
            row = conn.execute(_SELECT, {"key": key, "now": to_micros(utcnow())}).fetchone()
        return None if row is None else _record(row)

    def purge_expired(self, now: datetime | None = None) -> int:
        moment = to_micros(check_moment(now) or utcnow())
        with self._write("purge") as conn:
            return conn.execute("DELETE FROM dockyard_idempotency WHERE expires_us IS NOT NULL AND expires_us <= ?",
                                (moment,)).rowcount

    def close(self) -> None:
        self._pool.close()


def _record(row: tuple[Any, ...]) -> Record:
    key, fingerprint, state, owner, request_id, summary, reason, created, updated, expires = row
    return Record(key, fingerprint, State(state), owner, request_id, decode_summary(summary), reason,
                  from_micros(created), from_micros(updated), None if expires is None else from_micros(expires))
