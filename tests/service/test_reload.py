"""Loading a new bundle without a restart, on SQLite and PostgreSQL: `dockyard reload` refuses a
breaking change (found by `dockyard diff` on the bundles' own sources) and switches a compatible
one; the service takes it while orders keep coming (none lost); a job transformed before the
switch keeps its version for its retries; the order page explains it with that version; a
dashboard token is rotated by the same reload; a config change that needs a restart is refused."""

from __future__ import annotations

import asyncio
import copy
import shutil
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from e2e import MAPPINGS
from test_service import example

from dockyard.demo import build_demo_bundle
from dockyard.service import queries
from dockyard.service.reload import ReloadError, reload_service
from dockyard.simulate import Faults

SPEC = "qimen/deliveryorder.create.yaml"
NAME = "qimen.deliveryorder.create"
TOKEN = "test-only-rotated-operator-token-0123456789"
PATIENT = {"max_attempts": 60, "base_delay": 0.05, "max_delay": 0.2, "jitter": 0}


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The library with the create spec's version raised (compatible), and with a field removed
    (breaking)."""
    out: dict[str, Path] = {}
    for kind, edit in (("compatible", lambda t: t.replace('version: "1.0.0"', 'version: "1.1.0"', 1)),
                       ("breaking", lambda t: "".join(line for line in t.splitlines(keepends=True)
                                                      if not line.startswith("    operateTime:")))):
        base = tmp_path_factory.mktemp(kind)
        shutil.copytree(MAPPINGS, base / "mappings")
        spec = base / "mappings" / SPEC
        text = spec.read_text(encoding="utf-8")
        assert edit(text) != text
        spec.write_text(edit(text), encoding="utf-8")
        out[kind] = build_demo_bundle(base / "mappings", base / "bundle")
    return out


def _cli(*args: str) -> Any:
    from dockyard.cli import main

    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def numbered(n: int) -> dict[str, Any]:
    order = copy.deepcopy(example())
    order["order_no"] = f"{order['order_no']}-R{n:03d}"
    return order


def test_reload_guarded_by_diff_with_orders_flowing(env: Any, bundles: dict[str, Path]) -> None:
    async def main() -> None:
        async with env(faults={"qimen-std": Faults(error_rate=1.0)}, retry=PATIENT) as run:
            config = str(run.plan.config_path)
            link = Path(run.plan.config_path).parent / "bundle"  # a symlink to the session's bundle
            before = link.resolve()
            text = Path(config).read_text(encoding="utf-8")  # name the link, not the shared folder
            Path(config).write_text(text.replace(f"- {before}\n", f"- {link}\n", 1), encoding="utf-8")
            assert str(link) in Path(config).read_text(encoding="utf-8")
            old = run.service.ctx.versions[NAME]

            # an order transformed by the running version, retrying (the warehouse answers 5xx)
            early = numbered(0)
            await run.post("/orders", early)
            for _ in range(100):
                if (await run.order(early["order_no"]))["jobs"][0]["attempts"] >= 2:
                    break
                await asyncio.sleep(0.05)

            # a breaking change is refused, and nothing moves
            out = await asyncio.to_thread(_cli, "reload", "--config", config, "--bundle", str(bundles["breaking"]))
            assert out.exit_code == 1, out.output
            assert f"{NAME} (1.0.0 → 1.0.0): BREAKING  removed  deliveryOrder.operateTime" in out.output
            assert "refused: 1 breaking change(s)" in out.output and link.resolve() == before

            # orders keep coming during the switch
            sent: list[str] = []

            async def flow() -> None:
                for n in range(1, 41):
                    order = numbered(n)
                    status, _ = await run.post("/orders", order)
                    assert status == 202
                    sent.append(order["order_no"])
                    await asyncio.sleep(0.02)

            feeding = asyncio.create_task(flow())
            await asyncio.sleep(0.2)
            out = await asyncio.to_thread(_cli, "reload", "--config", config, "--bundle", str(bundles["compatible"]))
            assert out.exit_code == 0, out.output
            assert f"{NAME}: ok  no change on the warehouse side (1.0.0 → 1.1.0)" in out.output
            assert "check: 0 breaking change(s)" in out.output, out.output
            assert link.resolve() == bundles["compatible"].resolve(), out.output
            # this test's service runs inside pytest, which is not a `dockyard serve`: never signalled
            assert "nothing signalled" in out.output
            detail = await reload_service(run.service, "test")  # what its SIGHUP handler does
            assert detail["changed"][NAME] == {"from": f"1.0.0 ({old.module})",
                                               "to": f"1.1.0 ({run.service.ctx.versions[NAME].module})"}
            await feeding
            run.sim.set_faults("qimen-std", Faults())

            for no in [early["order_no"], *sent]:  # none lost
                await run.until(no, lambda d: d["delivery"] == "delivered", timeout=30)
            early_sent = await run.service.db.read(lambda c: queries.sent_version(c, early["order_no"]))
            assert early_sent is not None and early_sent["step"] == "committed"
            assert (early_sent["mapping_version"], early_sent["mapping_sha"]) == ("1.0.0", old.module)  # kept
            late = await run.service.db.read(lambda c: queries.sent_version(c, sent[-1]))
            assert late is not None and late["mapping_version"] == "1.1.0"
            [row] = [r for r in await run.service.db.read(lambda c: c.execute(
                "SELECT outcome, detail FROM dy_journal WHERE step = 'reloaded'"))]
            assert row[0] == "ok" and '"by":"test"' in row[1]

            # the same reload rotates a dashboard token; the order page explains the early order
            # with the version that sent it
            with open(config, "a", encoding="utf-8") as f:
                f.write(f"dashboard:\n  tokens:\n    {TOKEN}: operator\n")
            detail = await reload_service(run.service, "test")
            assert detail["tokens_changed"] is True and detail["changed"] == {}
            headers = {"Authorization": f"Bearer {TOKEN}"}
            async with run.session.get(f"{run.url}/ui/api/orders/{early['order_no']}/lineage",
                                       headers=headers) as resp:
                lineage = await resp.json()
            assert resp.status == 200 and lineage["mapping_version"] == "1.0.0" and not lineage.get("gone")

            # a change that needs a restart is refused as a whole and journaled
            with open(config, "a", encoding="utf-8") as f:
                f.write("readers: 7\n")
            with pytest.raises(ReloadError, match="readers"):
                await reload_service(run.service, "test")
            assert run.service.ctx.versions[NAME].version == "1.1.0"
            refused = await run.service.db.read(lambda c: c.execute(
                "SELECT COUNT(*) FROM dy_journal WHERE step = 'reloaded' AND outcome = 'refused'"))
            assert refused[0][0] == 1

    asyncio.run(main())


def test_sighup_reaches_every_worker_of_a_real_serve(tmp_path: Path, bundle_dir: Path,
                                                     bundles: dict[str, Path]) -> None:
    """`dockyard serve` with `workers: 2` in a child process: `dockyard reload` signals the workers'
    parent, which reloads its own context and passes SIGHUP on; each worker answers in the journal."""
    from e2e import ServiceProcess

    from dockyard.demo import DemoPlan, free_port
    from dockyard.service.db import Database
    from dockyard.simulate import Feedback, Simulator, SimWarehouse

    async def main() -> None:
        work = tmp_path / "work"
        plan = DemoPlan(work, MAPPINGS, warehouses=("qimen-std",), workers=2)
        port = free_port()
        spec = plan.sim_spec(f"http://127.0.0.1:{port}")
        sim = Simulator([SimWarehouse(w["name"], w["kind"], w["secret"], w["callback_base"], Faults(), w["context"])
                         for w in spec["warehouses"]], feedback=Feedback(enabled=False),
                        upstream_secret=spec["upstream_secret"])
        plan.sim_base = await sim.start()
        work.mkdir(parents=True)
        (work / "bundle").symlink_to(bundle_dir)
        config = plan.write(port)
        config.write_text(config.read_text("utf-8").replace(f"- {bundle_dir.resolve()}\n", f"- {work / 'bundle'}\n"),
                          "utf-8")
        service = ServiceProcess(config, port, tmp_path / "service.log")
        try:
            await service.start(timeout=60)
            import aiohttp

            async with aiohttp.ClientSession() as session:
                async def send(order: dict[str, Any]) -> None:
                    async with session.post(f"{service.url}/orders", json=order) as resp:
                        assert resp.status == 202, await resp.text()

                async def delivered(no: str) -> None:
                    for _ in range(400):
                        async with session.get(f"{service.url}/orders/{no}") as resp:
                            if (await resp.json())["delivery"] == "delivered":
                                return
                        await asyncio.sleep(0.05)
                    raise AssertionError(f"{no} not delivered:\n{service.log_text()[-3000:]}")

                first = numbered(100)
                await send(first)
                await delivered(first["order_no"])
                out = await asyncio.to_thread(_cli, "reload", "--config", str(config), "--bundle",
                                              str(bundles["compatible"]))
                assert out.exit_code == 0, out.output + service.log_text()[-3000:]
                answers = [line for line in out.output.splitlines() if line.startswith("pid ")]
                assert len(answers) == 2 and all(" reloaded, " in a for a in answers), out.output
                assert f"{NAME}: 1.0.0 (" in out.output and "→ 1.1.0 (" in out.output
                later = [numbered(n) for n in range(101, 111)]
                for order in later:
                    await send(order)
                for order in later:
                    await delivered(order["order_no"])
            db = Database(plan.store or f"sqlite:///{work / 'state.db'}", readers=1, register=False)
            try:
                before = db.read_sync(lambda c: queries.sent_version(c, first["order_no"]))
                after = [db.read_sync(lambda c, n=o["order_no"]: queries.sent_version(c, n)) for o in later]
            finally:
                db.close()
            assert before is not None and before["mapping_version"] == "1.0.0"
            assert {a["mapping_version"] for a in after if a} == {"1.1.0"} and all(after)
        finally:
            service.stop()
            await sim.stop()

    asyncio.run(main())


def test_a_reload_changes_the_guards_and_never_leaves_an_endpoint_unguarded(env: Any) -> None:
    """A warehouse's callbacks come from a new address on a busy night: the guard's networks are
    changed by a reload, no restart. A reload that would leave an unsigned callback flow (or
    ingest) without a guard is refused, and the running guards stay."""
    import yaml

    push = (b'{"Body": {"WaybillRoute": [{"id": "g1", "mailno": "SF1", "orderid": "NO-SUCH-ORDER", '
            b'"acceptTime": "2023-11-11 09:00:00", "opCode": "50"}]}}')

    async def main() -> None:
        async with env(warehouses=("qimen-std", "sf")) as run:
            path = Path(run.plan.config_path)
            config = yaml.safe_load(path.read_text(encoding="utf-8"))
            guard = config["warehouses"]["sf"]["callbacks"]["route-push"]["guard"]

            async def reload_with(networks: list[str] | None, ingest: list[str] | None = None) -> dict[str, Any]:
                if networks is None:
                    config["warehouses"]["sf"]["callbacks"]["route-push"].pop("guard", None)
                else:
                    config["warehouses"]["sf"]["callbacks"]["route-push"]["guard"] = {**guard, "networks": networks}
                if ingest is not None:
                    config["ingest"] = {**config["ingest"], "networks": ingest}
                path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
                return await reload_service(run.service, "test")

            async def pushed() -> int:
                status, _ = await run.post("/callbacks/sf/route-push", raw=push,
                                           headers={"Content-Type": "application/json"})
                return status

            assert await pushed() == 409  # let in; the order is not ours
            detail = await reload_with(["192.0.2.0/24"])  # SF's new address, not ours
            assert detail.get("guards_changed") is True and detail["changed"] == {}
            assert await pushed() == 403
            detail = await reload_with(["192.0.2.0/24", "127.0.0.0/8", "::1/128"])
            assert await pushed() == 409

            await reload_with(["127.0.0.0/8", "::1/128"], ingest=["192.0.2.0/24"])  # ingest's guard too
            status, _ = await run.post("/orders", numbered(900))
            assert status == 403

            with pytest.raises(ReloadError, match="sf/route-push without a guard"):
                await reload_with(None)
            assert await pushed() == 409  # the running guard (and config) stayed
            assert run.service.config.warehouses["sf"].callbacks["route-push"].guard is not None

    asyncio.run(main())
