"""The `dockyard` command line: check, compile, show-code and dry-run.

Only this module knows click. Domain errors come up as `DockyardError`s and are turned into
messages on stderr and exit codes here: 0 ok, 1 errors in a spec or an input, 2 usage.
Documents go to stdout; every diagnostic goes to stderr.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, NoReturn

import click

from dockyard import __version__
from dockyard.dsl.diagnostics import Diagnostic, DiagnosticsError, render_all
from dockyard.runtime.errors import DockyardError, InputError, TransformError

EXIT_ERRORS = 1
EXIT_USAGE = 2


def _fail(message: str, code: int = EXIT_ERRORS) -> NoReturn:
    click.echo(message, err=True)
    sys.exit(code)


def _report(diags: Sequence[Diagnostic], sources: dict[str, str]) -> None:
    if diags:
        click.echo(render_all(diags, sources), err=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="dockyard")
def main() -> None:
    """Dockyard: compile order-to-warehouse mapping specs and run them."""


@main.command()
@click.argument("specs", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
def check(specs: tuple[str, ...]) -> None:
    """Check specs and report every problem (file:line:col with a caret)."""
    from dockyard.compiler.api import check_file

    errors = warnings = 0
    for spec in specs:
        report = check_file(spec)
        _report(report.diagnostics, report.sources)
        errors += sum(1 for d in report.diagnostics if d.is_error)
        warnings += sum(1 for d in report.diagnostics if not d.is_error)
    click.echo(f"{len(specs)} spec(s) checked: {errors} error(s), {warnings} warning(s)", err=True)
    if errors:
        sys.exit(EXIT_ERRORS)


@main.command("compile")
@click.argument("specs", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(file_okay=False),
              help="The bundle directory to write.")
def compile_cmd(specs: tuple[str, ...], out_dir: str) -> None:
    """Compile specs into a bundle directory (modules + manifest)."""
    from dockyard.compiler.api import check_file
    from dockyard.compiler.bundle import build_bundle

    try:
        manifest = build_bundle(specs, out_dir)
    except DiagnosticsError as exc:
        _report(exc.diagnostics, exc.sources)
        _fail(f"{sum(1 for d in exc.diagnostics if d.is_error)} error(s); no bundle written")
    for spec in specs:  # warnings of specs that compiled
        report = check_file(spec)
        _report([d for d in report.diagnostics if not d.is_error], report.sources)
    click.echo(f"wrote {out_dir}: {', '.join(sorted(manifest['mappings']))}", err=True)


@main.command("show-code")
@click.argument("spec", type=click.Path(exists=True, dir_okay=False))
def show_code(spec: str) -> None:
    """Print the Python module generated for a spec."""
    from dockyard.compiler.api import compile_source

    try:
        compiled = compile_source(spec)
    except DiagnosticsError as exc:
        _report(exc.diagnostics, exc.sources)
        sys.exit(EXIT_ERRORS)
    _report(compiled.warnings, {compiled.spec.path: compiled.spec.text})
    click.echo(compiled.source, nl=False)


def _parse_context(pairs: tuple[str, ...], ctx_file: str | None) -> dict[str, Any]:
    ctx: dict[str, Any] = {}
    if ctx_file is not None:
        import yaml

        try:
            data = yaml.safe_load(Path(ctx_file).read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            _fail(f"{ctx_file}: cannot read the context file: {exc}", EXIT_USAGE)
        if not isinstance(data, dict):
            _fail(f"{ctx_file}: the context file must be a mapping of name: value", EXIT_USAGE)
        ctx.update({str(k): v for k, v in data.items()})
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            _fail(f"--ctx expects NAME=VALUE, got {pair!r}", EXIT_USAGE)
        ctx[key] = value
    return ctx


def _names(pairs: tuple[str, ...]) -> list[str]:
    return [pair.partition("=")[0] for pair in pairs]


def _typed_context(ctx: dict[str, Any], declared: Sequence[Sequence[Any]], from_text: set[str]) -> dict[str, Any]:
    """`--ctx NAME=VALUE` gives text; read it as the type the mapping declares for NAME."""
    kinds = {str(name): str(kind) for name, kind, _required in declared}
    for name in from_text:
        kind, text = kinds.get(name), ctx[name]
        if kind == "int":
            try:
                ctx[name] = int(text)
            except ValueError:
                _fail(f"--ctx {name}: expected a whole number, got {text!r}", EXIT_USAGE)
        elif kind == "bool":
            if text.lower() not in ("true", "false"):
                _fail(f"--ctx {name}: expected true or false, got {text!r}", EXIT_USAGE)
            ctx[name] = text.lower() == "true"
    return ctx


def _load_order(path: str) -> Any:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        _fail(f"{path}: cannot read the order: {exc}")
    try:
        # Numbers are read as Decimal so that money given as a JSON number stays exact.
        return json.loads(text, parse_float=Decimal)
    except json.JSONDecodeError as exc:
        _fail(f"{path}:{exc.lineno}:{exc.colno}: the order is not valid JSON: {exc.msg}")


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(type(value).__name__)


@main.command("dry-run")
@click.argument("spec", type=click.Path(exists=True, dir_okay=False))
@click.argument("order", type=click.Path(exists=True, dir_okay=False))
@click.option("--explain", is_flag=True, help="For each output field: the spec line and where its value came from.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object with the body and its metadata.")
@click.option("--ctx", "ctx_pairs", multiple=True, metavar="NAME=VALUE", help="A context value (repeatable).")
@click.option("--ctx-file", type=click.Path(exists=True, dir_okay=False), help="A YAML file of context values.")
@click.option("--now", "now_text", metavar="ISO-8601", help="The clock's time, e.g. 2023-11-11T00:00:00+08:00.")
def dry_run(spec: str, order: str, explain: bool, as_json: bool, ctx_pairs: tuple[str, ...],
            ctx_file: str | None, now_text: str | None) -> None:
    """Run a spec on one order and print the exact document a warehouse would get."""
    from dockyard.compiler.api import compile_file
    from dockyard.runtime.serialize import serialize

    ctx = _parse_context(ctx_pairs, ctx_file)
    clock = None
    if now_text is not None:
        try:
            clock = datetime.fromisoformat(now_text)
        except ValueError:
            _fail(f"--now expects an ISO-8601 date-time, got {now_text!r}", EXIT_USAGE)
        if clock.tzinfo is None:
            _fail("--now needs a UTC offset, e.g. 2023-11-11T00:00:00+08:00", EXIT_USAGE)
    try:
        mapping = compile_file(spec)
    except DiagnosticsError as exc:
        _report(exc.diagnostics, exc.sources)
        sys.exit(EXIT_ERRORS)
    ctx = _typed_context(ctx, mapping.meta["context"], from_text=set(_names(ctx_pairs)))
    document = _load_order(order)
    try:
        if explain:
            doc, fields = mapping.explain(document, ctx, clock) if _validate(mapping, document) else ({}, [])
        else:
            _validate(mapping, document)
            doc = mapping.transform(document, ctx, clock)
        body = serialize(doc, mapping.target)
    except InputError as exc:
        _fail(f"{order}: {exc}")
    except TransformError as exc:
        _fail(f"{order}: {exc}")
    except DockyardError as exc:
        _fail(f"{order}: {exc}")
    encoding = mapping.target.xml.encoding if mapping.target.xml is not None else "utf-8"
    if as_json:
        payload: dict[str, Any] = {
            "mapping": mapping.name, "version": mapping.version, "format": mapping.target.format,
            "content_type": mapping.target.content_type, "body": body.decode(encoding),
        }
        if explain:
            payload["lineage"] = [
                {"field": f.path, "value": f.value, "spec": f.spec,
                 "sources": [{"path": p, "value": v} for p, v in f.sources],
                 "lets": list(f.lets), "tables": list(f.tables), "context": list(f.context), "clock": f.clock}
                for f in fields]
        click.echo(json.dumps(payload, ensure_ascii=False, indent=2, default=_json_default))
        return
    if explain:
        for f in fields:
            # A path with [] stands for every element (an aggregate): it has no single value to show.
            origin = [p if "[]" in p else f"{p} = {json.dumps(v, ensure_ascii=False, default=_json_default)}"
                      for p, v in f.sources]
            origin += [f"table {t}" for t in f.tables] + [f"${name}" for name in f.lets]
            origin += [f"$ctx.{c}" for c in f.context] + (["clock"] if f.clock else [])
            value = json.dumps(f.value, ensure_ascii=False, default=_json_default)
            click.echo(f"{f.path} = {value}\n    {f.spec}  <- {', '.join(origin) if origin else 'constant'}")
        return
    sys.stdout.flush()
    sys.stdout.buffer.write(body + (b"\n" if not body.endswith(b"\n") else b""))
    sys.stdout.flush()


def _validate(mapping: Any, document: Any) -> bool:
    from dockyard.runtime.mapping import schema_problems

    if not isinstance(document, dict):
        raise InputError(f"the order file must hold one JSON object, not a {type(document).__name__}")
    if mapping.source_schema is not None:
        problems = schema_problems(mapping.source_schema, document)
        if problems:
            raise InputError("the order does not match the source schema", mapping.business_key(document), problems)
    return True


if __name__ == "__main__":  # pragma: no cover
    main()
