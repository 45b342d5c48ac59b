"""`dockyard demo`: the whole path on the embedded default, and the harness the end-to-end tests
and the benchmark share.

The demo compiles the shipped mappings into a bundle, starts the simulated warehouses (in their
own process, so they do not share a core with the service), writes a service config that points
every warehouse at them, starts the service on SQLite, sends generated orders through the real
HTTP API, waits until every accepted order is accounted for, and prints the summary. Secrets are
generated for the run (marked TEST-ONLY-), written to a secrets folder for the service and handed
to the simulator; they are never printed.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets as pysecrets
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import yaml

__all__ = ["DemoPlan", "Harness", "account", "build_demo_bundle", "percentile", "sim_process_main"]

# The demo's warehouses: name -> (simulator kind, account config file, secret name, flows, callbacks).
WAREHOUSES: dict[str, dict[str, Any]] = {
    "qimen-std": {
        "kind": "qimen", "config_file": "qimen/warehouses/standard-wms.yaml", "secret": "QIMEN_APP_SECRET",
        "flows": {"create": {"request": "qimen.deliveryorder.create", "response": "qimen.response"},
                  "cancel": {"request": "qimen.order.cancel", "response": "qimen.response"},
                  "query": {"request": "qimen.deliveryorder.query", "response": "qimen.query-response"}},
        "callbacks": {
            "deliveryorder.confirm": {"mapping": "qimen.deliveryorder.confirm", "ack": "qimen.ack",
                                      "verify": {"scheme": "qimen-md5", "secret": "QIMEN_APP_SECRET",
                                                 "params": "query", "window": 300}},
            "orderprocess.report": {"mapping": "qimen.orderprocess.report", "ack": "qimen.ack",
                                    "verify": {"scheme": "qimen-md5", "secret": "QIMEN_APP_SECRET",
                                               "params": "query", "window": 300}}},
    },
    "sf": {
        "kind": "sf", "config_file": "sf/accounts/example.yaml", "secret": "SF_CHECK_WORD",
        "flows": {"create": {"request": "sf.create-order", "response": "sf.response"},
                  "cancel": {"request": "sf.cancel-order", "response": "sf.response"},
                  "query": {"request": "sf.search-order", "response": "sf.search-response"}},
        "callbacks": {
            # SF's route push carries no signature: its guard lets only the simulator's address in (in
            # production: SF's published push addresses; docs/security.md)
            "route-push": {"mapping": "sf.route-push", "ack": "sf.route-push.ack", "verify": "none",
                           "guard": {"networks": ["127.0.0.0/8", "::1/128"]}}},
    },
    "jd": {
        "kind": "jd", "config_file": "jd/accounts/example.yaml", "secret": "JD_LOP_APP_SECRET",
        "flows": {"create": {"request": "jd.create-order", "response": "jd.response"},
                  "cancel": {"request": "jd.cancel-order", "response": "jd.response"},
                  "query": {"request": "jd.query-order", "response": "jd.query-response"}},
        "callbacks": {},
    },
    "cainiao": {
        "kind": "cainiao", "config_file": "cainiao/accounts/example.yaml", "secret": "CAINIAO_SECRET_KEY",
        "flows": {"create": {"request": "cainiao.consign-order-notify", "response": "cainiao.response"},
                  "cancel": {"request": "cainiao.order-cancel-notify", "response": "cainiao.response"}},
        "callbacks": {
            "consign-order-confirm": {"mapping": "cainiao.consign-order-confirm", "ack": "cainiao.ack",
                                      "verify": {"scheme": "cainiao-link", "secret": "CAINIAO_SECRET_KEY",
                                                 "params": "form", "body": "form.logistics_interface"}},
            "order-status-upload": {"mapping": "cainiao.order-status-upload", "ack": "cainiao.ack",
                                    "verify": {"scheme": "cainiao-link", "secret": "CAINIAO_SECRET_KEY",
                                               "params": "form", "body": "form.logistics_interface"}}},
    },
}
# Which channel goes where: every warehouse gets a share of the generated orders.
ROUTES: list[dict[str, Any]] = [{"warehouse": "jd", "channel": ["jd"]}, {"warehouse": "sf", "channel": ["douyin"]},
          {"warehouse": "cainiao", "channel": ["miniapp"]}, {"warehouse": "qimen-std", "default": True}]
UPSTREAM_SECRET = "UPSTREAM_WEBHOOK_SECRET"
# Who may send orders: everything runs on this machine, so loopback (docs/security.md for a real one).
INGEST_GUARD: dict[str, Any] = {"networks": ["127.0.0.0/8", "::1/128"]}


def _guarded(callbacks: dict[str, Any], networks: tuple[str, ...]) -> dict[str, Any]:
    """The callbacks with each network guard set to `networks`."""
    out: dict[str, Any] = {}
    for flow, cb in callbacks.items():
        guard = cb.get("guard")
        out[flow] = {**cb, "guard": {**guard, "networks": list(networks)}} if guard and "networks" in guard else cb
    return out


def spec_files(mappings_dir: Path) -> list[Path]:
    return sorted(p for p in mappings_dir.glob("*/*.yaml") if not p.name.endswith(".test.yaml"))


def build_demo_bundle(mappings_dir: Path, out: Path) -> Path:
    """Compile every spec of the warehouse library into one bundle (the compiler runs here, in the
    CLI; the service only loads the result)."""
    from dockyard.compiler.bundle import build_bundle

    build_bundle([str(p) for p in spec_files(mappings_dir)], out)
    return out


def account(mappings_dir: Path, name: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((mappings_dir / WAREHOUSES[name]["config_file"]).read_text("utf-8"))
    return data


@dataclass
class DemoPlan:
    """Where everything lives for one run."""

    workdir: Path
    mappings_dir: Path
    store: str | None = None  # default: sqlite in workdir
    port: int = 0
    sim_base: str = ""
    warehouses: tuple[str, ...] = tuple(WAREHOUSES)
    retry: dict[str, Any] = field(default_factory=lambda: {"max_attempts": 8, "base_delay": 0.2, "max_delay": 5,
                                                             "jitter": 0.5})
    timeout: float = 5.0
    concurrency: int = 64
    workers: int = 1  # service processes
    dashboard_token: str | None = None  # an operator token for /ui and /metrics (none: dashboard off)
    # the networks the load generator and the simulator send from (the ingest and unsigned-callback
    # guards let only these in): loopback here; a multi-host test adds its own network
    networks: tuple[str, ...] = ("127.0.0.0/8", "::1/128")
    secret_values: dict[str, str] = field(default_factory=dict)
    # per warehouse: its `wire:` settings (signing options, fields to encrypt; docs/service-config.md)
    # and the secrets those need beyond the warehouse's own (name -> value)
    wire: dict[str, dict[str, Any]] = field(default_factory=dict)
    extra_secrets: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.secret_values:
            names = [WAREHOUSES[w]["secret"] for w in self.warehouses] + [UPSTREAM_SECRET]
            self.secret_values = {n: f"TEST-ONLY-demo-{pysecrets.token_hex(12)}" for n in names}
        self.secret_values.update(self.extra_secrets)

    @property
    def bundle(self) -> Path:
        return self.workdir / "bundle"

    @property
    def config_path(self) -> Path:
        return self.workdir / "dockyard.yaml"

    def write(self, service_port: int) -> Path:
        """The secrets folder and the service config, pointing every warehouse at the simulator."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        secrets_dir = self.workdir / "secrets"
        secrets_dir.mkdir(exist_ok=True)
        for name, value in self.secret_values.items():
            path = secrets_dir / name
            path.write_text(value, encoding="utf-8")
            path.chmod(0o600)
        warehouses: dict[str, Any] = {}
        for name in self.warehouses:
            w = WAREHOUSES[name]
            warehouses[name] = {
                "endpoint": f"{self.sim_base}/{name}",
                "config_file": str((self.mappings_dir / w["config_file"]).resolve()),
                "secrets": [w["secret"]], "concurrency": self.concurrency,
                "timeout": {"connect": min(2.0, self.timeout), "total": self.timeout}, "retry": self.retry,
                "circuit": {"failures": 50, "open_for": 2},
                "flows": w["flows"], "callbacks": _guarded(w["callbacks"], self.networks),
                **({"wire": self.wire[name]} if name in self.wire else {})}
            if name in self.wire:
                warehouses[name]["secrets"] += [s for s in self.extra_secrets if s not in warehouses[name]["secrets"]]
        config = {
            "dockyard": 1,
            "store": self.store or f"sqlite:///{(self.workdir / 'state.db').resolve()}",
            "listen": {"host": "127.0.0.1", "port": service_port},
            "workers": self.workers,
            "bundles": [str(self.bundle.resolve())],
            "secrets": {"dir": str(secrets_dir.resolve())},
            "upstream": {"url": f"{self.sim_base}/_upstream/events", "timeout": 5, "batch": 200,
                         "secret": UPSTREAM_SECRET, "retry": self.retry},
            "ingest": {**INGEST_GUARD, "networks": list(self.networks)},
            "warehouses": warehouses,
            **({"dashboard": {"tokens": {self.dashboard_token: "operator"}}} if self.dashboard_token else {}),
            "routing": [r for r in ROUTES if r["warehouse"] in self.warehouses and not r.get("default")]
            + [{"warehouse": "qimen-std" if "qimen-std" in self.warehouses else self.warehouses[0], "default": True}],
        }
        self.config_path.write_text(yaml.safe_dump(config, allow_unicode=True, sort_keys=False), encoding="utf-8")
        return self.config_path

    def sim_spec(self, callback_base: str, faults: Mapping[str, Mapping[str, float]] | None = None) -> dict[str, Any]:
        """What the simulator process needs (plain data, so it crosses a process boundary)."""
        return {
            "warehouses": [{"name": n, "kind": WAREHOUSES[n]["kind"],
                            "secret": self.secret_values[WAREHOUSES[n]["secret"]],
                            "callback_base": f"{callback_base}/callbacks/{n}" if WAREHOUSES[n]["callbacks"] else None,
                            "faults": dict((faults or {}).get(n, {})), "context": account(self.mappings_dir, n)}
                           for n in self.warehouses],
            "upstream_secret": self.secret_values[UPSTREAM_SECRET],
            "upstream_faults": dict((faults or {}).get("_upstream", {})),
        }


