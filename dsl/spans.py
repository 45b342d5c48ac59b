"""Source positions: the one `Span` type every stage uses, and the offset arithmetic behind it.

Everything a person sees as a location (``file:line:col``) is a `Span`. Lines and columns are
1-based, as editors show them. YAML marks are 0-based and Lark positions are 1-based; the
conversions live here and nowhere else, so that the two never get mixed up.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

__all__ = ["SourceText", "Span"]


@dataclass(frozen=True, slots=True)
class Span:
    """A range in one source file: start (inclusive) to end (exclusive), 1-based line and column."""

    file: str
    line: int
    col: int
    end_line: int
    end_col: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"

    @property
    def width(self) -> int:
        """Columns the caret underline covers on the first line (at least 1)."""
        if self.end_line != self.line:
            return 1
        return max(1, self.end_col - self.col)


@dataclass(frozen=True)
class SourceText:
    """The text of a source file with a fast offset → (line, col) conversion."""

    name: str
    text: str
    _line_starts: list[int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        starts = [0]
        for i, ch in enumerate(self.text):
            if ch == "\n":
                starts.append(i + 1)
        object.__setattr__(self, "_line_starts", starts)

    def position(self, offset: int) -> tuple[int, int]:
        """1-based (line, col) of a 0-based character offset."""
        offset = max(0, min(offset, len(self.text)))
        line_index = bisect.bisect_right(self._line_starts, offset) - 1
        return line_index + 1, offset - self._line_starts[line_index] + 1

    def span(self, start: int, end: int) -> Span:
        """The span of the character offsets [start, end)."""
        line, col = self.position(start)
        end_line, end_col = self.position(max(start, end))
        return Span(self.name, line, col, end_line, end_col)

    def line_text(self, line: int) -> str:
        """The text of a 1-based line, without its newline ('' past the end)."""
        if line < 1 or line > len(self._line_starts):
            return ""
        start = self._line_starts[line - 1]
        end = self.text.find("\n", start)
        return self.text[start:] if end < 0 else self.text[start:end].rstrip("\r")
