"""The HTTP/1.1 client that carries requests to warehouses and the upstream webhook.

Why not aiohttp's client, which the service used before: on this path it cost ~110 µs of CPU per
request (a quarter of the service's delivery cost), and it could not say whether a failed request
had been written. That second point decides whether an order is in doubt: a request that never
left (no free connection in time, a refused connection, a stale keep-alive socket found closed
before writing) is safely sent again, while one that was written and got no answer may have been
processed. So the client works in two steps the caller sees: `connect()` (any failure: NotSent),
then `exchange()` (after the request bytes are handed to the socket, any failure: OutcomeUnknown).
Between the two the delivery worker durably marks the job as on the wire.

Parsing is httptools (llhttp, the parser Node.js uses); connections are plain asyncio transports,
TLS through the standard `ssl` module, kept alive per origin and closed after IDLE_S idle seconds
(shorter than common server keep-alive timeouts, so a socket the server is about to close is not
reused).
"""

from __future__ import annotations

import asyncio
import collections
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast
from urllib.parse import urlsplit

import httptools

from dockyard.runtime.delivery import NotSent, OutcomeUnknown, origin

# NotSent and OutcomeUnknown are what every failure of this client is (runtime.delivery defines them for
# all transports); exported here so that a user of the client alone needs nothing else.
__all__ = ["ConnectionReset", "HttpAnswer", "HttpPool", "NoAnswer", "NotSent", "OutcomeUnknown", "Prepared", "Refused",
           "failure_kind", "prepare"]


class NoAnswer(OutcomeUnknown):
    """The request was written and no answer came within the timeout."""

    kind = "timeout"


class ConnectionReset(OutcomeUnknown):
    """The request was written and the connection broke before the answer was complete."""

    kind = "reset"


class Refused(NotSent):
    """No connection could be made: nothing was written."""

    kind = "refused"


def failure_kind(exc: BaseException) -> str:
    """timeout | reset | refused for this client's failures; not_sent / no_answer for others."""
    kind = getattr(exc, "kind", None)
    if isinstance(kind, str):
        return kind
    return "not_sent" if isinstance(exc, NotSent) else "no_answer"

IDLE_S = 4.0
MAX_BODY = 16 * 1024 * 1024  # an answer larger than this is not a warehouse's answer
_KEEP_HEADERS = (b"retry-after", b"content-type", b"date")


@dataclass(frozen=True)
class HttpAnswer:
    status: int
    body: bytes
    elapsed_us: int
    headers: dict[str, str]


@dataclass(frozen=True)
class Prepared:
    """A request ready to write: the origin it goes to and its exact bytes."""

    key: tuple[str, str, int]  # scheme, host, port
    data: bytes
    shown: str  # scheme://host[:port] for messages (no path, no query: those may carry signatures)


