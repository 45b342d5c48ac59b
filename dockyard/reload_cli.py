"""`dockyard reload`: check a new bundle against the running one with `dockyard diff`, put it in
its place, and have the running service load it (SIGHUP) without a restart.

The guard compares, for every mapping whose spec changed, the spec the running bundle was
compiled from with the new one (bundles keep their sources, `sources/<sha256>`), exactly as
`dockyard diff OLD NEW` would; a breaking change (a field removed or retyped, a table entry
changed, another signature…) refuses the switch unless `--force`. A mapping the new bundle lacks
is breaking too. Then the new bundle takes the configured folder's place (a symlink is swapped in
one step; a folder is renamed, and the previous one kept beside it as `<folder>.prev-<hash>`),
and every service process of this host found in the store (`dy_nodes`, with a fresh heartbeat and
a `dockyard … serve` command line) gets SIGHUP. The command waits for each one's `reloaded`
journal row and prints it. Processes on other hosts: run the command there with `--no-switch`,
or send them SIGHUP.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path, PurePosixPath
from typing import Any

import click

from dockyard.service_cli import CONFIG_HELP, _config, _db

__all__ = ["guard", "reload", "swap"]


def _manifest(bundle: Path) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise click.ClickException(f"{bundle} is not a bundle: {exc}") from None
    return data


def _materialise(bundle: Path, entry: dict[str, Any], into: Path) -> Path | None:
    """Write a mapping's spec and the files it read from the bundle's sources, in their layout;
    the spec's path there, or None when the bundle does not keep them (compiled before it did)."""
    for rel, sha in entry.get("inputs_sha256", {}).items():
        source = bundle / "sources" / sha
        parts = [p for p in PurePosixPath(rel).parts if p not in ("/", "")]
        if not source.is_file() or ".." in parts:
            return None
        data = source.read_bytes()
        if hashlib.sha256(data).hexdigest() != sha:
            raise click.ClickException(f"{source} does not match its hash: the bundle was changed after compiling")
        dest = into.joinpath(*parts)
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data)
    spec = [p for p in PurePosixPath(str(entry.get("spec", ""))).parts if p not in ("/", "")]
    return into.joinpath(*spec) if spec else None


def guard(old_bundle: Path, new_bundle: Path) -> tuple[list[str], int]:
    """Lines to print (one per change) and how many changes are breaking."""
    from dockyard.compiler.diff import diff_files
    from dockyard.diff_cli import format_change
    from dockyard.dsl.diagnostics import DiagnosticsError

    old, new = _manifest(old_bundle)["mappings"], _manifest(new_bundle)["mappings"]
    lines: list[str] = []
    breaking = 0
    for name in sorted(set(old) | set(new)):
        if name not in new:
            lines.append(f"{name}: BREAKING  removed  (the new bundle has no such mapping)")
            breaking += 1
            continue
        if name not in old:
            lines.append(f"{name}: ok  added  (version {new[name].get('version')})")
            continue
        a, b = old[name], new[name]
        same_inputs = sorted(a.get("inputs_sha256", {}).values()) == sorted(b.get("inputs_sha256", {}).values())
        if a.get("spec_sha256") == b.get("spec_sha256") and same_inputs:  # by content: the paths may differ
            if a.get("module_sha256") != b.get("module_sha256"):
                lines.append(f"{name}: ok  recompiled  (same spec and inputs; another path or compiler)")
            continue
        with tempfile.TemporaryDirectory(prefix="dockyard-reload-") as tmp:
            old_spec = _materialise(old_bundle, a, Path(tmp) / "old")
            new_spec = _materialise(new_bundle, b, Path(tmp) / "new")
            if old_spec is None or new_spec is None:
                which = old_bundle if old_spec is None else new_bundle
                lines.append(f"{name}: BREAKING?  cannot compare: {which} does not keep its sources "
                             f"(compiled by an older Dockyard); compare the specs with `dockyard diff`, then --force")
                breaking += 1
                continue
            try:
                report = diff_files(old_spec, new_spec)
            except DiagnosticsError as exc:
                lines.append(f"{name}: BREAKING?  a spec does not check ({len(exc.diagnostics)} diagnostic(s))")
                breaking += 1
                continue
        version = f"{a.get('version')} → {b.get('version')}"
        if not report.changes:
            lines.append(f"{name}: ok  no change on the warehouse side ({version})")
        for change in report.changes:
            lines.append(f"{name} ({version}): {format_change(change)}")
            breaking += int(change.breaking)
    return lines, breaking


def swap(target: Path, new_bundle: Path) -> str:
    """Put `new_bundle` in `target`'s place; what was done, in words."""
    new = new_bundle.resolve()
    if target.is_symlink():
        before = target.readlink()
        link = target.with_name(target.name + ".reload-link")
        link.unlink(missing_ok=True)
        link.symlink_to(new, target_is_directory=True)
        link.replace(target)  # one rename: a reader sees the old bundle or the new one
        return f"{target} → {new} (was → {before})"
    digest = hashlib.sha256((target / "manifest.json").read_bytes()).hexdigest()[:12]
    previous = target.with_name(f"{target.name}.prev-{digest}")
    target.rename(previous)
    new.rename(target)
    return f"{target} now holds the new bundle; the previous one is kept at {previous}"


