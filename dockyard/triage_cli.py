"""`dockyard dlq groups`, bulk `dockyard dlq replay --group …` and `dockyard dlq discard`: the
dead-letter queue of a bad night, grouped by warehouse and reason, acted on a group at a time; and
`dockyard purge [--dry-run]`, retention's command (retention.py).

The grouping and the replay advice live in `dockyard.service.triage`; the state changes in
`store.replay` / `store.discard`, which journal each job with who asked (`user (dockyard dlq …)`).
A group that a replay cannot help (the mapping refuses or cannot transform its orders) is not
replayed in bulk unless `--anyway` says so.
"""

from __future__ import annotations

import functools
import getpass
import json
import sys
from collections.abc import Callable
from typing import Any

import click

from dockyard.service_cli import CONFIG_HELP, _config, _db, _read, dlq

__all__ = ["bulk_replay", "dlq_discard", "dlq_groups", "purge", "selection_options"]


def selection_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """--group, --warehouse, --state, --match: which dead or held jobs."""
    for option in reversed((
            click.option("--group", default=None, help="a group's key, as `dockyard dlq groups` prints it"),
            click.option("--warehouse", default=None, help="only this warehouse's jobs"),
            click.option("--state", type=click.Choice(["dead", "in_doubt"]), default=None,
                         help="only dead-lettered, or only held in doubt"),
            click.option("--match", "text", default=None, help="only jobs whose reason contains this text"))):
        fn = option(fn)
    return fn


def _selection(group: str | None, warehouse: str | None, state: str | None, text: str | None,
               hopeless: bool | None = None) -> Any:
    from dockyard.service.triage import Selection

    return Selection(group=group, warehouse=warehouse, state=state, text=text, hopeless=hopeless)


@dlq.command("groups")
@click.option("--config", "config_path", default="dockyard.yaml", show_default=True, help=CONFIG_HELP)
@click.option("--store", default=None, help="state store URL, overriding the config")
@selection_options
@click.option("--json", "as_json", is_flag=True)
def dlq_groups(config_path: str, store: str | None, group: str | None, warehouse: str | None, state: str | None,
               text: str | None, as_json: bool) -> None:
    """Dead and in-doubt jobs grouped by warehouse and reason, largest first, with whether a replay helps."""
    from dockyard.service import triage

    found = _read(config_path, store, lambda c: triage.groups(c, _selection(group, warehouse, state, text)))
    if as_json:
        click.echo(json.dumps(found, ensure_ascii=False, indent=2))
        return
    if not found:
        click.echo("no dead or in-doubt jobs match")
        return
    for g in found:
        click.echo(f"{g['group']}  {g['count']:>6}  {g['state']:<8} {g['warehouse']:<12} {g['first']} … {g['last']}")
        click.echo(f"            {g['reason']}")
        if not g["replay_helps"]:
            click.echo(f"            replay cannot help: {g['why']}")
        click.echo(f"            e.g. jobs {', '.join(map(str, g['jobs']))}")


def bulk_replay(config_path: str, store: str | None, sel: Any, anyway: bool) -> None:
    """Replay every job of a selection; the jobs a replay cannot help only with `anyway`."""
    from dockyard.service import store as ops
    from dockyard.service import triage
    from dockyard.service.db import now_us

    who = f"{getpass.getuser()} (dockyard dlq replay)"
    db = _db(_config(config_path, store))
    try:
        jobs = db.read_sync(lambda c: triage.select(c, sel))
        skipped = [j for j in jobs if not j["replay_helps"] and not anyway]
        chosen = [j["id"] for j in jobs if j["replay_helps"] or anyway]
        results = db.write_sync(lambda c: ops.replay(c, chosen, now_us(), who)) if chosen else []
    finally:
        db.close()
    _summarise("replayed", results)
    if skipped:
        click.echo(f"{len(skipped)} job(s) not replayed: replay cannot help them (the mapping refuses or cannot "
                   f"transform the order); fix the order, load a new mapping version, discard them, or give --anyway")
    if not jobs:
        click.echo("no dead or in-doubt jobs match")
    sys.exit(0 if jobs and not skipped and all(r == "replayed" for _, r in results) else 1)


