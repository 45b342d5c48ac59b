"""Rule coverage: what a mapping's tests exercised, recorded by an instrumented module.

`dockyard test` compiles each spec a second time with instrumentation; the generated code calls
the recorder at every output field, every branch of every conditional (`if`, `??`, `$where`,
`$when`) and every table lookup. The production module has none of these calls.
"""

from __future__ import annotations

from collections.abc import Hashable

TYPE_CHECKING = False  # `typing` costs a fresh process ~3.5 ms: see runtime/records.py
if TYPE_CHECKING:
    from typing import Any

__all__ = ["CoverageRecorder"]


class CoverageRecorder:
    # A plain class, not a dataclass: the runtime API imports this module, and importing
    # dataclasses (with inspect) would cost every process that loads a bundle several ms.
    def __init__(self, hits: set[tuple[Hashable, ...]] | None = None) -> None:
        self.hits: set[tuple[Hashable, ...]] = set() if hits is None else hits

    def __repr__(self) -> str:
        return f"CoverageRecorder(hits={self.hits!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CoverageRecorder) and self.hits == other.hits

    __hash__ = None  # type: ignore[assignment]  # mutable, like the dataclass it was

    def value(self, index: int, value: Any) -> Any:
        """An output field's value: records that it was produced, present or absent."""
        self.hits.add(("field", index, value is not None))
        return value

    def branch(self, index: int, taken: int) -> bool:
        """A branch taken (1 = then/value/kept/true, 0 = else/default/dropped/false); always true,
        so the call can stand in front of the branch's own value with `and`."""
        self.hits.add(("branch", index, taken))
        return True

    def key(self, table: str, key: Any) -> Any:
        """A table lookup's key; whether it hit a row or the default is decided by the report."""
        self.hits.add(("table", table, key))
        return key
