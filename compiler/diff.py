"""Spec diffs: what changed between two versions of a mapping spec, and whether it can break the warehouse side.

This module owns the comparison of two checked specs and the rule that decides which changes are
breaking; `dockyard diff` (`dockyard.diff_cli`) only prints the result.

The rule. A change is **breaking** when a receiver that handled every document and request the old
spec produced could reject or misread one the new spec produces from the same input:

- a value it got may no longer come: an output field or request parameter removed, or made
  optional (required → optional), a fixed list element removed;
- a value may come in another form: a field retyped (the checked types' kinds differ: string → int,
  object → list, plain text → `$json` text), the target format, XML root, encoding, namespaces or
  JSON wrap changed, XML elements reordered (an XSD `sequence` rejects them), the input format
  changed (an inbound flow no longer reads what the warehouse sends);
- a value may mean something else: a table entry changed or removed, a table's default changed
  (set, changed or dropped), a table removed, a request parameter's expression changed;
- the request no longer reaches or convinces the receiver in the same way: method, URL, the form
  body, the signature (scheme, secret name, the fields signed, where it goes, options), field
  encryption (added, removed or changed) — a request section added or removed;
- a repeat may no longer be recognised as one (dedupe semantics): the idempotency key expression or
  rule changed, idempotency added or removed, its ttl shortened (keys are forgotten sooner).

Changes that only give the receiver more are **not** breaking: a field or parameter added (required
or optional: a tolerant receiver ignores what it does not read, and a closed `target.schema`
already rejects unknown fields at compile time), optional → required, a table entry or table
added, a longer ttl, XML `declaration` or `pretty` changed. An added parameter in the fields the
signer reads is reported with "given to the signer …" but is not breaking: a receiver checks the
signature over the parameters it receives (QIMEN, JD JOS sign every parameter sent).

Types are compared by kind only where both sides are known: a value typed `any` (e.g. read with
`parse_json`) is never reported as retyped. Expressions are compared by structure (spans, quoting
and layout aside); the output's own expressions are not compared (a value that changes is the
mapping tests' business), only their shapes and types.
"""

from __future__ import annotations

import codecs
import dataclasses
import difflib
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal

from dockyard.compiler.checks import CheckResult
from dockyard.dsl import ast
from dockyard.dsl.diagnostics import DiagnosticsError
from dockyard.dsl.spans import Span
from dockyard.dsl.spec import (
    EncryptDef,
    IdempotencyDef,
    OutEach,
    OutField,
    OutJson,
    OutList,
    OutNode,
    OutObject,
    OutValue,
    RequestDef,
    SignDef,
    Spec,
    TableDef,
)
from dockyard.dsl.types import Kind, Type

__all__ = ["Change", "DiffReport", "diff_files", "diff_specs"]


@dataclass(frozen=True)
class Change:
    """One difference. `kind`: added, removed, retyped, now-optional, now-required, changed,
    reordered. `path`: where (`deliveryOrder.remark`, `orderLines[].actualPrice`,
    `table WAREHOUSE_BY_SHOP[TM-FLAG-001]`, `request.query.sign_method`, `target.root`).
    `detail`: a short note (`optional`, `int → string`, `WH-HZ-01 → WH-HZ-09`), possibly empty."""

    kind: str
    path: str
    detail: str
    breaking: bool


@dataclass(frozen=True)
class DiffReport:
    old_path: str
    new_path: str
    changes: list[Change]

    @property
    def breaking(self) -> bool:
        return any(c.breaking for c in self.changes)


def diff_files(old_path: str | os.PathLike[str], new_path: str | os.PathLike[str]) -> DiffReport:
    """Check both specs and compare them; DiagnosticsError (with every diagnostic of each spec
    that has errors) when either does not check cleanly, since a broken spec has no meaning to
    compare."""
    from dockyard.compiler.api import check_file  # api imports the code generator: only when files are given

    reports = [check_file(old_path), check_file(new_path)]
    failed = [r for r in reports if not r.ok]
    if failed:
        sources: dict[str, str] = {}
        for r in failed:
            sources.update(r.sources)
        raise DiagnosticsError([d for r in failed for d in r.diagnostics], sources)
    old, new = reports
    assert old.spec is not None and old.checked is not None and new.spec is not None and new.checked is not None
    return DiffReport(old.path, new.path, diff_specs(old.spec, new.spec, old.checked, new.checked))


