"""The HTTP client's connection pool (dockyard/service/http_client.py) when callers outnumber its
limit: a freed connection goes to one waiting caller, oldest first, no wake-up is lost when a
caller gives up, and idle connections to another origin give up their place.

Real servers on loopback, real sockets; every wait is bounded.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from dockyard.service.http_client import HttpPool, NotSent, Prepared, prepare


class Origin:
    """A keep-alive HTTP/1.1 server (plain asyncio streams, so that it can count its open
    connections and the most at once) that answers each request when the test lets it (`gate`),
    echoing the request's path."""

    def __init__(self) -> None:
        self.open = 0
        self.most = 0
        self.closed = 0
        self.order: list[str] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.port = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.open += 1
        self.most = max(self.most, self.open)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                path = head.split(b" ", 2)[1]
                self.order.append(path.decode())
                await self.gate.wait()
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(path), path))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.open -= 1
            self.closed += 1
            writer.close()


@asynccontextmanager
async def serving() -> AsyncIterator[Origin]:
    origin = Origin()
    server = await asyncio.start_server(origin.handle, "127.0.0.1", 0)
    origin.port = server.sockets[0].getsockname()[1]
    try:
        yield origin
    finally:
        server.close()


def _get(origin: Origin, path: str) -> Prepared:
    return prepare("GET", f"http://127.0.0.1:{origin.port}/{path}", [], b"")


def test_many_callers_share_the_limit_and_all_get_answers() -> None:
    async def main() -> None:
        async with serving() as origin:
            pool = HttpPool(limit=3, connect_timeout=20, timeout=20)
            origin.gate.clear()
            calls = [asyncio.create_task(pool.request(_get(origin, f"r{i}"))) for i in range(120)]
            await asyncio.sleep(0.2)
            assert len(origin.order) == 3  # three on the wire, 117 waiting for a connection
            origin.gate.set()
            answers = await asyncio.wait_for(asyncio.gather(*calls), 30)
            assert sorted(a.body.decode() for a in answers) == sorted(f"/r{i}" for i in range(120))
            assert origin.most == 3  # the limit, used and never passed
            await pool.close()

    asyncio.run(main())


class CountingDeque(collections.deque[asyncio.Future[None]]):
    """The pool's queue of waiting callers, counting how often a caller joins it."""

    joined = 0

    def append(self, item: asyncio.Future[None]) -> None:
        self.joined += 1
        super().append(item)

    def appendleft(self, item: asyncio.Future[None]) -> None:
        self.joined += 1
        super().appendleft(item)


def test_waiting_callers_are_served_oldest_first_and_each_waits_once() -> None:
    """A freed connection wakes one caller, not all of them: with 30 callers on one connection,
    29 wait, each exactly once (woken callers that found nothing would queue again)."""

    async def main() -> None:
        async with serving() as origin:
            pool = HttpPool(limit=1, connect_timeout=20, timeout=20)
            queue = pool._waiters = CountingDeque()
            origin.gate.clear()
            calls = []
            for i in range(30):
                calls.append(asyncio.create_task(pool.request(_get(origin, f"r{i:02}"))))
                await asyncio.sleep(0)  # each caller reaches the queue before the next starts
            origin.gate.set()
            await asyncio.wait_for(asyncio.gather(*calls), 30)
            assert origin.order == [f"/r{i:02}" for i in range(30)]
            assert queue.joined == 29
            await pool.close()

    asyncio.run(main())


def test_a_caller_that_gives_up_after_being_woken_passes_the_connection_on() -> None:
    """The class: whatever becomes of a woken caller (cancelled, timed out), the next caller
    still gets the connection; nobody waits for a connection that is idle."""

    async def main() -> None:
        async with serving() as origin:
            pool = HttpPool(limit=1, connect_timeout=20, timeout=20)
            held = await pool.connect(_get(origin, "held"))
            woken = asyncio.create_task(pool.connect(_get(origin, "woken")))
            nxt = asyncio.create_task(pool.request(_get(origin, "next")))
            await asyncio.sleep(0.05)
            pool.release(held, _get(origin, "held"))  # wakes `woken` ...
            woken.cancel()  # ... which is cancelled before it runs
            try:
                conn = await woken
            except asyncio.CancelledError:
                conn = None
            if conn is not None:  # (Python 3.11's wait_for may still hand it over): it gives it back
                pool.release(conn, _get(origin, "woken"))
            answer = await asyncio.wait_for(nxt, 10)
            assert answer.body == b"/next"
            await pool.close()

    asyncio.run(main())


def test_a_caller_whose_wait_timed_out_is_refused_as_not_sent_and_others_go_on() -> None:
    async def main() -> None:
        async with serving() as origin:
            pool = HttpPool(limit=1, connect_timeout=0.2, timeout=20)
            held = await pool.connect(_get(origin, "held"))
            with pytest.raises(NotSent, match="no free connection"):
                await pool.connect(_get(origin, "late"))
            assert not pool._waiters or all(w.done() for w in pool._waiters)
            later = asyncio.create_task(pool.request(_get(origin, "later")))
            await asyncio.sleep(0.05)
            pool.release(held, _get(origin, "held"))
            assert (await asyncio.wait_for(later, 10)).body == b"/later"
            await pool.close()

    asyncio.run(main())


def test_idle_connections_to_another_origin_make_room() -> None:
    async def main() -> None:
        async with serving() as x, serving() as y:
            pool = HttpPool(limit=1, connect_timeout=5, timeout=20)
            assert (await pool.request(_get(x, "a"))).body == b"/a"
            # X's connection is idle and holds the only place: Y gets it at once, not after 5 s
            assert (await asyncio.wait_for(pool.request(_get(y, "b")), 3)).body == b"/b"
            for _ in range(100):
                if x.closed:
                    break
                await asyncio.sleep(0.01)
            assert x.closed == 1 and x.open == 0
            await pool.close()

    asyncio.run(main())
