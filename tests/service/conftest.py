"""Fixtures for the service tests: a state store URL for SQLite and for PostgreSQL, isolated per
test, and a running service with simulated warehouses in the same event loop.

PostgreSQL tests run against the real server (DOCKYARD_TEST_POSTGRES_URL, by default the local
one), each in a database of its own that is dropped afterwards. As everywhere in this suite, an
unreachable server skips the test only when CI is unset; with CI set it is a failure.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from e2e import fresh_postgres_database

from dockyard.demo import DemoPlan, build_demo_bundle, free_port
from dockyard.service.app import Service
from dockyard.service.config import load_config
from dockyard.service.context import ServiceContext
from dockyard.service.db import Database
from dockyard.simulate import Faults, Feedback, Simulator, SimWarehouse

ROOT = Path(__file__).resolve().parents[2]
MAPPINGS = ROOT / "mappings"


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'state.db'}"
        return
    with fresh_postgres_database() as url:
        yield url


@pytest.fixture
def db(store_url: str) -> Iterator[Database]:
    """A store on each backend, open for the test (two `Database` objects on one store stand for
    two nodes: make the second from `store_url`)."""
    database = Database(store_url, readers=1)
    try:
        yield database
    finally:
        database.close()


@pytest.fixture(scope="session")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The warehouse library compiled once for the whole session."""
    out = tmp_path_factory.mktemp("bundle") / "bundle"
    build_demo_bundle(MAPPINGS, out)
    return out


@dataclass
class Running:
    service: Service
    sim: Simulator
    url: str
    plan: DemoPlan
    session: aiohttp.ClientSession

    @property
    def auth(self) -> dict[str, str]:
        """An operator's bearer token when the service has dashboard tokens (GET /orders/{no},
        /stats and cancel need one then); none otherwise."""
        tokens = self.service.config.tokens
        token = next((t for t, role in tokens.items() if role == "operator"), next(iter(tokens), None))
        return {"Authorization": f"Bearer {token}"} if token else {}

    async def post(self, path: str, data: Any = None, *, raw: bytes | None = None,
                   headers: Mapping[str, str] | None = None) -> tuple[int, Any]:
        body = raw if raw is not None else (None if data is None else _dumps(data))
        async with self.session.post(self.url + path, data=body, headers={**self.auth, **(headers or {})}) as resp:
            text = await resp.read()
            try:
                return resp.status, _loads(text)
            except ValueError:
                return resp.status, text

    async def get(self, path: str) -> tuple[int, Any]:
        async with self.session.get(self.url + path, headers=self.auth) as resp:
            return resp.status, _loads(await resp.read())

    async def order(self, order_no: str) -> dict[str, Any]:
        status, data = await self.get(f"/orders/{order_no}")
        assert status == 200, data
        result: dict[str, Any] = data
        return result

    async def until(self, order_no: str, predicate: Any, timeout: float = 20.0) -> dict[str, Any]:
        """Wait until the order's status document satisfies `predicate`."""
        import asyncio
        import time

        deadline = time.monotonic() + timeout
        while True:
            data = await self.order(order_no)
            if predicate(data):
                return data
            if time.monotonic() > deadline:
                raise AssertionError(f"order {order_no} did not get there in {timeout}s: {data}")
            await asyncio.sleep(0.05)

    async def journal(self, order_no: str) -> list[dict[str, Any]]:
        from dockyard.service import queries

        return await self.service.db.read(lambda c: queries.timeline(c, order_no))


def _dumps(data: Any) -> bytes:
    import json

    return json.dumps(data, ensure_ascii=False, default=str).encode("utf-8")


def _loads(text: bytes) -> Any:
    import json

    return json.loads(text)


@contextlib.asynccontextmanager
async def running(tmp_path: Path, store_url: str, bundle_dir: Path, *, warehouses: tuple[str, ...] = ("qimen-std",),
                  faults: Mapping[str, Faults] | None = None, feedback: Feedback | None = None,
                  overrides: Mapping[str, Any] | None = None, **plan: Any) -> AsyncIterator[Running]:
    """The service (in this event loop) in front of simulated warehouses (also in this loop)."""
    work = tmp_path / "work"
    demo = DemoPlan(work, MAPPINGS, store=store_url, warehouses=warehouses, **plan)
    port = free_port()
    callback = f"http://127.0.0.1:{port}"
    spec = demo.sim_spec(callback)
    sim = Simulator([SimWarehouse(w["name"], w["kind"], w["secret"], w["callback_base"],
                                  (faults or {}).get(w["name"], Faults()), w["context"]) for w in spec["warehouses"]],
                    feedback=feedback or Feedback(enabled=False), upstream_secret=spec["upstream_secret"])
    demo.sim_base = await sim.start()
    try:
        work.mkdir(parents=True, exist_ok=True)
        (work / "bundle").symlink_to(bundle_dir)
        config = load_config(demo.write(port), overrides)
        service = Service(ServiceContext.build(config))
        url = await service.start(port=port)
        try:
            async with aiohttp.ClientSession() as session:
                yield Running(service, sim, url, demo, session)
        finally:
            await service.stop()
    finally:
        await sim.stop()


@pytest.fixture
def env(tmp_path: Path, store_url: str, bundle_dir: Path) -> Any:
    """`async with env(warehouses=…, faults=…) as run:` — a running service on this test's store."""
    def start(**kwargs: Any) -> Any:
        return running(tmp_path, store_url, bundle_dir, **kwargs)
    return start