def diff_specs(old: Spec, new: Spec, old_checked: CheckResult, new_checked: CheckResult) -> list[Change]:
    """Every change from `old` to `new` on the warehouse side, in the order: input and target
    settings, output tree, tables, request."""
    differ = _Differ(old, new, old_checked, new_checked)
    differ.settings()
    differ.node("", old.output, new.output)
    differ.tables()
    differ.request()
    return differ.changes


# --- helpers -----------------------------------------------------------------------------------

def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _may_be_absent(f: OutField) -> bool:
    """Whether a field can be left out of a document: `name?:`, `$optional`, or a `$when`."""
    return f.optional or (isinstance(f.value, OutObject | OutValue) and f.value.when is not None)


def _expr_key(value: object) -> object:
    """An expression's structure without its spans: equal for the same expression written with other
    spacing, quotes or line breaks. Decimals keep their text (`1.0` and `1.00` print differently)."""
    if isinstance(value, Span):
        return None
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return (type(value).__name__, *(_expr_key(getattr(value, f.name)) for f in dataclasses.fields(value)))
    if isinstance(value, tuple | list):
        return tuple(_expr_key(v) for v in value)
    if isinstance(value, Decimal):
        return ("decimal", str(value))
    return (type(value).__name__, value)


def _source_text(spec: Spec, span: Span) -> str:
    """The text a span covers in the spec (or a file it read), on one line, spaces collapsed."""
    text = spec.files.get(span.file, spec.text if span.file == spec.path else "")
    starts = [0]
    starts.extend(i + 1 for i, ch in enumerate(text) if ch == "\n")
    if not text or span.line > len(starts) or span.end_line > len(starts):
        return "?"
    begin = starts[span.line - 1] + span.col - 1
    end = starts[span.end_line - 1] + span.end_col - 1
    return " ".join(text[begin:end].split()) or "?"


def _duration(seconds: int | None) -> str:
    if seconds is None:
        return "forever"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _encoding(name: str) -> str:
    """An encoding's canonical name, so that `utf-8` and `UTF-8` are the same setting."""
    try:
        return codecs.lookup(name).name
    except LookupError:
        return name.lower()


def _type_differs(old: Type, new: Type) -> bool:
    if old.kind is Kind.ANY or new.kind is Kind.ANY:
        return False  # unknown on one side: nothing can be said
    if old.kind is not new.kind:
        return True
    if old.kind is Kind.LIST and old.item is not None and new.item is not None:
        return _type_differs(old.item, new.item)
    return False


def _shown(value: str | None) -> str:
    return "none" if value is None else value


@dataclass(frozen=True)
class _SignPlan:
    """A signature as it acts on the request, with the scheme's defaults filled in, so that writing
    a default out (`into: query.sign` for qimen-md5) is not a change."""

    scheme: str
    secret: str
    params: str  # query or form: the fields the signer reads
    body: str
    into: str  # section.name
    options: Mapping[str, str]


def _sign_plan(sign: SignDef, req: RequestDef) -> _SignPlan:
    from dockyard.runtime.plugins import PluginError, load
    from dockyard.runtime.signing import Signer

    section, name = sign.into
    if not section:
        try:
            signer = load("dockyard.crypto", sign.scheme)
        except PluginError:  # already reported by the checker; both specs checked cleanly here
            signer = None
        if isinstance(signer, Signer):
            section, name = signer.placement
    # The same default as the request builder: the fields of the section the signature goes into.
    params = sign.params or ("form" if section == "form" else "query")
    into = f"{section}.{name}" if section else "(the scheme's default)"
    body = sign.body
    if not body:  # the request builder's default: the HTTP body, or for a form signature the field holding it
        body = "body"
        if section == "form":
            holder = next((f.key for f in (req.form.fields if req.form is not None else ())
                           if isinstance(f.value, OutValue) and isinstance(f.value.expr, ast.Var)
                           and f.value.expr.name == "body"), None)
            body = f"form.{holder}" if holder is not None else "none"
    return _SignPlan(sign.scheme, sign.secret, params, body, into, dict(sign.options))


