"""The `dockyard` command line: check, compile, show-code, dry-run and test; the other commands
are registered from their own modules (library, orders, init, serve, demo, …).

Only the CLI modules know click. Domain errors come up as `DockyardError`s and are turned into
messages on stderr and exit codes here: 0 ok, 1 errors in a spec or an input, 2 usage.
Documents go to stdout; every diagnostic goes to stderr. A spec may be named by its path or, for
the installed warehouse library, without one (`qimen/deliveryorder.create`); an order by its path
or as an example order's name (`tmall-basic`).
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


class _LibraryRef(click.ParamType):  # type: ignore[type-arg]
    """A file, or a name the installed warehouse library resolves (see dockyard.library)."""

    def __init__(self, what: str) -> None:
        self.name = what
        self.what = what

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        from dockyard.library import LibraryError, resolve_order, resolve_path, resolve_spec

        resolve = {"spec": resolve_spec, "order": resolve_order, "path": resolve_path}[self.what]
        try:
            return str(resolve(str(value)))
        except LibraryError as exc:
            self.fail(str(exc), param, ctx)


SPEC = _LibraryRef("spec")  # a spec file, or a library spec: qimen/deliveryorder.create
ORDER = _LibraryRef("order")  # an order file, or an example order: tmall-basic
SPEC_PATH = _LibraryRef("path")  # a file or folder, or a library integration: sf


class _LazyGroup(click.Group):
    """A group whose other commands are imported only when one of them runs (or help lists them).

    `dockyard check one.yaml` must answer at once: importing `serve`, `simulate` or `demo` would
    pull in aiohttp, the service and the simulator, several times the cost of checking a spec."""

    def __init__(self, *args: Any, lazy: dict[str, str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = dict(lazy or {})  # command name → "module:attribute"

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is not None or cmd_name not in self.lazy:
            return command
        import importlib

        module_name, attr = self.lazy[cmd_name].split(":")
        loaded = getattr(importlib.import_module(module_name), attr)
        if not isinstance(loaded, click.Command):  # pragma: no cover - a wrong table entry
            raise TypeError(f"{self.lazy[cmd_name]} is not a click command")
        self.add_command(loaded, cmd_name)
        return loaded


# The commands that live in their own modules, by name → where they are.
_LAZY_COMMANDS = {
    "sign": "dockyard.sign_cli:sign",
    "diff": "dockyard.diff_cli:diff",
    "serve": "dockyard.service_cli:serve",
    "trace": "dockyard.service_cli:trace",
    "dlq": "dockyard.triage_cli:dlq",  # triage_cli adds `dlq groups` and `dlq discard` to it
    "purge": "dockyard.triage_cli:purge",
    "reload": "dockyard.reload_cli:reload",
    "report": "dockyard.service_cli:report",
    "simulate": "dockyard.simulate_cli:simulate",
    "demo": "dockyard.demo_cli:demo",
    "library": "dockyard.library_cli:library",
    "orders": "dockyard.library_cli:orders",
    "init": "dockyard.library_cli:init",
}


@click.group(cls=_LazyGroup, lazy=_LAZY_COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="dockyard")
def main() -> None:
    """Dockyard: compile order-to-warehouse mapping specs and run them."""


def _expand(paths: Sequence[str]) -> list[str]:
    """Spec files as given; a folder stands for its specs (its *.yaml, not the tests)."""
    from dockyard.library import spec_files

    specs = [str(p) for path in paths for p in (spec_files(Path(path)) if Path(path).is_dir() else [Path(path)])]
    if not specs:
        _fail(f"no specs in {', '.join(paths)}", EXIT_USAGE)
    return specs


@main.command()
@click.argument("paths", nargs=-1, required=True, type=SPEC_PATH)
@click.option("--warehouse", "warehouse_file", type=click.Path(exists=True, dir_okay=False), metavar="FILE",
              help="Also check this warehouse config file (context values and wire: settings) against the specs.")
def check(paths: tuple[str, ...], warehouse_file: str | None) -> None:
    """Check specs and report every problem (file:line:col with a caret).

    PATHS are spec files, folders (their specs) or library specs and integrations by name. With
    --warehouse FILE, also check a warehouse's config against them: every context value a spec
    needs is there with its type, and the wire settings stay within what each spec allows."""
    from dockyard.compiler.api import check_file

    specs = _expand(paths)
    errors = warnings = 0
    passed: list[str] = []
    for spec in specs:
        report = check_file(spec)
        _report(report.diagnostics, report.sources)
        errors += sum(1 for d in report.diagnostics if d.is_error)
        warnings += sum(1 for d in report.diagnostics if not d.is_error)
        if report.ok:
            passed.append(spec)
    click.echo(f"{len(specs)} spec(s) checked: {errors} error(s), {warnings} warning(s)", err=True)
    if warehouse_file is not None:
        problems = _check_warehouse(warehouse_file, passed)
        for line in problems:
            click.echo(f"{warehouse_file}: {line}", err=True)
        click.echo(f"{warehouse_file}: {len(problems)} problem(s) against {len(passed)} spec(s)", err=True)
        errors += len(problems)
    if errors:
        sys.exit(EXIT_ERRORS)


def _check_warehouse(path: str, specs: Sequence[str]) -> list[str]:
    """What is wrong with a warehouse config file for these specs, one line each."""
    from dockyard.compiler.api import compile_file
    from dockyard.runtime.wire import WireError, unused_encryption

    context, wire = _read_warehouse(path)
    problems: list[str] = []
    metas = []
    for spec in specs:
        mapping = compile_file(spec)
        try:
            mapping.check_context(context)
        except DockyardError as exc:
            problems.append(f"{mapping.name}: {exc}")
        request = mapping.meta.get("request")
        if request is None:
            continue
        metas.append(request)
        if wire:
            try:
                wire.apply(request, mapping.name)
            except WireError as exc:
                problems.extend(exc.problems)
    if metas:
        problems.extend(f"wire.encrypt {p}: none of these specs lets a warehouse encrypt this field"
                        for p in unused_encryption(wire, metas))
    return problems


@main.command("compile")
@click.argument("paths", nargs=-1, required=True, type=SPEC_PATH)
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(file_okay=False),
              help="The bundle directory to write.")
def compile_cmd(paths: tuple[str, ...], out_dir: str) -> None:
    """Compile specs into a bundle directory (modules + manifest).

    PATHS are spec files, folders (their *.yaml specs, not the tests) or integrations of the
    installed library by name, e.g. `dockyard compile -o build/warehouses.dybundle mappings/acme sf jd`."""
    from dockyard.compiler.api import check_file
    from dockyard.compiler.bundle import build_bundle

    specs = _expand(paths)

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
@click.argument("spec", type=SPEC)
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


def _read_warehouse(path: str) -> tuple[dict[str, Any], Any]:
    """A warehouse config file: its context values and its wire settings."""
    import yaml

    from dockyard.dsl.yaml_nodes import safe_load
    from dockyard.runtime.wire import WireError, split_config

    try:
        data = safe_load(Path(path).read_text(encoding="utf-8"))  # bounded: aliases, depth
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        _fail(f"{path}: cannot read the warehouse config: {exc}", EXIT_USAGE)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        _fail(f"{path}: a warehouse config must be a mapping of name: value (and wire:)", EXIT_USAGE)
    try:
        return split_config(data, path)
    except WireError as exc:
        _fail(str(exc), EXIT_ERRORS)


def _parse_context(pairs: tuple[str, ...], ctx_file: str | None) -> tuple[dict[str, Any], Any]:
    from dockyard.runtime.wire import WireSettings

    ctx: dict[str, Any] = {}
    wire = WireSettings()
    if ctx_file is not None:
        values, wire = _read_warehouse(ctx_file)
        ctx.update(values)
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            _fail(f"--ctx expects NAME=VALUE, got {pair!r}", EXIT_USAGE)
        ctx[key] = value
    return ctx, wire


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


def _load_input(mapping: Any, path: str) -> Any:
    """The input file read by the spec's source format (JSON orders; XML or form callbacks)."""
    if mapping.meta.get("source_format", "json") == "json":
        return _load_order(path)
    try:
        return mapping.parse_input(Path(path).read_bytes())
    except OSError as exc:
        _fail(f"{path}: cannot read the input: {exc}")
    except DockyardError as exc:
        _fail(f"{path}: {exc}")


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
@click.argument("spec", type=SPEC)
@click.argument("order", type=ORDER)
@click.option("--explain", is_flag=True, help="For each output field: the spec line and where its value came from.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object with the body and its metadata.")
@click.option("--ctx", "ctx_pairs", multiple=True, metavar="NAME=VALUE", help="A context value (repeatable).")
@click.option("--warehouse", "--ctx-file", "ctx_file", type=click.Path(exists=True, dir_okay=False), metavar="FILE",
              help="A warehouse config file: its context values and its wire: settings "
                   "(e.g. mappings/qimen/warehouses/acme-3pl.yaml).")
