"""The runtime's error types. Every error Dockyard raises on purpose derives from `DockyardError`.

These live in the runtime because the runtime depends on nothing else in Dockyard: the compiler
and the CLI import them from here, never the other way round. All of them pickle.
"""

from __future__ import annotations

__all__ = [
    "BundleError",
    "ContextError",
    "DockyardError",
    "InputError",
    "SerializationError",
    "TransformError",
]


class DockyardError(Exception):
    """Base of every error Dockyard raises on purpose."""


class BundleError(DockyardError):
    """A compiled bundle is missing, of another format, or does not match its manifest."""


class ContextError(DockyardError):
    """A per-warehouse context value the mapping declares is missing or of the wrong type."""


class InputError(DockyardError):
    """An input document (an order, a callback) is malformed or fails its source schema.

    `problems` lists each violation as (path, message), e.g. ("items[2].qty", "is not an integer").
    """

    def __init__(self, message: str, key: str | None = None,
                 problems: tuple[tuple[str, str], ...] = ()) -> None:
        self.message = message
        self.key = key
        self.problems = tuple(problems)
        super().__init__(message, key, self.problems)

    def __str__(self) -> str:
        head = self.message if self.key is None else f"order {self.key}: {self.message}"
        if not self.problems:
            return head
        return head + "".join(f"\n  {path or '(root)'}: {msg}" for path, msg in self.problems)


class TransformError(DockyardError):
    """A mapping failed on one input. Names the spec location, the output field and the business key."""

    def __init__(self, message: str, *, location: str | None = None, field: str | None = None,
                 key: str | None = None, mapping: str | None = None,
                 problems: tuple[tuple[str, str], ...] = ()) -> None:
        self.message = message
        self.location = location
        self.field = field
        self.key = key
        self.mapping = mapping
        self.problems = tuple(problems)
        super().__init__(message, location, field, key, mapping, self.problems)

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild_transform_error,
                (self.message, self.location, self.field, self.key, self.mapping, self.problems))

    def __str__(self) -> str:
        where = f"{self.location}: " if self.location else ""
        parts = [f"{where}{self.message}"]
        if self.field:
            parts.append(f"field {self.field}")
        if self.key is not None:
            parts.append(f"order {self.key}")
        text = "; ".join(parts)
        return text + "".join(f"\n  {path or '(root)'}: {msg}" for path, msg in self.problems)


def _rebuild_transform_error(message: str, location: str | None, field: str | None, key: str | None,
                             mapping: str | None, problems: tuple[tuple[str, str], ...]) -> TransformError:
    return TransformError(message, location=location, field=field, key=key, mapping=mapping, problems=problems)


class SerializationError(DockyardError):
    """A document value cannot be written in the target format (names the field path)."""

    def __init__(self, message: str, path: str = "") -> None:
        self.message = message
        self.path = path
        super().__init__(message, path)

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message
