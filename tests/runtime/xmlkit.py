"""What the XML writer's property tests share: the full (checking, path-naming) tree writer as the
reference every faster writer is held to, and an outcome that is either bytes or the error's text."""

from __future__ import annotations

from typing import Any

from dockyard.runtime.errors import SerializationError
from dockyard.runtime.target import XmlOptions
from dockyard.runtime.xml_writer import _finish, _XmlWriter


def full(doc: Any, options: XmlOptions) -> bytes:
    """The document's bytes by the full writer alone."""
    if not isinstance(doc, dict):
        raise SerializationError("not a dict")
    writer = _XmlWriter(options)
    root = writer.root(options.root)
    writer.fill(root, doc, "")
    return _finish(root, options, writer.codec)


def outcome(fn: Any, *args: Any) -> Any:
    """fn(*args), or the text of the SerializationError it raised."""
    try:
        return fn(*args)
    except SerializationError as exc:
        return f"error {exc}"