@click.option("--config", "old_config", type=click.Path(exists=True, dir_okay=False), hidden=True,
              help="Deprecated spelling of --warehouse.")
@click.option("--now", "now_text", metavar="ISO-8601", help="The clock's time, e.g. 2023-11-11T00:00:00+08:00.")
@click.option("--test-secrets", is_flag=True, help="Use generated, clearly marked TEST-ONLY secrets.")
@click.option("--secrets-dir", type=click.Path(exists=True, file_okay=False), help="A directory of secret files.")
@click.option("--store", "store_url", metavar="URL", help="Look the idempotency key up in this store (read only).")
@click.option("--request-id", metavar="ID", help="The request id to use (default: a new random one).")
def dry_run(spec: str, order: str, explain: bool, as_json: bool, ctx_pairs: tuple[str, ...],
            ctx_file: str | None, old_config: str | None, now_text: str | None, test_secrets: bool,
            secrets_dir: str | None, store_url: str | None, request_id: str | None) -> None:
    """Run a spec on one order and print the exact request a warehouse would get, short of sending it.

    SPEC is a spec file or a library spec (qimen/deliveryorder.create); ORDER an order file, an
    example order's name (tmall-basic), or for inbound specs the warehouse's response or callback."""
    from dockyard.compiler.api import compile_file
    from dockyard.runtime.serialize import serialize

    if old_config is not None:
        # One meaning per flag: --config is the service config of `serve`, `trace`, `dlq`, `report`.
        click.echo("warning: dry-run --config is deprecated (it names a warehouse config file, not the service "
                   "config); use --warehouse FILE", err=True)
        if ctx_file is not None:
            _fail("give --warehouse FILE once (--config is its deprecated spelling)", EXIT_USAGE)
        ctx_file = old_config
    ctx, wire = _parse_context(ctx_pairs, ctx_file)
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
    examples = {k: v for k, v in mapping.meta.get("examples", {}).items() if k not in ctx}
    if examples:
        click.echo(f"note: using the spec's example config values for {', '.join(sorted(examples))}", err=True)
        ctx.update(examples)
    document = _load_input(mapping, order)
    if mapping.meta.get("request") is not None:
        _dry_run_request(mapping, document, ctx, clock, explain, as_json, test_secrets, secrets_dir, store_url,
                         request_id, order, wire)
        return
    if wire:
        click.echo(f"note: {mapping.name} sends no request; the wire settings of {ctx_file} do not apply", err=True)
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
            payload["lineage"] = [_lineage_json(f) for f in fields]
        click.echo(json.dumps(payload, ensure_ascii=False, indent=2, default=_json_default))
        return
    if explain:
        click.echo("\n".join(_explain_lines(fields)))
        return
    sys.stdout.flush()
    sys.stdout.buffer.write(body + (b"\n" if not body.endswith(b"\n") else b""))
    sys.stdout.flush()


