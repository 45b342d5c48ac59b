"""Generated names. User names never become Python identifiers: every local, temporary and
module constant is named here from a counter, under a prefix that user text cannot produce.
"""

from __future__ import annotations

from collections import Counter
from typing import ClassVar

__all__ = ["Names"]


class Names:
    """Hands out `_v1`, `_t2`, `_C3`, … — one counter per prefix, deterministic per module."""

    PREFIXES: ClassVar[dict[str, str]] = {
        "value": "_v", "temp": "_t", "object": "_o", "list": "_e", "item": "_i", "index": "_j",
        "position": "_p", "let": "_l", "lambda": "_a", "const": "_C", "table": "_T", "read": "_r",
    }

    def __init__(self) -> None:
        self._counts: Counter[str] = Counter()

    def new(self, kind: str) -> str:
        self._counts[kind] += 1
        return f"{self.PREFIXES[kind]}{self._counts[kind]}"
