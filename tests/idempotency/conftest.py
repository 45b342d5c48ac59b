"""Fixtures for the idempotency tests: a store URL for every kind of store, isolated per test, and
the one rule for tests that need a server.

The rule (`require_server`): a test of PostgreSQL or Redis runs against the real server. When the
server cannot be reached it is skipped, with the reason, only if the environment variable CI is
unset; with CI set (to anything) the missing server is a failure, so a CI run can never pass by
skipping them. The servers are taken from DOCKYARD_TEST_POSTGRES_URL and DOCKYARD_TEST_REDIS_URL,
by default the local ones.

Isolation: each test gets its own PostgreSQL table (`dockyard_idem_<run>_<n>`) and its own Redis
key prefix (`dockyard:idem:test:<run>:<n>:`), removed afterwards, so that tests running at the same
time on the same servers, and counts such as `purge_expired()`, never see each other's keys.
"""

from __future__ import annotations

import itertools
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
import redis
from psycopg import sql

from dockyard.runtime.idempotency import open_store, redact_url
from dockyard.runtime.idempotency.base import IdempotencyStore

POSTGRES_URL = os.environ.get("DOCKYARD_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("DOCKYARD_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")

SHARED_KINDS = ("sqlite", "postgres", "redis")  # one store seen by several processes
ALL_KINDS = ("memory", *SHARED_KINDS)

RUN = uuid.uuid4().hex[:10]
_serial = itertools.count()


def require_server(name: str, url: str, probe: Callable[[], object]) -> None:
    """Return if `probe()` reaches the server; otherwise skip the test (CI unset) or fail it (CI set)."""
    try:
        probe()
    except Exception as exc:
        detail = " ".join(str(exc).split())  # libpq answers on several lines
        reason = f"{name} is not reachable at {redact_url(url)} ({type(exc).__name__}: {detail})"
        if "CI" in os.environ:
            pytest.fail(f"{reason}; CI is set, so a missing server is a failure", pytrace=False)
        pytest.skip(f"{reason}; with CI set this would fail")


@pytest.fixture(scope="session")
def server_gate() -> Callable[[str, str, Callable[[], object]], None]:
    """`require_server`, for the tests that check the rule itself."""
    return require_server


def _probe_postgres() -> None:
    with psycopg.connect(POSTGRES_URL, connect_timeout=3) as conn:
        conn.execute("SELECT 1")


def _probe_redis() -> None:
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3, socket_timeout=3)
    try:
        client.ping()
    finally:
        client.close()


@pytest.fixture(scope="session")
def postgres_server() -> str:
    require_server("PostgreSQL", POSTGRES_URL, _probe_postgres)
    return POSTGRES_URL


@pytest.fixture(scope="session")
def redis_server() -> str:
    require_server("Redis", REDIS_URL, _probe_redis)
    return REDIS_URL


def with_option(url: str, name: str, value: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}{name}={value}"


@pytest.fixture
def postgres_url(postgres_server: str) -> Iterator[str]:
    """A postgres store URL with a table of this test's own, dropped afterwards."""
    table = f"dockyard_idem_{RUN}_{next(_serial)}"
    yield with_option(postgres_server, "table", table)
    with psycopg.connect(postgres_server, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(table)))


@pytest.fixture
def redis_url(redis_server: str) -> Iterator[str]:
    """A redis store URL with a key prefix of this test's own, whose keys are deleted afterwards."""
    prefix = f"dockyard:idem:test:{RUN}:{next(_serial)}:"
    yield with_option(redis_server, "prefix", prefix)
    client = redis.Redis.from_url(redis_server)
    try:
        names = list(client.scan_iter(match=prefix + "*", count=1000))
        if names:
            client.delete(*names)
    finally:
        client.close()


def url_for(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if kind == "memory":
        return "memory://"
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'idempotency.db'}"  # tmp_path is absolute: sqlite:////tmp/…
    if kind == "postgres":
        return str(request.getfixturevalue("postgres_url"))
    if kind == "redis":
        return str(request.getfixturevalue("redis_url"))
    raise AssertionError(kind)


@pytest.fixture(params=ALL_KINDS)
def store_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def store_url(store_kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return url_for(store_kind, request, tmp_path)


@pytest.fixture
def store(store_url: str) -> Iterator[IdempotencyStore]:
    with open_store(store_url) as opened:
        yield opened


@pytest.fixture(params=SHARED_KINDS)
def shared_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def shared_url(shared_kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of a store that several processes can share (every kind but memory)."""
    return url_for(shared_kind, request, tmp_path)