def _secrets_for(request_meta: Any, test_secrets: bool, secrets_dir: str | None) -> Any:
    from dockyard.runtime.secrets import DirSecrets, EnvSecrets, MappingSecrets, Secrets, marked_test_secrets

    providers: list[Any] = []
    if test_secrets:
        click.echo("note: signing with generated TEST-ONLY secrets; the signature will not match a real warehouse",
                   err=True)
        providers.append(MappingSecrets(marked_test_secrets(request_meta)))
    if secrets_dir is not None:
        providers.append(DirSecrets(secrets_dir))
    providers.append(EnvSecrets())
    return Secrets(providers)


def _dry_run_request(mapping: Any, document: Any, ctx: dict[str, Any], clock: Any, explain: bool, as_json: bool,
                     test_secrets: bool, secrets_dir: str | None, store_url: str | None, request_id: str | None,
                     order_path: str, wire: Any) -> None:
    from dockyard.runtime.request import build_request
    from dockyard.runtime.wire import WireError

    meta = mapping.meta["request"]
    if wire:
        try:  # the request as configured for this warehouse: its test secrets include a wire.encrypt key
            meta = wire.apply(meta, mapping.name).meta
        except WireError as exc:
            _fail(f"the warehouse's wire settings do not fit {mapping.name}:\n{exc}")
    secrets = _secrets_for(meta, test_secrets, secrets_dir)
    try:
        _validate(mapping, document)
        fields = mapping.explain(document, ctx, clock)[1] if explain else []
        prepared = build_request(mapping, document, context=ctx, clock=clock, secrets=secrets, request_id=request_id,
                                 wire=wire)
        store_status = _store_status(store_url, prepared) if store_url else None
    except DockyardError as exc:
        # The secret values were resolved above: scrub them from anything shown, whatever the error says.
        _fail(secrets.redact(f"{order_path}: {exc}"))
    if as_json:
        payload = prepared.as_dict()
        payload["store"] = store_status
        if explain:
            payload["lineage"] = [_lineage_json(f) for f in fields]
        click.echo(secrets.redact(json.dumps(payload, ensure_ascii=False, indent=2, default=_json_default)))
        return
    lines: list[str] = []
    if explain:
        lines.extend(_explain_lines(fields))
        lines.append("")
    wire = prepared.request
    lines.append(f"{wire.method} {wire.url}")
    lines.extend(f"{k}: {v}" for k, v in wire.headers)
    lines.append("")
    lines.append(wire.body.decode(prepared.body_encoding, errors="replace"))
    lines.append("")
    if prepared.signature is not None:
        lines.append(f"signature: {prepared.signature} ({prepared.sign_scheme})")
    if prepared.idempotency_key is not None:
        where = f"store: {store_status}" if store_status else "store: not checked (give --store URL)"
        lines.append(f"idempotency key: {prepared.idempotency_key} (rule {prepared.idempotency_rule}; {where})")
    lines.append(f"request id: {prepared.request_id}")
    lines.extend(f"wire: {note}" for note in prepared.notes)
    click.echo(secrets.redact("\n".join(lines)))