class _Differ:
    def __init__(self, old: Spec, new: Spec, old_checked: CheckResult, new_checked: CheckResult) -> None:
        self.old = old
        self.new = new
        self.old_checked = old_checked
        self.new_checked = new_checked
        self.changes: list[Change] = []
        # XML element order is part of the document only when both versions write XML.
        self.xml = old.target.format == "xml" and new.target.format == "xml"

    def add(self, kind: str, path: str, detail: str, breaking: bool) -> None:
        self.changes.append(Change(kind, path, detail, breaking))

    def changed(self, path: str, old: str | None, new: str | None, breaking: bool = True) -> None:
        if old != new:
            self.add("changed", path, f"{_shown(old)} → {_shown(new)}", breaking)

    # -- input and target settings --------------------------------------------------------
    def settings(self) -> None:
        old, new = self.old, self.new
        self.changed("source.format", old.source_format, new.source_format)
        ot, nt = old.target, new.target
        if ot.format != nt.format:
            self.changed("target.format", ot.format, nt.format)
            return  # every other target setting belongs to one format
        self.changed("target.wrap", ot.wrap, nt.wrap)
        if ot.xml is None or nt.xml is None:
            return
        self.changed("target.root", ot.xml.root, nt.xml.root)
        if _encoding(ot.xml.encoding) != _encoding(nt.xml.encoding):
            self.changed("target.encoding", ot.xml.encoding, nt.xml.encoding)
        for prefix in sorted(set(ot.xml.namespaces) | set(nt.xml.namespaces)):
            shown = prefix or '""'  # the default namespace: the empty prefix
            self.changed(f"target.namespaces[{shown}]", ot.xml.namespaces.get(prefix), nt.xml.namespaces.get(prefix))
        # Whitespace and the <?xml?> line do not change what an XML parser reads.
        self.changed("target.declaration", str(ot.xml.declaration).lower(), str(nt.xml.declaration).lower(),
                     breaking=False)
        self.changed("target.pretty", str(ot.xml.pretty).lower(), str(nt.xml.pretty).lower(), breaking=False)

    # -- the output tree ------------------------------------------------------------------
    def node(self, path: str, old: OutNode, new: OutNode) -> None:
        old_t = self.old_checked.field_types.get(id(old), Type(Kind.ANY))
        new_t = self.new_checked.field_types.get(id(new), Type(Kind.ANY))
        if isinstance(old, OutJson) != isinstance(new, OutJson):
            # The same string type, but one is a JSON text of a structure and the other plain text.
            other_t = new_t if isinstance(old, OutJson) else old_t
            if other_t.kind is not Kind.ANY:
                old_l = "JSON text" if isinstance(old, OutJson) else old_t.name
                new_l = "JSON text" if isinstance(new, OutJson) else new_t.name
                self.add("retyped", path or "(document)", f"{old_l} → {new_l}", True)
            return
        structured = (OutEach, OutList)
        # Two lists written element by element: their elements are compared at path[], one by one.
        both_lists = isinstance(old, structured) and isinstance(new, structured)
        if not both_lists and _type_differs(old_t, new_t):
            self.add("retyped", path or "(document)", f"{old_t.name} → {new_t.name}", True)
            return
        if isinstance(old, OutJson) and isinstance(new, OutJson):
            self.node(path, old.node, new.node)
        elif isinstance(old, OutObject) and isinstance(new, OutObject):
            self.object(path, old, new)
        elif isinstance(old, structured) and isinstance(new, structured):
            self.elements(path, old, new)

    def object(self, path: str, old: OutObject, new: OutObject) -> None:
        old_fields = {f.key: f for f in old.fields}
        new_fields = {f.key: f for f in new.fields}
        for f in old.fields:
            child = _join(path, f.key)
            nf = new_fields.get(f.key)
            if nf is None:
                self.add("removed", child, "", True)
                continue
            self.node(child, f.value, nf.value)
            self.presence(child, _may_be_absent(f), _may_be_absent(nf))
        for f in new.fields:
            if f.key not in old_fields:
                self.add("added", _join(path, f.key), "optional" if _may_be_absent(f) else "required", False)
        if self.xml:
            self.order(path, [f.key for f in old.fields], [f.key for f in new.fields])

    def presence(self, path: str, old_optional: bool, new_optional: bool) -> None:
        if old_optional and not new_optional:
            self.add("now-required", path, "was optional", False)
        elif new_optional and not old_optional:
            self.add("now-optional", path, "was required", True)

    def order(self, path: str, old_keys: list[str], new_keys: list[str]) -> None:
        """XML element order of the fields both versions write (attributes have no order)."""
        common = set(old_keys) & set(new_keys)
        before = [k for k in old_keys if k in common and not k.startswith("@")]
        after = [k for k in new_keys if k in common and not k.startswith("@")]
        if before == after:
            return
        matcher = difflib.SequenceMatcher(a=before, b=after, autojunk=False)
        kept = {k for block in matcher.get_matching_blocks() for k in before[block.a:block.a + block.size]}
        moved = [k for k in after if k not in kept]
        self.add("reordered", path or "(document)", f"moved: {', '.join(moved)}", True)

    def elements(self, path: str, old: OutEach | OutList, new: OutEach | OutList) -> None:
        if isinstance(old, OutEach) and isinstance(new, OutEach):
            self.node(f"{path}[]", old.emit, new.emit)
        elif isinstance(old, OutList) and isinstance(new, OutList):
            for i, (o, n) in enumerate(zip(old.items, new.items, strict=False)):
                self.node(f"{path}[{i}]", o, n)
                self.presence(f"{path}[{i}]", _element_may_be_absent(o), _element_may_be_absent(n))
            for i in range(len(new.items), len(old.items)):
                self.add("removed", f"{path}[{i}]", "", True)
            for i in range(len(old.items), len(new.items)):
                self.add("added", f"{path}[{i}]", "optional" if _element_may_be_absent(new.items[i]) else "required",
                         False)
        else:  # $each on one side, fixed elements on the other: every fixed element against the $emit
            emit = old.emit if isinstance(old, OutEach) else new.emit if isinstance(new, OutEach) else None
            fixed = new.items if isinstance(new, OutList) else old.items if isinstance(old, OutList) else ()
            assert emit is not None
            for item in fixed:
                pair = (emit, item) if isinstance(old, OutEach) else (item, emit)
                self.node(f"{path}[]", *pair)

    # -- tables ---------------------------------------------------------------------------
    def tables(self) -> None:
        old_tables = {t.name: t for t in self.old.tables}
        new_tables = {t.name: t for t in self.new.tables}
        for name, old in old_tables.items():
            new = new_tables.get(name)
            if new is None:
                self.add("removed", f"table {name}", f"{len(old.rows)} entries", True)
            else:
                self.table(old, new)
        for name, new in new_tables.items():
            if name not in old_tables:
                self.add("added", f"table {name}", f"{len(new.rows)} entries", False)

    def table(self, old: TableDef, new: TableDef) -> None:
        for key, value in old.rows.items():
            path = f"table {old.name}[{key}]"
            if key not in new.rows:
                self.add("removed", path, f"was {value}", True)
            else:
                self.changed(path, value, new.rows[key])
        for key, value in new.rows.items():
            if key not in old.rows:
                self.add("added", f"table {new.name}[{key}]", value, False)
        self.changed(f"table {old.name} default", old.default, new.default)

    # -- the request ----------------------------------------------------------------------
    def request(self) -> None:
        old, new = self.old.request, self.new.request
        if old is None and new is None:
            return
        if old is None or new is None:
            # Delivered some other way before (or now): nothing to compare, so nothing is known to hold.
            self.add("added" if old is None else "removed", "request", "", True)
            return
        self.changed("request.method", old.method, new.method)
        self.changed("request.url", old.url, new.url)
        signed = self.signed_fields(new)
        self.section("request.query", old.query, new.query, signed)
        self.section("request.headers", old.headers, new.headers, signed)
        if (old.form is None) != (new.form is None):
            self.add("added" if old.form is None else "removed", "request.form", "the body is a form"
                     if old.form is None else "the body is the document", True)
        elif old.form is not None and new.form is not None:
            self.section("request.form", old.form, new.form, signed)
        self.sign(old, new)
        self.encrypt(old.encrypt, new.encrypt)
        self.idempotency(old.idempotency, new.idempotency)

    def signed_fields(self, req: RequestDef) -> tuple[str, set[str]]:
        """(scheme, the request fields its signature covers, as `query.NAME` / `form.NAME`)."""
        if req.sign is None:
            return "", set()
        plan = _sign_plan(req.sign, req)
        section = req.form if plan.params == "form" else req.query
        fields = {f"{plan.params}.{f.key}" for f in section.fields} if section is not None else set()
        if plan.body.startswith(("form.", "query.")):
            fields.add(plan.body)
        return plan.scheme, fields

    def section(self, path: str, old: OutObject, new: OutObject, signed: tuple[str, set[str]]) -> None:
        old_fields = {f.key: f for f in old.fields}
        new_fields = {f.key: f for f in new.fields}
        scheme, covered = signed
        for f in old.fields:
            child = f"{path}.{f.key}"
            nf = new_fields.get(f.key)
            if nf is None:
                self.add("removed", child, "", True)
                continue
            if isinstance(f.value, OutValue) and isinstance(nf.value, OutValue) and \
                    _expr_key(f.value.expr) != _expr_key(nf.value.expr):
                self.add("changed", child, f"{_source_text(self.old, f.value.expr.span)} → "
                         f"{_source_text(self.new, nf.value.expr.span)}", True)
            self.presence(child, _may_be_absent(f), _may_be_absent(nf))
        for f in new.fields:
            if f.key in old_fields:
                continue
            notes = ["optional" if _may_be_absent(f) else "required"]
            section = path.removeprefix("request.")
            if f"{section}.{f.key}" in covered:
                notes.append(f"given to the signer {scheme}")
            self.add("added", f"{path}.{f.key}", ", ".join(notes), False)

    def sign(self, old_req: RequestDef, new_req: RequestDef) -> None:
        old, new = old_req.sign, new_req.sign
        if old is None or new is None:
            if old is not new:
                kept = old or new
                assert kept is not None
                self.add("added" if old is None else "removed", "request.sign", kept.scheme, True)
            return
        before, after = _sign_plan(old, old_req), _sign_plan(new, new_req)
        self.changed("request.sign.scheme", before.scheme, after.scheme)
        self.changed("request.sign.secret", before.secret, after.secret)
        self.changed("request.sign.params", before.params, after.params)
        self.changed("request.sign.body", before.body, after.body)
        self.changed("request.sign.into", before.into, after.into)
        self.options("request.sign.options", before.options, after.options)

    def options(self, path: str, old: Mapping[str, str], new: Mapping[str, str]) -> None:
        for name in sorted(set(old) | set(new)):
            self.changed(f"{path}.{name}", old.get(name), new.get(name))

    def encrypt(self, old: Iterable[EncryptDef], new: Iterable[EncryptDef]) -> None:
        before = {e.path: e for e in old}
        after = {e.path: e for e in new}
        for field_path, o in before.items():
            path = f"request.encrypt[{field_path}]"
            n = after.get(field_path)
            if n is None:
                self.add("removed", path, f"was {o.scheme}", True)
                continue
            self.changed(f"{path}.scheme", o.scheme, n.scheme)
            self.changed(f"{path}.key", o.key, n.key)
            self.options(f"{path}.options", o.options, n.options)
        for field_path, n in after.items():
            if field_path not in before:
                self.add("added", f"request.encrypt[{field_path}]", n.scheme, True)

    def idempotency(self, old: IdempotencyDef | None, new: IdempotencyDef | None) -> None:
        if old is None or new is None:
            if old is not new:
                self.add("added" if old is None else "removed", "request.idempotency", "", True)
            return
        if _expr_key(old.key) != _expr_key(new.key):
            self.add("changed", "request.idempotency.key",
                     f"{_source_text(self.old, old.key.span)} → {_source_text(self.new, new.key.span)}", True)
        self.changed("request.idempotency.rule", old.rule, new.rule)
        if old.ttl_seconds != new.ttl_seconds:
            # None keeps keys forever; a shorter ttl forgets a key while a late repeat may still come.
            shorter = new.ttl_seconds is not None and (old.ttl_seconds is None or new.ttl_seconds < old.ttl_seconds)
            self.add("changed", "request.idempotency.ttl",
                     f"{_duration(old.ttl_seconds)} → {_duration(new.ttl_seconds)}", shorter)


def _element_may_be_absent(node: OutNode) -> bool:
    return isinstance(node, OutObject) and node.when is not None

