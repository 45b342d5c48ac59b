"""The security suite's harness: the real service (in this event loop) in front of simulated
warehouses, with a config the test adjusts (guards, tokens, timeouts), and the checks every test
of the suite makes: what the store holds, what the warehouses and the upstream webhook received,
and that the service still answers.

(tests/service's `running` fixture lives in a conftest, which cannot be imported by name; this is
its counterpart, with the overrides the security tests need.)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from dockyard.demo import DemoPlan, free_port
from dockyard.service.app import Service
from dockyard.service.config import load_config
from dockyard.service.context import ServiceContext
from dockyard.simulate import Faults, Feedback, Simulator, SimWarehouse

ROOT = Path(__file__).resolve().parents[2]
MAPPINGS = ROOT / "mappings"
ORDERS = ROOT / "examples" / "orders"
sys.path.insert(0, str(ROOT / "tests" / "service"))  # e2e.py: the PostgreSQL rule and fresh databases

# Text that must never be in an answer: Python speaking, not the service.
INTERNALS = ("Traceback", "File \"", "object has no attribute", "Error(", "Exception", "line 1, in", "NoneType",
             "dockyard/", ".py\"", "KeyError", "TypeError", "ValueError", "RecursionError", "UnicodeEncodeError")


def example(name: str = "tmall-basic") -> dict[str, Any]:
    data: dict[str, Any] = json.loads((ORDERS / f"{name}.json").read_text(encoding="utf-8"))
    return data


def no_internals(text: str | bytes) -> None:
    shown = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
    for word in INTERNALS:
        assert word not in shown, f"{word!r} in an answer: {shown[:500]}"


@dataclass
class Env:
    service: Service
    sim: Simulator
    url: str
    plan: DemoPlan
    session: aiohttp.ClientSession

    async def request(self, method: str, path: str, *, body: bytes | str | None = None,
                      headers: Mapping[str, str] | None = None) -> tuple[int, bytes, Mapping[str, str]]:
        data = body.encode("utf-8", "surrogatepass") if isinstance(body, str) else body
        async with self.session.request(method, self.url + path, data=data, headers=dict(headers or {}),
                                        allow_redirects=False) as resp:
            return resp.status, await resp.read(), resp.headers

    async def post_json(self, path: str, text: str, headers: Mapping[str, str] | None = None) -> tuple[int, Any]:
        status, body, _ = await self.request("POST", path, body=text,
                                             headers={"Content-Type": "application/json", **(headers or {})})
        no_internals(body)
        return status, json.loads(body)

    async def rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        found: list[tuple[Any, ...]] = await self.service.db.read(lambda c: c.execute(sql, params))
        return found

    async def alive(self) -> None:
        """The service still answers, and still takes a good order."""
        status, body, _ = await self.request("GET", "/healthz")
        assert status == 200 and json.loads(body)["status"] == "ok"

    async def delivered(self, order_no: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            rows = await self.rows("SELECT delivery FROM dy_orders WHERE order_no = ?", (order_no,))
            if rows and rows[0][0] == "delivered":
                return
            assert time.monotonic() < deadline, f"{order_no} not delivered in {timeout}s: {rows}"
            await asyncio.sleep(0.05)

    async def placed(self, name: str = "tmall-basic", headers: Mapping[str, str] | None = None) -> str:
        """An example order sent and delivered (a callback may only touch an order of its own
        warehouse: the demo routes tmall to qimen-std, douyin to sf, miniapp to cainiao)."""
        order = example(name)
        status, _ = await self.post_json("/orders", json.dumps(order, ensure_ascii=False), headers)
        assert status == 202, status
        await self.delivered(order["order_no"])
        return str(order["order_no"])

    async def events(self) -> list[tuple[Any, ...]]:
        return await self.rows("SELECT warehouse, event_id, order_no, status FROM dy_events ORDER BY received_at")

    async def upstream_after(self, settle: float = 0.5) -> list[dict[str, Any]]:
        """The status events the upstream webhook received, once the forwarder had time to send."""
        await asyncio.sleep(settle)
        return list(self.sim.upstream_events())


@contextlib.asynccontextmanager
async def service(tmp_path: Path, store_url: str, bundle_dir: Path, *, warehouses: tuple[str, ...] = ("qimen-std",),
                  overrides: Mapping[str, Any] | None = None, callbacks: Mapping[str, Any] | None = None,
                  dashboard_token: str | None = None, secrets: Mapping[str, str] | None = None,
                  faults: Mapping[str, Faults] | None = None) -> AsyncIterator[Env]:
    """The service on `store_url` with simulated `warehouses` (no feedback pushes: the tests send
    the callbacks). `callbacks` replaces callback configs: {"sf/route-push": {...}}; `secrets`
    adds secret values (tokens)."""
    work = tmp_path / "work"
    plan = DemoPlan(work, MAPPINGS, store=store_url, warehouses=warehouses, dashboard_token=dashboard_token,
                    retry={"max_attempts": 2, "base_delay": 0.05, "max_delay": 0.1, "jitter": 0.0})
    plan.secret_values.update(secrets or {})
    port = free_port()
    spec = plan.sim_spec(f"http://127.0.0.1:{port}")
    sim = Simulator([SimWarehouse(w["name"], w["kind"], w["secret"], w["callback_base"],
                                  (faults or {}).get(w["name"], Faults()), w["context"])
                     for w in spec["warehouses"]], feedback=Feedback(enabled=False),
                    upstream_secret=spec["upstream_secret"])
    plan.sim_base = await sim.start()
    try:
        work.mkdir(parents=True, exist_ok=True)
        (work / "bundle").symlink_to(bundle_dir)
        path = plan.write(port)
        if callbacks:
            import yaml

            doc = yaml.safe_load(path.read_text(encoding="utf-8"))
            for where, cfg in callbacks.items():
                warehouse, flow = where.split("/")
                doc["warehouses"][warehouse]["callbacks"][flow] = cfg
            path.write_text(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False), encoding="utf-8")
        config = load_config(path, overrides)
        svc = Service(ServiceContext.build(config))
        url = await svc.start(port=port)
        try:
            async with aiohttp.ClientSession() as session:
                yield Env(svc, sim, url, plan, session)
        finally:
            await svc.stop()
    finally:
        await sim.stop()