def _store_status(url: str, prepared: Any) -> str:
    """What a store says about the key, without changing it."""
    from dockyard.runtime.idempotency import open_store

    if prepared.idempotency_key is None:
        return "no idempotency key"
    with open_store(url) as store:
        record = store.get(prepared.idempotency_key)
    if record is None:
        return "new"
    if record.fingerprint != prepared.fingerprint:
        return f"conflict: the key was first used with another payload ({record.state.value})"
    return {"committed": "duplicate (already delivered)", "reserved": "in flight",
            "in_doubt": "in doubt"}.get(record.state.value, record.state.value)


def _lineage_json(f: Any) -> dict[str, Any]:
    sources = [{"path": p, "value": v} for p, v in f.sources]
    return {"field": f.path, "value": f.value, "spec": f.spec, "sources": sources,
            "lets": list(f.lets), "tables": list(f.tables), "context": list(f.context), "clock": f.clock}


def _explain_lines(fields: Any) -> list[str]:
    lines = []
    for f in fields:
        # A path with [] stands for every element (an aggregate): it has no single value to show.
        origin = [p if "[]" in p else f"{p} = {json.dumps(v, ensure_ascii=False, default=_json_default)}"
                  for p, v in f.sources]
        origin += [f"table {t}" for t in f.tables] + [f"${name}" for name in f.lets]
        origin += [f"$ctx.{c}" for c in f.context] + (["clock"] if f.clock else [])
        value = json.dumps(f.value, ensure_ascii=False, default=_json_default)
        lines.append(f"{f.path} = {value}\n    {f.spec}  <- {', '.join(origin) if origin else 'constant'}")
    return lines


def _validate(mapping: Any, document: Any) -> bool:
    from dockyard.runtime.mapping import schema_problems

    if not isinstance(document, dict):
        raise InputError(f"the order file must hold one JSON object, not a {type(document).__name__}")
    if mapping.source_schema is not None:
        problems = schema_problems(mapping.source_schema, document)
        if problems:
            raise InputError("the order does not match the source schema", mapping.business_key(document), problems)
    return True


@main.command("test")
@click.argument("paths", nargs=-1, required=True, type=SPEC_PATH)
@click.option("--min-coverage", type=click.FloatRange(0, 100), default=None, metavar="N",
              help="Fail when a spec's rule coverage is below N percent.")
def test_cmd(paths: tuple[str, ...], min_coverage: float | None) -> None:
    """Run the mapping tests (*.test.yaml) under PATHS and report rule coverage."""
    from dockyard.compiler.testing import iter_report, run_tests

    run = run_tests(paths)
    for line in iter_report(run, min_coverage):
        click.echo(line)
    if not run.cases and not run.errors:
        _fail("no *.test.yaml files found", EXIT_USAGE)
    low = [c for c in run.coverage if min_coverage is not None and c.percent < min_coverage]
    if run.failed or run.errors or low:
        sys.exit(EXIT_ERRORS)



if __name__ == "__main__":  # pragma: no cover
    main()
