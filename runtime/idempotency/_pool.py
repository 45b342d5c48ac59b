"""The small connection pool the SQL stores (sqlite, postgres) share.

A thread borrows a connection for one store call and gives it back; no connection is ever used by
two threads at once. Idle connections are kept up to `max_idle`, so a burst of threads opens what
it needs and a quiet process keeps a few; a connection whose call raised is closed rather than
reused, since a driver error can leave it mid-transaction or broken. Unlike a connection per
thread, nothing is left open by threads that have ended, and `close()` reaches every connection.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Generic, TypeVar

C = TypeVar("C")

__all__ = ["Pool", "PoolClosed"]


class PoolClosed(Exception):
    """The pool was closed; the store turns this into its own IdempotencyError."""


class Pool(Generic[C]):
    def __init__(self, connect: Callable[[], C], disconnect: Callable[[C], None], *, max_idle: int) -> None:
        self._connect = connect
        self._disconnect = disconnect
        self._max_idle = max_idle
        self._lock = threading.Lock()
        self._idle: list[C] = []
        self._closed = False

    @contextmanager
    def connection(self) -> Iterator[C]:
        with self._lock:
            if self._closed:
                raise PoolClosed
            conn = self._idle.pop() if self._idle else None
        if conn is None:
            conn = self._connect()  # outside the lock: connecting to a server takes a while
        try:
            yield conn
        except BaseException:
            with suppress(Exception):  # closing a broken connection may fail too; the first error matters
                self._disconnect(conn)
            raise
        with self._lock:
            if not self._closed and len(self._idle) < self._max_idle:
                self._idle.append(conn)
                return
        self._disconnect(conn)

    def close(self) -> None:
        """Close the idle connections now; those in use are closed when they come back."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            self._disconnect(conn)
