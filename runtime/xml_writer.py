"""The XML writer: a mapped document → bytes, driven by `XmlOptions`.

Split from serialize.py so that lxml is imported only by a process that writes XML. The rules
(names, namespaces, CDATA, encodings, illegal characters) are unchanged; see serialize.py for the
shared scalar rule and the paths named in errors.

Three writers, tried in turn, each giving up (`_Slow`) on anything it does not decide:
- `_Stream` writes the text of a plain document directly (no namespaces, no pretty printing, no
  attributes, no CDATA, no `#text`), exactly as lxml would serialize the same tree: the common case
  of a warehouse request, without building a tree at all;
- `_FastWriter` builds the lxml tree without tracking paths, names checked once per process;
- `_XmlWriter` builds it checking every node and names the path of any problem.
"""

from __future__ import annotations

import codecs
import contextlib
import re
from decimal import Decimal
from typing import Any

from lxml import etree

from dockyard.runtime.errors import SerializationError
from dockyard.runtime.serialize import _item_path, _key_path, _require_dict, scalar_text
from dockyard.runtime.target import CData, XmlOptions

__all__ = ["to_xml_bytes"]

# Anything outside the XML 1.0 `Char` production (this includes lone surrogates).
_XML_ILLEGAL = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
# The XML `EncName` production: what may stand in the declaration's encoding="...".
_ENC_NAME = re.compile(r"[A-Za-z][A-Za-z0-9._-]*")
_XML_NS = "http://www.w3.org/XML/1998/namespace"


