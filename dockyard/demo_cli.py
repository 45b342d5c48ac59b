"""`dockyard demo`: the README's first command. Compiles the installed warehouse library, starts the
simulated warehouses and the service on SQLite, sends generated orders with a progress bar, waits
until each one is accounted for, prints the summary, and leaves the service up (or exits with
`--exit`). It runs from any directory: its state (bundle, config, secrets, SQLite store) goes into
the directory `--workdir` names (default `.dockyard-demo` here), which it says at the start and
wipes only when an earlier demo made it.

Exit status with `--exit`: 0 only when every accepted order is delivered, in the dead-letter
queue with a reason, or honestly in doubt, and every order the service counts as delivered
really reached its simulated warehouse; the summary's last line is `lost: K`.
"""

from __future__ import annotations

import asyncio
import secrets
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import click

__all__ = ["demo"]


@click.command()
@click.option("--orders", "count", type=int, default=3000, show_default=True, help="orders to generate and send")
@click.option("--exit", "exit_after", is_flag=True, help="exit after the summary instead of staying up")
@click.option("--mappings", "mappings_dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=None, help="the warehouse library to compile (default: the installed one)")
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path), default=Path(".dockyard-demo"),
              show_default=True, help="where the bundle, config, secrets and SQLite store are written "
                                      "(an earlier demo's directory is wiped first; any other must be empty)")
@click.option("--port", type=int, default=8080, show_default=True, help="the service's port (0: any free port)")
@click.option("--error-rate", type=float, default=0.0, show_default=True,
              help="share of warehouse requests answered 5xx by the simulator")
@click.option("--seed", type=int, default=42, show_default=True, help="seed of the order generator")
@click.option("--timeout", type=float, default=300.0, show_default=True,
              help="seconds to wait for every order to settle")
def demo(count: int, exit_after: bool, mappings_dir: Path | None, workdir: Path, port: int, error_rate: float,
         seed: int, timeout: float) -> None:
    """Run the whole path on the embedded default: simulated warehouses, the service on SQLite."""
    from dockyard.demo import DemoPlan, SimProcess, build_demo_bundle, free_port
    from dockyard.dsl.diagnostics import DiagnosticsError
    from dockyard.library import LibraryError, library_root
    from dockyard.service.app import install_uvloop

    if mappings_dir is None:
        try:
            mappings_dir = library_root()
        except LibraryError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)
    workdir = workdir.resolve()
    _fresh_workdir(workdir)
    click.echo(f"demo state (bundle, config, secrets, SQLite store): {workdir}", err=True)
    # A fresh operator token per run, for the dashboard: shown once below, valid until the demo ends.
    plan = DemoPlan(workdir, mappings_dir, dashboard_token=f"demo-{secrets.token_urlsafe(18)}")
    click.echo(f"compiling {mappings_dir}/ …", err=True)
    try:
        build_demo_bundle(mappings_dir, plan.bundle)
    except DiagnosticsError as exc:
        click.echo(str(exc), err=True)
        sys.exit(1)
    if not port or not _port_free(port):
        if port:
            click.echo(f"port {port} is taken: using a free one", err=True)
        port = free_port()
    faults = {name: {"error_rate": error_rate} for name in plan.warehouses} if error_rate else None
    sim = SimProcess(plan.sim_spec(f"http://127.0.0.1:{port}", faults), {"step_delay": 0.05})
    plan.sim_base = sim.base
    click.echo(f"simulated warehouses at {sim.base}", err=True)
    install_uvloop()
    try:
        code = asyncio.run(_run(plan, port, count, seed, exit_after, timeout))
    finally:
        sim.stop()
    sys.exit(code)


MARKER = ".dockyard-demo"  # written into the work directory, so that only a demo's directory is ever wiped


def _fresh_workdir(workdir: Path) -> None:
    """An empty work directory: an earlier demo's is wiped, anything else must be empty (a
    mistyped --workdir must never cost anyone their files)."""
    if workdir.exists():
        if not workdir.is_dir():
            click.echo(f"error: --workdir {workdir} is a file", err=True)
            sys.exit(2)
        if (workdir / MARKER).is_file():
            shutil.rmtree(workdir)
        elif any(workdir.iterdir()):
            click.echo(f"error: --workdir {workdir} is not empty and was not made by `dockyard demo`; "
                       "give an empty or new directory", err=True)
            sys.exit(2)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / MARKER).write_text("made by `dockyard demo`: wiped by the next run\n", encoding="utf-8")


def _port_free(port: int) -> bool:
    import socket

    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


