"""The service's commands: `dockyard serve`, `dockyard trace ORDER_NO` and `dockyard dlq list|show|replay`
(`dlq groups` and `dlq discard`, and replay of a whole group, are in triage_cli).

trace and dlq read the same state store as the running service (SQLite or PostgreSQL) through its
config, so an operator needs nothing but the config file; a replay is recorded in the journal
with who asked for it, and replaying twice does nothing the second time.
"""

from __future__ import annotations

import asyncio
import dataclasses
import getpass
import json
import os
import re
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from dockyard.dsl.diagnostics import DiagnosticsError, render_all
from dockyard.runtime.errors import DockyardError

__all__ = ["dlq", "report", "serve", "trace"]

CONFIG_HELP = "the service config (dockyard.yaml)"
T = TypeVar("T")

if TYPE_CHECKING:
    from dockyard.service.db import Database


def _config(path: str, store: str | None = None) -> Any:
    from dockyard.service.config import load_config

    try:
        return load_config(path, {"store": store} if store else None)
    except DiagnosticsError as exc:
        click.echo(render_all(exc.diagnostics, exc.sources), err=True)
        sys.exit(1)


def _db(config: Any) -> Database:
    from dockyard.service.db import Database, StoreError

    try:
        return Database(config.store, readers=1, register=False)
    except StoreError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)


def _read(config_path: str, store: str | None, fn: Callable[[Any], T]) -> T:
    """One read of the store named by the config (or --store), for the operator's commands."""
    db = _db(_config(config_path, store))
    try:
        return db.read_sync(fn)
    finally:
        db.close()


@click.command()
@click.option("--config", "config_path", default="dockyard.yaml", show_default=True, help=CONFIG_HELP)
@click.option("--host", default=None, help="listen on this address (default: listen.host of the config)")
@click.option("--port", type=int, default=None, help="listen on this port (default: listen.port of the config)")
@click.option("--store", default=None, help="state store URL, overriding the config")
@click.option("--log-format", type=click.Choice(["json", "text"]), default="json", show_default=True)
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="info",
              show_default=True)
@click.option("--allow-unsigned-callbacks", is_flag=True,
              help="start even though a callback with `verify: none` has no guard (anyone who can reach it "
                   "can change orders' status)")
@click.option("--allow-open-ingest", is_flag=True,
              help="start even though POST /orders has no `ingest` guard (anyone who can reach it can send orders)")
def serve(config_path: str, host: str | None, port: int | None, store: str | None, log_format: str,
          log_level: str, allow_unsigned_callbacks: bool, allow_open_ingest: bool) -> None:
    """Run the service: ingest orders, deliver them, take feedback back."""
    from dockyard.service.app import Service, install_uvloop, run_forever
    from dockyard.service.context import ServiceContext
    from dockyard.service.logs import setup_logging

    config = _config(config_path, store)
    _refuse_unguarded(config, allow_unsigned_callbacks, allow_open_ingest)
    if host or port is not None:
        config = dataclasses.replace(config, host=host or config.host, port=config.port if port is None else port)
    try:
        ctx = ServiceContext.build(config)
    except DockyardError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    setup_logging(ctx.secrets, level=log_level, fmt=log_format)
    if config.workers > 1:
        from dockyard.service.workers import serve_workers

        sys.exit(serve_workers(ctx))
    try:
        service = Service(ctx)
    except DockyardError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    install_uvloop()

    def ready(url: str) -> None:
        click.echo(f"dockyard serving on {url} (store {service.db.shown_url}; "
                   f"{service.recovered} in-flight jobs recovered)", err=True)

    asyncio.run(run_forever(service, ready))


