"""A node rides out a lost PostgreSQL connection: every session of the node is terminated
(`pg_terminate_backend`), then the database refuses connections for a while. Meanwhile /healthz
says not-ready (503) and ingest and the order page answer 503 with Retry-After, never 500; once the
database takes connections again the node is ready within seconds, answers reads again at once,
takes orders and delivers them, and nothing accepted before is lost."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest
from e2e import fresh_postgres_database
from test_service import example


@pytest.fixture
def store_url() -> Iterator[str]:  # this test is about PostgreSQL only
    with fresh_postgres_database() as url:
        yield url


def _admin(url: str, sql: str) -> None:
    database = urlsplit(url).path.lstrip("/")
    server = url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(sql.replace("{db}", database))


async def _until(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout}s")
        await asyncio.sleep(0.1)


def test_a_node_comes_back_after_its_sessions_are_killed_and_the_database_refuses_it(
        env: Any, store_url: str) -> None:
    async def main() -> None:
        async with env() as run:
            first = example()
            status, _ = await run.post("/orders", first)
            assert status == 202
            await run.until(first["order_no"], lambda d: d["delivery"] == "delivered")

            # 1. every session of this node dies at once (the pool's, the writer's, the listener's)
            _admin(store_url, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{db}' "
                              "AND pid <> pg_backend_pid()")
            # the order page: asked again on a new session, or "unavailable, try again" (503, when
            # every try met a session the server was still ending), never a 500; and soon answered
            async def page_again() -> bool:
                status, body = await run.get(f"/orders/{first['order_no']}")
                assert status in (200, 503), (status, body)
                return status == 200 and body["order_no"] == first["order_no"]
            await _until(page_again, 15, "the order page after pg_terminate_backend")
            second = dict(example(), order_no="RECONNECT-2")

            async def accepted_again() -> bool:
                status, body = await run.post("/orders", second)
                assert status in (202, 200, 503), (status, body)  # never a 500
                return status in (200, 202)
            await _until(accepted_again, 15, "ingest after pg_terminate_backend")
            await run.until("RECONNECT-2", lambda d: d["delivery"] == "delivered", timeout=30)

            # 2. the database refuses the node for a while: not ready, and ingest says 503
            _admin(store_url, "ALTER DATABASE {db} ALLOW_CONNECTIONS false")
            _admin(store_url, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{db}'")
            try:
                async def not_ready() -> bool:
                    async with run.session.get(run.url + "/healthz") as resp:
                        return resp.status == 503 and (await resp.json())["ready"] is False
                await _until(not_ready, 15, "/healthz saying not-ready")
                async with run.session.get(run.url + "/livez") as resp:
                    assert resp.status == 200
                third = dict(example(), order_no="RECONNECT-3")
                status, body = await run.post("/orders", third)
                assert status == 503 and body["status"] == "unavailable", (status, body)
                status, body = await run.get(f"/orders/{first['order_no']}")  # not a 500 either
                assert status == 503 and body["status"] == "unavailable", (status, body)
            finally:
                _admin(store_url, "ALTER DATABASE {db} ALLOW_CONNECTIONS true")

            # 3. back: ready within seconds, takes the refused order, and delivers it
            async def ready() -> bool:
                async with run.session.get(run.url + "/healthz") as resp:
                    return resp.status == 200
            started = time.monotonic()
            await _until(ready, 15, "/healthz ready again")
            back_after = time.monotonic() - started
            # ready means reads work too: the readers' pool, which was backing off its reconnection
            # tries while the database refused it (1, 2, 4, … s), is made anew (it answered 503 here
            # for seconds after /healthz said ready)
            status, body = await run.get(f"/orders/{first['order_no']}")
            assert status == 200, (status, body)
            status, _ = await run.post("/orders", third)
            assert status == 202
            for order_no in (first["order_no"], "RECONNECT-2", "RECONNECT-3"):
                await run.until(order_no, lambda d: d["delivery"] == "delivered", timeout=30)
            print(f"\n[reconnect] ready again {back_after:.1f}s after the database took connections")

    asyncio.run(main())
