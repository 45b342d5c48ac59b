"""The PostgreSQL idempotency store (`postgresql://user@host:port/db?table=name`, or `postgres://`),
for deliveries from several hosts. psycopg 3; one table (default `dockyard_idempotency`), created
when absent.

`reserve` is one statement in one transaction: `INSERT … ON CONFLICT (key) DO UPDATE … WHERE
<the stored row has expired> RETURNING …`. A fresh key is inserted; an expired row is taken over
by the same statement; a live row is left alone, so nothing is returned and the row is read back.
Postgres's speculative insertion makes the statement atomic: of many sessions inserting the same
key at once, one inserts and the others wait for it to commit, then see its row. When the WHERE is
false, ON CONFLICT DO UPDATE still locks the row, so no concurrent release or purge can delete it
before the read-back in the same transaction.

All times come from the server's clock (`now()`), so hosts with skewed clocks agree on expiry. The
transitions are single UPDATE/DELETE statements guarded by key, owner, state and liveness.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, Self

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

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
    encode_summary,
    ownership_error,
    redact_url,
    resolve_error,
    store_failure,
    url_options,
)

__all__ = ["DEFAULT_TABLE", "PostgresStore"]

DEFAULT_TABLE = "dockyard_idempotency"
# A table name, optionally schema-qualified; short enough that "<table>_expires" fits in 63 bytes.
_TABLE = re.compile(r"^(?:[A-Za-z_][A-Za-z0-9_]{0,47}\.)?[A-Za-z_][A-Za-z0-9_]{0,47}$")

_COLUMNS = sql.SQL("key, fingerprint, state, owner, request_id, summary, reason, created_at, updated_at, expires_at")
_LIVE = sql.SQL("(expires_at IS NULL OR expires_at > now())")


class PostgresStore(IdempotencyStore):
    def __init__(self, conninfo: str, *, table: str = DEFAULT_TABLE, max_idle: int = 8) -> None:
        if not _TABLE.fullmatch(table):
            raise IdempotencyError(f"{table!r} is not a usable table name (letters, digits, _; at most 48; "
                                   f"optionally schema.table)")
        self.table = table
        self._url = conninfo
        self._extra: dict[str, Any] = {}
        try:
            if "connect_timeout" not in conninfo_to_dict(conninfo):
                self._extra["connect_timeout"] = 10  # libpq waits forever by default on an unreachable host
        except psycopg.Error as exc:
            store_failure(conninfo, "reading the URL", exc)
        *schema, name = table.split(".")
        ident = sql.Identifier(*schema, name)
        self._ident = ident
        self._sql_reserve = sql.SQL(
            "INSERT INTO {t} AS cur ({cols}) "
            "VALUES (%(key)s, %(fingerprint)s, 'reserved', %(owner)s, %(request_id)s, NULL, NULL, now(), now(), "
            "        now() + %(ttl)s::interval) "
            "ON CONFLICT (key) DO UPDATE SET "
            "    fingerprint = EXCLUDED.fingerprint, state = 'reserved', owner = EXCLUDED.owner, "
            "    request_id = EXCLUDED.request_id, summary = NULL, reason = NULL, "
            "    created_at = EXCLUDED.created_at, updated_at = EXCLUDED.updated_at, expires_at = EXCLUDED.expires_at "
            "WHERE cur.expires_at IS NOT NULL AND cur.expires_at <= now() "
            "RETURNING {cols}").format(t=ident, cols=_COLUMNS)
        self._sql_select = sql.SQL("SELECT {cols} FROM {t} WHERE key = %(key)s AND {live}").format(
            cols=_COLUMNS, t=ident, live=_LIVE)
        self._sql_owned = sql.SQL("key = %(key)s AND owner = %(owner)s AND state = 'reserved' AND {live}").format(
            live=_LIVE)
        self._pool: Pool[psycopg.Connection[tuple[Any, ...]]] = Pool(
            self._connect, psycopg.Connection.close, max_idle=max_idle)
        with self._guard("opening"), self._pool.connection() as conn:
            self._create_table(conn, name)

    @classmethod
    def from_url(cls, url: str) -> Self:
        try:
            conninfo, options = url_options(url, frozenset({"table"}))
        except ValueError as exc:
            raise IdempotencyError(f"{redact_url(url)} is not a usable postgres store URL: {exc}") from None
        return cls(conninfo, table=options.get("table", DEFAULT_TABLE))

    def __repr__(self) -> str:
        return f"PostgresStore({redact_url(self._url)!r}, table={self.table!r})"

    def _connect(self) -> psycopg.Connection[tuple[Any, ...]]:
        conn = psycopg.connect(self._url, autocommit=True, **self._extra)
        try:
            # READ COMMITTED whatever the server's or role's default: under REPEATABLE READ a reserve
            # or a transition racing another would fail with a serialization error instead of
            # seeing the winner's row.
            conn.execute("SET default_transaction_isolation = 'read committed'")
            conn.execute("SET TIME ZONE 'UTC'")
        except BaseException:
            conn.close()
            raise
        return conn

    def _create_table(self, conn: psycopg.Connection[tuple[Any, ...]], name: str) -> None:
        regclass = self._ident.as_string(conn)
        if conn.execute("SELECT to_regclass(%s)", (regclass,)).fetchone() != (None,):
            return  # already there: no DDL, so a role without CREATE can use an existing table
        with conn.transaction():
            # CREATE TABLE IF NOT EXISTS is not safe against itself: two sessions creating the same
            # table at once can both pass the check and one fails on a catalog unique index. A
            # transaction-scoped advisory lock on the table name serialises them.
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"dockyard_idempotency:{regclass}",))
            conn.execute(sql.SQL(
                "CREATE TABLE IF NOT EXISTS {t} ("
                " key text PRIMARY KEY,"
                " fingerprint text NOT NULL,"
                " state text NOT NULL CHECK (state IN ('reserved', 'committed', 'in_doubt')),"
                " owner text NOT NULL,"
                " request_id text NOT NULL,"
                " summary jsonb,"
                " reason text,"
                " created_at timestamptz NOT NULL,"
                " updated_at timestamptz NOT NULL,"
                " expires_at timestamptz)").format(t=self._ident))
            conn.execute(sql.SQL("CREATE INDEX IF NOT EXISTS {i} ON {t} (expires_at) WHERE expires_at IS NOT NULL")
                         .format(i=sql.Identifier(f"{name}_expires"), t=self._ident))

    @contextmanager
    def _guard(self, action: str) -> Iterator[None]:
        try:
            yield
        except PoolClosed:
            raise closed_error(self) from None
        except psycopg.Error as exc:
            store_failure(self._url, action, exc)

    @contextmanager
    def _conn(self, action: str) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
        with self._guard(action), self._pool.connection() as conn:
            yield conn

    def reserve(self, key: str, fingerprint: str, *, owner: str, request_id: str,
                ttl: timedelta | None = None) -> Reservation:
        millis = check_reserve(key, fingerprint, owner, request_id, ttl)
        params = {"key": key, "fingerprint": fingerprint, "owner": owner, "request_id": request_id,
                  "ttl": None if millis is None else timedelta(milliseconds=millis)}
        with self._conn("reserve") as conn, conn.transaction():
            row = conn.execute(self._sql_reserve, params).fetchone()
            fresh = row is not None
            if row is None:
                # The upsert locked the live row it left alone: it is still there to read.
                row = conn.execute(self._sql_select, params).fetchone()
        if row is None:  # pragma: no cover - see above
            raise IdempotencyError(f"key {key!r} vanished while it was reserved")
        record = _record(row)
        return Reservation(Status.NEW if fresh else classify(record, fingerprint), record)

    def _transition(self, action: str, key: str, owner: str, assignments: sql.Composable,
                    values: dict[str, Any]) -> Record:
        params = {"key": key, "owner": owner, **values}
        query = sql.SQL("UPDATE {t} SET {a}, updated_at = now() WHERE {owned} RETURNING {cols}").format(
            t=self._ident, a=assignments, owned=self._sql_owned, cols=_COLUMNS)
        with self._conn(action) as conn:
            row = conn.execute(query, params).fetchone()
            # Only to explain a refusal; the UPDATE above already decided.
            found = conn.execute(self._sql_select, params).fetchone() if row is None else None
        if row is None:
            raise ownership_error(action, key, owner, None if found is None else _record(found))
        return _record(row)

    def commit(self, key: str, owner: str, summary: Mapping[str, Any] | None) -> Record:
        return self._transition("commit", key, owner, sql.SQL("state = 'committed', summary = %(summary)s::jsonb"),
                                {"summary": encode_summary(summary)})

    def mark_in_doubt(self, key: str, owner: str, reason: str) -> Record:
        check_key(reason, "in-doubt reason")
        return self._transition("mark in doubt", key, owner, sql.SQL("state = 'in_doubt', reason = %(reason)s"),
                                {"reason": reason})

    def release(self, key: str, owner: str) -> None:
        params = {"key": key, "owner": owner}
        query = sql.SQL("DELETE FROM {t} WHERE {owned} RETURNING key").format(t=self._ident, owned=self._sql_owned)
        with self._conn("release") as conn:
            gone = conn.execute(query, params).fetchone()
            found = conn.execute(self._sql_select, params).fetchone() if gone is None else None
        if gone is None:
            raise ownership_error("release", key, owner, None if found is None else _record(found))

    def resolve(self, key: str, summary: Mapping[str, Any] | None) -> Record:
        params = {"key": key, "summary": encode_summary(summary)}
        query = sql.SQL(
            "UPDATE {t} SET state = 'committed', summary = %(summary)s::jsonb, updated_at = now() "
            "WHERE key = %(key)s AND state IN ('reserved', 'in_doubt') AND {live} RETURNING {cols}").format(
            t=self._ident, live=_LIVE, cols=_COLUMNS)
        with self._conn("resolve") as conn:
            row = conn.execute(query, params).fetchone()
            found = conn.execute(self._sql_select, params).fetchone() if row is None else None
        if row is None:
            raise resolve_error(key, None if found is None else _record(found))
        return _record(row)

    def get(self, key: str) -> Record | None:
        with self._conn("get") as conn:
            row = conn.execute(self._sql_select, {"key": key}).fetchone()
        return None if row is None else _record(row)

    def purge_expired(self, now: datetime | None = None) -> int:
        query = sql.SQL("DELETE FROM {t} WHERE expires_at IS NOT NULL "
                        "AND expires_at <= coalesce(%s::timestamptz, now())").format(t=self._ident)
        with self._conn("purge") as conn:
            return conn.execute(query, (check_moment(now),)).rowcount

    def close(self) -> None:
        self._pool.close()


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC)


def _record(row: tuple[Any, ...]) -> Record:
    key, fingerprint, state, owner, request_id, summary, reason, created, updated, expires = row
    return Record(key, fingerprint, State(state), owner, request_id, summary, reason,
                  _utc(created), _utc(updated), None if expires is None else _utc(expires))