def _refuse_unguarded(config: Any, allow_unsigned: bool, allow_open_ingest: bool) -> None:
    """The start-up rule of guards.py: an unsigned callback flow or ingest without a guard stops
    `serve`, unless explicitly allowed; allowed, it is a warning on every start."""
    from dockyard.service.guards import unguarded

    flows, ingest = unguarded(config)
    problems = []
    if flows:
        text = (f"callback(s) {', '.join(flows)} have `verify: none` and no `guard`: anyone who can reach them can "
                "set any order's status")
        if allow_unsigned:
            click.echo(f"warning: {text} (allowed by --allow-unsigned-callbacks)", err=True)
        else:
            problems.append(f"{text}; give each a guard (networks, token or mtls_at_proxy; "
                            "docs/security.md), or start with --allow-unsigned-callbacks")
    if ingest:
        text = "POST /orders has no `ingest` guard: anyone who can reach it can send orders"
        if allow_open_ingest:
            click.echo(f"warning: {text} (allowed by --allow-open-ingest)", err=True)
        else:
            problems.append(f"{text}; configure `ingest:` (networks or token; docs/security.md), or start with "
                            "--allow-open-ingest")
    if problems:
        click.echo("error: the service will not start:\n" + "\n".join(f"  - {p}" for p in problems), err=True)
        sys.exit(1)


@click.command()
@click.argument("order_no")
@click.option("--config", "config_path", default="dockyard.yaml", show_default=True, help=CONFIG_HELP)
@click.option("--store", default=None, help="state store URL, overriding the config")
@click.option("--json", "as_json", is_flag=True, help="print the journal entries as JSON")
@click.option("-v", "--verbose", is_flag=True, help="show the redacted request and response bodies")
def trace(order_no: str, config_path: str, store: str | None, as_json: bool, verbose: bool) -> None:
    """Print an order's whole journey as a timeline."""
    from dockyard.service import queries

    steps = _read(config_path, store, lambda c: queries.timeline(c, order_no))
    if as_json:
        click.echo(json.dumps(steps, ensure_ascii=False, indent=2, default=str))
    else:
        click.echo(queries.format_timeline(order_no, steps, verbose=verbose))
    if not steps:
        sys.exit(1)


@click.group()
def dlq() -> None:
    """The dead-letter queue and the orders held in doubt."""


