"""A small writer for generated Python: indented blocks, and the line → spec-field source map.

Every line written while a field is current is mapped to that field, so a failure at any line of
generated code is reported as the spec location and the output field it was computing.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from dockyard.dsl.spans import Span

__all__ = ["Emitter", "comment_safe"]


def comment_safe(text: str) -> str:
    """User text for a `#` comment: anything that could end the line is escaped, so the text stays
    inside the comment whatever it holds."""
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)


class Emitter:
    def __init__(self, first_line: int = 1) -> None:
        self.lines: list[str] = []
        self.depth = 0
        self.first_line = first_line  # the module line number of lines[0], set when the shell is known
        self.fields: list[tuple[str, int, int, str]] = []  # (file, line, col, field path)
        self.line_field: dict[int, int] = {}  # index into self.lines → index into self.fields
        self._current: int | None = None
        self._indexes: dict[tuple[str, int, int, str], int] = {}

    def line(self, text: str = "", at: int | None = None) -> None:
        """Write a line, mapped to field `at`, or else to the current field (if any)."""
        field = at if at is not None else self._current
        if field is not None:
            self.line_field[len(self.lines)] = field
        self.lines.append(("    " * self.depth + text) if text else "")

    def repeat(self, start: int, end: int) -> None:
        """Write lines[start:end] again at the current depth (they were written at depth 1), each
        mapped to the field it was mapped to: the same statements in a second function."""
        indent = "    " * (self.depth - 1)
        for i in range(start, end):
            field = self.line_field.get(i)
            if field is not None:
                self.line_field[len(self.lines)] = field
            text = self.lines[i]
            self.lines.append(indent + text if text else "")

    def register(self, span: Span, path: str) -> int:
        """Add a field to the table without writing anything; returns its index. A field written
        again (a module's second variant of a function) keeps its first index."""
        entry = (span.file, span.line, span.col, path)
        index = self._indexes.get(entry)
        if index is None:
            self.fields.append(entry)
            index = self._indexes[entry] = len(self.fields) - 1
        return index

    def comment(self, index: int) -> None:
        """The comment that points a reader from the generated code back to the spec."""
        file, line, col, path = self.fields[index]
        self.line(f"# {comment_safe(file)}:{line}:{col} {comment_safe(path)}", at=index)

    @contextmanager
    def block(self, header: str, at: int | None = None) -> Iterator[None]:
        """An indented block under `header`; the header line mapped to field `at` (or the current
        field), as a condition that reads the input can fail there."""
        self.line(header, at=at)
        self.depth += 1
        try:
            yield
        finally:
            self.depth -= 1

    @contextmanager
    def field(self, span: Span, path: str) -> Iterator[int]:
        """Map the lines written inside to (span, path); yields the field's index."""
        index = self.register(span, path)
        outer = self._current
        self._current = index
        self.comment(index)
        try:
            yield index
        finally:
            self._current = outer

    def source_map(self, offset: int) -> dict[int, int]:
        """Module line number → field index, for lines placed `offset` lines into the module."""
        return {offset + i: f for i, f in self.line_field.items()}