class _XmlWriter:
    """Builds the lxml tree for one document under one set of `XmlOptions`."""

    def __init__(self, options: XmlOptions) -> None:
        self.encoding = options.encoding
        if not _ENC_NAME.fullmatch(self.encoding):
            raise SerializationError(f"invalid XML encoding name {self.encoding!r}")
        try:
            self.codec = codecs.lookup(self.encoding).name
        except LookupError:
            raise SerializationError(f"unknown XML encoding {self.encoding!r}") from None
        self._names: dict[tuple[str, bool], str] = {}
        self.namespaces: dict[str, str] = {"xml": _XML_NS}
        self.nsmap: dict[Any, str] = {}  # None is the default namespace
        for prefix, uri in options.namespaces.items():
            where = f"namespace prefix {prefix!r}"
            if not isinstance(prefix, str) or not isinstance(uri, str) or not uri:
                raise SerializationError(f"{where}: the prefix and the URI must be non-empty strings")
            if prefix in ("xml", "xmlns") or ":" in prefix or "{" in uri or "}" in uri:
                raise SerializationError(f"{where} → {uri!r} cannot be declared")
            if prefix:
                try:
                    etree.QName(prefix)
                except ValueError:
                    raise SerializationError(f"invalid namespace prefix {prefix!r}") from None
            self._check_encodable(prefix, "a namespace prefix", "")
            self.namespaces[prefix] = uri
            self.nsmap[prefix or None] = uri

    def _check_encodable(self, text: str, what: str, path: str) -> None:
        try:
            text.encode(self.codec)
        except UnicodeEncodeError:
            raise SerializationError(f"{what} {text!r} cannot be written in {self.encoding}", path) from None

    def qname(self, key: str, path: str, *, attribute: bool) -> str:
        """`prefix:name` or `name` → lxml's `{uri}name` (unprefixed attributes have no namespace).
        A name is checked once per document: the lines of an order repeat the same names."""
        known = self._names.get((key, attribute))
        if known is not None:
            return known
        name = self._qname(key, path, attribute=attribute)
        self._names[(key, attribute)] = name
        return name

    def _qname(self, key: str, path: str, *, attribute: bool) -> str:
        what = "attribute name" if attribute else "element name"
        prefix, sep, local = key.rpartition(":")
        if not local or "{" in key or "}" in key or ":" in prefix or (sep and not prefix):
            raise SerializationError(f"invalid {what} {key!r}", path)
        if sep:
            uri = self.namespaces.get(prefix)
            if uri is None:
                raise SerializationError(f"unknown namespace prefix {prefix!r} in {what} {key!r}", path)
        else:
            uri = None if attribute else self.namespaces.get("")
        try:
            etree.QName(local)  # validates the name as lxml does when it creates the node
        except ValueError:
            raise SerializationError(f"invalid {what} {key!r}", path) from None
        self._check_encodable(key, what, path)
        return local if uri is None else f"{{{uri}}}{local}"

    def root(self, name: str) -> etree._Element:
        tag = self.qname(name, "", attribute=False)
        try:
            return etree.Element(tag, nsmap=self.nsmap)
        except ValueError as exc:  # e.g. a namespace prefix lxml refuses
            raise SerializationError(f"cannot create the root element {name!r}: {exc}") from None

    def legal_text(self, text: str, path: str) -> str:
        bad = _XML_ILLEGAL.search(text)
        if bad:
            char = bad.group()
            message = f"character {char!r} (U+{ord(char):04X}) is not allowed in XML 1.0"
            raise SerializationError(message, path)
        return text

    def fill(self, element: etree._Element, mapping: dict[Any, Any], path: str) -> None:
        for key, value in mapping.items():
            if not isinstance(key, str):
                raise SerializationError(f"key {key!r} is not a string", path)
            sub = _key_path(path, key)
            if key == "#text":
                self.set_text(element, value, sub)
            elif key.startswith("@"):
                self.set_attribute(element, key[1:], value, sub)
            elif isinstance(value, list | tuple):
                tag = self.qname(key, sub, attribute=False)
                for index, item in enumerate(value):
                    item_path = _item_path(sub, index)
                    if isinstance(item, list | tuple):
                        raise SerializationError("a list inside a list has no XML form", item_path)
                    self.content(self.child(element, tag, key, item_path), item, item_path)
            else:
                tag = self.qname(key, sub, attribute=False)
                self.content(self.child(element, tag, key, sub), value, sub)

    def child(self, parent: etree._Element, tag: str, key: str, path: str) -> etree._Element:
        try:
            return etree.SubElement(parent, tag)
        except ValueError:
            raise SerializationError(f"invalid element name {key!r}", path) from None

    def content(self, element: etree._Element, value: Any, path: str) -> None:
        if isinstance(value, dict):
            self.fill(element, value, path)
        else:
            self.set_text(element, value, path)

    def set_attribute(self, element: etree._Element, name: str, value: Any, path: str) -> None:
        qname = self.qname(name, path, attribute=True)
        text = self.legal_text(scalar_text(value, path), path)
        try:
            element.set(qname, text)
        except ValueError:
            raise SerializationError(f"invalid attribute name {name!r}", path) from None

    def set_text(self, element: etree._Element, value: Any, path: str) -> None:
        text = self.legal_text(scalar_text(value, path), path)
        if isinstance(value, CData) and self.cdata_safe(text):
            element.text = etree.CDATA(text)
        else:
            element.text = text

    def cdata_safe(self, text: str) -> bool:
        """Whether a CDATA section reproduces `text` exactly; otherwise it is written as escaped text.

        A CDATA section cannot contain "]]>", a parser turns its "\\r" into "\\n", and a character the
        encoding lacks cannot be written there as a character reference.
        """
        if "]]>" in text or "\r" in text:
            return False
        try:
            text.encode(self.codec)
        except UnicodeEncodeError:
            return False
        return True


class _Slow(Exception):
    """The fast writer met something it does not decide: the full writer runs instead."""


