"""Spec parsing: a YAML file → a `Spec`, with every structural problem collected as a diagnostic.

Structure (keys, types of settings) is checked against the published spec JSON Schema so that
editors and the compiler agree; the output tree's directives are checked here by hand because
their mistakes deserve more precise messages than a schema validator gives. Expressions are
parsed as they are met; a syntax error in one never hides the problems of the others.
"""

from __future__ import annotations

import csv
import difflib
import functools
import io
import json
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dockyard.dsl import ast
from dockyard.dsl.diagnostics import Diagnostic, Severity, display_path
from dockyard.dsl.parser import ExprSyntaxError, parse_expression
from dockyard.dsl.schema_verdict import conforms
from dockyard.dsl.spans import SourceText, Span
from dockyard.dsl.spec import (
    ContextDef,
    EncryptableDef,
    EncryptDef,
    IdempotencyDef,
    LetDef,
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
from dockyard.dsl.types import BOOL, DECIMAL, INT, STRING, Type
from dockyard.dsl.yaml_nodes import YamlProblem, YMap, YNode, YScalar, YSeq, load_yaml, to_plain
from dockyard.runtime.target import Target, XmlOptions

if TYPE_CHECKING:
    import jsonschema

__all__ = ["BUILTIN_SCHEMAS", "NO_NULL_HINT", "NULL_WORDS", "ParseResult", "did_you_mean", "load_builtin_schema",
           "parse_spec", "spec_schema"]

BUILTIN_SCHEMAS = {"order": "order.schema.json", "status-event": "status-event.schema.json",
                   "status-events": "status-events.schema.json", "outcome": "outcome.schema.json"}
_EACH_KEYS = ("$each", "$as", "$where", "$let", "$emit")
_VALUE_KEYS = ("$value", "$optional", "$cdata", "$when")
_DIRECTIVES = (*_EACH_KEYS, *_VALUE_KEYS, "$json")
# How other languages spell "no value". Dockyard has none: a value is there or it is missing, and
# a missing value is never written; `omit` is the way to ask for that.
NULL_WORDS = frozenset({"null", "Null", "NULL", "None", "nil", "undefined"})
NO_NULL_HINT = ('to leave the field out, make it optional and write omit: '
                'remark?: if remark == "" then omit else remark (or "" to send an empty text)')
# What to write instead of a directive that cannot stand beside another one.
_BESIDE_HINTS = {
    ("$when", "$each"): "$where: CONDITION leaves out single elements; to leave out the whole list, write it "
                        "as a value in a block scalar: NAME?: | if CONDITION then map(LIST, $x => {…}) else omit",
    ("$when", "$json"): "put $when beside the fields inside $json, or choose the text with if … then … else omit",
}
_CONTEXT_TYPES = {"string": STRING, "int": INT, "decimal": DECIMAL, "bool": BOOL}


def spec_schema() -> dict[str, Any]:
    text = resources.files("dockyard.dsl").joinpath("schemas/spec.schema.json").read_text(encoding="utf-8")
    result: dict[str, Any] = json.loads(text)
    return result


def load_builtin_schema(name: str) -> dict[str, Any]:
    text = resources.files("dockyard.dsl").joinpath(f"schemas/{BUILTIN_SCHEMAS[name]}").read_text(encoding="utf-8")
    result: dict[str, Any] = json.loads(text)
    if name == "status-events":
        # one definition of an event: status-event's, with its own $defs beside it (its $refs are
        # to #/$defs/…), never a copy that could drift
        event = load_builtin_schema("status-event")
        defs = event.pop("$defs", {})
        for key in ("$schema", "$id"):
            event.pop(key, None)
        result["$defs"] = {**defs, "status-event": event}
    return result


def did_you_mean(word: str, choices: list[str] | tuple[str, ...] | set[str]) -> str | None:
    close = difflib.get_close_matches(word, sorted(choices), n=1, cutoff=0.6)
    return f"did you mean {close[0]!r}?" if close else None


@dataclass
class ParseResult:
    spec: Spec | None
    diagnostics: list[Diagnostic] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)


