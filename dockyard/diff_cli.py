"""The `dockyard diff OLD_SPEC NEW_SPEC` command: which changes between two versions of a spec can break
the warehouse side.

This module owns only the command line: one line per change, a summary, and the exit code (0 no
breaking change, 1 a breaking change or a spec with errors, 2 usage). What counts as a change and
which changes are breaking lives in `dockyard.compiler.diff`. `dockyard.cli` adds the command to its
group (`main.add_command(diff)`).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import click

from dockyard.dsl.diagnostics import DiagnosticsError, render_all

__all__ = ["diff", "format_change"]

EXIT_BREAKING = 1
EXIT_ERRORS = 1

if TYPE_CHECKING:  # the compiler is loaded only when the command runs, as for the other commands
    from dockyard.compiler.diff import Change


def format_change(change: Change) -> str:
    """`BREAKING  removed  deliveryOrder.remark` / `ok  added  deliveryOrder.buyerMessage (optional)`."""
    flag = "BREAKING" if change.breaking else "ok"
    detail = f" ({change.detail})" if change.detail else ""
    return f"{flag}  {change.kind}  {change.path}{detail}"


@click.command("diff")
@click.argument("old_spec", type=click.Path(exists=True, dir_okay=False))
@click.argument("new_spec", type=click.Path(exists=True, dir_okay=False))
def diff(old_spec: str, new_spec: str) -> None:
    """Compare two versions of a spec: output fields, target settings, tables and the request.

    A change is breaking when a receiver that handled everything the old spec produced could
    reject or misread what the new one produces (a field removed, made optional or retyped; a
    table entry changed or removed; the format, signature, encryption or idempotency changed).
    Exit status: 0 when no change is breaking, 1 when one is (or a spec has errors), 2 for usage.
    """
    from dockyard.compiler.diff import diff_files

    try:
        report = diff_files(old_spec, new_spec)
    except DiagnosticsError as exc:
        click.echo(render_all(exc.diagnostics, exc.sources), err=True)
        errors = sum(1 for d in exc.diagnostics if d.is_error)
        click.echo(f"{errors} error(s); the specs were not compared", err=True)
        sys.exit(EXIT_ERRORS)
    for change in report.changes:
        click.echo(format_change(change))
    breaking = sum(1 for c in report.changes if c.breaking)
    if not report.changes:
        click.echo(f"no changes: {report.old_path} → {report.new_path}")
    else:
        click.echo(f"{len(report.changes)} change(s), {breaking} breaking: {report.old_path} → {report.new_path}")
    sys.exit(EXIT_BREAKING if breaking else 0)