async def _run(plan: Any, port: int, count: int, seed: int, exit_after: bool, timeout: float) -> int:
    from dockyard.demo import Harness
    from dockyard.sample_orders import generate
    from dockyard.service.app import Service
    from dockyard.service.config import load_config
    from dockyard.service.context import ServiceContext

    config = load_config(plan.write(port))
    ctx = ServiceContext.build(config)
    _show_warnings(ctx)
    service = Service(ctx)
    url = await service.start()
    click.echo(f"service on {url} (store {service.db.shown_url})", err=True)
    harness = Harness(url, plan.sim_base, plan.dashboard_token)
    orders = generate(count, seed)
    started = time.monotonic()
    with click.progressbar(length=count, label="sending orders", file=sys.stderr) as bar:
        sent = await harness.send(orders, progress=bar.update)
    took = time.monotonic() - started
    accepted = len(sent["accepted"])
    with click.progressbar(length=accepted, label="delivering   ", file=sys.stderr) as bar:
        done = 0

        async def watch() -> None:
            nonlocal done
            while True:
                stats = await harness.stats()
                by = stats["service"]["orders_by_delivery"]
                now = sum(by.get(k, 0) for k in ("delivered", "dlq", "in_doubt", "cancelled"))
                bar.update(max(0, min(accepted, now) - done))
                done = max(done, min(accepted, now))
                await asyncio.sleep(0.5)

        watcher = asyncio.create_task(watch())
        try:
            stats = await harness.settle(accepted, timeout)
        finally:
            watcher.cancel()
    settled = time.monotonic() - started
    report = await service.db.read(summary_numbers)
    received = {name: await harness.received(name) for name in plan.warehouses}
    lost = _print_summary(stats, report, received, sent, accepted, took, settled, plan.config_path)
    if exit_after:
        await service.stop()
        return 0 if lost == 0 else 1
    click.echo(f"\nthe service is up at {url} — try: curl {url}/orders/{sent['accepted'][0]}"
               if sent["accepted"] else f"\nthe service is up at {url}")
    click.echo(f"dashboard: {url}/ui  (sign in with this run's operator token: {plan.dashboard_token})")
    click.echo("Ctrl-C to stop")
    stop = asyncio.Event()
    import signal

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await service.stop()
    return 0 if lost == 0 else 1


def _show_warnings(ctx: Any) -> None:
    """What an operator must notice — dead letters and orders held in doubt with their order and
    reason, refused or quarantined callbacks — one line each on stderr, secrets removed. On a
    terminal each line first clears the progress bar's line; the bar redraws below it."""
    import logging

    from dockyard.service.logs import TextFormatter, setup_logging

    handler = setup_logging(ctx.secrets, level="warning", fmt="text")
    if sys.stderr.isatty():
        class _ClearBar(TextFormatter):
            def format(self, record: logging.LogRecord) -> str:
                return "\r\x1b[K" + super().format(record)

        handler.setFormatter(_ClearBar())


def summary_numbers(conn: Any) -> dict[str, Any]:
    """Latency from the journal (ingest → the warehouse's acceptance of the create) and the
    delivered orders per warehouse, straight from the store."""
    from dockyard.demo import percentile

    rows = conn.execute("SELECT r.at, c.at FROM dy_journal r JOIN dy_journal c ON c.order_no = r.order_no "
                        "AND c.step = 'committed' AND c.flow = 'create' WHERE r.step = 'received' AND r.outcome = 'ok'")
    latencies = [(c - r) / 1000 for r, c in rows]
    delivered = dict(conn.execute("SELECT warehouse, COUNT(*) FROM dy_orders WHERE delivery = 'delivered' "
                                  "GROUP BY warehouse"))
    retries = conn.execute("SELECT COALESCE(SUM(attempts - 1), 0) FROM dy_jobs "
                           "WHERE lane = 'wh' AND attempts > 1")[0][0]
    delivered_orders = [r[0] for r in conn.execute("SELECT order_no FROM dy_orders WHERE delivery = 'delivered'")]
    return {"p50": percentile(latencies, 50), "p99": percentile(latencies, 99), "delivered": delivered,
            "retries": int(retries), "delivered_orders": delivered_orders,
            "by_warehouse": dict(conn.execute("SELECT order_no, warehouse FROM dy_orders"))}


def _print_summary(stats: dict[str, Any], report: dict[str, Any], received: dict[str, dict[str, int]],
                   sent: dict[str, Any], accepted: int, took: float, settled: float, config_path: Path) -> int:
    service, sim = stats["service"], stats["sim"]
    by = service["orders_by_delivery"]
    dlq = by.get("dlq", 0)
    in_doubt = by.get("in_doubt", 0)
    cancelled = by.get("cancelled", 0)
    accounted = sum(by.get(k, 0) for k in ("delivered", "dlq", "in_doubt", "cancelled"))
    # An order the service counts as delivered must have reached its simulated warehouse.
    where = report["by_warehouse"]
    missing = sum(1 for o in report["delivered_orders"] if o not in received.get(where[o], {}))
    lost = int(max(0, accepted - accounted) + missing)
    click.echo("")
    click.echo(f"orders sent: {sum(sent['counts'].values())} in {took:.1f}s "
               f"({sum(sent['counts'].values()) / max(took, 1e-9):.0f}/s)  "
               + ", ".join(f"{k}: {v}" for k, v in sorted(sent["counts"].items())))
    click.echo(f"settled after {settled:.1f}s")
    click.echo("delivered per warehouse:")
    for name, n in sorted(report["delivered"].items()):
        w = sim["warehouses"].get(name, {})
        click.echo(f"  {name:<10} {n:>7}   (the warehouse counted {w.get('unique_orders', '?')} orders, "
                   f"{len(w.get('orders_received_twice', []))} received twice)")
    pushed = sum(w["callbacks"]["pushed"] for w in sim["warehouses"].values())
    click.echo(f"retries: {report['retries']}")
    click.echo(f"dead-letter queue: {dlq}   (see: dockyard dlq list --config {config_path})")
    click.echo(f"in doubt: {in_doubt}")
    if cancelled:
        click.echo(f"cancelled: {cancelled}")
    click.echo(f"status events received: {service['events']} (pushed by the warehouses: {pushed}); "
               f"forwarded upstream: {sim['upstream']['unique_events']}")
    click.echo(f"quarantined: {service['quarantined']}")
    click.echo(f"latency ingest → warehouse accepted: p50 {report['p50']:.1f} ms, p99 {report['p99']:.1f} ms")
    click.echo(f"lost: {lost}")
    return lost