def prepare(method: str, url: str, headers: Sequence[tuple[str, str]], body: bytes) -> Prepared:
    """The request's bytes. Raises NotSent for a URL or header that cannot be sent as it is
    (never silently "fixed": a CR or LF in a header would split the request)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        raise NotSent(f"not an http(s) URL: {origin(url)}")
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError:
        raise NotSent(f"bad port in {origin(url)}") from None
    host = parts.hostname
    default = (scheme == "https" and port == 443) or (scheme == "http" and port == 80)
    host_header = (f"[{host}]" if ":" in host else host) + ("" if default else f":{port}")
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host_header}"]
    names = set()
    for name, value in headers:
        if any(c in name or c in value for c in "\r\n\0") or not name or ":" in name:
            raise NotSent(f"header {name[:40]!r} cannot be sent: it holds a line break or a bad name")
        names.add(name.lower())
        lines.append(f"{name}: {value}")
    if "content-length" not in names:
        lines.append(f"Content-Length: {len(body)}")
    if "user-agent" not in names:
        lines.append("User-Agent: dockyard")
    try:
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    except UnicodeEncodeError:
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")
    shown = f"{scheme}://{host_header}"
    return Prepared((scheme, host, port), head + body, shown)


class _Conn(asyncio.Protocol):
    """One keep-alive connection: one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = time.monotonic()
        self._parser = httptools.HttpResponseParser(self)
        self._future: asyncio.Future[tuple[int, bytes, dict[str, str], bool]] | None = None
        self._body: list[bytes] = []
        self._size = 0
        self._headers: dict[str, str] = {}
        self._headers_done = False
        self._length_known = False
        self._reusable = True

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not asyncio.Transport

    def data_received(self, data: bytes) -> None:
        if self._future is None:  # bytes nobody asked for: the connection cannot be trusted
            self.close()
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(ConnectionReset("the warehouse switched protocols"))
        except httptools.HttpParserError as exc:
            self._fail(ConnectionReset(f"an unreadable HTTP answer ({exc})"))

    def eof_received(self) -> bool:
        self.closed = True  # the server is done with this connection; the transport closes itself
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        future = self._future
        if future is None or future.done():
            return
        if self._headers_done and not self._length_known:  # an answer delimited by the close
            self._finish(False)
            return
        self._fail(ConnectionReset("connection reset before the answer was complete"
                                   if exc is None else f"connection lost: {type(exc).__name__}"))

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        lowered = name.lower()
        if lowered in (b"content-length", b"transfer-encoding"):
            self._length_known = True
        if lowered in _KEEP_HEADERS:
            self._headers[lowered.decode("latin-1")] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self._headers_done = True
        self._reusable = bool(self._parser.should_keep_alive())

    def on_body(self, body: bytes) -> None:
        self._size += len(body)
        if self._size > MAX_BODY:
            self._fail(ConnectionReset(f"the answer is larger than {MAX_BODY} bytes"))
            return
        self._body.append(body)

    def on_message_complete(self) -> None:
        self._finish(self._reusable)

    # the exchange
    def _finish(self, reusable: bool) -> None:
        future = self._future
        if future is not None and not future.done():
            future.set_result((self._parser.get_status_code(), b"".join(self._body), self._headers, reusable))

    def _fail(self, exc: BaseException) -> None:
        future = self._future
        if future is not None and not future.done():
            future.set_exception(exc)
        self.close()

    def usable(self) -> bool:
        return not self.closed and self.transport is not None and not self.transport.is_closing()

    def send(self, data: bytes) -> asyncio.Future[tuple[int, bytes, dict[str, str], bool]]:
        """Write the request (raises NotSent if the transport refuses it: nothing was written)."""
        assert self.transport is not None
        self._parser = httptools.HttpResponseParser(self)
        self._future = asyncio.get_running_loop().create_future()
        self._body, self._size, self._headers = [], 0, {}
        self._headers_done = self._length_known = False
        self._reusable = True
        try:
            self.transport.write(data)
        except (RuntimeError, OSError) as exc:  # uvloop refuses writes on a closing transport
            self._future = None
            self.close()
            raise NotSent(f"the connection closed before the request was written ({type(exc).__name__})") from None
        return self._future

    def done_with(self) -> None:
        self._future = None
        self.idle_since = time.monotonic()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()