def parse_spec(path: str | os.PathLike[str], text: str | None = None, *,
               base: str | os.PathLike[str] | None = None) -> ParseResult:
    """Parse a spec. `path` is the name messages and generated code show; files the spec names
    are read relative to `base` (default: the folder of `path`), so a bundle can show paths
    relative to its project root whatever the working directory is."""
    name = str(path)
    if text is None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            diag = Diagnostic(Span(name, 1, 1, 1, 1), f"cannot read the spec: {exc}", "spec-read")
            return ParseResult(None, [diag])
    return _SpecParser(name, text, None if base is None else Path(base)).parse()


class _SpecParser:
    def __init__(self, path: str, text: str, base: Path | None = None) -> None:
        self.path = path
        self.source = SourceText(path, text)
        self.base = Path(path).parent if base is None else base
        self.shown_base = Path(path).parent  # how files beside the spec are named in `files`
        self.diags: list[Diagnostic] = []
        self.files: dict[str, str] = {path: text}
        # Errors that leave no model to check (bad structure, unreadable schema). Other errors (a
        # syntax error, an unknown directive) drop only their own node, so the checker still runs
        # and reports every other problem in the same run.
        self.fatal = False
        self.broken_lets: set[str] = set()

    # -- helpers --------------------------------------------------------------------------
    def error(self, span: Span, message: str, code: str, hint: str | None = None, fatal: bool = False) -> None:
        self.diags.append(Diagnostic(span, message, code, Severity.ERROR, hint))
        self.fatal = self.fatal or fatal

    def expr(self, node: YScalar, what: str) -> ast.Expr | None:
        """Parse a scalar as an expression; a quoted scalar is a constant text."""
        if node.quoted:
            return ast.Literal(node.value, node.span)
        if node.is_null and node.value in ("", "~"):
            self.error(node.span, f"{what} has no value", "spec-no-value",
                       hint='write an expression, or a quoted text such as "JYCK"')
            return None
        if node.is_null:  # YAML's null, Null, NULL
            self.error(node.span, f"{what} is null, and the language has no null", "no-null", hint=NO_NULL_HINT)
            return None
        text, offset = node.expression_text(self.source)
        if not text.strip():
            self.error(node.span, f"{what} has no value", "spec-no-value")
            return None
        try:
            return parse_expression(text, self.source, offset)
        except ExprSyntaxError as exc:
            self.diags.append(exc.diagnostic)
            return None

    def scalar(self, node: YNode | None, what: str) -> YScalar | None:
        if node is None:
            return None
        if not isinstance(node, YScalar):
            shape = "list" if isinstance(node, YSeq) else "mapping"
            self.error(node.span, f"{what} must be a single value, not a {shape}",
                       "spec-structure")
            return None
        return node

    # -- the whole file -------------------------------------------------------------------
    def parse(self) -> ParseResult:
        try:
            root = load_yaml(self.source)
        except YamlProblem as exc:
            return ParseResult(None, exc.diagnostics, self.files)
        if not isinstance(root, YMap):
            self.error(root.span, "a spec must be a YAML mapping (name:, source:, target:, output:, …)",
                       "spec-structure")
            return ParseResult(None, self.diags, self.files)
        self.check_structure(root)
        spec = self.build(root)
        return ParseResult(spec if not self.fatal else None, self.diags, self.files)

    def check_structure(self, root: YMap) -> None:
        """Validate everything except the output tree against the published spec schema."""
        plain = to_plain(root)
        if isinstance(plain, dict) and "output" in plain:
            plain["output"] = {}
        if isinstance(plain, dict) and isinstance(plain.get("let"), dict):
            plain["let"] = {k: "x" for k in plain["let"]}  # let values are checked as expressions
        schema = spec_schema()
        if conforms(schema, plain):
            return  # the usual case: no need to import jsonschema, which only explains problems
        from dockyard.runtime.schema_patterns import validator_class

        validator = validator_class()(schema)
        for err in sorted(validator.iter_errors(plain), key=lambda e: list(map(str, e.absolute_path))):
            self.schema_error(root, err)

    def locate(self, root: YNode, path: list[Any]) -> tuple[YNode, YScalar | None]:
        node: YNode = root
        key: YScalar | None = None
        for part in path:
            if isinstance(node, YMap) and isinstance(part, str):
                k = node.key_node(part)
                nxt = node.get(part)
                if k is None or nxt is None:
                    break
                node, key = nxt, k
            elif isinstance(node, YSeq) and isinstance(part, int) and part < len(node.items):
                node = node.items[part]
            else:
                break
        return node, key

    def schema_error(self, root: YMap, err: jsonschema.ValidationError) -> None:
        self.fatal = True
        path = list(err.absolute_path)
        node, key = self.locate(root, path)
        where = ".".join(str(p) for p in path) or "the spec"
        span = key.span if key is not None else node.span
        kind = err.validator
        value: Any = err.validator_value
        if kind == "additionalProperties" and isinstance(err.instance, dict) and isinstance(node, YMap):
            allowed = set((err.schema.get("properties") or {}).keys()) if isinstance(err.schema, dict) else set()
            for extra in err.instance:
                if extra in allowed:
                    continue
                k = node.key_node(extra)
                self.error(k.span if k else span, f"unknown key {extra!r} in {where}", "spec-unknown-key",
                           hint=did_you_mean(extra, allowed) or (f"expected one of: {', '.join(sorted(allowed))}"
                                                                 if allowed else None))
        elif kind == "required":
            missing = str(err.message).split("'")[1] if "'" in err.message else str(err.message)
            self.error(span if path else Span(self.path, 1, 1, 1, 1), f"{where} needs the key {missing!r}",
                       "spec-missing-key")
        elif kind in ("enum", "const"):
            options = list(value) if kind == "enum" else [value]
            self.error(node.span, f"{where} must be one of {', '.join(map(repr, options))}", "spec-bad-value",
                       hint=did_you_mean(str(err.instance), [str(o) for o in options]))
        elif kind == "type":
            expected = value
            hint = "quote it" if expected == "string" else None
            wanted = expected if isinstance(expected, str) else " or ".join(expected)
            article = "an" if wanted[:1] in "aeiou" else "a"
            self.error(node.span, f"{where} must be {article} {wanted}",
                       "spec-bad-type", hint=hint)
        elif kind == "pattern":
            desc = err.schema.get("description", "") if isinstance(err.schema, dict) else ""
            self.error(node.span, f"{where}: {err.instance!r} is not allowed here", "spec-bad-value",
                       hint=desc or None)
        elif kind == "oneOf" and path and path[0] == "tables":
            self.error(span, f"table {path[-1]!r} needs either 'rows:' or 'file:' (one of them)", "spec-table")
        elif kind == "propertyNames":
            self.error(span, f"{where}: the name {err.instance!r} is not allowed; use letters, digits and '_'",
                       "spec-bad-name")
        else:
            self.error(span, f"{where}: {err.message}", "spec-structure")

    # -- building the model ---------------------------------------------------------------
    def build(self, root: YMap) -> Spec | None:
        out_node = root.get("output")
        if out_node is not None and not isinstance(out_node, YMap):
            self.error(out_node.span, "output must be a mapping of the target's field names", "spec-structure",
                       hint="output:\n  fieldName: expression", fatal=True)
        if self.fatal:
            # Structure is broken: still parse the output tree and lets for their own errors.
            self.build_lets(root.get("let"))
            if isinstance(out_node, YMap):
                self.build_object(out_node, top=True)
            return None
        name = str(to_plain(root.get("name")))  # type: ignore[arg-type]
        version = str(to_plain(root.get("version")))  # type: ignore[arg-type]
        desc_node = root.get("description")
        description = str(to_plain(desc_node)) if desc_node is not None else ""

        source = root.get("source")
        assert isinstance(source, YMap)
        schema_node = source.get("schema")
        assert isinstance(schema_node, YScalar)
        source_schema = self.load_schema(schema_node, builtin=True)
        key_node = source.get("key")
        key_path: tuple[str | int, ...] = ("order_no",)
        if key_node is not None:
            parsed = parse_key_path(str(to_plain(key_node)))
            if parsed is None:
                self.error(key_node.span, f"source.key {str(to_plain(key_node))[:80]!r} is not a path",
                           "spec-bad-value", hint="field names joined by dots, with [n] for the n-th element of a "
                           "list: Body.WaybillRoute[0].mailno")
            key_path = parsed or ()  # () when not a path: reported here, the checks say nothing more of it
        spans = {"source.schema": schema_node.span, "source.key": key_node.span if key_node else schema_node.span}
        source_format = str(to_plain(source.get("format"))) if source.get("format") is not None else "json"  # type: ignore[arg-type]
        root_node = source.get("root")
        source_root = str(to_plain(root_node)) if root_node is not None else None

        target_node = root.get("target")
        assert isinstance(target_node, YMap)
        target, target_schema, target_schema_span = self.build_target(target_node)
        root_node = target_node.get("root")
        spans["target.root"] = root_node.span if root_node is not None else target_node.span

        context = self.build_context(root.get("context"))
        tables = self.build_tables(root.get("tables"))
        lets = self.build_lets(root.get("let"))
        output = self.build_object(out_node, top=True) if isinstance(out_node, YMap) else None
        request_node = root.get("request")
        request = self.build_request(request_node) if isinstance(request_node, YMap) else None
        if output is None or source_schema is None or self.fatal:
            return None
        assert isinstance(output, OutObject)
        return Spec(
            path=self.path, text=self.source.text, name=name, version=version, description=description,
            source_schema_name=schema_node.value, source_schema=source_schema, source_schema_span=schema_node.span,
            key_path=key_path, target=target, target_schema=target_schema, target_schema_span=target_schema_span,
            context=context, tables=tables, lets=lets, output=output, files=dict(self.files),
            broken_lets=frozenset(self.broken_lets), spans=spans, request=request, source_format=source_format,
            source_root=source_root,
        )

    def read_beside(self, node: YScalar) -> str | None:
        """A file named relative to the spec; recorded so bundles hash everything a spec reads.
        It must lie in the spec's folder tree (or a folder the project allows): a spec from an
        untrusted change must not pull files of the build machine into a bundle."""
        path = self.base / node.value
        outside = _outside_roots(path, self.base)
        if outside is not None:
            self.error(node.span, f"{node.value!r} is outside the spec's folder ({outside})", "spec-file-outside",
                       hint="a spec reads files only from its own folder and below; move the file there, or list "
                            f"its folder under [tool.dockyard] {FILE_ROOTS_KEY} in the project's pyproject.toml",
                       fatal=True)
            return None
        try:
            # Bytes, not read_text: universal newlines would turn a quoted "\r" in a CSV cell into "\n".
            text = path.read_bytes().decode("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            self.error(node.span, f"cannot read {node.value!r}: {reason}", "spec-file", fatal=True)
            return None
        self.files[str(self.shown_base / node.value)] = text
        return text

    def load_schema(self, node: YScalar, builtin: bool) -> dict[str, Any] | None:
        if builtin and node.value in BUILTIN_SCHEMAS:
            return load_builtin_schema(node.value)
        if builtin and "/" not in node.value and not node.value.endswith(".json"):
            self.error(node.span, f"unknown built-in schema {node.value!r}", "spec-schema",
                       hint=did_you_mean(node.value, list(BUILTIN_SCHEMAS)) or
                       f"built-in schemas: {', '.join(BUILTIN_SCHEMAS)}; or give a path to a .json file", fatal=True)
            return None
        text = self.read_beside(node)
        if text is None:
            return None
        import jsonschema  # a schema file of the user's: check it against the metaschema

        try:
            schema = json.loads(text)
            jsonschema.Draft202012Validator.check_schema(schema)
        except json.JSONDecodeError as exc:
            self.error(node.span, f"{node.value!r} is not valid JSON: {exc.msg} at line {exc.lineno}", "spec-schema",
                       fatal=True)
            return None
        except jsonschema.SchemaError as exc:
            self.error(node.span, f"{node.value!r} is not a valid JSON Schema: {exc.message}", "spec-schema",
                       fatal=True)
            return None
        if not isinstance(schema, dict):
            self.error(node.span, f"{node.value!r} must hold a JSON object", "spec-schema", fatal=True)
            return None
        return schema

    def build_target(self, node: YMap) -> tuple[Target, dict[str, Any] | None, Span | None]:
        plain = to_plain(node)
        fmt = plain["format"]
        xml = None
        if fmt == "xml":
            xml = XmlOptions(root=plain["root"], declaration=plain.get("declaration", True),
                             encoding=plain.get("encoding", "UTF-8"), namespaces=dict(plain.get("namespaces", {})),
                             pretty=plain.get("pretty", False))
            enc_node = node.get("encoding")
            problem = _encoding_problem(xml.encoding)
            if problem is not None:
                assert enc_node is not None
                self.error(enc_node.span, problem, "spec-bad-value", hint="for example UTF-8, GBK or GB18030")
        schema = None
        schema_span = None
        schema_node = node.get("schema")
        if isinstance(schema_node, YScalar):
            schema = self.load_schema(schema_node, builtin=True)
            schema_span = schema_node.span
        return Target(fmt, xml, wrap=plain.get("wrap")), schema, schema_span

    def build_context(self, node: YNode | None) -> tuple[ContextDef, ...]:
        if not isinstance(node, YMap):
            return ()
        result = []
        for key, value in node.items:
            plain = to_plain(value) if isinstance(value, YMap) else {}
            ctype: Type = _CONTEXT_TYPES[plain.get("type", "string")]
            example = plain.get("example")
            result.append(ContextDef(key.value, key.span, ctype, bool(plain.get("required", True)),
                                     str(plain.get("description", "")),
                                     example if isinstance(example, str | int | bool) else None))
        return tuple(result)

    def build_tables(self, node: YNode | None) -> tuple[TableDef, ...]:
        if not isinstance(node, YMap):
            return ()
        tables = []
        for key, value in node.items:
            assert isinstance(value, YMap)
            plain = to_plain(value)
            default = plain.get("default")
            default_text = None if default is None else str(default)
            rows_node = value.get("rows")
            file_node = value.get("file")
            rows: dict[str, str] | None = None
            if isinstance(rows_node, YMap):
                rows = {k.value: _scalar_text(v) for k, v in rows_node.items}
            elif isinstance(file_node, YScalar):
                rows = self.read_table_file(file_node, plain)
            if rows is not None:
                tables.append(TableDef(key.value, key.span, rows, default_text,
                                       file_node.value if isinstance(file_node, YScalar) else None))
        return tuple(tables)

    def read_table_file(self, node: YScalar, plain: Mapping[str, Any]) -> dict[str, str] | None:
        text = self.read_beside(node)
        if text is None:
            return None
        if node.value.endswith((".yaml", ".yml")):
            sub = SourceText(str(self.shown_base / node.value), text)
            try:
                data = load_yaml(sub)
            except YamlProblem as exc:
                self.diags.extend(exc.diagnostics)
                return None
            if not isinstance(data, YMap) or not all(isinstance(v, YScalar) for _, v in data.items):
                self.error(node.span, f"{node.value!r} must be a YAML mapping of key: value", "spec-table")
                return None
            return {k.value: _scalar_text(v) for k, v in data.items}
        if node.value.endswith(".csv"):
            reader = csv.reader(io.StringIO(text))
            rows = [r for r in reader if r]
            if not rows:
                self.error(node.span, f"{node.value!r} has no header row", "spec-table")
                return None
            header = rows[0]
            key_col = plain.get("key_column", header[0])
            value_col = plain.get("value_column", header[1] if len(header) > 1 else "")
            if key_col not in header or value_col not in header:
                absent = key_col if key_col not in header else value_col
                self.error(node.span, f"{node.value!r} has no column {absent!r}",
                           "spec-table", hint=f"its columns: {', '.join(header)}")
                return None
            ki, vi = header.index(key_col), header.index(value_col)
            result: dict[str, str] = {}
            for lineno, row in enumerate(rows[1:], start=2):
                if len(row) <= max(ki, vi):
                    self.error(node.span, f"{node.value!r} line {lineno} has too few columns", "spec-table")
                    return None
                if row[ki] in result:
                    self.error(node.span, f"{node.value!r} line {lineno}: duplicate key {row[ki]!r}", "spec-table")
                result[row[ki]] = row[vi]
            return result
        self.error(node.span, "a table file must be .csv or .yaml", "spec-table")
        return None

    def build_lets(self, node: YNode | None, what: str = "let") -> tuple[LetDef, ...]:
        if node is not None and not isinstance(node, YMap):
            self.error(node.span, f"{what} must be a mapping of name: expression", "spec-structure")
            return ()
        if not isinstance(node, YMap):
            return ()
        lets = []
        for key, value in node.items:
            scalar = self.scalar(value, f"{what} {key.value!r}")
            if scalar is None:
                continue
            e = self.expr(scalar, f"{what} {key.value!r}")
            if e is not None:
                lets.append(LetDef(key.value, key.span, e))
            else:
                self.broken_lets.add(key.value)
        return tuple(lets)

    # -- the request ----------------------------------------------------------------------
    def build_request(self, node: YMap) -> RequestDef | None:
        plain = to_plain(node)
        url_node = node.get("url")
        assert isinstance(url_node, YScalar)
        sections: dict[str, OutObject] = {}
        for name in ("query", "headers", "form"):
            sub = node.get(name)
            if isinstance(sub, YMap):
                built = self.build_object(sub, top=True, what=f"request.{name}")
                if built is not None:
                    sections[name] = built
        empty = OutObject((), node.span)
        sign = None
        sign_node = node.get("sign")
        if isinstance(sign_node, YMap):
            sp = to_plain(sign_node)
            into = str(sp.get("into", ""))
            section, _, field_name = into.partition(".")
            sign = SignDef(str(sp["scheme"]), str(sp["secret"]), str(sp.get("params", "")), str(sp.get("body", "")),
                           (section, field_name), {k: _option_text(v) for k, v in (sp.get("options") or {}).items()},
                           sign_node.span, tuple(str(o) for o in sp.get("configurable") or ()),
                           _item_spans(sign_node.get("configurable"), sign_node.span))
        encrypt = []
        enc_node = node.get("encrypt")
        if isinstance(enc_node, YSeq):
            for item in enc_node.items:
                if isinstance(item, YMap):
                    ep = to_plain(item)
                    encrypt.append(EncryptDef(str(ep["path"]), str(ep["scheme"]), str(ep["key"]),
                                              {k: _option_text(v) for k, v in (ep.get("options") or {}).items()},
                                              item.span))
        encryptable = []
        able_node = node.get("encryptable")
        if isinstance(able_node, YSeq):
            for item in able_node.items:
                if isinstance(item, YMap):
                    ap = to_plain(item)
                    encryptable.append(EncryptableDef(str(ap["path"]), tuple(str(s) for s in ap.get("schemes") or ()),
                                                      item.span))
        idem = None
        idem_node = node.get("idempotency")
        if isinstance(idem_node, YMap):
            key_node = idem_node.get("key")
            key_scalar = self.scalar(key_node, "idempotency.key")
            key_expr = self.expr(key_scalar, "idempotency.key") if key_scalar is not None else None
            ip = to_plain(idem_node)
            ttl = _seconds(str(ip["ttl"])) if "ttl" in ip else None
            if key_expr is not None:
                idem = IdempotencyDef(key_expr, str(ip.get("rule", "skip")), ttl, idem_node.span)
        return RequestDef(
            method=str(plain.get("method", "POST")), url=url_node.value, url_span=url_node.span,
            query=sections.get("query", empty), headers=sections.get("headers", empty), form=sections.get("form"),
            sign=sign, encrypt=tuple(encrypt), idempotency=idem, span=node.span, encryptable=tuple(encryptable),
        )

    # -- the output tree ------------------------------------------------------------------
    def build_node(self, node: YNode, what: str) -> tuple[OutNode | None, bool]:
        """An output node, and whether a `$value: … $optional: true` form made it optional."""
        if isinstance(node, YScalar):
            e = self.expr(node, what)
            if e is None:  # reported; keep the field so the checks of the rest stay accurate
                return OutValue(ast.Literal("", node.span), node.span, broken=True), False
            return OutValue(e, node.span), False
        if isinstance(node, YSeq):
            items = []
            for i, item in enumerate(node.items):
                built, _ = self.build_node(item, f"{what}[{i}]")
                if built is not None:
                    items.append(built)
            return OutList(tuple(items), node.span), False
        keys = [k.value for k, _ in node.items]
        if "$each" in keys or "$emit" in keys:
            return self.build_each(node, what), False
        if "$value" in keys:
            return self.build_value(node, what)
        if "$json" in keys:
            for k, _ in node.items:
                if k.value != "$json":
                    self.error(k.span, f"{k.value!r} cannot stand beside '$json'", "spec-directive",
                               hint=_BESIDE_HINTS.get((k.value, "$json")))
            inner, _ = self.build_node(node.items[keys.index("$json")][1], what)
            return (OutJson(inner, node.span) if inner is not None else None), False
        return self.build_object(node, what=what), False

    def build_object(self, node: YMap, top: bool = False, what: str = "output") -> OutObject | None:
        fields = []
        when = None
        seen: dict[str, Span] = {}
        for key, value in node.items:
            name = key.value
            if name.startswith("$"):
                if name == "$when" and not top:
                    scalar = self.scalar(value, "$when")
                    when = self.expr(scalar, "$when") if scalar else None
                else:
                    self.error(key.span, f"unknown directive {name!r}" if name not in _DIRECTIVES
                               else f"{name!r} is not allowed here", "spec-directive",
                               hint=did_you_mean(name, _DIRECTIVES) if name not in _DIRECTIVES else None)
                continue
            optional = name.endswith("?")
            field_name = name[:-1] if optional else name
            if not field_name:
                self.error(key.span, "a field needs a name", "spec-structure")
                continue
            if field_name in seen:
                self.error(key.span, f"field {field_name!r} is written twice (also at line {seen[field_name].line})",
                           "spec-duplicate-field")
                continue
            seen[field_name] = key.span
            built, opt2 = self.build_node(value, f"{what}.{field_name}")
            if built is not None:
                fields.append(OutField(field_name, key.span, built, optional or opt2))
        return OutObject(tuple(fields), node.span, when)

    def build_value(self, node: YMap, what: str) -> tuple[OutNode | None, bool]:
        optional = cdata = False
        expr = when = None
        for key, value in node.items:
            if key.value not in _VALUE_KEYS:
                self.error(key.span, f"{key.value!r} cannot stand beside '$value'", "spec-directive",
                           hint=did_you_mean(key.value, _VALUE_KEYS))
                continue
            scalar = self.scalar(value, key.value)
            if scalar is None:
                continue
            if key.value == "$value":
                expr = self.expr(scalar, what)
            elif key.value == "$when":
                when = self.expr(scalar, "$when")
            elif scalar.tag.endswith(":bool") and scalar.style is None:
                flag = to_plain(scalar) is True
                optional, cdata = (flag, cdata) if key.value == "$optional" else (optional, flag)
            else:
                self.error(scalar.span, f"{key.value} must be true or false", "spec-bad-type")
        return (OutValue(expr, node.span, cdata, when=when) if expr is not None else None), optional

    def build_each(self, node: YMap, what: str) -> OutEach | None:
        parts: dict[str, tuple[YScalar, YNode]] = {}
        for key, value in node.items:
            if key.value not in _EACH_KEYS:
                self.error(key.span, f"{key.value!r} cannot stand beside '$each'", "spec-directive",
                           hint=_BESIDE_HINTS.get((key.value, "$each")) or did_you_mean(key.value, _EACH_KEYS)
                           or f"allowed: {', '.join(_EACH_KEYS)}")
                continue
            parts[key.value] = (key, value)
        if "$each" not in parts or "$emit" not in parts:
            missing = "$each" if "$each" not in parts else "$emit"
            self.error(node.span, f"a list needs {missing!r}", "spec-directive",
                       hint="$each: LIST, $as: name, $where: condition, $emit: element")
            return None
        source_scalar = self.scalar(parts["$each"][1], "$each")
        source = self.expr(source_scalar, "$each") if source_scalar else None
        var = "item"
        if "$as" in parts:
            as_scalar = self.scalar(parts["$as"][1], "$as")
            if as_scalar is not None:
                var = as_scalar.value.lstrip("$")
                if not var.isidentifier():
                    self.error(as_scalar.span, f"$as must be a name, not {as_scalar.value!r}", "spec-bad-name")
        where = None
        if "$where" in parts:
            where_scalar = self.scalar(parts["$where"][1], "$where")
            where = self.expr(where_scalar, "$where") if where_scalar else None
        lets = self.build_lets(parts["$let"][1], "$let") if "$let" in parts else ()
        emit, _ = self.build_node(parts["$emit"][1], f"{what}[]")
        if source is None or emit is None:
            return None
        return OutEach(source, var, where, lets, emit, node.span)


FILE_ROOTS_KEY = "spec_file_roots"


def _outside_roots(path: Path, spec_folder: Path) -> str | None:
    """None when `path` (symbolic links followed) lies under the spec's folder or a folder listed
    in the project's pyproject.toml; else the spec's folder, for the message."""
    target = path.resolve()
    roots = _file_roots(spec_folder.resolve())
    if any(target.is_relative_to(root) for root in roots):
        return None
    return display_path(roots[0])


@functools.cache
def _file_roots(folder: Path) -> tuple[Path, ...]:
    """The spec's folder, then the folders `[tool.dockyard] spec_file_roots` of the nearest
    pyproject.toml above it lists (relative to that file)."""
    roots = [folder]
    for candidate in (folder, *folder.parents):
        project = candidate / "pyproject.toml"
        if not project.is_file():
            continue
        try:
            data = tomllib.loads(project.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
            break
        listed = data.get("tool", {}).get("dockyard", {}).get(FILE_ROOTS_KEY, [])
        if isinstance(listed, list):
            roots += [(candidate / item).resolve() for item in listed if isinstance(item, str) and item]
        break
    return tuple(roots)


# The XML `EncName` production: what may stand in the declaration's encoding="..." (the runtime's
# serializer checks the same).
_ENC_NAME = re.compile(r"[A-Za-z][A-Za-z0-9._-]*")


def _encoding_problem(name: str) -> str | None:
    """Why `name` cannot be a target encoding, or None. The name is shown with repr(): it may hold
    a NUL or a lone surrogate, which neither a terminal nor a codec lookup can take."""
    if not _ENC_NAME.fullmatch(name):
        return f"{name!r} is not an encoding name (letters, digits, '.', '_' and '-', starting with a letter)"
    try:
        "".encode(name)
    except (LookupError, ValueError):
        return f"unknown encoding {name!r}"
    return None


def _item_spans(node: YNode | None, default: Span) -> tuple[Span, ...]:
    """The span of each item of a YAML list (the schema has checked it is one)."""
    return tuple(item.span for item in node.items) if isinstance(node, YSeq) else (default,)


def _option_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _seconds(text: str) -> int:
    return int(text[:-1]) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[text[-1]]


def _scalar_text(node: YNode) -> str:
    return node.value if isinstance(node, YScalar) else ""


_KEY_PART = re.compile(r"([^.\[\]\s]+)((?:\[[0-9]{1,4}\])*)")


def parse_key_path(text: str) -> tuple[str | int, ...] | None:
    """`source.key` as path parts: field names, and the indexes of `[n]` (the n-th element of a
    list); None when it is not such a path."""
    parts: list[str | int] = []
    for part in text.split("."):
        found = _KEY_PART.fullmatch(part)
        if found is None:
            return None
        parts.append(found.group(1))
        parts.extend(int(i) for i in re.findall(r"\[([0-9]+)\]", found.group(2)))
    return tuple(parts)


def key_text(path: tuple[str | int, ...]) -> str:
    """A key path as the spec writes it."""
    return "".join(f"[{p}]" if isinstance(p, int) else (f".{p}" if i else p) for i, p in enumerate(path))
