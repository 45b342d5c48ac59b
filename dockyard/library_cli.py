"""The commands for a Dockyard that is installed rather than cloned: `dockyard library` (what the
installed warehouse library holds), `dockyard orders generate` (seeded sample orders) and
`dockyard init [DIR]` (a project to start from: see dockyard.scaffold)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

__all__ = ["init", "library", "orders"]


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the library as JSON.")
@click.option("--path", "path_only", is_flag=True, help="Print only the library's folder.")
def library(as_json: bool, path_only: bool) -> None:
    """List the installed warehouse library: integrations, specs with versions, flows, signing
    schemes, and what a warehouse's config may change (wire settings).

    Every spec listed can be named without a path, e.g. `dockyard dry-run qimen/deliveryorder.create
    tmall-basic`."""
    from dockyard import __version__
    from dockyard.library import example_orders, integrations, library_root

    root = library_root()
    if path_only:
        click.echo(str(root))
        return
    found = integrations()
    if as_json:
        click.echo(json.dumps({"dockyard": __version__, "path": str(root),
                               "integrations": [i.as_json() for i in found],
                               "example_orders": sorted(example_orders())}, ensure_ascii=False, indent=2))
        return
    click.echo(f"Dockyard {__version__} warehouse library: {root}")
    for integration in found:
        click.echo("")
        signing = ", ".join(integration.signing) or "none"
        click.echo(f"{integration.name}  (signing: {signing})")
        width = max(len(s.ref) for s in integration.specs)
        for spec in integration.specs:
            line = f"  {spec.ref:<{width}}  {spec.version:<7} {spec.kind:<8}"
            if spec.kind == "request":
                line += f" {spec.method} {spec.url} ({spec.target})"
                if spec.sign:
                    line += f", signed {spec.sign}"
                if spec.duplicate_rule:
                    line += f", duplicates: {spec.duplicate_rule}"
            click.echo(line.rstrip())
            changeable = [f"sign {', '.join(spec.configurable)}"] if spec.configurable else []
            if spec.encryptable:
                changeable.append(f"encrypt {', '.join(spec.encryptable)}")
            if changeable:
                click.echo(f"  {'':<{width}}  a warehouse's config may set: {'; '.join(changeable)}")
        for config in integration.configs:
            click.echo(f"  example config: {config.relative_to(integration.path.parent)}")
    click.echo("")
    click.echo(f"example orders: {', '.join(sorted(example_orders()))}")


@click.group()
def orders() -> None:
    """Sample orders."""


@orders.command("generate")
@click.option("-n", "count", type=click.IntRange(1, 1_000_000), default=100, show_default=True,
              help="How many orders.")
@click.option("--seed", type=int, default=42, show_default=True, help="The same seed gives the same orders.")
@click.option("--format", "fmt", type=click.Choice(["array", "lines"]), default="array", show_default=True,
              help="A JSON array (the body of POST /orders/batch) or one JSON object per line.")
@click.option("-o", "--out", type=click.Path(dir_okay=True, path_type=Path), default=None,
              help="A file to write (default: stdout), or an existing folder: one ORDER_NO.json per order.")
def generate(count: int, seed: int, fmt: str, out: Path | None) -> None:
    """Generate realistic, seeded sample orders (valid against the order schema).

    Five channels, exact decimal money (some with three-decimal discounts), qty-0 and gift lines,
    time stamps with and without offsets, masked mobiles, untrimmed addresses: the quirks of real
    feeds. `dockyard orders generate -n 1 -o .` writes one order file to dry-run."""
    from dockyard.sample_orders import generate as make

    made = make(count, seed)
    if out is not None and out.is_dir():
        for order in made:
            (out / f"{order['order_no']}.json").write_text(json.dumps(order, ensure_ascii=False, indent=2) + "\n",
                                                          encoding="utf-8")
        click.echo(f"wrote {len(made)} order file(s) to {out}", err=True)
        return
    if fmt == "lines":
        text = "".join(json.dumps(o, ensure_ascii=False) + "\n" for o in made)
    else:
        text = json.dumps(made, ensure_ascii=False, indent=2) + "\n"
    if out is None:
        sys.stdout.write(text)
    else:
        out.write_text(text, encoding="utf-8")
        click.echo(f"wrote {len(made)} order(s) to {out}", err=True)


@click.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path), default=Path())
@click.option("--from", "source", default="qimen", show_default=True, metavar="INTEGRATION",
              help="The library integration to copy into the project for editing: qimen, sf, jd or cainiao.")
def init(directory: Path, source: str) -> None:
    """Start a project in DIRECTORY (default: here): a service config routing to the library's
    integrations, a copy of one integration to edit, example orders, a mapping test, secrets
    marked TEST-ONLY, a compiled bundle and a README of next steps.

    Then, in DIRECTORY: `dockyard test mappings/`, `dockyard dry-run …` and `dockyard serve` work
    as they are. Existing files are never overwritten."""
    from dockyard.dsl.diagnostics import DiagnosticsError
    from dockyard.runtime.errors import DockyardError
    from dockyard.scaffold import INTEGRATIONS, ScaffoldError, scaffold

    if source not in INTEGRATIONS:
        click.echo(f"--from must be one of {', '.join(INTEGRATIONS)}, not {source!r}", err=True)
        sys.exit(2)
    try:
        project = scaffold(directory, source)
    except ScaffoldError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    except DiagnosticsError as exc:  # pragma: no cover - the shipped library compiles
        click.echo(str(exc), err=True)
        sys.exit(1)
    except (OSError, DockyardError) as exc:
        click.echo(f"error: cannot write the project in {directory}: {exc}", err=True)
        sys.exit(1)
    click.echo(f"created a Dockyard project in {project.root}:", err=True)
    for line in project.summary:
        click.echo(f"  {line}", err=True)
    click.echo(f"next steps: {project.root / 'README.md'}", err=True)
