"""The compiler's entry points, chaining the stages: parse → check → generate → compile → load.

`compile_file` returns a ready `CompiledMapping`; `compile_source` stops at the generated text
(for `show-code`, bundles and golden tests); `check_file` returns only the diagnostics;
`compile_expression` compiles one bare expression (registry examples, tests).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dockyard.compiler.checks import CheckResult, check_expression, check_spec
from dockyard.dsl.diagnostics import Diagnostic, DiagnosticsError, display_path
from dockyard.dsl.parser import ExprSyntaxError, parse_expression
from dockyard.dsl.spans import Span
from dockyard.dsl.spec import Spec, TableDef
from dockyard.dsl.spec_parser import parse_spec
from dockyard.dsl.types import Type

if TYPE_CHECKING:
    from dockyard.runtime.mapping import CompiledMapping

# Code generation (Jinja2) and the runtime are imported by the functions that need them, so that
# `check_file` (and `dockyard check`) costs only the parse and the checks.

__all__ = ["CheckReport", "CompiledSource", "check_file", "compile_expression", "compile_file", "compile_source"]


@dataclass(frozen=True)
class CheckReport:
    path: str
    diagnostics: list[Diagnostic]
    sources: dict[str, str]
    spec: Spec | None
    checked: CheckResult | None

    @property
    def ok(self) -> bool:
        return self.spec is not None and not any(d.is_error for d in self.diagnostics)

    def raise_for_errors(self) -> None:
        if not self.ok:
            raise DiagnosticsError(self.diagnostics, self.sources)


@dataclass(frozen=True)
class CompiledSource:
    spec: Spec
    source: str  # the generated module
    warnings: list[Diagnostic]


def check_file(path: str | os.PathLike[str], text: str | None = None, *,
               root: str | os.PathLike[str] | None = None) -> CheckReport:
    """Parse and check a spec. Messages and generated code name it relative to the working
    directory, or, with `root`, relative to that folder (bundles: the same bytes from anywhere)."""
    base = None
    if root is None:
        shown = display_path(path)
    else:
        shown = Path(os.path.relpath(Path(path).absolute(), Path(root).absolute())).as_posix()
        base = Path(path).parent
        if text is None:
            try:
                text = Path(path).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                diag = Diagnostic(Span(shown, 1, 1, 1, 1), f"cannot read the spec: {exc}", "spec-read")
                return CheckReport(shown, [diag], {}, None, None)
    parsed = parse_spec(shown, text, base=base)
    diags = list(parsed.diagnostics)
    checked = None
    if parsed.spec is not None:
        checked = check_spec(parsed.spec)
        diags.extend(checked.diagnostics)
    diags.sort(key=Diagnostic.sort_key)
    return CheckReport(shown, diags, parsed.files, parsed.spec, checked)


def compile_source(path: str | os.PathLike[str], text: str | None = None, *, coverage: bool = False,
                   root: str | os.PathLike[str] | None = None) -> CompiledSource:
    """Check a spec and generate its module; raises DiagnosticsError listing every error.
    `coverage=True` generates the instrumented variant for `dockyard test`; `root` names the spec
    relative to that folder (see `check_file`)."""
    from dockyard.compiler.codegen import generate_module

    report = check_file(path, text, root=root)
    report.raise_for_errors()
    assert report.spec is not None and report.checked is not None
    source = generate_module(report.spec, report.checked, coverage=coverage)
    try:
        compile(source, f"<dockyard:{report.spec.name}>", "exec", dont_inherit=True)
    except SyntaxError as exc:  # an emitter bug: report it against the spec, not as a crash later
        span = Span(report.path, 1, 1, 1, 1)
        raise DiagnosticsError([Diagnostic(span, f"internal compiler error: generated code does not compile: {exc}",
                                           "internal")], report.sources) from exc
    warnings = [d for d in report.diagnostics if not d.is_error]
    return CompiledSource(report.spec, source, warnings)


def compile_file(path: str | os.PathLike[str], text: str | None = None, *, coverage: bool = False) -> CompiledMapping:
    """Compile a spec file into a ready mapping: `compile_file(p).transform(order) -> dict`."""
    from dockyard.runtime.mapping import CompiledMapping, load_module

    compiled = compile_source(path, text, coverage=coverage)
    module = load_module(compiled.source, f"<dockyard:{compiled.spec.path}>", f"dockyard_mapping_{compiled.spec.name}")
    return CompiledMapping(module, compiled.source, compiled.spec.source_schema)


class CompiledExpression:
    """One compiled bare expression; `evaluate(doc)` runs it (None means missing)."""

    def __init__(self, text: str, source: str, type_: Type) -> None:
        self.text = text
        self.source = source
        self.type = type_
        from dockyard.runtime.mapping import load_module

        module = load_module(source, f"<dockyard:expr {text[:40]!r}>", "dockyard_expression")
        self._fn = module.evaluate

    def evaluate(self, document: Mapping[str, Any] | None = None, context: Mapping[str, Any] | None = None,
                 clock: Any = None) -> Any:
        import decimal

        from dockyard.runtime.mapping import _DECIMAL_CONTEXT, _as_clock

        with decimal.localcontext(_DECIMAL_CONTEXT):
            return self._fn(document or {}, context or {}, _as_clock(clock))


def compile_expression(text: str, source_schema: Mapping[str, Any] | None = None,
                       tables: Mapping[str, Mapping[str, str]] | None = None,
                       context: Mapping[str, Type] | None = None) -> CompiledExpression:
    """Compile one expression; raises DiagnosticsError on syntax or type errors."""
    from dockyard.compiler.codegen import generate_expression_module

    try:
        expr = parse_expression(text)
    except ExprSyntaxError as exc:
        raise DiagnosticsError([exc.diagnostic], {"<expr>": text}) from None
    span = Span("<expr>", 1, 1, 1, 1)
    table_defs = {name: TableDef(name, span, dict(rows)) for name, rows in (tables or {}).items()}
    checked, t = check_expression(expr, source_schema, table_defs, context)
    if not checked.ok:
        raise DiagnosticsError(checked.diagnostics, {"<expr>": text})
    return CompiledExpression(text, generate_expression_module(expr, checked, table_defs), t)