class HttpPool:
    """Keep-alive connections to the origins of one warehouse (or the upstream webhook), at most
    `limit` at a time; callers beyond the limit wait for one (that wait is never "on the wire")."""

    def __init__(self, *, limit: int, connect_timeout: float, timeout: float) -> None:
        self.limit = max(1, limit)
        self.connect_timeout = connect_timeout
        self.timeout = timeout
        self._idle: dict[tuple[str, str, int], list[_Conn]] = {}
        self._open = 0
        # Callers waiting for a connection, oldest first. A connection given back or closed wakes
        # one of them, not all: the simulator's pushes can have hundreds waiting, and waking every
        # one (an Event) to find that one got it made each hand-over cost O(waiters) wake-ups, new
        # `wait_for` tasks and timers: 36% of the simulator's CPU in a bench/e2e.py run.
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._ssl: ssl.SSLContext | None = None
        self.closed = False

    async def connect(self, request: Prepared) -> _Conn:
        """A live connection to the request's origin (an idle one, or a new one). NotSent on any
        failure: nothing of the request has been written."""
        deadline = time.monotonic() + self.connect_timeout
        conn = self._idle_conn(request.key)
        if conn is not None:
            return conn
        queued = False
        while self._open >= self.limit:
            if self._evict_idle():  # an idle connection to another origin gives up its place
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise NotSent(f"no free connection to {request.shown} within {self.connect_timeout:g}s")
            waiter = asyncio.get_running_loop().create_future()
            # A caller woken before and still without a connection keeps its place at the front.
            (self._waiters.appendleft if queued else self._waiters.append)(waiter)
            queued = True
            try:
                await asyncio.wait_for(waiter, remaining)
            except TimeoutError:
                pass
            except BaseException:
                if waiter.done() and not waiter.cancelled():
                    self._wake_one()  # woken, then cancelled: the wake-up goes to the next caller
                raise
            finally:
                if not waiter.done():
                    waiter.cancel()  # (skipped by _wake_one)
            conn = self._idle_conn(request.key)
            if conn is not None:
                return conn
        self._open += 1
        scheme, host, port = request.key
        try:
            context = self._ssl_context() if scheme == "https" else None
            loop = asyncio.get_running_loop()
            _, made = await asyncio.wait_for(
                loop.create_connection(_Conn, host, port, ssl=context, server_hostname=host if context else None),
                max(0.001, deadline - time.monotonic()))
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            self._open -= 1
            self._wake_one()
            what = "timed out" if isinstance(exc, TimeoutError) else type(exc).__name__
            raise Refused(f"cannot connect to {request.shown}: {what}") from None
        except BaseException:
            self._open -= 1
            self._wake_one()
            raise
        return made

    def _idle_conn(self, key: tuple[str, str, int]) -> _Conn | None:
        """An idle connection to `key` that is still good to use (stale ones are closed)."""
        idle = self._idle.get(key)
        while idle:
            conn = idle.pop()
            if conn.usable() and time.monotonic() - conn.idle_since < IDLE_S:
                return conn
            self._drop(conn)
        return None

    def _evict_idle(self) -> bool:
        """At the limit, close the oldest idle connection (to any origin) to make room for a new
        one: a pool for several origins must not wait on connections nobody is using."""
        for conns in self._idle.values():
            if conns:
                self._drop(conns.pop(0), wake=False)  # its place is the caller's: nobody else to wake
                return True
        return False

    def _wake_one(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def exchange(self, conn: _Conn, request: Prepared) -> HttpAnswer:
        """Write the request and read the answer. From the write on, a failure is OutcomeUnknown:
        the warehouse may have received and processed the request."""
        if not conn.usable():  # closed between connect and now (e.g. while the job was being marked)
            self._drop(conn)
            raise NotSent(f"the connection to {request.shown} closed before the request was written")
        t0 = time.perf_counter_ns()
        try:
            future = conn.send(request.data)
        except NotSent:
            self._drop(conn)
            raise
        try:
            status, body, headers, reusable = await asyncio.wait_for(future, self.timeout)
        except TimeoutError:
            conn.close()
            self._drop(conn)
            raise NoAnswer(f"no answer within {self.timeout:g}s from {request.shown}") from None
        except OutcomeUnknown as exc:
            self._drop(conn)
            raise type(exc)(f"{exc} ({request.shown})") from None
        except BaseException:
            conn.close()
            self._drop(conn)
            raise
        elapsed = (time.perf_counter_ns() - t0) // 1000
        conn.done_with()
        if reusable and not conn.closed and not self.closed:
            self._idle.setdefault(request.key, []).append(conn)
            self._wake_one()
        else:
            conn.close()
            self._drop(conn)
        return HttpAnswer(status, body, elapsed, headers)

    def release(self, conn: _Conn, request: Prepared) -> None:
        """Give back a connection that was never used (the attempt stopped before writing)."""
        if not conn.usable() or self.closed:
            self._drop(conn)
        else:
            conn.done_with()
            self._idle.setdefault(request.key, []).append(conn)
            self._wake_one()

    async def request(self, request: Prepared) -> HttpAnswer:
        return await self.exchange(await self.connect(request), request)

    def _drop(self, conn: _Conn, *, wake: bool = True) -> None:
        conn.close()
        self._open = max(0, self._open - 1)
        if wake:
            self._wake_one()

    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = ssl.create_default_context()
        return self._ssl

    async def close(self) -> None:
        self.closed = True
        for conns in self._idle.values():
            for conn in conns:
                conn.close()
        self._idle.clear()