@dlq.command("list")
@click.option("--config", "config_path", default="dockyard.yaml", show_default=True, help=CONFIG_HELP)
@click.option("--store", default=None, help="state store URL, overriding the config")
@click.option("--limit", type=int, default=200, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def dlq_list(config_path: str, store: str | None, limit: int, as_json: bool) -> None:
    """Dead and in-doubt jobs, newest first."""
    from dockyard.service import queries

    items = _read(config_path, store, lambda c: queries.dlq_list(c, limit))
    if as_json:
        click.echo(json.dumps(items, ensure_ascii=False, indent=2))
        return
    if not items:
        click.echo("the dead-letter queue is empty")
        return
    for it in items:
        click.echo(f"{it['id']:>8}  {it['state']:<8} {it['warehouse']:<12} {it['kind']:<8} {it['order_no'] or '-':<24} "
                   f"attempts {it['attempts']:<3} {it['since']}\n          {it['reason']}")


@dlq.command("show")
@click.argument("job_id", type=int)
@click.option("--config", "config_path", default="dockyard.yaml", show_default=True, help=CONFIG_HELP)
@click.option("--store", default=None, help="state store URL, overriding the config")
def dlq_show(job_id: int, config_path: str, store: str | None) -> None:
    """One job with its reason, its last outcome and the order's full history."""
    from dockyard.service import queries

    item = _read(config_path, store, lambda c: queries.dlq_show(c, job_id))
    if item is None:
        click.echo(f"error: no job {job_id}", err=True)
        sys.exit(1)
    history = item.pop("history")
    click.echo(json.dumps(item, ensure_ascii=False, indent=2, default=str))
    if item["order_no"]:
        click.echo(queries.format_timeline(item["order_no"], history))


@dlq.command("replay")
@click.argument("job_ids", type=int, nargs=-1)
@click.option("--config", "config_path", default="dockyard.yaml", show_default=True, help=CONFIG_HELP)
@click.option("--store", default=None, help="state store URL, overriding the config")
@click.option("--order", "order_file", type=click.Path(exists=True, dir_okay=False),
              help="replace the order's content first (a fixed order, same order_no), then replay")
@click.option("--group", default=None, help="every job of this group (`dockyard dlq groups`)")
@click.option("--warehouse", default=None, help="every job of this warehouse (with the other filters)")
@click.option("--state", type=click.Choice(["dead", "in_doubt"]), default=None, help="only dead, or only in doubt")
@click.option("--match", "text", default=None, help="only jobs whose reason contains this text")
@click.option("--anyway", is_flag=True, help="also replay jobs a replay cannot help (the mapping refuses them)")
def dlq_replay(job_ids: tuple[int, ...], config_path: str, store: str | None, order_file: str | None,
               group: str | None, warehouse: str | None, state: str | None, text: str | None, anyway: bool) -> None:
    """Send dead or in-doubt jobs again (a running service picks them up within a second): the given
    job ids, or every job of a selection (--group, --warehouse, --state, --match)."""
    from dockyard.service import store as ops
    from dockyard.service.db import now_us

    if any(v is not None for v in (group, warehouse, state, text)):
        if job_ids or order_file:
            raise click.UsageError("give job ids, or a selection (--group, --warehouse, --state, --match), not both")
        from dockyard.triage_cli import _selection, bulk_replay

        bulk_replay(config_path, store, _selection(group, warehouse, state, text), anyway)
        return
    if not job_ids:
        raise click.UsageError("give job ids, or a selection (--group, --warehouse, --state, --match)")
    config = _config(config_path, store)
    db = _db(config)
    who = f"{getpass.getuser()} (dockyard dlq replay)"
    try:
        if order_file is not None:
            if len(job_ids) != 1:
                click.echo("error: --order replaces one order: give exactly one job id", err=True)
                sys.exit(2)
            fixed = _fixed_order(Path(order_file), config)
            results = db.write_sync(lambda c: _replace_then_replay(c, job_ids[0], fixed, who))
        else:
            results = db.write_sync(lambda c: ops.replay(c, list(job_ids), now_us(), who))
    finally:
        db.close()
    failed = False
    for jid, what in results:
        click.echo(f"{jid}: {what}")
        failed |= what != "replayed"
    sys.exit(1 if failed else 0)


def _fixed_order(path: Path, config: Any) -> tuple[str, str, str]:
    from dockyard.service.context import dumps
    from dockyard.service.ingest import BodyError, OrderChecker, read_body
    from dockyard.service.routing import Router

    try:
        parsed = read_body(path.read_bytes(), config.limits)
    except BodyError as exc:
        click.echo(f"error: {path}: {exc}", err=True)
        sys.exit(1)
    checked = OrderChecker(Router(config.routes), config.limits).check(parsed.value, suspect=parsed.suspect)
    if checked.order is None:
        click.echo(f"error: {path} is not a valid order:\n  " + "\n  ".join(checked.reasons), err=True)
        sys.exit(1)
    return checked.order_no or "", dumps(checked.order), checked.fingerprint


def _replace_then_replay(conn: Any, job_id: int, fixed: tuple[str, str, str], who: str) -> list[tuple[int, str]]:
    from dockyard.service import store as ops
    from dockyard.service.db import now_us

    order_no, payload, fingerprint = fixed
    row = conn.execute("SELECT order_no, state FROM dy_jobs WHERE id = ?", (job_id,))
    if not row or row[0][0] != order_no:
        return [(job_id, f"not replayed: job {job_id} is not for order {order_no!r}")]
    if row[0][1] not in ("dead", "held"):
        return [(job_id, f"not replayed: the job is {row[0][1]}")]
    conn.execute("UPDATE dy_orders SET payload = ?, fingerprint = ?, updated_at = ? WHERE order_no = ?",
                 (payload, fingerprint, now_us(), order_no))
    ops.journal(conn, [ops.JournalRow(now_us(), order_no, None, None, "order-fixed", "ok",
                                      detail={"by": who, "fingerprint": fingerprint})])
    return ops.replay(conn, [job_id], now_us(), who)


_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|hr|d|w)", re.IGNORECASE)
_UNIT_SECONDS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hr": 3600, "d": 86400, "w": 7 * 86400}