def sim_process_main() -> None:
    """`python -m dockyard.demo`: the simulator in a child process. Reads its spec as one JSON
    line on stdin, prints the base URL it bound, and runs until stdin is closed (the parent ended)."""
    import json
    import sys

    from dockyard.simulate import Faults, Feedback, Simulator, SimWarehouse

    plan = json.loads(sys.stdin.readline())
    spec, feedback, port = plan["spec"], plan["feedback"], plan.get("port", 0)

    async def main() -> None:
        sim = Simulator([SimWarehouse(w["name"], w["kind"], w["secret"], w["callback_base"], Faults(**w["faults"]),
                                      w["context"]) for w in spec["warehouses"]],
                        feedback=Feedback(**feedback), upstream_secret=spec["upstream_secret"],
                        upstream_faults=Faults(**spec["upstream_faults"]))
        base = await sim.start("127.0.0.1", port)
        sys.stdout.write(base + "\n")
        sys.stdout.flush()
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, sys.stdin.read)  # returns at EOF: the parent is gone
        await sim.stop()

    _fast_loop()
    asyncio.run(main())


def _fast_loop() -> None:
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


class SimProcess:
    """The simulator in a child process, so that it does not share a core with the service. The
    simulator needs the service's callback URL, and the service config needs the simulator's URL:
    the service port is chosen first and passed down."""

    def __init__(self, spec: dict[str, Any], feedback: dict[str, Any], port: int = 0,
                 command: list[str] | None = None) -> None:
        import json
        import subprocess
        import sys

        self.process = subprocess.Popen(command or [sys.executable, "-m", "dockyard.demo"], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True)
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps({"spec": spec, "feedback": feedback, "port": port}) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline().strip()
        if not line.startswith("http"):
            self.stop()
            raise RuntimeError("the simulated warehouses did not start")
        self.base: str = line

    def stop(self) -> None:
        import subprocess

        if self.process.stdin is not None:
            with contextlib.suppress(OSError):
                self.process.stdin.close()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def percentile(values: list[float], q: float) -> float:
    """`report.percentile`, as a number for printing: NaN when there are no values."""
    from dockyard.service.report import percentile as nearest_rank

    value = nearest_rank(values, q)
    return float("nan") if value is None else value


