"""What a compiled mapping says about its output format: JSON, XML (with its options) or a form.

Generated modules construct a `Target` from literals; the serializer reads it. Plain data, so it
is shared by the compiler (which builds it from the spec) and the runtime (which uses it). Named
tuples rather than dataclasses: every process that loads a bundle imports this module, and
importing dataclasses (with inspect and ast) would cost it several milliseconds.
"""

from __future__ import annotations

import types
from collections.abc import Mapping

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Literal, NamedTuple

    Format = Literal["json", "xml", "form"]
else:
    from dockyard.runtime.records import NamedTuple

__all__ = ["CData", "Target", "XmlOptions"]


class CData(str):
    """A string value that the XML serializer writes as a CDATA section (plain text elsewhere)."""

    __slots__ = ()


class XmlOptions(NamedTuple):
    """XML target options. `namespaces` maps prefix → URI; the prefix "" is the default namespace."""

    root: str
    declaration: bool = True
    encoding: str = "UTF-8"
    namespaces: Mapping[str, str] = types.MappingProxyType({})
    pretty: bool = False


class Target(NamedTuple):
    format: Format
    xml: XmlOptions | None = None
    wrap: str | None = None  # "array": a JSON document sent inside a one-element array (JD LOP)

    @property
    def content_type(self) -> str:
        if self.format == "json":
            return "application/json;charset=utf-8"
        if self.format == "xml":
            enc = self.xml.encoding.lower() if self.xml else "utf-8"
            return f"text/xml;charset={enc}"
        return "application/x-www-form-urlencoded;charset=utf-8"