def _zone(name: str | None) -> tzinfo:
    """The report's time zone: --tz, else $TZ, else the machine's (/etc/timezone or /etc/localtime), else UTC."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    candidates = [name] if name else [os.environ.get("TZ", "").lstrip(":"), _system_zone_name()]
    for candidate in candidates:
        if not candidate:
            continue
        try:
            return ZoneInfo(candidate)
        except (ZoneInfoNotFoundError, ValueError):
            if name:
                raise click.BadParameter(f"{name!r} is not a time zone name (e.g. Asia/Shanghai, UTC)",
                                         param_hint="--tz") from None
    return UTC


def _system_zone_name() -> str | None:
    try:
        text = Path("/etc/timezone").read_text(encoding="utf-8").strip()
        if text:
            return text
    except OSError:
        pass
    try:
        target = str(Path("/etc/localtime").readlink())
    except OSError:
        return None
    return target.split("zoneinfo/", 1)[1] if "zoneinfo/" in target else None


def _moment(text: str, zone: tzinfo, option: str) -> int:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(f"{text!r} is not an ISO-8601 date or date-time", param_hint=option) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone)
    return int(moment.timestamp() * 1_000_000)


def report_window(since: str | None, start: str | None, end: str | None, zone: tzinfo,
                  now: datetime | None = None) -> tuple[int, int]:
    """[begin, end) in epoch microseconds from the report's options: `--since` (a duration such as
    90m, 1h, 2d, 1w, or `today` / `yesterday` in the zone) or `--from` [`--to`, default now]; with
    neither, the last 24 hours."""
    current = now or datetime.now(UTC)
    finish = int(current.timestamp() * 1_000_000)
    if since is not None:
        if start is not None or end is not None:
            raise click.UsageError("give --since, or --from (and --to), not both")
        word = since.strip().lower()
        if word in ("today", "yesterday"):
            midnight = current.astimezone(zone).replace(hour=0, minute=0, second=0, microsecond=0)
            if word == "yesterday":
                begin = midnight - timedelta(days=1)
                return int(begin.timestamp() * 1_000_000), int(midnight.timestamp() * 1_000_000)
            return int(midnight.timestamp() * 1_000_000), finish
        match = _DURATION.fullmatch(word)
        if match is None or float(match[1]) <= 0:
            raise click.BadParameter(f"{since!r}: give a duration such as 30m, 1h, 2d or 1w, or today / yesterday",
                                     param_hint="--since")
        seconds = float(match[1]) * _UNIT_SECONDS[match[2]]
        return finish - int(seconds * 1_000_000), finish
    if start is None:
        if end is not None:
            raise click.UsageError("--to needs --from")
        return finish - 24 * 3600 * 1_000_000, finish
    first = _moment(start, zone, "--from")
    if end is not None:
        finish = _moment(end, zone, "--to")
    if finish <= first:
        raise click.BadParameter("the window ends before it begins", param_hint="--to")
    return first, finish


@click.command()
@click.option("--config", "config_path", default="dockyard.yaml", show_default=True, help=CONFIG_HELP)
@click.option("--store", default=None, help="state store URL, overriding the config")
@click.option("--since", default=None, help="the last 30m, 1h, 2d, 1w …, or today / yesterday (in --tz)")
@click.option("--from", "start", default=None, help="start of the window (ISO-8601; in --tz when no offset)")
@click.option("--to", "end", default=None, help="end of the window, exclusive (default: now)")
@click.option("--tz", "tz_name", default=None,
              help="time zone to read and show times in (default: $TZ, else the machine's)")
@click.option("--format", "fmt", type=click.Choice(["html", "csv", "json"]), default="json", show_default=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="write to this file instead of stdout")
def report(config_path: str, store: str | None, since: str | None, start: str | None, end: str | None,
           tz_name: str | None, fmt: str, output: str | None) -> None:
    """Per warehouse and flow: volumes, success and error rates, retries, latency, rejections, DLQ,
    in doubt, accepted → shipped, and the counts over time, from the journal. The window is
    --since, or --from/--to; without them, the last 24 hours."""
    from dockyard.service.report import build_report, render_csv, render_html, render_json

    zone = _zone(tz_name)
    begin, finish = report_window(since, start, end, zone)
    data = _read(config_path, store, lambda c: build_report(c, begin, finish, zone))
    text = {"html": render_html, "csv": render_csv, "json": render_json}[fmt](data)
    if output:
        Path(output).write_text(text, encoding="utf-8")
    else:
        click.echo(text, nl=False)