class Harness:
    """Sends orders to a running service and waits for them to settle."""

    def __init__(self, service_url: str, sim_base: str, token: str | None = None) -> None:
        self.service_url = service_url
        self.sim_base = sim_base
        # /stats needs a token once the service has any (the demo's dashboard token)
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    async def send(self, orders: Iterable[dict[str, Any]], *, batch: int = 200, parallel: int = 4,
                   progress: Callable[[int], None] | None = None) -> dict[str, Any]:
        """POST the orders in batches; returns counts by result and the order numbers accepted."""
        chunks: list[list[dict[str, Any]]] = []
        current: list[dict[str, Any]] = []
        for order in orders:
            current.append(order)
            if len(current) >= batch:
                chunks.append(current)
                current = []
        if current:
            chunks.append(current)
        counts: dict[str, int] = {}
        accepted: list[str] = []
        queue: asyncio.Queue[list[dict[str, Any]]] = asyncio.Queue()
        for c in chunks:
            queue.put_nowait(c)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
            async def worker() -> None:
                while not queue.empty():
                    chunk = queue.get_nowait()
                    body = orjson.dumps(chunk)
                    for attempt in range(20):
                        try:
                            async with session.post(f"{self.service_url}/orders/batch", data=body,
                                                    headers={"Content-Type": "application/json"}) as resp:
                                data = await resp.json(loads=orjson.loads)
                            break
                        except (aiohttp.ClientError, TimeoutError):
                            # the service is restarting (the crash test): the same batch again is
                            # safe, repeated orders are acknowledged as duplicates
                            await asyncio.sleep(min(2.0, 0.1 * (attempt + 1)))
                    else:
                        raise RuntimeError("the service did not take a batch after 20 tries")
                    for r in data["results"]:
                        counts[r["status"]] = counts.get(r["status"], 0) + 1
                        if r["status"] in ("accepted", "duplicate"):
                            accepted.append(r["order_no"])
                    if progress is not None:
                        progress(len(chunk))

            await asyncio.gather(*(worker() for _ in range(parallel)))
        return {"counts": counts, "accepted": accepted}

    async def stats(self) -> dict[str, Any]:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{self.service_url}/stats", headers=self.headers) as resp:
                service: dict[str, Any] = await resp.json()
            async with session.get(f"{self.sim_base}/_sim/stats") as resp:
                sim: dict[str, Any] = await resp.json()
        return {"service": service, "sim": sim}

    async def received(self, warehouse: str) -> dict[str, int]:
        """order_no -> create requests that reached the simulated warehouse's logic."""
        async with aiohttp.ClientSession() as session, session.get(f"{self.sim_base}/_sim/received/{warehouse}") as r:
            data: dict[str, int] = await r.json()
            return data

    async def settle(self, accepted: int, timeout: float, *, feedback: bool = True) -> dict[str, Any]:
        """Wait until every accepted order is delivered, dead-lettered or held in doubt, the outbox
        is empty, and (with feedback) no callback is pending in the simulator."""
        deadline = time.monotonic() + timeout
        while True:
            stats = await self.stats()
            service = stats["service"]
            by = service["orders_by_delivery"]
            accounted = sum(by.get(k, 0) for k in ("delivered", "dlq", "in_doubt", "cancelled"))
            pending = int(stats["sim"].get("pending_lifecycles", 0))
            if accounted >= accepted and service["outbox_depth"] == 0 and (not feedback or pending == 0):
                return stats
            if time.monotonic() > deadline:
                return stats
            await asyncio.sleep(0.5)


if __name__ == "__main__":
    sim_process_main()
