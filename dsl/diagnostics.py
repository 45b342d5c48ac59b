"""Diagnostics: what a check found, where, and how it is shown to a person.

A `Diagnostic` carries a `Span`; rendering happens later, either as one
``file:line:col: severity: message`` line for logs or with the source line and a caret for
people. Errors of every stage derive from `DockyardError` and pickle cleanly.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from dockyard.dsl.spans import Span
from dockyard.runtime.errors import DockyardError

__all__ = [
    "Diagnostic",
    "DiagnosticsError",
    "DockyardError",
    "Severity",
    "display_path",
    "render",
    "render_all",
]


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """One finding of a check. `code` is a stable kebab-case name, pinned by the tests."""

    span: Span
    message: str
    code: str
    severity: Severity = Severity.ERROR
    hint: str | None = None

    @property
    def is_error(self) -> bool:
        return self.severity is Severity.ERROR

    def sort_key(self) -> tuple[str, int, int, str]:
        return (self.span.file, self.span.line, self.span.col, self.message)

    def one_line(self) -> str:
        text = f"{self.span}: {self.severity.value}: {self.message}"
        if self.hint:
            text += f" ({self.hint})"
        return text


def render(diag: Diagnostic, sources: Mapping[str, str] | None = None) -> str:
    """`file:line:col: severity: message`, then the source line and a caret under the span."""
    head = f"{diag.span}: {diag.severity.value}: {diag.message}"
    lines = [head]
    text = (sources or {}).get(diag.span.file)
    if text is not None:
        all_lines = text.splitlines()
        if 1 <= diag.span.line <= len(all_lines):
            src = all_lines[diag.span.line - 1].rstrip("\r")
            # Tabs keep their width in the caret line so the caret lines up under the text.
            pad = "".join("\t" if ch == "\t" else " " for ch in src[: diag.span.col - 1])
            width = min(diag.span.width, max(1, len(src) - diag.span.col + 1))
            lines.append(f"    {src}")
            lines.append(f"    {pad}^{'~' * (width - 1)}")
    if diag.hint:
        lines.append(f"    hint: {diag.hint}")
    return "\n".join(lines)


def render_all(diags: Iterable[Diagnostic], sources: Mapping[str, str] | None = None) -> str:
    return "\n".join(render(d, sources) for d in diags)


class DiagnosticsError(DockyardError):
    """A spec (or config) did not pass its checks; carries every diagnostic found in one run."""

    def __init__(self, diagnostics: list[Diagnostic], sources: Mapping[str, str] | None = None) -> None:
        self.diagnostics = sorted(diagnostics, key=Diagnostic.sort_key)
        self.sources = dict(sources or {})
        super().__init__(self.diagnostics, self.sources)

    def __str__(self) -> str:
        errors = [d for d in self.diagnostics if d.is_error]
        head = f"{len(errors)} error(s)"
        return head + "\n" + render_all(self.diagnostics, self.sources)

    def __reduce__(self) -> tuple[type[DiagnosticsError], tuple[list[Diagnostic], dict[str, str]]]:
        return (DiagnosticsError, (self.diagnostics, self.sources))


def display_path(path: str | os.PathLike[str]) -> str:
    """The spec path as messages and generated comments show it: relative to the working
    directory when inside it, so that output does not depend on where a checkout lives."""
    text = os.fspath(path)
    try:
        rel = os.path.relpath(text)
    except ValueError:
        return text
    return text if rel.startswith("..") else rel
