"""The in-memory idempotency store (`memory://`): a dict under one lock.

It lives and dies with one process and is shared by that process's threads only: two processes,
or two `open_store("memory://")` calls, each see their own empty store. It suits tests, dry runs
and single-process tools; anything that delivers from several processes needs sqlite, postgres
or redis.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, Self
from urllib.parse import urlsplit

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
    ownership_error,
    redact_url,
    resolve_error,
    utcnow,
)

__all__ = ["MemoryStore"]


class MemoryStore(IdempotencyStore):
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._records: dict[str, Record] = {}
        self._closed = False

    @classmethod
    def from_url(cls, url: str) -> Self:
        parts = urlsplit(url)
        if parts.scheme.lower() != "memory" or parts.netloc or parts.path or parts.query:
            raise IdempotencyError(f"a memory store URL is just memory://, not {redact_url(url)!r}")
        return cls()

    def __repr__(self) -> str:
        return "MemoryStore()"

    def _live(self, key: str, now: datetime) -> Record | None:
        record = self._records.get(key)
        if record is not None and not record.live(now):
            del self._records[key]  # expired counts as absent; drop it while we hold the lock
            return None
        return record

    def _check_open(self) -> None:
        if self._closed:
            raise closed_error(self)

    def reserve(self, key: str, fingerprint: str, *, owner: str, request_id: str,
                ttl: timedelta | None = None) -> Reservation:
        millis = check_reserve(key, fingerprint, owner, request_id, ttl)
        with self._lock:
            self._check_open()
            now = utcnow()
            existing = self._live(key, now)
            if existing is not None:
                return Reservation(classify(existing, fingerprint), _copy(existing))
            expires = None if millis is None else now + timedelta(milliseconds=millis)
            record = Record(key, fingerprint, State.RESERVED, owner, request_id, None, None, now, now, expires)
            self._records[key] = record
            return Reservation(Status.NEW, record)

    def _transition(self, action: str, key: str, owner: str, **changes: Any) -> Record:
        with self._lock:
            self._check_open()
            now = utcnow()
            found = self._live(key, now)
            if found is None or found.state is not State.RESERVED or found.owner != owner:
                raise ownership_error(action, key, owner, found)
            record = replace(found, updated_at=now, **changes)
            self._records[key] = record
            return _copy(record)

    def commit(self, key: str, owner: str, summary: Mapping[str, Any] | None) -> Record:
        # A JSON round trip, as every other store does: the same values are refused, and the caller
        # keeps no reference into the stored summary.
        stored = decode_summary(encode_summary(summary))
        return self._transition("commit", key, owner, state=State.COMMITTED, summary=stored)

    def mark_in_doubt(self, key: str, owner: str, reason: str) -> Record:
        check_key(reason, "in-doubt reason")
        return self._transition("mark in doubt", key, owner, state=State.IN_DOUBT, reason=reason)

    def release(self, key: str, owner: str) -> None:
        with self._lock:
            self._check_open()
            found = self._live(key, utcnow())
            if found is None or found.state is not State.RESERVED or found.owner != owner:
                raise ownership_error("release", key, owner, found)
            del self._records[key]

    def resolve(self, key: str, summary: Mapping[str, Any] | None) -> Record:
        stored = decode_summary(encode_summary(summary))
        with self._lock:
            self._check_open()
            now = utcnow()
            found = self._live(key, now)
            if found is None or found.state is State.COMMITTED:
                raise resolve_error(key, found)
            record = replace(found, state=State.COMMITTED, summary=stored, updated_at=now)
            self._records[key] = record
            return _copy(record)

    def get(self, key: str) -> Record | None:
        with self._lock:
            self._check_open()
            found = self._live(key, utcnow())
            return None if found is None else _copy(found)

    def purge_expired(self, now: datetime | None = None) -> int:
        with self._lock:
            self._check_open()
            moment = check_moment(now) or utcnow()
            gone = [key for key, record in self._records.items() if not record.live(moment)]
            for key in gone:
                del self._records[key]
            return len(gone)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._records.clear()


def _copy(record: Record) -> Record:
    """The record with its own summary: the stored dict is never handed out."""
    return record if record.summary is None else replace(record, summary=copy.deepcopy(record.summary))
