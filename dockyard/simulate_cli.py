"""`dockyard simulate`: run the simulated warehouses (dockyard.simulate) until interrupted.

Registered in dockyard/cli.py by `main.add_command(simulate)`; usable on its own as well.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from pathlib import Path

import click
import orjson

from dockyard.simulate import Simulator
from dockyard.simulate.config import SimConfig, SimConfigError, load_sim_config

__all__ = ["simulate"]


async def _serve(cfg: SimConfig, host: str, port: int, stats_on_exit: bool) -> None:
    sim = Simulator(cfg.warehouses, feedback=cfg.feedback, upstream_secret=cfg.upstream_secret, seed=cfg.seed,
                    upstream_faults=cfg.upstream_faults)
    base = await sim.start(host=host, port=port)
    click.echo(f"dockyard simulate: listening on {base}")
    for wh in cfg.warehouses:
        pushes = f", callbacks to {wh.callback_base}/…" if wh.callback_base else ""
        click.echo(f"  {wh.kind:8} {base}/{wh.name}{pushes}")
    click.echo(f"  upstream {base}/_upstream/events   stats {base}/_sim/stats")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):  # Windows: Ctrl-C still raises KeyboardInterrupt
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await sim.stop()
        if stats_on_exit:
            click.echo(orjson.dumps(sim.stats(), option=orjson.OPT_INDENT_2).decode())


@click.command("simulate")
@click.option("--config", "config_path", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The simulator's YAML config (warehouses, feedback, seed).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", default=9001, show_default=True, type=int, help="Port to bind (0: any free port).")
@click.option("--stats-on-exit", is_flag=True, help="Print the counters as JSON when stopped.")
def simulate(config_path: Path, host: str, port: int, stats_on_exit: bool) -> None:
    """Run simulated QIMEN / SF / JD LOP / Cainiao warehouses and the upstream webhook on one port."""
    try:
        cfg = load_sim_config(config_path)
    except SimConfigError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(cfg, host, port, stats_on_exit))