@dlq.command("discard")
@click.argument("job_ids", type=int, nargs=-1)
@click.option("--reason", "why", required=True, help="why these jobs are given up (journaled with your name)")
@click.option("--config", "config_path", default="dockyard.yaml", show_default=True, help=CONFIG_HELP)
@click.option("--store", default=None, help="state store URL, overriding the config")
@selection_options
def dlq_discard(job_ids: tuple[int, ...], why: str, config_path: str, store: str | None, group: str | None,
                warehouse: str | None, state: str | None, text: str | None) -> None:
    """Give up on dead or in-doubt jobs for good: the given job ids, or every job of a selection
    (--group, --warehouse, --state, --match). Each is journaled with who and why."""
    from dockyard.service import store as ops
    from dockyard.service import triage

    if not why.strip():
        raise click.BadParameter("say why", param_hint="--reason")
    selected = any(v is not None for v in (group, warehouse, state, text))
    if bool(job_ids) == selected:
        raise click.UsageError("give job ids, or a selection (--group, --warehouse, --state, --match), not both")
    who = f"{getpass.getuser()} (dockyard dlq discard)"
    db = _db(_config(config_path, store))
    try:
        ids = list(job_ids) or [j["id"] for j in db.read_sync(
            lambda c: triage.select(c, _selection(group, warehouse, state, text)))]
        results = db.write_sync(functools.partial(_discard, ops, ids, who, why.strip())) if ids else []
    finally:
        db.close()
    _summarise("discarded", results)
    if not results:
        click.echo("no dead or in-doubt jobs match")
    sys.exit(0 if results and all(r == "discarded" for _, r in results) else 1)


def _discard(ops: Any, ids: list[int], who: str, why: str, conn: Any) -> list[tuple[int, str]]:
    result: list[tuple[int, str]] = ops.discard(conn, ids, who, why)
    return result


def _summarise(word: str, results: list[tuple[int, str]]) -> None:
    """One line per job up to 20, then counts: a bulk action on 4,000 jobs prints a summary."""
    for jid, what in results[:20]:
        click.echo(f"{jid}: {what}")
    if len(results) > 20:
        done = sum(1 for _, r in results if r == word)
        click.echo(f"… {len(results) - 20} more; {done} of {len(results)} {word}")


@click.command("purge")
@click.option("--config", "config_path", default="dockyard.yaml", show_default=True, help=CONFIG_HELP)
@click.option("--store", default=None, help="state store URL, overriding the config")
@click.option("--dry-run", is_flag=True, help="say what would go, and delete nothing")
@click.option("--json", "as_json", is_flag=True)
def purge(config_path: str, store: str | None, dry_run: bool, as_json: bool) -> None:
    """Delete what is past the config's `retention` (days per class: journal, jobs, events,
    quarantine, orders). Orders that are not final, and everything of theirs, are never purged.
    On PostgreSQL the journal's whole daily partitions are dropped. The service does this once an
    hour by itself; this command is for a first look (--dry-run) and for a purge now."""
    import dataclasses

    from dockyard.service import retention

    config = _config(config_path, store)
    if not config.retention.any:
        click.echo("no retention is configured (retention: {journal: DAYS, …}): everything is kept")
        return
    db = _db(config)
    try:
        reports = retention.purge(db, config.retention, dry_run=dry_run)
    finally:
        db.close()
    if as_json:
        click.echo(json.dumps([dataclasses.asdict(r) for r in reports], indent=2))
        return
    for r in reports:
        click.echo(r.line(dry_run))
    if dry_run:
        click.echo("dry run: nothing was deleted")