class _FastWriter:
    """The same tree as `_XmlWriter`, built without tracking paths, for one `XmlOptions` and kept
    across documents, so each element name is checked once per process, not once per document.

    It takes only what it is sure of: exact dicts, lists and tuples, str text that `isprintable()`
    (which rules out every character XML 1.0 forbids) or passes the same check as the full writer,
    and other scalars through the same `scalar_text`. Anything else, or any failure, raises
    `_Slow`, and the full writer, which names the path of a problem, decides from scratch."""

    def __init__(self, options: XmlOptions) -> None:
        self.full = _XmlWriter(options)  # validates the options and the namespaces once
        self.elements: dict[str, str] = {}
        self.attributes: dict[str, str] = {}
        # The text writer, for options it serves (a root name it cannot write: None, the trees decide).
        self.stream: _Stream | None = None
        if not options.namespaces and not options.pretty:
            with contextlib.suppress(_Slow):
                self.stream = _Stream(self, options)

    def tag(self, key: Any) -> str:
        known = self.elements.get(key)
        if known is None:
            if key.__class__ is not str:
                raise _Slow
            try:
                known = self.full.qname(key, "", attribute=False)
            except SerializationError:
                raise _Slow from None
            self.elements[key] = known
        return known

    def text(self, value: Any) -> str:
        if value.__class__ is str:
            if not value.isprintable() and _XML_ILLEGAL.search(value):
                raise _Slow
            return value
        try:
            return self.full.legal_text(scalar_text(value, ""), "")
        except SerializationError:
            raise _Slow from None

    def fill(self, element: etree._Element, mapping: dict[Any, Any]) -> None:
        sub = etree.SubElement
        for key, value in mapping.items():
            kind = value.__class__
            if key.__class__ is not str or key[:1] in ("#", "@"):
                self.special(element, key, value)
            elif kind is str or (kind is not dict and kind is not list and kind is not tuple
                                 and kind is not CData):
                sub(element, self.tag(key)).text = self.text(value)
            elif kind is dict:
                self.fill(sub(element, self.tag(key)), value)
            elif kind is list or kind is tuple:
                tag = self.tag(key)
                for item in value:
                    item_kind = item.__class__
                    if item_kind is dict:
                        self.fill(sub(element, tag), item)
                    elif item_kind is list or item_kind is tuple or item_kind is CData:
                        raise _Slow
                    else:
                        sub(element, tag).text = self.text(item)
            else:
                raise _Slow  # CData: the full writer decides between a CDATA section and text

    def special(self, element: etree._Element, key: Any, value: Any) -> None:
        if key.__class__ is not str or value.__class__ is CData:
            raise _Slow
        if key == "#text":
            element.text = self.text(value)
            return
        name = key[1:]
        qname = self.attributes.get(name)
        if qname is None:
            try:
                qname = self.full.qname(name, "", attribute=True)
            except SerializationError:
                raise _Slow from None
            self.attributes[name] = qname
        element.set(qname, self.text(value))


