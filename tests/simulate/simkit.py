"""Helpers for the simulator tests: requests built by our real specs and sent to the simulator,
answers read by our real response mappings, and a tiny callback receiver."""

from __future__ import annotations

import copy
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import aiohttp
import yaml
from aiohttp import web

import dockyard
from dockyard.runtime.mapping import CompiledMapping
from dockyard.runtime.request import build_request
from dockyard.runtime.secrets import MappingSecrets, Secrets
from dockyard.runtime.wire import WireSettings, split_config
from dockyard.simulate import Faults, SimWarehouse

ROOT = Path(__file__).resolve().parents[2]
MAPPINGS = ROOT / "mappings"

T = TypeVar("T")


def run(coro_fn: Callable[[], Awaitable[T]]) -> T:
    import asyncio

    async def main() -> T:
        return await coro_fn()

    return asyncio.run(main())


@cache
def mapping(rel: str) -> CompiledMapping:
    return dockyard.compile_file(MAPPINGS / rel)


def config(rel: str) -> dict[str, Any]:
    data = yaml.safe_load((MAPPINGS / rel).read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def order(name: str = "tmall-basic", order_no: str | None = None) -> dict[str, Any]:
    data = json.loads((ROOT / "examples" / "orders" / f"{name}.json").read_text(encoding="utf-8"))
    data = copy.deepcopy(data)
    if order_no is not None:
        data["order_no"] = order_no
    return data


@dataclass(frozen=True)
class Kit:
    """One simulated warehouse and the specs our service would use for it."""

    name: str
    kind: str
    secret_name: str
    secret: str
    config_file: str
    create: str
    cancel: str
    response: str
    extra_secrets: dict[str, str] = field(default_factory=dict)
    context_overrides: dict[str, Any] = field(default_factory=dict)

    @property
    def context(self) -> dict[str, Any]:
        values, _wire = split_config(config(self.config_file), self.config_file)
        return {**values, **self.context_overrides}

    @property
    def wire(self) -> WireSettings:
        """The config file's wire settings (acme-3pl: the receiver's mobile SM4-encrypted)."""
        return split_config(config(self.config_file), self.config_file)[1]

    def warehouse(self, callback_base: str | None = None, faults: Faults | None = None,
                  secret: str | None = None) -> SimWarehouse:
        return SimWarehouse(name=self.name, kind=self.kind, secret=secret or self.secret, callback_base=callback_base,
                            faults=faults or Faults(), context=self.context)

    def secrets(self, secret: str | None = None) -> Secrets:
        return Secrets([MappingSecrets({self.secret_name: secret or self.secret, **self.extra_secrets})])


KITS = {
    "qimen-std": Kit("qimen-std", "qimen", "QIMEN_APP_SECRET", "sim-qimen-secret", "qimen/warehouses/standard-wms.yaml",
                     "qimen/deliveryorder.create.yaml", "qimen/order.cancel.yaml", "qimen/response.yaml"),
    "qimen-acme": Kit("qimen-acme", "qimen", "QIMEN_APP_SECRET", "sim-acme-secret", "qimen/warehouses/acme-3pl.yaml",
                      "qimen/deliveryorder.create.yaml", "qimen/order.cancel.yaml", "qimen/response.yaml",
                      extra_secrets={"QIMEN_SM4_KEY": "0123456789abcdef"}),
    "sf": Kit("sf", "sf", "SF_CHECK_WORD", "sim-sf-checkword~*", "sf/accounts/example.yaml",
              "sf/create-order.yaml", "sf/cancel-order.yaml", "sf/response.yaml"),
    "jd": Kit("jd", "jd", "JD_LOP_APP_SECRET", "sim-jd-secret", "jd/accounts/example.yaml",
              "jd/create-order.yaml", "jd/cancel-order.yaml", "jd/response.yaml"),
    "cainiao": Kit("cainiao", "cainiao", "CAINIAO_SECRET_KEY", "sim-cainiao-key", "cainiao/accounts/example.yaml",
                   "cainiao/consign-order-notify.yaml", "cainiao/order-cancel-notify.yaml", "cainiao/response.yaml"),
}


@dataclass(frozen=True)
class Wire:
    method: str
    url: str
    headers: dict[str, str]
    body: bytes


def wire(kit: Kit, spec: str, base: str, the_order: dict[str, Any], *, secret: str | None = None,
         request_id: str | None = None) -> Wire:
    """The request our spec builds, with https://{host} replaced by the simulator's /{name}."""
    prepared = build_request(mapping(spec), the_order, context=kit.context, secrets=kit.secrets(secret),
                             request_id=request_id, validate=True, wire=kit.wire)
    parts = urlsplit(prepared.request.url)
    url = f"{base}/{kit.name}{parts.path}" + (f"?{parts.query}" if parts.query else "")
    return Wire(prepared.request.method, url, dict(prepared.request.headers), prepared.request.body)


async def send(session: aiohttp.ClientSession, w: Wire, timeout: float = 10.0) -> tuple[int, bytes]:
    async with session.request(w.method, w.url, data=w.body, headers=w.headers,
                               timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
        return resp.status, await resp.read()


def outcome(kit: Kit, body: bytes, spec: str | None = None) -> dict[str, Any]:
    m = mapping(spec or kit.response)
    result: dict[str, Any] = m.transform(m.parse_input(body), kit.context)
    return result


@dataclass
class Received:
    warehouse: str
    flow: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes


ACKS = {
    "qimen": (b"<response><flag>success</flag><code>0</code><message>success</message></response>", "text/xml"),
    "sf": ('{"return_code":"0000","return_msg":"成功"}'.encode(), "application/json"),
    "cainiao": (b'{"success":true,"errorCode":"","errorMsg":""}', "application/json"),
}
NACKS = {
    "qimen": (b"<response><flag>failure</flag><code>500</code><message>busy</message></response>", "text/xml"),
    "sf": (b'{"return_code":"1000","return_msg":"store failed"}', "application/json"),
    "cainiao": (b'{"success":false,"errorCode":"E1","errorMsg":"busy"}', "application/json"),
}


class CallbackReceiver:
    """POST /callbacks/{warehouse}/{flow}: records every push and acknowledges it the way our
    ack mappings do, except the first `refuse_first` pushes of each event (answered with the
    warehouse's failure form, to exercise retries)."""

    def __init__(self, kinds: dict[str, str], refuse_first: int = 0) -> None:
        self.kinds = kinds
        self.refuse_first = refuse_first
        self.received: list[Received] = []
        self._seen: dict[bytes, int] = {}
        self._runner: web.AppRunner | None = None
        self.base = ""

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/callbacks/{warehouse}/{flow}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.base = f"http://127.0.0.1:{self._runner.addresses[0][1]}/callbacks"
        return self.base

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        wh, flow = request.match_info["warehouse"], request.match_info["flow"]
        body = await request.read()
        self.received.append(Received(wh, flow, dict(request.query), dict(request.headers), body))
        n = self._seen[body] = self._seen.get(body, 0) + 1
        kind = self.kinds[wh]
        ack, ctype = NACKS[kind] if n <= self.refuse_first else ACKS[kind]
        return web.Response(body=ack, headers={"Content-Type": ctype})
