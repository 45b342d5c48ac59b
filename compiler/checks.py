"""Checks: one pass over a parsed `Spec` that types every expression and collects every problem.

The pass returns a `CheckResult`: the sorted diagnostics, the type of every expression node, what
each `$variable` refers to, and the static lineage of every output field (which source paths,
lets, tables, context values and clocks its value comes from). Code generation runs only on a
result without errors and may assume a well-typed tree.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from dockyard.dsl import ast
from dockyard.dsl.diagnostics import Diagnostic, Severity
from dockyard.dsl.functions import REGISTRY, Function, TypeProblem
from dockyard.dsl.spans import Span
from dockyard.dsl.spec import LetDef, OutEach, OutField, OutJson, OutList, OutNode, OutObject, OutValue, Spec
from dockyard.dsl.spec_parser import NO_NULL_HINT, NULL_WORDS, did_you_mean, key_text
from dockyard.dsl.types import (
    ANY,
    BOOL,
    DECIMAL,
    INT,
    STRING,
    Kind,
    Type,
    list_of,
    object_of,
    type_from_schema,
)

__all__ = ["Binding", "CheckResult", "Lineage", "check_expression", "check_spec", "has_when"]

_XML_NAME = re.compile(r"^[A-Za-z_][\w.\-]*(:[A-Za-z_][\w.\-]*)?$")


@dataclass
class Lineage:
    """Where a value comes from: source paths (with [] for list elements), lets, tables, …

    `lets` holds the named values it reads, shown as `$NAME`: the `let` values, and `position`
    for a value built from `$position` (it comes from no source path, yet it is an input)."""

    paths: set[str] = field(default_factory=set)
    lets: set[str] = field(default_factory=set)
    tables: set[str] = field(default_factory=set)
    context: set[str] = field(default_factory=set)
    clock: bool = False

    def add(self, other: Lineage) -> None:
        self.paths |= other.paths
        self.lets |= other.lets
        self.tables |= other.tables
        self.context |= other.context
        self.clock = self.clock or other.clock

    def as_dict(self) -> dict[str, Any]:
        return {"paths": sorted(self.paths), "lets": sorted(self.lets), "tables": sorted(self.tables),
                "context": sorted(self.context), "clock": self.clock}


@dataclass
class Binding:
    """What a `$name` means at one place in the spec."""

    kind: str  # "let", "loop", "lambda", "position", "ctx"
    name: str
    type: Type
    uid: int  # unique per binding: codegen names the Python local from it, never from the user name
    path: str | None = None  # the source path this binding stands for (loop/lambda: the list's path + [])
    lineage: Lineage = field(default_factory=Lineage)
    used: bool = False
    span: Span | None = None
    omit: ast.Omit | None = None  # a let whose value can be `omit` (a branch of it, a `??` default)


@dataclass
class CheckResult:
    diagnostics: list[Diagnostic]
    types: dict[int, Type] = field(default_factory=dict)  # id(expr node) → type
    bindings: dict[int, Binding] = field(default_factory=dict)  # id(Var node) → binding
    let_bindings: dict[int, Binding] = field(default_factory=dict)  # id(LetDef) → binding
    loop_bindings: dict[int, Binding] = field(default_factory=dict)  # id(OutEach) → element binding
    lambda_bindings: dict[int, Binding] = field(default_factory=dict)  # id(Lambda) → parameter binding
    lineage: dict[int, Lineage] = field(default_factory=dict)  # id(OutValue) → lineage
    field_types: dict[int, Type] = field(default_factory=dict)  # id(OutNode) → type of the node's value

    @property
    def ok(self) -> bool:
        return not any(d.is_error for d in self.diagnostics)


class _Scope:
    def __init__(self, parent: _Scope | None = None) -> None:
        self.parent = parent
        self.names: dict[str, Binding] = {}

    def find(self, name: str) -> Binding | None:
        scope: _Scope | None = self
        while scope is not None:
            if name in scope.names:
                return scope.names[name]
            scope = scope.parent
        return None

    def all_names(self) -> set[str]:
        names: set[str] = set()
        scope: _Scope | None = self
        while scope is not None:
            names |= set(scope.names)
            scope = scope.parent
        return names


_RESERVED = {"ctx", "position"}


class _Checker:
    def __init__(self, source_type: Type, tables: Mapping[str, Any], context: Mapping[str, Type],
                 context_required: Mapping[str, bool] | None = None) -> None:
        self.source_type = source_type
        self.tables = tables
        self.context = context
        self.context_required = context_required or {}
        self.result = CheckResult([])
        self.uid = 0
        self.position_stack: list[Binding] = []
        self.broken_lets: frozenset[str] = frozenset()  # failed to parse: already reported
        self.lets_below: set[str] = set()  # lets of the current block not yet defined

    # -- reporting ------------------------------------------------------------------------
    def error(self, span: Span, message: str, code: str, hint: str | None = None) -> None:
        self.result.diagnostics.append(Diagnostic(span, message, code, Severity.ERROR, hint))

    def warning(self, span: Span, message: str, code: str, hint: str | None = None) -> None:
        self.result.diagnostics.append(Diagnostic(span, message, code, Severity.WARNING, hint))

    def bind(self, kind: str, name: str, type_: Type, span: Span | None, path: str | None = None) -> Binding:
        self.uid += 1
        return Binding(kind, name, type_, self.uid, path=path, span=span)

    def typed(self, node: ast.Expr, t: Type) -> Type:
        self.result.types[id(node)] = t
        return t

    # -- expressions ----------------------------------------------------------------------
    def expr(self, node: ast.Expr, scope: _Scope, lin: Lineage) -> Type:
        return self.typed(node, self._expr(node, scope, lin))

    def _expr(self, node: ast.Expr, scope: _Scope, lin: Lineage) -> Type:
        match node:
            case ast.Literal(value=v):
                if isinstance(v, bool):
                    return BOOL
                if isinstance(v, int):
                    return INT
                if isinstance(v, Decimal):
                    return DECIMAL
                return STRING
            case ast.Omit():
                return ANY.optional()  # missing on purpose; `if`/`??` take the other side's type
            case ast.Name(name=name):
                t = self.source_type.field(name)
                if t is None and name in NULL_WORDS:
                    self.error(node.span, "the language has no null", "no-null", hint=NO_NULL_HINT)
                    return ANY.optional()
                if t is None:
                    self.unknown_field(node.span, name, self.source_type, "the source document")
                    return ANY.optional()
                lin.paths.add(name)
                return t
            case ast.Var():
                return self.var(node, scope, lin)
            case ast.Field():
                return self.field(node, scope, lin)
            case ast.Index(obj=obj, index=index):
                ot = self.expr(obj, scope, lin)
                it = self.expr(index, scope, Lineage())
                if ot.kind is Kind.LIST:
                    if it.kind not in (Kind.INT, Kind.ANY):
                        self.error(index.span, f"a list index must be a whole number, not {it.name}", "type-index")
                    path = _source_path(obj, self.result)
                    if path is not None and isinstance(index, ast.Literal):
                        lin.paths.discard(path)
                        lin.paths.add(f"{path}[{index.value}]")
                    return (ot.item or ANY).optional()
                if ot.kind is Kind.ANY:  # unknown shape: a list position or a field name, checked at run time
                    if it.kind not in (Kind.STRING, Kind.INT, Kind.ANY):
                        self.error(index.span, f"an index must be a number or a field name, not {it.name}",
                                   "type-index")
                    return ANY.optional()
                if ot.kind is Kind.OBJECT:
                    if it.kind not in (Kind.STRING, Kind.ANY):
                        self.error(index.span, f"a field name must be a string, not {it.name}", "type-index")
                    if isinstance(index, ast.Literal) and isinstance(index.value, str):
                        ft = ot.field(index.value)
                        if ft is None:
                            where = _source_path(obj, self.result) or "this object"
                            self.unknown_field(index.span, index.value, ot, where)
                            return ANY.optional()
                        return ft
                    return ANY.optional()
                self.error(node.span, f"cannot index a {ot.name}", "type-index")
                return ANY.optional()
            case ast.Lambda():
                self.error(node.span, "a lambda ($x => …) may only be a function argument", "lambda-position")
                return ANY
            case ast.Call():
                return self.call(node, scope, lin)
            case ast.Unary(op=op, operand=operand):
                t = self.expr(operand, scope, lin)
                if op == "not":
                    self.expect_bool(operand, t)
                    return BOOL
                if not (t.numeric or t.kind is Kind.ANY):
                    self.error(node.span, f"cannot negate a {t.name}", "type-operator")
                    return DECIMAL.optional(t.maybe)
                return (t if t.kind is not Kind.ANY else DECIMAL.optional(t.maybe))
            case ast.Binary():
                return self.binary(node, scope, lin)
            case ast.If(cond=c, then=a, else_=b):
                self.expect_bool(c, self.expr(c, scope, lin))
                ta, tb = self.expr(a, scope, lin), self.expr(b, scope, lin)
                return self.unify(node.span, ta, tb, "the 'then' and 'else' branches")
            case ast.ListLit(items=items):
                types = [self.expr(i, scope, lin) for i in items]
                item = types[0].required() if types else ANY
                for t, i in zip(types[1:], items[1:], strict=True):
                    item = self.unify(i.span, item, t.required(), "list elements")
                return list_of(item)
            case ast.ObjectLit(entries=entries):
                fields: dict[str, Type] = {}
                for key, key_span, value in entries:
                    if key in fields:
                        self.error(key_span, f"the key {key!r} is written twice in this object", "duplicate-key")
                    fields[key] = self.expr(value, scope, lin)
                return object_of(fields, open=False)
        raise AssertionError(node)  # pragma: no cover

    def var(self, node: ast.Var, scope: _Scope, lin: Lineage) -> Type:
        if node.name == "ctx":
            self.error(node.span, "$ctx needs a field name", "ctx-field",
                       hint=f"context values: {', '.join('$ctx.' + n for n in self.context) or 'none declared'}")
            return ANY.optional()
        if node.name == "position":
            if not self.position_stack:
                self.error(node.span, "$position is only defined inside a $each list", "unknown-variable")
                return INT
            self.result.bindings[id(node)] = self.position_stack[-1]
            lin.lets.add("position")  # so that --explain credits a value built from it to $position
            return INT
        b = scope.find(node.name)
        if b is None:
            if node.name in self.broken_lets:
                return ANY.optional()
            names = scope.all_names()
            close = did_you_mean("$" + node.name, {"$" + n for n in names})
            if node.name in self.lets_below:
                hint: str | None = f"${node.name} is defined further down; a let can use only the lets above it"
            elif close:
                hint = close
            elif self.source_type.field(node.name):
                hint = "source fields are written without '$'"
            elif names:
                hint = f"defined here: {', '.join('$' + n for n in sorted(names))}"
            else:
                hint = "declare it under let:"
            self.error(node.span, f"unknown variable ${node.name}", "unknown-variable", hint=hint)
            return ANY.optional()
        b.used = True
        self.result.bindings[id(node)] = b
        lin.add(b.lineage)
        if b.kind == "let":
            lin.lets.add(b.name)
        return b.type

    def field(self, node: ast.Field, scope: _Scope, lin: Lineage) -> Type:
        if isinstance(node.obj, ast.Var) and node.obj.name == "ctx":
            t = self.context.get(node.name)
            if t is None:
                self.error(node.name_span, f"unknown context value $ctx.{node.name}", "unknown-context",
                           hint=did_you_mean(node.name, list(self.context)) or
                           "declare it under context: in the spec")
                return ANY.optional()
            lin.context.add(node.name)
            self.typed(node.obj, ANY)
            return t.optional(not self.context_required.get(node.name, True))
        ot = self.expr(node.obj, scope, lin)
        base = _source_path(node.obj, self.result)
        if ot.kind is Kind.LIST:
            self.error(node.name_span, f"{base or 'this value'} is a list: it has no field {node.name!r}",
                       "type-field", hint="use $each in the output, map(list, $x => $x.field), or an index like [0]")
            return ANY.optional()
        if ot.kind not in (Kind.OBJECT, Kind.ANY):
            self.error(node.name_span, f"a {ot.name} has no fields", "type-field")
            return ANY.optional()
        t = ot.field(node.name)
        if t is None:
            self.unknown_field(node.name_span, node.name, ot, base or "this object")
            return ANY.optional()
        if base is not None:
            lin.paths.discard(base)
            lin.paths.add(f"{base}.{node.name}")
        return t

    def unknown_field(self, span: Span, name: str, t: Type, where: str) -> None:
        known = list(t.shape.fields) if t.shape else []
        hint = did_you_mean(name, known)
        if hint is None and where == "the source document" and re.fullmatch(r"[A-Z0-9_\-]+", name):
            hint = f'to write the text {name} itself, quote it: "{name}"'
        self.error(span, f"unknown field {name!r} in {where}", "unknown-path", hint=hint)

    def expect_bool(self, node: ast.Expr, t: Type) -> None:
        if t.kind not in (Kind.BOOL, Kind.ANY):
            self.error(node.span, f"a condition must be true or false, not {t.name}", "type-condition",
                       hint="compare it, e.g. x > 0, or test present(x)")

    def unify(self, span: Span, a: Type, b: Type, what: str) -> Type:
        maybe = a.maybe or b.maybe
        if a.kind is Kind.ANY:
            return b.optional(maybe)
        if b.kind is Kind.ANY or a.kind == b.kind:
            return a.optional(maybe)
        if a.numeric and b.numeric:
            return DECIMAL.optional(maybe)
        self.error(span, f"{what} have different types: {a.name} and {b.name}", "type-mismatch",
                   hint="convert one with string(…) or decimal(…)")
        return ANY.optional(maybe)

    def binary(self, node: ast.Binary, scope: _Scope, lin: Lineage) -> Type:
        op = node.op
        lt = self.expr(node.left, scope, lin)
        rt = self.expr(node.right, scope, lin)
        if op == "??":
            if not lt.maybe:
                self.warning(node.left.span, "this value is never missing, so the default after '??' is never used",
                             "unused-default")
            return self.unify(node.span, lt.required(), rt, "the two sides of '??'").optional(rt.maybe)
        if op in ("and", "or"):
            self.expect_bool(node.left, lt)
            self.expect_bool(node.right, rt)
            return BOOL
        if op in ("==", "!=", "<", "<=", ">", ">="):
            kinds = {lt.kind, rt.kind} - {Kind.ANY}
            if len(kinds) > 1 and not kinds <= {Kind.INT, Kind.DECIMAL}:
                self.error(node.span, f"cannot compare {lt.name} with {rt.name}", "type-mix",
                           hint="convert one side with decimal(…) or string(…)")
            elif op not in ("==", "!=") and kinds & {Kind.BOOL, Kind.LIST, Kind.OBJECT}:
                self.error(node.span, f"'{op}' cannot order {next(iter(kinds)).value} values", "type-operator")
            return BOOL
        maybe = lt.maybe or rt.maybe
        if op == "+" and Kind.STRING in (lt.kind, rt.kind):
            if lt.kind in (Kind.STRING, Kind.ANY) and rt.kind in (Kind.STRING, Kind.ANY):
                return STRING.optional(maybe)
            self.error(node.span, f"cannot add {lt.name} and {rt.name}", "type-mix",
                       hint="convert with string(…) to join texts, or decimal(…) to add numbers")
            return ANY.optional(maybe)
        for side, t in ((node.left, lt), (node.right, rt)):
            if not (t.numeric or t.kind is Kind.ANY):
                self.error(side.span, f"'{op}' needs numbers, not {t.name}", "type-mix" if t.kind is Kind.STRING
                           else "type-operator", hint="convert with decimal(…)" if t.kind is Kind.STRING else None)
                return ANY.optional(maybe)
        if op == "/" or lt.kind is not Kind.INT or rt.kind is not Kind.INT:
            return DECIMAL.optional(maybe)
        return INT.optional(maybe)

    def call(self, node: ast.Call, scope: _Scope, lin: Lineage) -> Type:
        fn = REGISTRY.get(node.func)
        if fn is None:
            hint = did_you_mean(node.func, list(REGISTRY))
            if node.func in self.tables:
                hint = f"{node.func} is a table: write lookup({node.func}, key)"
            self.error(node.func_span, f"unknown function {node.func!r}", "unknown-function", hint=hint)
            for arg in node.args:
                if not isinstance(arg, ast.Lambda):
                    self.expr(arg, scope, lin)
            return ANY.optional()
        n = len(node.args)
        if n < fn.min_args or (fn.max_args is not None and n > fn.max_args):
            want = (f"{fn.min_args}" if fn.max_args == fn.min_args else
                    f"{fn.min_args} to {fn.max_args}" if fn.max_args is not None else f"at least {fn.min_args}")
            self.error(node.span, f"{fn.name} takes {want} argument{'s' if want != '1' else ''}, got {n}",
                       "arity", hint=f"{fn.signature()}")
        types: list[Type] = []
        literals: list[Any] = []
        ok = True
        list_item = ANY
        for i, arg in enumerate(node.args):
            p = fn.param_at(i)
            if p is None:
                break
            literals.append(ast.literal_value(arg))
            if p.lambda_:
                if not isinstance(arg, ast.Lambda):
                    self.error(arg.span, f"argument {p.name!r} of {fn.name} must be a lambda like $x => …",
                               "lambda-expected")
                    types.append(self.expr(arg, scope, lin))
                    ok = False
                    continue
                inner = _Scope(scope)
                lam_path = _source_path(node.args[0], self.result) if node.args else None
                b = self.bind("lambda", arg.param, list_item, arg.span, f"{lam_path}[]" if lam_path else None)
                b.used = True
                if lam_path:
                    b.lineage.paths.add(f"{lam_path}[]")
                inner.names[arg.param] = b
                self.result.lambda_bindings[id(arg)] = b
                body_lin = Lineage()
                bt = self.expr(arg.body, inner, body_lin)
                self.typed(arg, bt)
                # The body's own reads replace the bare list path in the lineage.
                if lam_path:
                    lin.paths.discard(lam_path)
                    body_lin.paths.discard(f"{lam_path}[]")
                lin.add(body_lin)
                ok = self.check_kind(fn, i, p.kinds, arg.body, bt, lambda_body=True) and ok
                types.append(bt)
                continue
            if isinstance(arg, ast.Lambda):
                self.error(arg.span, f"argument {p.name!r} of {fn.name} is not a lambda", "lambda-position")
                ok = False
                types.append(ANY)
                continue
            if p.table:
                if not isinstance(arg, ast.Name) or arg.name not in self.tables:
                    name = arg.name if isinstance(arg, ast.Name) else None
                    self.error(arg.span, f"unknown table {name!r}" if name else "expected a table name",
                               "unknown-table", hint=did_you_mean(name, list(self.tables)) if name else
                               f"tables: {', '.join(self.tables) or 'none declared'}")
                    ok = False
                else:
                    lin.tables.add(arg.name)
                types.append(STRING)
                self.typed(arg, STRING)
                continue
            t = self.expr(arg, scope, lin)
            types.append(t)
            if i == 0 and t.kind is Kind.LIST:
                list_item = (t.item or ANY).required()
            if p.literal and literals[-1] is None:
                self.error(arg.span, f"argument {p.name!r} of {fn.name} must be written as a constant",
                           "literal-expected", hint="patterns, time zones, rounding modes and places are fixed "
                           "when the spec compiles")
                ok = False
                continue
            if p.choices and literals[-1] not in p.choices:
                self.error(arg.span, f"{literals[-1]!r} is not a valid {p.name}", "bad-choice",
                           hint=did_you_mean(str(literals[-1]), p.choices) or f"one of: {', '.join(p.choices)}")
                ok = False
            ok = self.check_kind(fn, i, p.kinds, arg, t) and ok
        if not ok:
            return ANY.optional()
        if fn.check_literal is not None:
            try:
                fn.check_literal(literals)
            except TypeProblem as exc:
                at = node.args[exc.arg] if exc.arg is not None and exc.arg < len(node.args) else node
                self.error(at.span, exc.message, "bad-argument", hint=exc.hint)
                return ANY.optional()
        if fn.name == "lookup" and len(node.args) >= 2 and isinstance(node.args[0], ast.Name):
            table = self.tables.get(node.args[0].name)
            if table is not None and len(node.args) == 2 and getattr(table, "default", None) is not None:
                types.append(STRING)  # the table's own default makes the result present
        if fn.name == "now":
            lin.clock = True
        try:
            result = fn.returns(types, literals)
        except TypeProblem as exc:
            at = node.args[exc.arg] if exc.arg is not None and exc.arg < len(node.args) else node
            self.error(at.span, exc.message, "type-argument", hint=exc.hint)
            return ANY.optional()
        maybe = any(t.maybe for i, t in enumerate(types[: len(node.args)])
                    if (p := fn.param_at(i)) is not None and not p.handles_missing and not p.lambda_ and not p.table)
        return result.optional(result.maybe or maybe)

    def check_kind(self, fn: Function, index: int, kinds: tuple[Kind, ...], arg: ast.Expr, t: Type,
                   lambda_body: bool = False) -> bool:
        if Kind.ANY in kinds or t.kind is Kind.ANY or t.kind in kinds:
            return True
        if t.kind is Kind.INT and Kind.DECIMAL in kinds:
            return True
        p = fn.param_at(index)
        name = p.name if p else "argument"
        expected = " or ".join(k.value for k in kinds)
        hint = None
        if Kind.STRING in kinds and t.numeric:
            hint = "convert it with string(…)"
        elif Kind.DECIMAL in kinds and t.kind is Kind.STRING:
            hint = "convert it with decimal(…)"
        elif Kind.DATETIME in kinds and t.kind is Kind.STRING:
            hint = "read it with parse_datetime(…)"
        what = f"the lambda of {fn.name}" if lambda_body else f"argument {name!r} of {fn.name}"
        self.error(arg.span, f"{what} must be {expected}, not {t.name}",
                   "type-mix" if {t.kind, *kinds} >= {Kind.STRING, Kind.DECIMAL} else "type-argument", hint=hint)
        return False

    # -- lets and the output tree ---------------------------------------------------------
    def lets(self, lets: tuple[LetDef, ...], scope: _Scope) -> list[Binding]:
        bound = []
        outer_below = self.lets_below
        for i, let in enumerate(lets):
            self.lets_below = {later.name for later in lets[i + 1 :]}
            if let.name in _RESERVED:
                self.error(let.span, f"${let.name} is reserved; choose another name", "reserved-name")
                continue
            if let.name in scope.names:
                self.error(let.span, f"${let.name} is defined twice", "duplicate-let")
                continue
            lin = Lineage()
            t = self.expr(let.expr, scope, lin)
            b = self.bind("let", let.name, t, let.span, _source_path(let.expr, self.result))
            b.lineage = lin
            tail = _omit_tail(let.expr, self.result)
            b.omit = tail[0] if tail is not None else None
            scope.names[let.name] = b
            self.result.let_bindings[id(let)] = b
            bound.append(b)
        self.lets_below = outer_below
        return bound

    def unused(self, bound: list[Binding]) -> None:
        for b in bound:
            if not b.used and b.span is not None:
                self.warning(b.span, f"${b.name} is never used", "unused-let", hint="remove it or use it")

    def node(self, node: OutNode, scope: _Scope, where: str, fmt: str) -> Type:
        t = self._node(node, scope, where, fmt)
        self.result.field_types[id(node)] = t
        return t

    def _node(self, node: OutNode, scope: _Scope, where: str, fmt: str) -> Type:
        match node:
            case OutValue(broken=True):
                return ANY.optional()
            case OutValue(expr=e, when=when):
                lin = Lineage()
                t = self.expr(e, scope, lin)
                self.result.lineage[id(node)] = lin
                if when is not None:  # like an object's $when: decides presence, not the value
                    self.expect_bool(when, self.expr(when, scope, Lineage()))
                    t = t.optional()
                if t.kind is Kind.LIST and fmt == "form":
                    self.error(e.span, f"{where}: a form field cannot hold a list", "target-shape",
                               hint="serialize it with to_json(…) or $json")
                return t
            case OutObject():
                return self.object(node, scope, where, fmt)
            case OutList(items=items):
                types = [self.node(item, scope, f"{where}[{i}]", fmt) for i, item in enumerate(items)]
                return list_of(types[0] if types else ANY)
            case OutJson(node=inner):
                self.node(inner, scope, where, "json")
                return STRING
            case OutEach():
                return self.each(node, scope, where, fmt)
        raise AssertionError(node)  # pragma: no cover

    def object(self, node: OutObject, scope: _Scope, where: str, fmt: str, top: bool = False) -> Type:
        if node.when is not None:
            self.expect_bool(node.when, self.expr(node.when, scope, Lineage()))
        fields: dict[str, Type] = {}
        for f in node.fields:
            path = f"{where}.{f.key}" if where else f.key
            if fmt == "form" and top and isinstance(f.value, OutObject | OutList | OutEach):
                shape = "an object" if isinstance(f.value, OutObject) else "a list"
                self.error(f.span, f"{path}: a form field cannot hold {shape}", "target-shape",
                           hint="wrap it in $json to send it as a JSON text")
            if fmt == "xml":
                self.xml_key(f, path)
            fields[f.key] = self.node(f.value, scope, path, "json" if fmt == "form" and not top else fmt)
            if f.optional:
                fields[f.key] = fields[f.key].optional()
            elif has_when(f.value):
                self.warning(f.span, f"{path} is required, but its $when can leave it out, and then the order fails",
                             "required-when", hint=f"mark it optional: {f.key}?:")
            else:
                self.required_omit(f, path)
        return object_of(fields, maybe=node.when is not None, open=False)

    def required_omit(self, f: OutField, path: str) -> None:
        """`omit` can only leave a field out; on a required field it would fail every such order."""
        tail = _omit_tail(f.value.expr, self.result) if isinstance(f.value, OutValue) else None
        if tail is None:
            return
        omit, through = tail
        hint = f'mark it optional: {f.key}?:, or refuse the order with fail("…")'
        if through is None:
            self.error(omit.span, f"omit leaves {path} out, but {path} is required", "required-omit", hint=hint)
        else:  # the omit is in a let: point at the use here, and say where the omit is
            self.error(through.span, f"${through.name} can be omit (line {omit.span.line}), which leaves {path} "
                                     f"out, but {path} is required", "required-omit", hint=hint)

    def xml_key(self, f: OutField, path: str) -> None:
        key = f.key[1:] if f.key.startswith("@") else f.key
        if f.key == "#text":
            return
        if not _XML_NAME.fullmatch(key) or (key.lower().startswith("xml") and ":" not in key):
            self.error(f.span, f"{f.key!r} is not a valid XML name", "target-xml-name")
        elif f.key.startswith("@") and not isinstance(f.value, OutValue):
            self.error(f.span, f"attribute {f.key!r} must be a single value", "target-shape")

    def each(self, node: OutEach, scope: _Scope, where: str, fmt: str) -> Type:
        lin = Lineage()
        st = self.expr(node.source, scope, lin)
        if st.kind not in (Kind.LIST, Kind.ANY):
            self.error(node.source.span, f"$each needs a list, not {st.name}", "type-each")
        item = (st.item or ANY).required() if st.kind is Kind.LIST else ANY
        inner = _Scope(scope)
        path = _source_path(node.source, self.result)
        b = self.bind("loop", node.var, item, node.span, f"{path}[]" if path else None)
        b.used = True
        b.lineage = Lineage(paths={f"{path}[]"} if path else set())
        if not path:
            b.lineage.add(lin)
        inner.names[node.var] = b
        self.result.loop_bindings[id(node)] = b
        position = self.bind("position", "position", INT, node.span)
        self.position_stack.append(position)
        self.result.bindings[id(node)] = position
        try:
            if node.where is not None:
                self.expect_bool(node.where, self.expr(node.where, inner, Lineage()))
            bound = self.lets(node.lets, inner)
            et = self.node(node.emit, inner, f"{where}[]", fmt)
            self.unused(bound)
        finally:
            self.position_stack.pop()
        return list_of(et.required())


def has_when(node: OutNode) -> bool:
    """Whether a `$when` can leave the node out (an object's or a `$value`'s)."""
    return isinstance(node, OutObject | OutValue) and node.when is not None


def _omit_tail(node: ast.Expr, result: CheckResult) -> tuple[ast.Omit, ast.Var | None] | None:
    """An `omit` that can be the value of the whole expression (a branch of `if`, a `??` default,
    or a `$let` whose value can be one), with the variable it came through, if any."""
    match node:
        case ast.Omit():
            return node, None
        case ast.If(then=then, else_=other):
            return _omit_tail(then, result) or _omit_tail(other, result)
        case ast.Binary(op="??", right=right):
            return _omit_tail(right, result)
        case ast.Var():
            b = result.bindings.get(id(node))
            return (b.omit, node) if b is not None and b.kind == "let" and b.omit is not None else None
    return None


def _source_path(node: ast.Expr, result: CheckResult) -> str | None:
    """The source path an expression reads directly (`items`, `buyer.nick`, `$line` → `items[]`)."""
    match node:
        case ast.Name(name=name):
            return name
        case ast.Field(obj=obj, name=name):
            base = _source_path(obj, result)
            return f"{base}.{name}" if base is not None else None
        case ast.Var():
            b = result.bindings.get(id(node))
            return b.path if b is not None and b.kind in ("loop", "lambda", "let") else None
        case ast.Index(obj=obj, index=ast.Literal(value=v)) if isinstance(v, int):
            base = _source_path(obj, result)
            return f"{base}[{v}]" if base is not None else None
        case ast.Call(func="filter", args=args) if args:
            return _source_path(args[0], result)  # filter keeps the elements themselves
    return None


# --- entry points ----------------------------------------------------------------------------

def check_spec(spec: Spec) -> CheckResult:
    """Check a parsed spec: every problem is collected; the result is sorted by position."""
    source_type = type_from_schema(spec.source_schema)
    context = {c.name: c.type for c in spec.context}
    required = {c.name: c.required for c in spec.context}
    tables = {t.name: t for t in spec.tables}
    ch = _Checker(source_type, tables, context, required)
    ch.broken_lets = spec.broken_lets
    scope = _Scope()
    bound = ch.lets(spec.lets, scope)
    out_type = ch.object(spec.output, scope, "", spec.target.format, top=True)
    ch.result.field_types[id(spec.output)] = out_type
    ch.unused(bound)
    if spec.target.format == "xml" and spec.target.xml is not None:
        root = spec.target.xml.root
        if not _XML_NAME.fullmatch(root):
            ch.error(spec.spans.get("target.root", spec.output.span), f"the XML root {root!r} is not a valid XML name",
                     "target-xml-name")
    if spec.request is not None:
        _check_request(ch, spec, scope)
    if spec.target_schema is not None and spec.target_schema_span is not None:
        _TargetSchemaCheck(ch, spec.target_schema).object(spec.output, spec.target_schema, "",
                                                          spec.target_schema_span)
    _check_key_path(ch, spec, source_type)
    ch.result.diagnostics.sort(key=Diagnostic.sort_key)
    return ch.result


_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_PLACEHOLDER_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def url_placeholders(url: str) -> list[str]:
    return _PLACEHOLDER.findall(url)


def _check_request(ch: _Checker, spec: Spec, outer: _Scope) -> None:
    """The request section: computed fields, the URL template, and the policies named."""
    from dockyard.runtime.fieldcrypto import get_cipher
    from dockyard.runtime.plugins import PluginError
    from dockyard.runtime.signing import get_signer

    req = spec.request
    assert req is not None
    scope = _Scope(outer)
    # $body is the serialized document, $request_id the id of this attempt (reused on resend).
    scope.names["body"] = ch.bind("body", "body", STRING, None)
    scope.names["request_id"] = ch.bind("request_id", "request_id", STRING, None)
    for b in scope.names.values():
        b.used = True
    for name in url_placeholders(req.url):
        if not _PLACEHOLDER_NAME.fullmatch(name):
            ch.error(req.url_span, f"{{{name}}} is not a placeholder: use {{contextName}}", "request-url")
        elif name not in ch.context:
            ch.error(req.url_span, f"the URL uses {{{name}}}, which is not a declared context value",
                     "request-url", hint=did_you_mean(name, list(ch.context)) or "declare it under context:")
    if "{" not in req.url and not req.url.startswith(("http://", "https://")):
        ch.error(req.url_span, "the URL must start with http:// or https:// (or a {placeholder})", "request-url")
    sections = {"query": req.query, "headers": req.headers}
    if req.form is not None:
        sections["form"] = req.form
    for section, obj in sections.items():
        for f in obj.fields:
            t = ch.node(f.value, scope, f"request.{section}.{f.key}", "json")
            if not f.optional:
                ch.required_omit(f, f"request.{section}.{f.key}")
            if not isinstance(f.value, OutValue) or t.kind in (Kind.LIST, Kind.OBJECT):
                ch.error(f.span, f"request.{section}.{f.key} must be a single value (text, number or boolean)",
                         "request-field", hint="serialize structures with to_json(…)")
    if req.sign is not None:
        sign = req.sign
        try:
            signer = get_signer(sign.scheme)
        except PluginError as exc:
            ch.error(sign.span, str(exc), "unknown-policy")
        else:
            known = signer.known_options
            spans = sign.configurable_spans or (sign.span,)
            for i, option in enumerate(sign.configurable):
                if known is not None and option not in known:
                    ch.error(spans[min(i, len(spans) - 1)],
                             f"sign.configurable: {sign.scheme} has no option {option!r}", "request-sign",
                             hint=did_you_mean(option, list(known)) or f"its options: {', '.join(sorted(known))}")
        if sign.params == "form" and req.form is None and spec.target.format != "form":
            ch.error(sign.span, "sign.params is form, but the request has no form", "request-sign")
        section, _, name = sign.body.partition(".")
        named_field = section in ("form", "query") and section in sections and any(
            f.key == name for f in sections[section].fields)
        if sign.body not in ("", "body", "none") and not named_field:
            ch.error(sign.span, f"sign.body {sign.body!r} names no request field", "request-sign",
                     hint="body, none, form.NAME or query.NAME")
    for enc in req.encrypt:
        try:
            get_cipher(enc.scheme)
        except PluginError as exc:
            ch.error(enc.span, str(exc), "unknown-policy")
        if not _output_has_path(spec.output, enc.path):
            ch.error(enc.span, f"encrypt: the output has no field {enc.path!r}", "request-encrypt",
                     hint="write the path as in the output tree, with [] for list elements")
    fixed = {enc.path for enc in req.encrypt}
    for able in req.encryptable:
        for scheme in able.schemes:
            try:
                get_cipher(scheme)
            except PluginError as exc:
                ch.error(able.span, str(exc), "unknown-policy")
        if not _output_has_path(spec.output, able.path):
            ch.error(able.span, f"encryptable: the output has no field {able.path!r}", "request-encrypt",
                     hint="write the path as in the output tree, with [] for list elements")
        elif able.path in fixed:
            ch.error(able.span, f"encryptable: {able.path!r} is always encrypted (it is under encrypt:)",
                     "request-encrypt", hint="list a field under encrypt: or under encryptable:, not both")
    if req.idempotency is not None:
        rule = req.idempotency.rule
        if rule.startswith("{") and rule[1:-1] not in ch.context:
            ch.error(req.idempotency.span, f"idempotency.rule uses {rule}, which is not a declared context value",
                     "request-idempotency", hint=did_you_mean(rule[1:-1], list(ch.context)))
        t = ch.expr(req.idempotency.key, scope, Lineage())
        if t.kind not in (Kind.STRING, Kind.INT, Kind.ANY):
            ch.error(req.idempotency.key.span, f"the idempotency key must be text, not {t.name}", "request-idempotency")


def _output_has_path(node: OutObject, path: str) -> bool:
    current: OutNode = node
    for part in path.replace("[]", ".[]").split("."):
        if not part:
            continue
        if part == "[]":
            if isinstance(current, OutEach):
                current = current.emit
                continue
            return False
        if isinstance(current, OutJson):
            current = current.node
        if not isinstance(current, OutObject):
            return False
        found = next((f for f in current.fields if f.key == part), None)
        if found is None:
            return False
        current = found.value
    return isinstance(current, OutValue)


def _check_key_path(ch: _Checker, spec: Spec, source_type: Type) -> None:
    if not spec.key_path:  # not a path: the spec parser said so
        return
    t: Type | None = source_type
    for part in spec.key_path:
        if t is None:
            break
        if isinstance(part, int):
            t = (t.item or ANY).optional() if t.kind is Kind.LIST else ANY.optional() if t.kind is Kind.ANY else None
        else:
            t = t.field(part)
    key = key_text(spec.key_path)
    where = spec.spans.get("source.key", spec.source_schema_span)
    if t is None:
        ch.error(where, f"the business key {key!r} is not in the source schema",
                 "unknown-path", hint="set source.key to the path of the order number")
    elif t.kind in (Kind.LIST, Kind.OBJECT):
        # Errors name the key's value: a whole list or object there would be unreadable, and would
        # carry the message's contents (addresses, names) into every error and log line.
        ch.error(where, f"the business key {key!r} is {'a list' if t.kind is Kind.LIST else 'an object'}, "
                 "not a single value", "key-not-a-value",
                 hint="point source.key at one text or number field, e.g. Body.WaybillRoute[0].mailno")


def check_expression(expr: ast.Expr, source_schema: Mapping[str, Any] | None = None,
                     tables: Mapping[str, Any] | None = None,
                     context: Mapping[str, Type] | None = None) -> tuple[CheckResult, Type]:
    """Check one bare expression (the entry point behind `compile_expression`)."""
    source_type = type_from_schema(source_schema) if source_schema is not None else object_of({}, open=True)
    ch = _Checker(source_type, tables or {}, context or {})
    t = ch.expr(expr, _Scope(), Lineage())
    ch.result.diagnostics.sort(key=Diagnostic.sort_key)
    return ch.result, t


# --- target schema ---------------------------------------------------------------------------

class _TargetSchemaCheck:
    """Walks the output tree beside the target schema: unknown, missing and mistyped fields."""

    def __init__(self, ch: _Checker, root: Mapping[str, Any]) -> None:
        self.ch = ch
        self.root = root

    def resolve(self, schema: Mapping[str, Any]) -> Mapping[str, Any]:
        from dockyard.dsl.types import _resolve  # one resolver for types and for this walk

        return _resolve(schema, self.root)

    def object(self, node: OutObject, schema: Mapping[str, Any], where: str, key_span: Span) -> None:
        schema = self.resolve(schema)
        props = schema.get("properties")
        if not isinstance(props, Mapping):
            return
        closed = schema.get("additionalProperties", True) is False
        required = set(schema.get("required") or ())
        written = {f.key: f for f in node.fields}
        for f in node.fields:
            path = f"{where}.{f.key}" if where else f.key
            sub = props.get(f.key)
            if sub is None:
                hint = did_you_mean(f.key, list(props))
                if closed:
                    self.ch.error(f.span, f"{path!r} is not in the target schema", "target-schema", hint=hint)
                else:
                    self.ch.warning(f.span, f"{path!r} is not in the target schema", "target-schema", hint=hint)
                continue
            if f.key in required and (f.optional or has_when(f.value)):
                self.ch.error(f.span, f"{path!r} may be left out, but the target schema requires it", "target-schema")
            self.value(f.value, sub, path, f.span)
        for name in sorted(required - set(written)):
            # Reported at the object's own key (at the top: at the target's schema setting).
            self.ch.error(key_span, f"the target schema requires {(where + '.' if where else '') + name!r}",
                          "target-schema")

    def value(self, node: OutNode, schema: Mapping[str, Any], path: str, span: Span) -> None:
        schema = self.resolve(schema)
        expected = type_from_schema(schema, self.root)
        if isinstance(node, OutObject):
            self.object(node, schema, path, span)
            return
        if isinstance(node, OutEach | OutList):
            items = schema.get("items")
            if expected.kind not in (Kind.LIST, Kind.ANY):
                self.ch.error(span, f"{path!r}: the target schema expects {expected.name}, the spec writes a list",
                              "target-schema")
            elif isinstance(items, Mapping):
                inner = node.emit if isinstance(node, OutEach) else None
                for child in ([inner] if inner is not None else list(node.items) if isinstance(node, OutList) else []):
                    self.value(child, items, f"{path}[]", span)
            return
        got = self.ch.result.field_types.get(id(node), ANY)
        if isinstance(node, OutJson):
            got = STRING
        mismatch = expected.kind is not Kind.ANY and got.kind is not Kind.ANY and got.kind != expected.kind
        if mismatch and not (got.kind is Kind.INT and expected.kind is Kind.DECIMAL):
            self.ch.error(span, f"{path!r}: the target schema expects {expected.name}, the expression gives "
                          f"{got.name}", "target-schema")
            return
        if isinstance(node, OutValue) and isinstance(node.expr, ast.Literal):
            # only for a constant written into a field that has a target schema
            from dockyard.runtime.schema_patterns import validator_class

            validator = validator_class()({**schema, "$defs": self.root.get("$defs", {})})
            for err in validator.iter_errors(node.expr.value):
                self.ch.error(node.expr.span, f"{path!r}: {node.expr.value!r} does not fit the target schema: "
                              f"{err.message}", "target-schema")
                break


def iter_values(node: OutNode) -> Iterator[OutValue]:
    """Every value leaf under an output node."""
    match node:
        case OutValue():
            yield node
        case OutObject(fields=fields):
            for f in fields:
                yield from iter_values(f.value)
        case OutList(items=items):
            for item in items:
                yield from iter_values(item)
        case OutJson(node=inner):
            yield from iter_values(inner)
        case OutEach(emit=emit):
            yield from iter_values(emit)