def _escape(text: str) -> str:
    """Element text as libxml2 writes it: `&`, `<`, `>` as entities and a carriage return as a
    character reference (which a parser would otherwise read as a newline); nothing else, in any
    encoding this writer serves (lxml's own text, encoded afterwards; see `_finish`)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\r", "&#13;")


class _Stream:
    """The bytes of a plain document, written as text: what lxml would serialize for the tree the
    other writers build, without building it (the tree and its serialization were most of what a
    QIMEN request's render() cost against the mapping itself).

    Used only for options without namespaces and without pretty printing, and only for documents
    whose keys are all element names (no `@attribute`, no `#text`) and whose values are exact dicts,
    lists, tuples and scalars other than CData; anything else raises `_Slow`, as does text with a
    character XML 1.0 forbids, so that the tree writers decide and report errors as they always did.
    An element name is written only after lxml itself made and serialized an element of that name
    (once per process), so a name is never written that lxml would refuse or spell otherwise."""

    def __init__(self, fast: _FastWriter, options: XmlOptions) -> None:
        self.fast = fast
        # key → ("<key>", "</key>", "<key/>")
        self.tags: dict[str, tuple[str, str, str]] = {}
        root = self.tag(options.root)
        declaration = f'<?xml version="1.0" encoding="{options.encoding}"?>\n' if options.declaration else ""
        self.head = declaration + root[0]
        self.tail = root[1]
        self.empty = declaration + root[2]
        self.codec = fast.full.codec
        self.utf8 = self.codec == "utf-8"

    def tag(self, key: Any) -> tuple[str, str, str]:
        """The tags of an element name, checked by the full writer's rules and by lxml itself."""
        known = self.tags.get(key)
        if known is not None:
            return known
        if key.__class__ is not str or key[:1] in ("", "#", "@"):
            raise _Slow
        try:
            name = self.fast.full.qname(key, "", attribute=False)
            element = etree.Element(name)
            spelled = etree.tostring(element, encoding="unicode")
        except (SerializationError, ValueError):
            raise _Slow from None
        if name != key or spelled != f"<{key}/>":
            raise _Slow  # a namespace, or a spelling of lxml's own: the tree writers decide
        tags = (f"<{key}>", f"</{key}>", spelled)
        if len(self.tags) < 4096:  # bounded: documents with keys made from data take the checks again
            self.tags[key] = tags
        return tags

    def write(self, mapping: dict[Any, Any]) -> bytes:
        out = [self.head]
        self.fill(out, mapping)
        if len(out) == 1:
            text = self.empty
        else:
            out.append(self.tail)
            text = "".join(out)
        if self.utf8:
            # Lone surrogates were refused with the rest of what XML 1.0 forbids, so this cannot fail.
            return text.encode("utf-8")
        # Names were checked to be encodable; what is left unencodable is element text, where a
        # character reference is the correct spelling (as `_finish` does with lxml's text).
        return text.encode(self.codec, "xmlcharrefreplace")

    def fill(self, out: list[str], mapping: dict[Any, Any]) -> None:
        tags = self.tags
        append = out.append
        for key, value in mapping.items():
            tag = tags.get(key)
            if tag is None:
                tag = self.tag(key)
            if value.__class__ is str:  # most of a document: written here rather than in a call
                if not value.isprintable():  # isprintable() rules out every character XML 1.0 forbids
                    if _XML_ILLEGAL.search(value):
                        raise _Slow
                    value = _escape(value)
                elif "&" in value or "<" in value or ">" in value:
                    value = _escape(value)
                append(f"{tag[0]}{value}{tag[1]}")
            elif value.__class__ is list or value.__class__ is tuple:
                for item in value:
                    self.element(out, tag, item)
            else:
                self.element(out, tag, value)

    def element(self, out: list[str], tag: tuple[str, str, str], value: Any) -> None:
        kind = value.__class__
        if kind is dict:
            at = len(out)
            out.append(tag[0])
            self.fill(out, value)
            if len(out) == at + 1:
                out[at] = tag[2]  # no children: lxml writes an empty element
            else:
                out.append(tag[1])
            return
        if kind is str:
            text = value
        elif kind is int:
            try:
                text = int.__repr__(value)
            except ValueError:  # beyond sys.get_int_max_str_digits(): the full writer says so
                raise _Slow from None
        elif kind is Decimal:
            if not value.is_finite():
                raise _Slow
            text = format(value, "f")
        elif kind is bool:
            text = "true" if value else "false"
        elif kind is list or kind is tuple or kind is CData or value is None:
            raise _Slow  # a list in a list, a CDATA section, a missing value: the tree writers decide
        else:
            try:
                text = scalar_text(value, "")
            except SerializationError:
                raise _Slow from None
        if not text.isprintable():
            if _XML_ILLEGAL.search(text):
                raise _Slow
            text = _escape(text)
        elif "&" in text or "<" in text or ">" in text:
            text = _escape(text)
        out.append(f"{tag[0]}{text}{tag[1]}")


_FAST: dict[int, tuple[XmlOptions, _FastWriter]] = {}


def _fast_writer(options: XmlOptions) -> _FastWriter:
    cached = _FAST.get(id(options))
    if cached is not None and cached[0] is options:
        return cached[1]
    writer = _FastWriter(options)
    if len(_FAST) >= 64:
        _FAST.clear()
    _FAST[id(options)] = (options, writer)  # the options object is kept alive, so its id stays its own
    return writer


def _finish(root: etree._Element, options: XmlOptions, codec: str) -> bytes:
    if codec == "utf-8":
        # UTF-8 writes every character (lone surrogates were refused), so lxml's own bytes are the
        # same as its text encoded: one pass fewer.
        data: bytes = etree.tostring(root, encoding="UTF-8", xml_declaration=False, pretty_print=options.pretty)
        if options.declaration:
            return f'<?xml version="1.0" encoding="{options.encoding}"?>\n'.encode("ascii") + data
        return data
    body = etree.tostring(root, encoding="unicode", pretty_print=options.pretty)
    if options.declaration:
        body = f'<?xml version="1.0" encoding="{options.encoding}"?>\n{body}'
    # Names and CDATA sections were checked to be encodable; what is left unencodable is element or
    # attribute text, where a character reference is the correct spelling.
    return body.encode(codec, "xmlcharrefreplace")


def to_xml_bytes(doc: dict[str, Any], options: XmlOptions) -> bytes:
    """The document as XML: its keys become the children of `options.root`, encoded as configured."""
    mapping = _require_dict(doc, "an XML document")
    try:
        fast = _fast_writer(options)
        stream = fast.stream
        if stream is not None:
            try:
                return stream.write(mapping)
            except (_Slow, RecursionError):
                # The tree writers decide (a document nested too deep for the text writer's two
                # frames per level, too, so that depth fails or succeeds as it did without it).
                pass
        root = fast.full.root(options.root)
        fast.fill(root, mapping)
        return _finish(root, options, fast.full.codec)
    except (_Slow, ValueError, SerializationError):
        pass  # the full writer decides, and names the place of any problem
    writer = _XmlWriter(options)
    root = writer.root(options.root)
    writer.fill(root, mapping, "")
    return _finish(root, options, writer.codec)