def _is_serve(pid: int) -> bool:
    """Whether `pid` runs `dockyard … serve` (a pid reused by another program is never signalled)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"serve" in argv and any(b"dockyard" in a for a in argv)


def _parent(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def _serve_processes(rows: list[tuple[Any, ...]]) -> list[tuple[str, int]]:
    """(owner, pid) of the live service processes of this host (heartbeat fresh, a `dockyard …
    serve` command line)."""
    return [(str(owner), int(pid)) for owner, host, pid, _beat in rows
            if host == socket.gethostname() and _is_serve(int(pid))]


def _targets(nodes: list[tuple[str, int]]) -> set[int]:
    """Whom to signal: a worker of `workers: N` through its parent (which reloads its own context,
    from which a restarted worker is forked, and passes the signal on); a single process itself."""
    out: set[int] = set()
    for _owner, pid in nodes:
        parent = _parent(pid)
        out.add(parent if parent is not None and parent > 1 and _is_serve(parent) else pid)
    return out


@click.command("reload")
@click.option("--config", "config_path", default="dockyard.yaml", show_default=True, help=CONFIG_HELP)
@click.option("--store", default=None, help="state store URL, overriding the config")
@click.option("--bundle", "new_bundle", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="the new bundle (`dockyard compile … -o DIR`): checked, then put in the configured one's place")
@click.option("--replace", "target", type=click.Path(path_type=Path), default=None,
              help="the configured bundle folder it replaces (default: the config's only one)")
@click.option("--force", is_flag=True, help="switch despite breaking changes, or reload without --bundle")
@click.option("--check-only", is_flag=True, help="run the check and stop: nothing is switched or signalled")
@click.option("--no-switch", is_flag=True, help="signal only: the bundle in place is already the new one")
@click.option("--wait", type=float, default=15.0, show_default=True, help="seconds to wait for each process")
def reload(config_path: str, store: str | None, new_bundle: Path | None, target: Path | None, force: bool,
           check_only: bool, no_switch: bool, wait: float) -> None:
    """Load a new bundle into the running service without a restart, guarded by `dockyard diff`:
    a breaking change is refused unless --force. Orders keep flowing during the switch; jobs
    already transformed keep the version that transformed them for their retries."""
    config = _config(config_path, store)
    if new_bundle is not None and no_switch:
        raise click.UsageError("--no-switch signals only: it takes no --bundle")
    if new_bundle is not None:
        if target is None:
            if len(config.bundles) != 1:
                raise click.UsageError("the config names several bundles: say which one with --replace")
            target = Path(config.bundles[0])
        elif not target.is_absolute():
            target = Path(config.path).parent / target
        if Path(target).resolve() not in [Path(b).resolve() for b in config.bundles]:
            raise click.UsageError(f"{target} is not one of the config's bundles")
        lines, breaking = guard(Path(target), new_bundle)
        for line in lines:
            click.echo(line)
        if breaking and not force:
            click.echo(f"refused: {breaking} breaking change(s); nothing was switched (give --force to switch anyway)",
                       err=True)
            sys.exit(1)
        click.echo(f"check: {breaking} breaking change(s)" + (" (forced)" if breaking else ""))
        if check_only:
            return
        click.echo("switched: " + swap(Path(target), new_bundle))
    elif not force and not no_switch:
        raise click.UsageError("give --bundle NEW to check the new bundle against the running one, or --no-switch "
                               "(or --force) to reload what the config names as it is")
    if check_only:
        return
    _signal_and_wait(config, wait)


def _signal_and_wait(config: Any, wait: float) -> None:
    db = _db(config)
    try:
        since = int(db.read_sync(lambda c: c.execute("SELECT COALESCE(MAX(id), 0) FROM dy_journal")[0][0]))
        nodes = _serve_processes(db.read_sync(lambda c: c.execute(
            "SELECT owner, host, pid, heartbeat_at FROM dy_nodes WHERE heartbeat_at > ?", (c.now - 30_000_000,))))
        if not nodes:
            click.echo("no running `dockyard serve` process of this host in the store: nothing signalled "
                       "(it loads the new bundle when it starts)")
            return
        for pid in sorted(_targets(nodes)):
            os.kill(pid, signal.SIGHUP)
        owners = {owner: pid for owner, pid in nodes}
        deadline = time.monotonic() + wait
        seen: dict[str, tuple[str, Any]] = {}
        while len(seen) < len(owners) and time.monotonic() < deadline:
            time.sleep(0.2)
            for outcome, text in db.read_sync(lambda c: c.execute(
                    "SELECT outcome, detail FROM dy_journal WHERE step = 'reloaded' AND id > ? ORDER BY id", (since,))):
                detail = json.loads(text) if text else {}
                if detail.get("owner") in owners:
                    seen[detail["owner"]] = (outcome, detail)
    finally:
        db.close()
    failed = False
    for owner, pid in owners.items():
        if owner not in seen:
            click.echo(f"pid {pid}: no answer within {wait:g} s (see its log)")
            failed = True
            continue
        outcome, detail = seen[owner]
        if outcome != "ok":
            click.echo(f"pid {pid}: refused: {detail.get('reason')}")
            failed = True
            continue
        changed = detail.get("changed", {})
        click.echo(f"pid {pid}: reloaded, {len(changed)} mapping(s) changed")
        for name, c in changed.items():
            click.echo(f"    {name}: {c['from']} → {c['to']}")
    sys.exit(1 if failed else 0)
