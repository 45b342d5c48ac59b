"""Code generation: a checked `Spec` → the source of one readable Python module.

The module defines `transform(_src, _ctx, _clock, _trace=None) -> dict` plus literal metadata:
the mapping's identity, its target, a table of output fields with their spec locations, the
line → field source map and the static lineage. Generated code imports only names from
`dockyard.runtime.api`; user text enters it only through `literal()`; names come from `Names`.

What the checker proved is used here: a value the schema guarantees is read with a direct dict
lookup, a value that may be missing with a None-safe one, and the missing/default handling of
each field is settled now rather than at run time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined

from dockyard.compiler.checks import Binding, CheckResult
from dockyard.compiler.emitter import Emitter, comment_safe
from dockyard.compiler.literals import literal
from dockyard.compiler.naming import Names
from dockyard.dsl import ast
from dockyard.dsl.functions import REGISTRY
from dockyard.dsl.spec import OutEach, OutJson, OutList, OutNode, OutObject, OutValue, Spec, TableDef
from dockyard.dsl.types import ANY, Kind, Type
from dockyard.runtime import api as runtime_api

__all__ = ["COMPILER_VERSION", "generate_expression_module", "generate_module"]

COMPILER_VERSION = "0.1.0"


@dataclass
class _Call:
    """The CallSite a registry function's `emit` sees."""

    gen: _Gen
    args: list[str]
    literals: list[Any]
    lambdas: list[tuple[str, str, bool] | None]
    table: str | None
    types: list[Type]
    result: Type

    def const(self, value: Any) -> str:
        return self.gen.const(value)

    def helper(self, name: str) -> str:
        return self.gen.helper(name)

    def temp(self) -> str:
        return self.gen.names.new("temp")

    def const_call(self, helper: str, *args: Any) -> str:
        return self.gen.const_call(helper, *args)


@dataclass
class _Gen:
    """State of one module's generation: constants, imports, bound names."""

    checked: CheckResult
    tables: dict[str, TableDef] = field(default_factory=dict)
    names: Names = field(default_factory=Names)
    consts: dict[str, str] = field(default_factory=dict)  # literal code → constant name
    const_defs: list[tuple[str, str, str]] = field(default_factory=list)  # (name, code, comment)
    imports: set[str] = field(default_factory=set)
    locals: dict[int, str] = field(default_factory=dict)  # binding uid → Python local
    table_names: dict[str, str] = field(default_factory=dict)
    fields: list[str] = field(default_factory=list)
    loops: int = 0
    # Rule coverage (dockyard test): off for production modules. Each branch point gets a number;
    # `branches` describes them for the report.
    coverage: bool = False
    # Specialised code for common shapes (tests turn it off to compare with the general code).
    specialise: bool = True
    fused_calls: dict[int, str] = field(default_factory=dict)  # id of a sum computed in a fused loop → local
    general_calls: set[int] = field(default_factory=set)  # ids of calls being written as general code
    money_texts: bool = True  # money texts written as they are (not in explain's traced function)
    # Reads whose value is also bound to a local where they are read (id of the read → the local):
    # a memoised value's general code hands its input texts to memo_put that way.
    capture: dict[int, str] = field(default_factory=dict)
    branches: list[tuple[str, int, int, str]] = field(default_factory=list)  # (kind, line, col, text)
    value_fields: list[tuple[int, bool]] = field(default_factory=list)  # (field index, optional)
    # Input values read once (see `cached`): per region of the function being written (its body, a
    # loop's body, a `$when` block), read path → the local holding it; None: every read is written
    # out (general code, coverage). `head`: the code being generated runs unconditionally, before
    # anything generated after it, at the statement being written (only there a read is bound).
    reads: list[dict[tuple[str, ...], str]] | None = None
    head: bool = False
    bound: list[tuple[str, str, str]] = field(default_factory=list)  # (binding code, plain code, local)
    # Context reads written as marks (in `transform` only): name → {plain code → mark}.
    ctx_marks: dict[str, dict[str, str]] | None = None
    reused: set[str] = field(default_factory=set)

    def branch_point(self, kind: str, span: Any, text: str) -> int:
        self.branches.append((kind, span.line, span.col, text))
        return len(self.branches) - 1

    # -- module-level pieces ----------------------------------------------------------------
    def helper(self, name: str) -> str:
        if name not in runtime_api.__all__:
            raise AssertionError(f"generated code may only use the runtime API; {name!r} is not in it")
        self.imports.add(name)
        return name

    def const(self, value: Any, comment: str = "") -> str:
        code = literal(value)
        if isinstance(value, Decimal):
            self.helper("Decimal")
        if "re_compile(" in code:
            self.helper("re_compile")
        if code not in self.consts:
            name = self.names.new("const")
            self.consts[code] = name
            self.const_defs.append((name, code, comment))
        return self.consts[code]

    def const_call(self, helper: str, *args: Any) -> str:
        code = f"{self.helper(helper)}({', '.join(literal(a) for a in args)})"
        if code not in self.consts:
            name = self.names.new("const")
            self.consts[code] = name
            self.const_defs.append((name, code, ""))
        return self.consts[code]

    def table(self, name: str) -> str:
        if name not in self.table_names:
            t = self.tables[name]
            const_name = self.names.new("table")
            self.table_names[name] = const_name
            self.const_defs.append((const_name, literal(dict(t.rows)), f"table {comment_safe(name)}"))
        return self.table_names[name]

    # -- expressions --------------------------------------------------------------------
    def type_of(self, node: ast.Expr) -> Type:
        return self.checked.types.get(id(node), ANY.optional())

    def expr(self, node: ast.Expr) -> str:
        """A Python expression computing `node`; None stands for *missing*."""
        head = self.head
        if head and not self.keeps_head(node):
            self.head = False  # its parts may run conditionally or in another order: no read is bound there
        try:
            if self.specialise and isinstance(node, ast.Unary | ast.Binary | ast.If) and _constant(node):
                folded = self.fold(node)
                if folded is not None:
                    return folded
            return self.general_expr(node)
        finally:
            self.head = head

    # -- input values read once -----------------------------------------------------------
    def keeps_head(self, node: ast.Expr) -> bool:
        """Whether every part of `node` runs unconditionally, in the order it is generated: a path
        read, `not x`, an equality, an ordering of values that cannot be missing."""
        match node:
            case ast.Name() | ast.Field() | ast.Var() | ast.Literal() | ast.Unary(op="not"):
                return True
            case ast.Binary(op="==" | "!="):
                return True
            case ast.Binary(op="<" | "<=" | ">" | ">=", left=left, right=right):
                return not self.type_of(left).maybe and not self.type_of(right).maybe
        return False

    def read_key(self, node: ast.Expr) -> tuple[str, ...] | None:
        """A path read's identity within a function: its root (the input, a let or a loop's element)
        and its field names."""
        match node:
            case ast.Name(name=name):
                return ("", name)
            case ast.Var(name=name) if name != "ctx":
                b = self.checked.bindings.get(id(node))
                return (self.local(b),) if b is not None and b.kind in ("let", "loop", "lambda") else None
            case ast.Field(obj=obj, name=name):
                key = self.read_key(obj)
                return None if key is None else (*key, name)
        return None

    def known(self, node: ast.Expr) -> str | None:
        """The local holding `node`'s value, read before in this region or an enclosing one."""
        key = self.read_key(node) if self.reads is not None else None
        if self.reads is None or key is None:
            return None
        for region in reversed(self.reads):
            name = region.get(key)
            if name is not None:
                self.reused.add(name)
                return name
        return None

    @contextmanager
    def statement(self) -> Iterator[None]:
        """Code generated inside runs at the head of the statement being written."""
        head, self.head = self.head, True
        try:
            yield
        finally:
            self.head = head

    @contextmanager
    def region(self) -> Iterator[None]:
        """A loop's body or a conditional block: what is read inside is forgotten after it."""
        if self.reads is not None:
            self.reads.append({})
        try:
            yield
        finally:
            if self.reads is not None:
                self.reads.pop()

    def cached(self, node: ast.Expr, code: str) -> str:
        """`code`, a subscript reading `node` from a value that cannot be missing, read once per
        region: a read made earlier in this region or an enclosing one is reused; else, at the head
        of a statement, the value is bound to a local where it is read, by an assignment expression
        on the same line (so that a failure is still reported at that field). Bindings that are never
        reused are taken out again when the function is written (`settle_reads`)."""
        known = self.known(node)
        if known is not None:
            return known
        key = self.read_key(node) if self.reads is not None and self.head else None
        if self.reads is None or key is None:
            return code
        name = self.names.new("read")
        self.reads[-1][key] = name
        # A mark, settled when the function is written: `(name := code)` if the value is read again,
        # else `code`. Its control characters can be nowhere else in generated code (repr() escapes
        # them in literals, comment_safe() in comments), so no user text is ever taken for one.
        mark = f"\x01{name}\x02{code}\x03"
        self.bound.append((mark, code, name))
        return mark

    def settle_reads(self, lines: list[str], start: int) -> None:
        """Ends a function: each mark of `cached` becomes a binding where the value is read again,
        a plain read where it is not (latest first: a later mark holds the earlier ones as they
        were written)."""
        for mark, code, name in reversed(self.bound):
            text = f"({name} := {code})" if name in self.reused else code
            for i in range(start, len(lines)):
                if mark in lines[i]:
                    lines[i] = lines[i].replace(mark, text)
        self.bound, self.reused = [], set()
        if self.reads is not None:
            self.reads = [{}]

    def fold(self, node: ast.Expr) -> str | None:
        """Constant folding: an expression of literals only is computed now, by running the very
        code that would run later, and written as its value. Decimal arithmetic in that code runs
        in the runtime's MONEY context, whatever the thread's, so the value is the one every call
        would compute; anything that fails (a division by zero, …) is left to fail at run time, at
        its spec line."""
        code = self.general_expr(node)
        namespace: dict[str, Any] = {name: getattr(runtime_api, name) for name in runtime_api.__all__}
        try:
            for name, const_code, _ in self.const_defs:
                namespace[name] = eval(compile(const_code, "<const>", "eval"), namespace)  # noqa: S307 - our literals
            value = eval(compile(code, "<fold>", "eval"), namespace)  # noqa: S307 - generated from literals only
        except Exception:
            return None
        if isinstance(value, Decimal):
            return self.const(value) if value.is_finite() else None
        if value is None or isinstance(value, str | bool | int):
            return literal(value)
        return None

    def general_expr(self, node: ast.Expr) -> str:
        match node:
            case ast.Literal(value=v):
                return self.const(v) if isinstance(v, Decimal) else literal(v)
            case ast.Omit():
                return "None"  # missing on purpose: left out like any missing value
            case ast.Name() | ast.Field() | ast.Index():
                return self.read(node)
            case ast.Var():
                return self.var(node)
            case ast.Unary(op="not", operand=operand):
                return f"(not {self.cond(operand)})"
            case ast.Unary(operand=operand):
                ot = self.type_of(operand)
                code = self.number(operand)
                if self.type_of(node).kind is Kind.INT:
                    return self.guard([(code, ot.maybe)], lambda a: f"(-{a[0]})")
                # A decimal is negated in MONEY (as every decimal operation: see money_ops).
                return self.guard([(code, ot.maybe)], lambda a: f"{self.helper('money_minus')}({a[0]})")
            case ast.Binary():
                return self.binary(node)
            case ast.If(cond=c, then=a, else_=b):
                then, other = self.expr(a), self.expr(b)
                if self.coverage:
                    n = self.branch_point("if", node.span, "then / else")
                    then, other = f"(_COV.branch({n}, 1) and {then})", f"(_COV.branch({n}, 0) and {other})"
                return f"({then} if {self.cond(c)} else {other})"
            case ast.ListLit(items=items):
                codes = [self.expr(i) for i in items]
                if any(self.type_of(i).maybe for i in items):
                    return f"{self.helper('compact_list')}([{', '.join(codes)}])"
                return f"[{', '.join(codes)}]"
            case ast.ObjectLit(entries=entries):
                body = ", ".join(f"{literal(k)}: {self.expr(v)}" for k, _, v in entries)
                if any(self.type_of(v).maybe for _, _, v in entries):
                    return f"{self.helper('compact')}({{{body}}})"
                return f"{{{body}}}"
            case ast.Call():
                return self.call(node)
            case ast.Lambda():  # pragma: no cover - the checker rejects lambdas outside calls
                raise AssertionError("lambda outside a call")
        raise AssertionError(node)  # pragma: no cover

    def bind(self, parts: Sequence[tuple[str, bool]]) -> tuple[list[str], list[str]]:
        """Parts that may be missing are bound once to temporaries: ([`(_t := code)`, …], names),
        where names holds each part's temporary, or its code when it is never missing."""
        bindings: list[str] = []
        names: list[str] = []
        for code, maybe in parts:
            if maybe:
                tmp = self.names.new("temp")
                bindings.append(f"({tmp} := {code})")
                names.append(tmp)
            else:
                names.append(code)
        return bindings, names

    def guard(self, parts: Sequence[tuple[str, bool]], build: Callable[[list[str]], str]) -> str:
        """`build(codes)`, but missing when any part that may be missing is missing."""
        bindings, names = self.bind(parts)
        body = build(names)
        if not bindings:
            return body
        return f"(None if {' or '.join(b + ' is None' for b in bindings)} else {body})"

    def cond(self, node: ast.Expr) -> str:
        """A condition: missing counts as false."""
        t = self.type_of(node)
        code = self.expr(node)
        if t.kind is Kind.BOOL and not t.maybe:
            return code
        return f"({code} is True)"

    def number(self, node: ast.Expr) -> str:
        """A numeric operand: values of unknown type are converted with to_decimal."""
        t = self.type_of(node)
        code = self.expr(node)
        if t.kind is Kind.ANY:
            return self.guard([(code, True)], lambda a: f"{self.helper('to_decimal')}({a[0]})")
        return code

    def read(self, node: ast.Expr) -> str:
        t = self.type_of(node)
        code = self._read(node)
        if t.decimal_source:
            # Decimals arrive as JSON strings or numbers; floats go through repr(), never binary.
            tmp = self.names.new("temp")
            # Text is read in the runtime's money context (MONEY), whatever the thread's: text that
            # is not a number is an error there, never a NaN.
            money = self.helper("MONEY")
            conv = (f"({self.helper('Decimal')}({tmp}, {money}) if ({tmp} := {code}).__class__ is str "
                    f"else {self.helper('to_decimal')}({tmp}))")
            if t.maybe:
                tmp2 = self.names.new("temp")
                return (f"(None if ({tmp2} := {code}) is None else {self.helper('Decimal')}({tmp2}, {money}) "
                        f"if {tmp2}.__class__ is str else {self.helper('to_decimal')}({tmp2}))")
            return conv
        return code

    def _read(self, node: ast.Expr) -> str:
        code = self._plain_read(node)
        local = self.capture.get(id(node))
        return code if local is None else f"({local} := {code})"

    def _plain_read(self, node: ast.Expr) -> str:
        match node:
            case ast.Name(name=name):
                if self.type_of(node).maybe:
                    return f"_src.get({literal(name)})"
                return self.cached(node, f"_src[{literal(name)}]")
            case ast.Field(obj=ast.Var(name="ctx"), name=name):
                code = f"_ctx[{literal(name)}]" if not self.type_of(node).maybe else f"_ctx.get({literal(name)})"
                if self.ctx_marks is None:
                    return code
                # A mark, settled by `_entry`: the entry has each declared context value in a local
                # already (its class checked), `transform` reads it from _ctx. Its control characters
                # can be nowhere else in generated code (see `cached`).
                mark = self.ctx_marks.setdefault(name, {})[code] = f"\x04{code}\x05"
                return mark
            case ast.Field(obj=obj, name=name):
                ot = self.type_of(obj)
                if ot.kind is Kind.OBJECT and not ot.maybe and not self.type_of(node).maybe:
                    known = self.known(node)
                    return known if known is not None else self.cached(node, self.member(obj, literal(name), False))
                return self.member(obj, literal(name), self.type_of(node).maybe)
            case ast.Index(obj=obj, index=index):
                ot = self.type_of(obj)
                if ot.kind is Kind.LIST:
                    return self.guard([(self.raw(obj), ot.maybe), (self.expr(index), self.type_of(index).maybe)],
                                      lambda a: f"{self.helper('get_index')}({a[0]}, {a[1]})")
                if ot.kind is Kind.ANY:
                    return self.guard([(self.raw(obj), ot.maybe), (self.expr(index), self.type_of(index).maybe)],
                                      lambda a: f"{self.helper('get_item')}({a[0]}, {a[1]})")
                key = literal(index.value) if isinstance(index, ast.Literal) else self.expr(index)
                return self.member(obj, key, True)
        return self.expr(node)

    def raw(self, node: ast.Expr) -> str:
        """The object or list value of a path step, before decimal conversion."""
        return self._read(node) if isinstance(node, ast.Name | ast.Field | ast.Index) else self.expr(node)

    def member(self, obj: ast.Expr, key: str, maybe: bool) -> str:
        ot = self.type_of(obj)
        base = self.raw(obj)
        if ot.kind is Kind.ANY:
            return f"{self.helper('get_field')}({base}, {key})"
        if ot.maybe:
            tmp = self.names.new("temp")
            return f"(None if ({tmp} := {base}) is None else {tmp}.get({key}))"
        return f"{base}[{key}]" if not maybe else f"{base}.get({key})"

    def var(self, node: ast.Var) -> str:
        b = self.checked.bindings.get(id(node))
        if b is None:  # pragma: no cover - the checker binds every variable
            raise AssertionError(f"unbound ${node.name}")
        return self.local(b)

    def local(self, b: Binding) -> str:
        if b.kind in ("body", "request_id"):
            return f"_{b.kind}"  # parameters of request_fields
        if b.uid not in self.locals:
            kind = {"let": "let", "loop": "item", "lambda": "lambda", "position": "position"}[b.kind]
            self.locals[b.uid] = self.names.new(kind)
        return self.locals[b.uid]

    def binary(self, node: ast.Binary) -> str:
        op = node.op
        lt, rt = self.type_of(node.left), self.type_of(node.right)
        if op == "??":
            left = self.expr(node.left)
            if not lt.maybe:
                return left
            tmp = self.names.new("temp")
            value, default = tmp, self.expr(node.right)
            if self.coverage:
                n = self.branch_point("??", node.span, "value / default")
                value, default = f"(_COV.branch({n}, 1) and {tmp})", f"(_COV.branch({n}, 0) and {default})"
            return f"({value} if ({tmp} := {left}) is not None else {default})"
        if op in ("and", "or"):
            return f"({self.cond(node.left)} {op} {self.cond(node.right)})"
        # Two numbers of which one is a decimal are compared in MONEY: a comparison is exact, but
        # a NaN (a caller's Decimal object, or the text "NaN") makes Python's operators consult the
        # thread's context (an error or false, by its traps). money_compare / money_order give
        # -1, 0 or 1, or raise in MONEY where the operator would raise there.
        # (An int side only when it is a literal: an int read from an input that breaks its schema
        # may be text or a float, which Python's operators compare and MONEY refuses.)
        money = all(t.kind is Kind.DECIMAL or (t.kind is Kind.INT and isinstance(n, ast.Literal))
                    for t, n in ((lt, node.left), (rt, node.right))) and Kind.DECIMAL in (lt.kind, rt.kind)
        if op in ("==", "!="):
            left, right = self.expr(node.left), self.expr(node.right)
            if not money:
                return f"({left} {op} {right})"
            cmp = self.helper("money_compare")
            if not lt.maybe and not rt.maybe:
                return f"({cmp}({left}, {right}) {op} 0)"
            # Missing equals missing only; both sides are computed first, left then right (`&`).
            a, b = self.names.new("temp"), self.names.new("temp")
            same = "is" if op == "==" else "is not"
            return (f"({cmp}({a}, {b}) {op} 0 if (({a} := {left}) is not None) & (({b} := {right}) is not None)"
                    f" else {a} {same} {b})")
        if op in ("<", "<=", ">", ">="):
            left, right = self.expr(node.left), self.expr(node.right)
            # A side whose type is known only at run time is ordered by any_order, which says in our
            # words when the two cannot be ordered (Python's operator would say it in its own).
            order = (self.helper("money_order") if money else
                     self.helper("any_order") if Kind.ANY in (lt.kind, rt.kind) else None)
            if not lt.maybe and not rt.maybe:
                return f"({order}({left}, {right}) {op} 0)" if order else f"({left} {op} {right})"
            # Ordering a missing value is false (Python would raise on None < 1).
            bindings, names = self.bind([(left, lt.maybe), (right, rt.maybe)])
            present = " and ".join(b + " is not None" for b in bindings)
            if order:
                return f"({present} and {order}({names[0]}, {names[1]}) {op} 0)"
            return f"({present} and {names[0]} {op} {names[1]})"
        result = self.type_of(node)
        if result.kind is Kind.STRING:
            # (a text joined with a value of run-time type: that value is checked to be a text)
            def text(side: ast.Expr, t: Type) -> str:
                code = self.expr(side)
                if t.kind is not Kind.ANY:
                    return code
                return self.guard([(code, t.maybe)], lambda a: f"{self.helper('as_str')}({a[0]})")
            return self.guard([(text(node.left, lt), lt.maybe), (text(node.right, rt), rt.maybe)],
                              lambda a: f"({a[0]} + {a[1]})")
        left, right = self.number(node.left), self.number(node.right)
        parts = [(left, lt.maybe or lt.kind is Kind.ANY), (right, rt.maybe or rt.kind is Kind.ANY)]
        if result.kind is Kind.INT:
            return self.guard(parts, lambda a: f"({a[0]} {op} {a[1]})")
        # Decimal arithmetic runs in MONEY, the runtime's own context, never the thread's (an int
        # operand is converted exactly; `/` of two ints is a decimal too).
        fn = self.helper(_MONEY_OPS[op])
        return self.guard(parts, lambda a: f"{fn}({a[0]}, {a[1]})")

    def call(self, node: ast.Call) -> str:
        fused = self.fused_calls.get(id(node))
        if fused is not None:
            return fused
        special = self.special_call(node) if self.specialise else None
        if special is not None:
            return special
        fn = REGISTRY[node.func]
        args: list[str] = []
        literals: list[Any] = []
        lambdas: list[tuple[str, str, bool] | None] = []
        guards: list[tuple[int, bool]] = []
        table = None
        for i, arg in enumerate(node.args):
            p = fn.param_at(i)
            assert p is not None
            literals.append(ast.literal_value(arg))
            if isinstance(arg, ast.Lambda):
                b = self.checked.lambda_bindings[id(arg)]
                body_t = self.type_of(arg.body)
                body = self.cond(arg.body) if Kind.BOOL in p.kinds and len(p.kinds) == 1 else self.convert(
                    arg.body, p.kinds)
                lambdas.append((self.local(b), body, body_t.maybe))
                args.append("")
                continue
            lambdas.append(None)
            if p.table:
                assert isinstance(arg, ast.Name)
                table = self.table(arg.name)
                args.append(table)
                continue
            t = self.type_of(arg)
            code = self.convert(arg, p.kinds)
            if p.handles_missing:
                if Kind.LIST in p.kinds and t.maybe:
                    # `or ()` rather than a walrus: the list may end up as a comprehension's iterable,
                    # where Python forbids assignment expressions. An empty list is empty either way.
                    code = f"({code} or ())"
                args.append(code)
            else:
                args.append(code)
                guards.append((i, t.maybe))
            if self.coverage and fn.name == "lookup" and i == 1:
                table_name = node.args[0].name if isinstance(node.args[0], ast.Name) else ""
                args[-1] = f"_COV.key({literal(table_name)}, {code})"
        if fn.name == "lookup" and len(node.args) == 2:
            assert isinstance(node.args[0], ast.Name)
            default = self.tables[node.args[0].name].default
            if default is not None:
                args.append(literal(default))
                lambdas.append(None)
        result = self.type_of(node)
        # Arguments that may be missing are bound once to temporaries; the call runs only when
        # all of them are present (missing in → missing out).
        types = [self.type_of(a) for a in node.args]
        # Python forbids assignment expressions in a comprehension's iterable; a list argument that
        # holds one (from `??`, a None-safe path, …) is passed in through a one-argument lambda.
        iterable = None
        if any(lam is not None for lam in lambdas) and ":=" in args[0]:
            iterable, args[0] = args[0], self.names.new("temp")

        def emit(names: list[str]) -> str:
            for (i, _), name in zip(guards, names, strict=True):
                args[i] = name
            return fn.emit(_Call(self, args, literals, lambdas, table, types, result))

        code = self.guard([(args[i], maybe) for i, maybe in guards], emit)
        return f"(lambda {args[0]}: {code})({iterable})" if iterable is not None else code

    def special_call(self, node: ast.Call) -> str | None:
        """Code a person would write for a common call shape, where the general code is slower.
        Each returns None when the shape does not fit; the runtime helper it calls falls back to
        the general path itself for any input it is not sure about."""
        args = node.args
        if (node.func == "format_datetime" and len(args) in (2, 3) and isinstance(args[0], ast.Call)
                and args[0].func == "parse_datetime" and len(args[0].args) == 1):
            # Text → text: an ISO time already in the zone's offset needs no datetime at all.
            inner = args[0].args[0]
            pattern = ast.literal_value(args[1])
            zone_name = ast.literal_value(args[2]) if len(args) == 3 else None
            if not isinstance(pattern, str) or (len(args) == 3 and not isinstance(zone_name, str)):
                return None
            text = self.convert(inner, (Kind.STRING,))
            fmt = self.const_call("iso_formatter", pattern, zone_name)
            return self.guard([(text, self.type_of(inner).maybe)], lambda a: f"{fmt}({a[0]})")
        if (node.func == "format_decimal" and isinstance(args[0], ast.Name | ast.Field)
                and self.type_of(args[0]).decimal_source and id(node) not in self.general_calls
                and self.money_texts):
            fast = self.money_text(node)
            if fast is not None:
                return fast
        if (node.func in ("map", "sum") and len(args) == 2 and isinstance(args[1], ast.Lambda)
                and isinstance(args[0], ast.Call) and args[0].func == "filter" and len(args[0].args) == 2
                and isinstance(args[0].args[1], ast.Lambda)):
            return self.fused(node, args[0].args[0], args[0].args[1], args[1])
        return None

    def memo(self, comment: str) -> str:
        """A Memo of its own for one field (never shared: constants of the same code are)."""
        name = self.names.new("const")
        self.const_defs.append((name, f"{self.helper('Memo')}()", comment))
        return name

    def memo_reads(self, e: ast.Expr) -> list[ast.Expr] | None:
        """The input reads of a value worth memoising by its input texts, in the order its general
        code reads them; None when it is not one. It is one when it computes with money read as
        text (arithmetic, round, abs, format_decimal), and every part of it runs unconditionally,
        left to right, and depends on nothing but those reads: no value that may be missing or is
        of unknown type (their code branches), no let, position, context or clock, no part made
        of literals alone (which could fail before the first read), and reads that are paths of
        strings or decimals from the loop's element or the input, each step never missing. So the
        general code reads every one of them, in this order, each time it ends without an error,
        and what it computes between two reads depends only on the reads before."""
        reads: list[ast.Expr] = []
        money = False

        def path(n: ast.Expr) -> bool:
            match n:
                case ast.Name():
                    return True
                case ast.Var():
                    b = self.checked.bindings.get(id(n))
                    return b is not None and b.kind == "loop"
                case ast.Field(obj=obj):
                    ot = self.type_of(obj)
                    return ot.kind is Kind.OBJECT and not ot.maybe and path(obj)
            return False

        def visit(n: ast.Expr) -> bool:
            nonlocal money
            t = self.type_of(n)
            if t.maybe or t.kind is Kind.ANY:
                return False
            if isinstance(n, ast.Literal):
                return True
            if isinstance(n, ast.Name | ast.Field) and path(n):
                if not (t.decimal_source or t.kind is Kind.STRING):
                    return False
                reads.append(n)
                return True
            before = len(reads)
            match n:
                case ast.Binary(op=op, left=left, right=right) if op in _MONEY_OPS:
                    ok = visit(left) and visit(right)
                    money = money or t.kind is Kind.DECIMAL
                case ast.Unary(op="-", operand=operand):
                    ok = visit(operand)
                case ast.Call(func="format_decimal" | "round" | "abs", args=args):
                    ok = visit(args[0]) and all(isinstance(a, ast.Literal) for a in args[1:])
                    money = money or self.type_of(args[0]).kind is Kind.DECIMAL
                case _:
                    return False
            return ok and len(reads) > before

        if not visit(e) or not money or not any(self.type_of(r).decimal_source for r in reads):
            return None
        if self.type_of(e).kind not in (Kind.STRING, Kind.DECIMAL):
            return None
        return reads if 0 < len({self.read_key(r) for r in reads}) <= 3 else None

    def money_text(self, node: ast.Call) -> str | None:
        """format_decimal(x, places) of a decimal read from the input, when the input's text is
        already what it would write ("59.90" for 2 places): the text itself, without a Decimal.
        That holds for the plain form of a non-negative number with exactly `places` decimals,
        ASCII digits only, no leading zero, at most 34 digits (exact in MONEY, so rounding it to
        its own places changes nothing; not a zero to be made positive; str() and format "f" write
        its digits back). The test: the length, the point where `places` puts it, nothing but
        ASCII digits around that one point, and no leading zero. Anything else (not a str, a sign,
        an exponent, spaces, other places, "007.50", non-ASCII digits) goes on to the general
        code, which reads the value again (the same read: the same value) and converts, rounds and
        fails exactly as without this; the text is read first here as it is there."""
        places = ast.literal_value(node.args[1])
        if not isinstance(places, int) or isinstance(places, bool) or not 1 <= places <= 12:
            return None
        t = self.names.new("temp")
        text = self._read(node.args[0])
        self.general_calls.add(id(node))
        try:
            general = self.call(node)
        finally:
            self.general_calls.discard(id(node))
        test = (f"({t} := {text}).__class__ is str and {places + 1} < len({t}) < 36 and {t}[{-places - 1}] == '.'"
                f" and {t}.strip('0123456789') == '.' and ({t}[0] != '0' or {t}[1] == '.')")
        return f"({t} if {test} else {general})"

    def fused_parts(self, node: ast.Call, source: ast.Expr, keep: ast.Lambda, each: ast.Lambda
                    ) -> tuple[str, str, str, str] | None:
        """map/sum over a filter in one pass: (element variable, list, condition, element's value)."""
        if self.type_of(each.body).maybe:
            return None  # elements whose value is missing are left out: the general code does that
        var = self.local(self.checked.lambda_bindings[id(keep)])
        each_binding = self.checked.lambda_bindings[id(each)]
        if each_binding.uid in self.locals and self.locals[each_binding.uid] != var:
            return None
        items = self.convert(source, (Kind.LIST,))
        if self.type_of(source).maybe:
            items = f"({items} or ())"
        if ":=" in items:
            return None  # a comprehension's iterable may not hold an assignment expression
        self.locals[each_binding.uid] = var
        cond = self.cond(keep.body)
        param = REGISTRY[node.func].param_at(1)
        assert param is not None
        return var, items, cond, self.convert(each.body, param.kinds)

    def fused(self, node: ast.Call, source: ast.Expr, keep: ast.Lambda, each: ast.Lambda) -> str | None:
        """map/sum over a filter as one comprehension, as a person would write it: the filter's
        list is not built. Both lambdas name the same element, so they share one loop variable."""
        parts = self.fused_parts(node, source, keep, each)
        if parts is None:
            return None
        var, items, cond, body = parts
        if node.func == "map":
            return f"[{body} for {var} in {items} if {cond}]"
        if self.type_of(node).kind is Kind.DECIMAL:
            return f"{self.helper('money_sum')}([{body} for {var} in {items} if {cond}], {self.const(Decimal(0))})"
        return f"sum([{body} for {var} in {items} if {cond}], 0)"

    def convert(self, node: ast.Expr, kinds: tuple[Kind, ...]) -> str:
        """An argument in the kind a parameter wants: unknown types are checked at run time,
        whole numbers become decimals where only decimals are taken."""
        t = self.type_of(node)
        code = self.expr(node)
        if Kind.ANY in kinds or t.kind in kinds:
            return code
        if t.kind is Kind.INT and Kind.DECIMAL in kinds:
            return self.guard([(code, t.maybe)], lambda a: f"{self.helper('Decimal')}({a[0]})")
        if t.kind is Kind.ANY and set(kinds) <= {Kind.INT, Kind.DECIMAL}:
            # A number of either kind (abs, sum's lambda) goes to a Python operator, which would
            # check it in its own words: check it here.
            return self.guard([(code, True)], lambda a: f"{self.helper('as_number')}({a[0]})")
        if t.kind is Kind.ANY and len(kinds) > 1:
            # A parameter of several kinds (string(), length(), decimal(), …) is implemented to take
            # any of them: a value of unknown type goes to it as it is and is checked there.
            return code
        if t.kind is Kind.ANY and len(kinds) == 1:
            want = kinds[0]
            if want is Kind.LIST:
                # as_list reads a missing list as empty, so no walrus guard is needed; a comprehension's
                # iterable may not contain one.
                return f"{self.helper('as_list')}({code})"
            helper = {Kind.STRING: "as_str", Kind.DECIMAL: "to_decimal", Kind.INT: "as_int", Kind.BOOL: "as_bool",
                      Kind.LIST: "as_list", Kind.DATETIME: "as_datetime", Kind.OBJECT: "as_object"}[want]
            return self.guard([(code, True)], lambda a: f"{self.helper(helper)}({a[0]})")
        return code


# --- statements: the output tree ----------------------------------------------------------------

@dataclass
class _Value:
    """Generated code for one output node's value."""

    code: str
    maybe: bool  # may be missing at run time
    index: int | None  # the field it belongs to, for the source map
    hoisted: bool  # already computed into a local by statements (its comment is written)
    # A list built by a loop statement before the value is used, where the general code has a
    # comprehension: (list local, element variable, list, condition, element's value).
    loop: tuple[str, str, str, str, str] | None = None


class _TreeWriter:
    def __init__(self, gen: _Gen, em: Emitter, spec: Spec) -> None:
        self.gen = gen
        self.em = em
        self.spec = spec
        self.trace = True  # write the explain lineage of $each elements
        self.fusions: dict[int, _Fusion] = {}  # lets fused into one loop (the trace-free transform only)
        self.fused_each: dict[int, str] = {}  # id of a fused $each → the local holding its list
        self.each_depth = 0  # $each bodies being written around the current statement
        self.statement_loops = False  # lists built by loop statements (see loop_value): `transform` only

    def lets(self, lets: Sequence[Any], where: str) -> None:
        for let in lets:
            b = self.gen.checked.let_bindings.get(id(let))
            if b is None or not b.used:
                continue  # unused lets were warned about; computing them would only cost time
            fusion = self.fusions.get(id(let))
            if fusion is not None:
                self.fused(fusion, where)
                continue
            with self.em.field(let.span, f"{where}${let.name}"), self.gen.statement():
                self.em.line(f"{self.gen.local(b)} = {self.gen.expr(let.expr)}")

    def fused(self, fusion: _Fusion, where: str) -> None:
        """One loop over the let's list: the filter, every sum over it, and its $each."""
        gen = self.gen
        item = gen.names.new("item")
        each = fusion.each
        assert each is not None
        for lam in (fusion.keep, *(c.args[1] for c in fusion.sums)):
            assert isinstance(lam, ast.Lambda)
            gen.locals[gen.checked.lambda_bindings[id(lam)].uid] = item
        gen.locals[gen.checked.loop_bindings[id(each)].uid] = item
        totals = []
        # The loop's body is a region of its own (values read there once per element); what the
        # loop's header reads is never bound (no statement's head there).
        with gen.region():
            with self.em.field(fusion.let.span, f"{where}${fusion.let.name}"):
                items = gen.expr(fusion.source)
                if gen.type_of(fusion.source).maybe:
                    items = f"({items} or ())"
                for call in fusion.sums:
                    total = gen.names.new("value")
                    start = gen.const(Decimal(0)) if gen.type_of(call).kind is Kind.DECIMAL else "0"
                    self.em.line(f"{total} = {start}")
                    gen.fused_calls[id(call)] = total
                    totals.append((call, total))
                out = gen.names.new("list")
                position = gen.local(gen.checked.bindings[id(each)])
                self.em.line(f"{out} = []")
                self.em.line(f"{position} = 0")
                self.em.line(f"for {item} in {items}:")
                self.em.depth += 1
                with gen.statement():
                    self.em.line(f"if not {gen.cond(fusion.keep.body)}:")
                self.em.line("    continue")
                for call, total in totals:
                    lam = call.args[1]
                    assert isinstance(lam, ast.Lambda)
                    param = REGISTRY["sum"].param_at(1)
                    assert param is not None
                    with gen.statement():
                        if gen.type_of(call).kind is Kind.DECIMAL:  # added in MONEY
                            self.em.line(f"{total} = {gen.helper('money_add')}({total}, "
                                         f"{gen.convert(lam.body, param.kinds)})")
                        else:
                            self.em.line(f"{total} += {gen.convert(lam.body, param.kinds)}")
            self.each_body(each, fusion.path, out, position, item)
        self.em.depth -= 1
        self.fused_each[id(each)] = out

    def value(self, node: OutNode, path: str, required: bool, loop_ok: bool = False) -> _Value:
        """Code for a node's value. Statements it needs go to the emitter first; a value that
        needs none is written inline where it is used, on a line mapped to its field. (`loop_ok`:
        the caller, an object's fields, writes a value's `loop` where the value is computed.)"""
        match node:
            case OutValue(expr=e, cdata=cdata, when=when):
                t = self.gen.type_of(e)
                index = self.em.register(e.span, path)
                # A value written as its own statement right away (below) is at a statement's head.
                raw = isinstance(e, ast.Name | ast.Field | ast.Index | ast.Var) and not t.decimal_source
                own_statement = when is None and ((required and (t.maybe or raw)) or (not required and t.maybe))
                if loop_ok and not own_statement and when is None and not cdata:
                    looped = self.loop_value(e, index)
                    if looped is not None:
                        return looped
                if own_statement:
                    with self.gen.statement():
                        code = self.gen.expr(e)
                else:
                    code = (self.memoised(e, path) if when is None else None) or self.gen.expr(e)
                if when is not None:
                    # The condition runs first: a false one leaves the value out without computing it.
                    t = t.optional()
                    present, absent = code, "None"
                    if self.gen.coverage:
                        n = self.gen.branch_point("$when", when.span, "true / false")
                        present, absent = f"(_COV.branch({n}, 1) and {code})", f"(_COV.branch({n}, 0) and None)"
                    code = f"({present} if {self.gen.cond(when)} else {absent})"
                if self.gen.coverage:
                    self.gen.value_fields.append((index, not required))
                    code = f"_COV.value({index}, {code})"
                if cdata:
                    code = self.gen.guard([(code, t.maybe)], lambda a: f"{self.gen.helper('CData')}({a[0]})")
                # A value read straight from the input may still be null in an input that breaks
                # its schema; a required field never lets that through.
                if required and (t.maybe or raw):
                    tmp = self.gen.names.new("value")
                    self.em.comment(index)
                    self.em.line(f"{tmp} = {code}", at=index)
                    self.em.line(f"if {tmp} is None:", at=index)
                    self.em.line(f"    raise {self.gen.helper('MissingValue')}({index})", at=index)
                    return _Value(tmp, False, index, hoisted=True)
                if not required and t.maybe:
                    tmp = self.gen.names.new("value")
                    self.em.comment(index)
                    self.em.line(f"{tmp} = {code}", at=index)
                    return _Value(tmp, True, index, hoisted=True)
                return _Value(code, False, index, hoisted=False)
            case OutObject():
                return self.object(node, path)
            case OutList(items=items):
                parts = [self.value(item, f"{path}[{i}]", False) for i, item in enumerate(items)]
                for part in parts:  # every element on its own line, mapped to its field
                    if not part.hoisted and part.index is not None:
                        tmp = self.gen.names.new("value")
                        self.em.comment(part.index)
                        self.em.line(f"{tmp} = {part.code}", at=part.index)
                        part.code, part.hoisted = tmp, True
                body = ", ".join(part.code for part in parts)
                if any(part.maybe for part in parts):
                    return _Value(f"{self.gen.helper('compact_list')}([{body}])", False, None, hoisted=True)
                return _Value(f"[{body}]", False, None, hoisted=True)
            case OutJson(node=inner):
                index = self.em.register(node.span, f"{path} $json")
                inner_value = self.value(inner, path, required)
                code = self.gen.guard([(inner_value.code, inner_value.maybe)],
                                      lambda a: f"{self.gen.helper('to_json_text')}({a[0]})")
                tmp = self.gen.names.new("value")
                self.em.comment(index)
                self.em.line(f"{tmp} = {code}", at=index)
                return _Value(tmp, inner_value.maybe, index, hoisted=True)
            case OutEach():
                fused = self.fused_each.get(id(node))
                return _Value(fused if fused is not None else self.each(node, path), False, None, hoisted=True)
        raise AssertionError(node)  # pragma: no cover

    def loop_value(self, e: ast.Expr, index: int) -> _Value | None:
        """`join(map(filter(list, keep), each), sep)` (a literal separator) as a loop statement that
        appends each kept element's value to a list, and the join of that list; the general code
        is a comprehension, which CPython 3.11 runs as a function of its own (made and called per
        document). The same operations on the same values in the same order (the list read, then per
        element the condition and the value, then the join), on lines mapped to the same field, so
        the result and any error are the same; the caller writes the loop where the comprehension
        would have run (see `display`). Only in the trace-free `transform` of specialised code."""
        gen = self.gen
        if not self.statement_loops or not gen.specialise or gen.coverage:
            return None
        match e:
            case ast.Call(func="join", args=[
                    ast.Call(func="map", args=[ast.Call(func="filter", args=[source, ast.Lambda() as keep]),
                                               ast.Lambda() as each]) as mapped,
                    ast.Literal(value=str()) as sep]):
                parts = gen.fused_parts(mapped, source, keep, each)
            case _:
                return None
        if parts is None:
            return None
        param = REGISTRY["join"].param_at(1)
        assert param is not None
        out = gen.names.new("list")
        return _Value(f"{gen.convert(sep, param.kinds)}.join({out})", False, index, hoisted=False,
                      loop=(out, *parts))

    def write_loop(self, v: _Value) -> None:
        """The statements of a value's `loop` (see `loop_value`), mapped to its field."""
        assert v.loop is not None and v.index is not None
        out, var, items, cond, body = v.loop
        self.em.comment(v.index)
        self.em.line(f"{out} = []", at=v.index)
        self.em.line(f"for {var} in {items}:", at=v.index)
        self.em.line(f"    if {cond}:", at=v.index)
        self.em.line(f"        {out}.append({body})", at=v.index)

    def memoised(self, e: ast.Expr, path: str) -> str | None:
        """A value of each element of a `$each` computed from money texts (a line's price less its
        discount, rounded), looked up by those texts in a Memo of its own first: the elements of
        many documents repeat the same few prices (a catalogue's), and a lookup costs a fraction of
        two Decimals, a subtraction, a rounding and a str(). Only in the trace-free `transform`.
        The lookup reads the texts in the general code's order, and goes one level deeper only when
        the texts read so far are exact `str`s that made a value before (so their conversion
        cannot fail, and the next read is what the general code would do next, failing just as it
        would). Anything else (a miss, another class, a text that fails) runs the general code,
        which reads the texts again into the same locals and hands them and its value to
        memo_put; an error leaves the memo as it was."""
        gen = self.gen
        if self.trace or not self.each_depth or not gen.specialise or gen.coverage or gen.reads is None:
            return None
        reads = gen.memo_reads(e)
        if reads is None:
            return None
        keys: dict[tuple[str, ...] | None, str] = {}  # each path read → its local, first read first
        first: list[ast.Expr] = []
        for r in reads:
            if gen.read_key(r) not in keys:
                keys[gen.read_key(r)] = gen.names.new("temp")
                first.append(r)
        found = gen.names.new("temp")
        memo = gen.memo(f"memo of {comment_safe(path)}")
        lookups = []
        level = memo
        for r in first:
            key = keys[gen.read_key(r)]
            lookups.append(f"({key} := {gen._read(r)}).__class__ is str")
            lookups.append(f"({found} := {level}.get({key})) is not None")
            level = found
        gen.capture = {id(r): keys[gen.read_key(r)] for r in reads}
        try:
            general = gen.expr(e)
        finally:
            gen.capture = {}
        return (f"({found} if {' and '.join(lookups)} else "
                f"{gen.helper('memo_put')}({memo}, {general}, {', '.join(keys.values())}))")

    def object(self, node: OutObject, path: str) -> _Value:
        if node.when is not None:
            obj = self.gen.names.new("object")
            with self.em.field(node.when.span, f"{path} $when") as when, self.gen.statement():
                self.em.line(f"{obj} = None")
                header = f"if {self.gen.cond(node.when)}:"
            # the condition's line belongs to the $when: a read in it that fails is reported there
            with self.em.block(header, at=when), self.gen.region():
                if self.gen.coverage:
                    n = self.gen.branch_point("$when", node.when.span, "true / false")
                    self.em.line(f"_COV.branch({n}, 1)")
                code = self.fields(node, path)
                self.em.line(f"{obj} = {code}")
            if self.gen.coverage:
                self.em.line("else:")
                self.em.line(f"    _COV.branch({n}, 0)")
            return _Value(obj, True, None, hoisted=True)
        return _Value(self.fields(node, path), False, None, hoisted=True)

    def fields(self, node: OutObject, path: str) -> str:
        """Builds the object in a local and returns its name. Fields up to the first optional one
        go into one dict display, one line per field; the rest are assigned after it in spec
        order, so the document keeps the spec's key order."""
        obj = self.gen.names.new("object")
        entries: list[tuple[str, _Value]] = []
        started = False
        for f in node.fields:
            fpath = f"{path}.{f.key}" if path else f.key
            v = self.value(f.value, fpath, not f.optional, loop_ok=True)
            if not v.maybe and not started:
                entries.append((literal(f.key), v))
                continue
            if not started:
                self.display(obj, entries)
                started = True
            if v.maybe and f.optional:
                self.em.line(f"if {v.code} is not None:", at=v.index)
                self.em.line(f"    {obj}[{literal(f.key)}] = {v.code}", at=v.index)
            elif v.maybe:
                index = v.index if v.index is not None else self.em.register(f.span, fpath)
                self.em.line(f"if {v.code} is None:", at=index)
                self.em.line(f"    raise {self.gen.helper('MissingValue')}({index})", at=index)
                self.em.line(f"{obj}[{literal(f.key)}] = {v.code}", at=index)
            else:
                if v.loop is not None:  # each field here is a statement of its own, in spec order
                    self.write_loop(v)
                elif not v.hoisted and v.index is not None:
                    self.em.comment(v.index)
                self.em.line(f"{obj}[{literal(f.key)}] = {v.code}", at=v.index)
        if not started:
            self.display(obj, entries)
        return obj

    def display(self, obj: str, entries: list[tuple[str, _Value]]) -> None:
        if not entries:
            self.em.line(f"{obj} = {{}}")
            return
        # A value built by a loop statement is built where the display would have computed it:
        # after every value before it in the display, which are computed into locals first, in
        # order (the statements of hoisted values ran before the display in the general code too).
        for i, (_, v) in enumerate(entries):
            if v.loop is None:
                continue
            for _, before in entries[:i]:
                if not before.hoisted:
                    tmp = self.gen.names.new("value")
                    if before.index is not None and before.loop is None:  # a loop's comment is written
                        self.em.comment(before.index)
                    self.em.line(f"{tmp} = {before.code}", at=before.index)
                    before.code, before.hoisted = tmp, True
            self.write_loop(v)
        self.em.line(f"{obj} = {{")
        self.em.depth += 1
        for key, v in entries:
            if not v.hoisted and v.index is not None and v.loop is None:
                self.em.comment(v.index)
            self.em.line(f"{key}: {v.code},", at=v.index)
        self.em.depth -= 1
        self.em.line("}")

    def each(self, node: OutEach, path: str) -> str:
        gen = self.gen
        gen.loops += 1
        loop_id = gen.loops
        out = gen.names.new("list")
        b = gen.checked.loop_bindings[id(node)]
        pos = gen.checked.bindings[id(node)]
        item = gen.local(b)
        position = gen.local(pos)
        index = gen.names.new("index")
        st = gen.type_of(node.source)
        with self.em.field(node.source.span, f"{path}[] $each") as each:
            source = gen.expr(node.source)
            if st.kind is Kind.ANY:
                source = f"{gen.helper('as_list')}({source})"
            if st.maybe:
                source = f"({source} or ())"
            self.em.line(f"{out} = []")
            self.em.line(f"{position} = 0")
            header = f"for {index}, {item} in enumerate({source}):" if self.trace else f"for {item} in {source}:"
        # the loop's line reads its list: a failure there is reported at the $each
        with self.em.block(header, at=each), gen.region():
            if self.trace:
                self.each_body(node, path, out, position, item, (loop_id, index))
            else:
                self.each_body(node, path, out, position, item)
        return out

    def each_body(self, node: OutEach, path: str, out: str, position: str, item: str,
                  trace: tuple[int, str] | None = None) -> None:
        """The statements for one element of a $each: $where, position, lineage, lets, the value."""
        gen = self.gen
        if node.where is not None:
            with self.em.field(node.where.span, f"{path}[] $where"), gen.statement():
                self.em.line(f"if not {gen.cond(node.where)}:")
                if gen.coverage:
                    n = gen.branch_point("$where", node.where.span, "kept / dropped")
                    self.em.line(f"    _COV.branch({n}, 0)")
                self.em.line("    continue")
                if gen.coverage:
                    self.em.line(f"_COV.branch({n}, 1)")
        self.em.line(f"{position} += 1")
        # Dynamic lineage for explain: which input element became which output element. The
        # element itself is recorded too: through a filtered let, the index is not the input's.
        if trace is not None:
            self.em.line("if _trace is not None:")
            self.em.line(f"    _trace.append(({trace[0]}, {position}, {trace[1]}, {item}))")
        self.lets(node.lets, f"{path}[].")
        self.each_depth += 1
        try:
            v = self.value(node.emit, f"{path}[]", False)
        finally:
            self.each_depth -= 1
        if not v.hoisted and v.index is not None:
            self.em.comment(v.index)
        if v.maybe:
            self.em.line(f"if {v.code} is not None:", at=v.index)
            self.em.line(f"    {out}.append({v.code})", at=v.index)
        else:
            self.em.line(f"{out}.append({v.code})", at=v.index)


# --- fusion of a filtered list's uses into one loop --------------------------------------------

@dataclass
class _Fusion:
    """A `let` holding filter(list, keep), whose only uses are sum(...) calls and one $each: all
    of them run in one loop over the list at the let's place, as a person would write it."""

    let: Any  # LetDef
    source: ast.Expr
    keep: ast.Lambda
    sums: list[ast.Call]
    each: OutEach | None
    path: str  # the output path of the $each


def _children(e: ast.Expr) -> list[ast.Expr]:
    match e:
        case ast.Unary(operand=o):
            return [o]
        case ast.Binary(left=a, right=b):
            return [a, b]
        case ast.If(cond=c, then=a, else_=b):
            return [c, a, b]
        case ast.Call(args=args):
            return list(args)
        case ast.Lambda(body=body):
            return [body]
        case ast.Field(obj=o):
            return [o]
        case ast.Index(obj=o, index=i):
            return [o, i]
        case ast.ListLit(items=items):
            return list(items)
        case ast.ObjectLit(entries=entries):
            return [v for _, _, v in entries]
    return []


def _uses(e: ast.Expr, parent: ast.Expr | None, out: list[tuple[ast.Expr, ast.Expr | None]]) -> None:
    out.append((e, parent))
    for kid in _children(e):
        _uses(kid, e, out)


def _fusions(spec: Spec, gen: _Gen) -> dict[int, _Fusion]:
    """The lets that can be fused, by id of their LetDef."""
    candidates: dict[int, _Fusion] = {}
    by_binding: dict[int, int] = {}
    for let in spec.lets:
        e = let.expr
        b = gen.checked.let_bindings.get(id(let))
        if (b is None or not b.used or not isinstance(e, ast.Call) or e.func != "filter" or len(e.args) != 2
                or not isinstance(e.args[1], ast.Lambda) or not isinstance(e.args[0], ast.Name | ast.Field)
                or gen.type_of(e.args[0]).kind is not Kind.LIST):
            continue
        candidates[id(let)] = _Fusion(let, e.args[0], e.args[1], [], None, "")
        by_binding[b.uid] = id(let)
    if not candidates:
        return {}
    broken: set[int] = set()

    def var_of(e: ast.Expr) -> int | None:
        if isinstance(e, ast.Var):
            b = gen.checked.bindings.get(id(e))
            if b is not None and b.uid in by_binding:
                return by_binding[b.uid]
        return None

    def visit_expr(e: ast.Expr) -> None:
        found: list[tuple[ast.Expr, ast.Expr | None]] = []
        _uses(e, None, found)
        for node, parent in found:
            key = var_of(node)
            if key is None:
                continue
            ok = (isinstance(parent, ast.Call) and parent.func == "sum" and len(parent.args) == 2
                  and parent.args[0] is node and isinstance(parent.args[1], ast.Lambda)
                  and not gen.type_of(parent.args[1].body).maybe)
            if ok and isinstance(parent, ast.Call):
                candidates[key].sums.append(parent)
            else:
                broken.add(key)

    def visit(node: OutNode, path: str, depth: int, conditional: bool, inside: set[int]) -> None:
        match node:
            case OutValue(expr=e):
                visit_expr(e)
                for inner_key in inside:  # a use inside the fused loop's own output would see a partial sum
                    if any(var_of(n) == inner_key for n, _ in _collect(e)):
                        broken.add(inner_key)
            case OutObject(fields=fields, when=when):
                if when is not None:
                    visit_expr(when)
                for f in fields:
                    visit(f.value, f"{path}.{f.key}" if path else f.key, depth,
                          conditional or when is not None or f.optional, inside)
            case OutList(items=items):
                for item in items:
                    visit(item, path, depth, conditional, inside)
            case OutJson(node=inner):
                visit(inner, path, depth, True, inside)
            case OutEach(source=source, where=where, lets=lets, emit=emit):
                each_key = var_of(source)
                if each_key is not None:
                    fusion = candidates[each_key]
                    if fusion.each is not None or depth > 0 or conditional:
                        broken.add(each_key)
                    else:
                        fusion.each, fusion.path = node, path
                else:
                    visit_expr(source)
                sub_inside = inside | ({each_key} if each_key is not None else set())
                for expr in ([where] if where is not None else []) + [let.expr for let in lets]:
                    visit_expr(expr)
                    if any(var_of(n) in sub_inside for n, _ in _collect(expr)):
                        broken.update(k for k in sub_inside if k is not None)
                visit(emit, f"{path}[]", depth + 1, conditional, sub_inside)

    for let in spec.lets:
        visit_expr(let.expr)
    visit(spec.output, "", 0, False, set())
    return {k: f for k, f in candidates.items() if k not in broken and f.each is not None}


def _collect(e: ast.Expr) -> list[tuple[ast.Expr, ast.Expr | None]]:
    found: list[tuple[ast.Expr, ast.Expr | None]] = []
    _uses(e, None, found)
    return found


# --- the module --------------------------------------------------------------------------------

def _templates() -> Environment:
    # Templates only lay out the module shell; every value placed in them is generated code or a
    # literal() string, never raw user text, so autoescaping HTML would be wrong here.
    return Environment(loader=PackageLoader("dockyard.compiler", "templates"), autoescape=False,
                       undefined=StrictUndefined, keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True)


def generate_module(spec: Spec, checked: CheckResult, coverage: bool = False, *, specialise: bool = True) -> str:
    """The module for a checked spec. `coverage=True` gives the instrumented variant that
    `dockyard test` runs to report rule coverage (never used in production); `specialise=False`
    gives only general code (tests compare the two)."""
    gen = _Gen(checked, tables={t.name: t for t in spec.tables}, coverage=coverage, specialise=specialise)
    if coverage:
        gen.helper("CoverageRecorder")
    if specialise and not coverage:
        gen.reads = [{}]  # each input value read once per function where it can be (see _Gen.cached)
    em = Emitter()
    writer = _TreeWriter(gen, em, spec)
    if _loop_paths(spec, gen) and not coverage:
        # Lineage for explain (which input element became which output element) is recorded only
        # by this variant; `transform` below skips the per-element check. (Coverage mode keeps one
        # function, so that every branch point is counted once.)
        with em.block("def transform_traced(_src, _ctx, _clock, _trace):"):
            start = len(em.lines)
            gen.money_texts = False  # explain's function: its speed matters less than the module's size
            writer.lets(spec.lets, "")
            em.line(f"return {writer.fields(spec.output, '')}")
            gen.settle_reads(em.lines, start)
            gen.money_texts = True
        em.line()
        em.line()
        writer.trace = False
        if specialise:
            writer.fusions = _fusions(spec, gen)
    with em.block("def transform(_src, _ctx, _clock, _trace=None):"):
        body_start = len(em.lines)
        writer.statement_loops = specialise and not coverage
        if specialise and not coverage:
            gen.ctx_marks = {}
        writer.lets(spec.lets, "")
        em.line(f"return {writer.fields(spec.output, '')}")
        writer.statement_loops = False
        gen.settle_reads(em.lines, body_start)
        body_end = len(em.lines)
    if specialise and not coverage:
        _entry(spec, gen, em, body_start, body_end)
    marks, gen.ctx_marks = gen.ctx_marks or {}, None  # transform itself reads _ctx
    plain = {m: code for by_code in marks.values() for code, m in by_code.items()}
    _settle_marks(em.lines, body_start, body_end, plain)
    # Fused code belongs to transform alone: request_fields computes its lets in the general way.
    writer.fusions, writer.fused_each, gen.fused_calls = {}, {}, {}
    # Every target: a document of any format also has a JSON form (the request's fingerprint), and
    # the JSON writer needs to know that it holds no None and no float (orjson would write them as
    # null and as a binary number); most values cannot by construction.
    em.line()
    em.line()
    body: list[str] = []
    looks = _json_lines(spec.output, "_doc", body, [0], gen=gen)  # a value only the writer's own look can judge
    # The helpers are bound as defaults: a local read, not a global one, per value.
    with em.block("def json_plain(_doc, _ok=JSON_SCALARS" + (", _wrongly=writes_wrongly):" if looks else "):")):
        em.line('"""True when the document holds no None and no float (else the writer checks it all)."""')
        for text in body:
            em.line(text)
        em.line("return True")
    gen.helper("JSON_SCALARS")
    if looks:
        gen.helper("writes_wrongly")
    if spec.request is not None:
        req = spec.request
        em.line()
        em.line()
        # Request fields see the same lets, plus $body (the serialized document) and $request_id.
        with em.block("def request_fields(_src, _ctx, _clock, _body, _request_id):"):
            em.line('"""The computed query parameters, headers, form fields and idempotency key."""')
            start = len(em.lines)
            writer.lets(spec.lets, "")
            parts = [f"'query': {writer.fields(req.query, 'request.query')}",
                     f"'headers': {writer.fields(req.headers, 'request.headers')}"]
            form = writer.fields(req.form, "request.form") if req.form is not None else "None"
            parts.append(f"'form': {form}")
            key = "None"
            if req.idempotency is not None:
                with em.field(req.idempotency.key.span, "request.idempotency.key") as index:
                    key_code = gen.expr(req.idempotency.key)
                    key = gen.names.new("value")
                    em.line(f"{key} = {key_code}")
                    em.line(f"if {key} is None:")
                    em.line(f"    raise {gen.helper('MissingValue')}({index})")
            parts.append(f"'key': {key}")
            em.line("return {" + ", ".join(parts) + "}")
            gen.settle_reads(em.lines, start)
    return _render(spec, gen, em)


# Decimal operators → the runtime's functions computing them in MONEY.
_MONEY_OPS = {"+": "money_add", "-": "money_sub", "*": "money_mul", "/": "money_div", "%": "money_rem"}

# The one class per context kind that the runtime's check_context hands back unchanged.
_CONTEXT_CLASS = {"string": "str", "int": "int", "decimal": "Decimal", "bool": "bool"}


def _entry(spec: Spec, gen: _Gen, em: Emitter, body_start: int, body_end: int) -> None:
    """`transform_entry`: a factory of the mapping's `transform()` as one call. The runtime's
    CompiledMapping.transform checks the order's class and the context, then calls the generated
    `transform`: about 0.5 µs per order in calls and loops. Here the same checks are written out
    for this mapping's context values, and the statements of the trace-free `transform` follow them
    in the same function. (Money needs no check of the thread's decimal context: generated code
    computes it in the runtime's MONEY context.) Whatever the checks do not accept (another class
    of order or context value, a clock, validate, explain's trace) goes to `_general`, the
    runtime's method, which does it step by step; errors
    are translated by the same method the runtime's uses, so they read exactly the same."""
    body = em.lines[body_start:body_end]
    marks = gen.ctx_marks or {}
    # Each declared context value is read once, in the check of its class, into a local that the
    # statements below use where `transform` reads _ctx (the same value: the check let it through
    # only as its exact class, so neither `_ctx[name]` nor `_ctx.get(name)` could differ).
    settled: dict[str, str] = {}
    checks = ["order.__class__ is not dict", "clock is not None", "validate", "_trace is not None"]
    for c in spec.context:
        cls = _CONTEXT_CLASS[c.type.kind.value]
        if cls == "Decimal":
            gen.helper("Decimal")
        read = f"context.get({literal(c.name)})"
        if c.name in marks:
            local = gen.names.new("value")
            read = f"({local} := {read})"
            settled |= dict.fromkeys(marks[c.name].values(), local)
        checks.append(f"{read}.__class__ is not {cls}")
    for by_code in marks.values():  # (a read of a name the spec does not declare: none pass the checker)
        settled |= {m: code for code, m in by_code.items() if m not in settled}
    body = [_settled(text, settled) for text in body]
    reads_ctx = any("_ctx" in text for text in body)
    checks.insert(4, "context.__class__ is not dict" if spec.context or reads_ctx
                  else "(context is not None and context.__class__ is not dict)")
    general = "return _general(order, context, clock, validate=validate, _trace=_trace)"
    em.line()
    em.line()
    with em.block("def transform_entry(_general, _translate, _refused, _system_clock):"):
        em.line('"""This mapping\'s transform() as one call (the runtime passes its general method and its'
                ' helpers)."""')
        em.line()
        with em.block("def transform(order, context=None, clock=None, *, validate=False, _trace=None):"):
            em.line(f"if ({checks[0]}")
            for check in checks[1:]:
                em.line(f"        or {check}" + ("):" if check is checks[-1] else ""))
            em.line(f"    {general}")
            em.line("_src = order")
            if reads_ctx:
                em.line("_ctx = context")
            if any("_clock" in text for text in body):
                em.line("_clock = _system_clock")
            with em.block("try:"):
                start = len(em.lines)
                em.repeat(body_start, body_end)
                _settle_marks(em.lines, start, len(em.lines), settled)
            em.line(f"except {gen.helper('MissingValue')} as _exc:")
            em.line("    raise _translate(_exc, order) from None")
            em.line("except _refused:")
            em.line("    raise")
            em.line("except Exception as _exc:")
            em.line("    raise _translate(_exc, order) from _exc")
        em.line()
        em.line("return transform")


def _settled(text: str, marks: dict[str, str]) -> str:
    if "\x04" in text:
        for mark, code in marks.items():
            text = text.replace(mark, code)
    return text


def _settle_marks(lines: list[str], start: int, end: int, marks: dict[str, str]) -> None:
    """Context marks (see `_Gen.ctx_marks`) in lines[start:end] replaced by their code."""
    for i in range(start, end):
        lines[i] = _settled(lines[i], marks)


def _constant(node: ast.Expr) -> bool:
    """Whether an expression is made of literals and operators only (no input, context, clock)."""
    match node:
        case ast.Literal():
            return True
        case ast.Unary(operand=operand):
            return _constant(operand)
        case ast.Binary(left=left, right=right):
            return _constant(left) and _constant(right)
        case ast.If(cond=c, then=a, else_=b):
            return _constant(c) and _constant(a) and _constant(b)
    return False


# Functions whose result is always a new str, int or bool (or an error): what they put into a
# document can never be None or a float, whatever the input holds.
_PLAIN_RESULTS = frozenset((
    "concat", "format_datetime", "format_decimal", "join", "lookup", "lower", "upper", "mask", "pad_left",
    "pad_right", "regex_replace", "replace", "string", "substring", "to_json", "trim", "trim_end", "trim_start",
    "count", "length", "epoch_millis", "epoch_seconds", "present", "contains", "matches", "starts_with",
    "ends_with",
))


def _plain_by_construction(e: ast.Expr) -> bool:
    """Whether an output value can only be a str, int or bool: a literal, a call of a function
    that makes one, a comparison, or an `if` of such. Values read from the input are not: an
    input that breaks its schema may hold null or a float anywhere."""
    match e:
        case ast.Literal(value=v):
            return v is not None and not isinstance(v, float)
        case ast.Call(func=name):
            return name in _PLAIN_RESULTS
        case ast.Unary(op="not"):
            return True
        case ast.Binary(op=op):
            return op in ("==", "!=", "<", "<=", ">", ">=", "and", "or")
        case ast.If(then=a, else_=b):
            return _plain_by_construction(a) and _plain_by_construction(b)
    return False


def _json_check(node: OutNode, code: str, depth: int = 0) -> str | None:
    """A Python condition, true when the value at `code` (built for `node`) holds no None and no
    float; None when nothing there needs looking at. Only values read from the input are looked at."""
    match node:
        case OutValue(expr=e):
            return None if _plain_by_construction(e) else f"{code}.__class__ in JSON_SCALARS"
        case OutJson():
            return None  # to_json_text gives a str
        case OutObject(fields=fields):
            parts = []
            for f in fields:
                sub = _json_check(f.value, f"{code}[{literal(f.key)}]", depth)
                if sub is None:
                    continue
                may_be_absent = f.optional or (isinstance(f.value, OutObject) and f.value.when is not None)
                parts.append(f"({literal(f.key)} not in {code} or {sub})" if may_be_absent else sub)
            return " and ".join(parts) if parts else None
        case OutEach(emit=emit):
            var = f"_x{depth}"
            sub = _json_check(emit, var, depth + 1)
            return None if sub is None else f"not [0 for {var} in {code} if not ({sub})]"
        case OutList(items=items):
            # Elements may be dropped when missing, so positions are not fixed: look at all of it.
            if all(_json_check(item, "_", depth) is None for item in items):
                return None
            return "False"


# The class a value of each kind has when its input keeps to the schema: json_plain compares with
# it (one `is`), and leaves a document with a value of another class to the writer's check.
_EXPECTED_CLASS = {Kind.STRING: "str", Kind.INT: "int", Kind.BOOL: "bool"}


def _json_lines(node: OutNode, code: str, out: list[str], counter: list[int], indent: str = "",
                gen: _Gen | None = None) -> bool:
    """Statements of `json_plain` for the value at `code`: `return False` at the first value read
    from the input that is not of the class its type gives (string, int, bool), or for other types
    not of a class the JSON writer takes as it is. Objects are bound to locals once; an optional
    leaf is read with `.get(key, default)`, a default of that class (absent is fine). Returns
    whether a statement asks the writer's own look (`_wrongly`), which json_plain then binds."""
    if _json_check(node, code) is None:
        return False
    looks = False
    match node:
        case OutValue(expr=e):
            # A value whose type gives one class must have it: any other (an input that breaks its
            # schema) leaves the document to the writer's own check, which is the reference anyway.
            expected = _EXPECTED_CLASS.get(gen.type_of(e).kind) if gen is not None else None
            if expected is None:
                # Not a scalar of the writer's (a list or an object read or built from the input,
                # None, a float): the writer's own look, at this value only.
                out.append(f"{indent}if {code}.__class__ not in _ok and _wrongly({code}):")
                looks = True
            else:
                out.append(f"{indent}if {code}.__class__ is not {expected}:")
            out.append(f"{indent}    return False")
        case OutObject(fields=fields):
            for f in fields:
                if _json_check(f.value, "_") is None:
                    continue
                key = literal(f.key)
                may_be_absent = f.optional or (isinstance(f.value, OutObject) and f.value.when is not None)
                if isinstance(f.value, OutValue):
                    # absent is fine: the default is of the class the value is compared with
                    kind = gen.type_of(f.value.expr).kind if gen is not None else None
                    default = {Kind.INT: "0", Kind.BOOL: "False"}.get(kind, "''") if kind is not None else "''"
                    leaf = f"{code}.get({key}, {default})" if may_be_absent else f"{code}[{key}]"
                    looks |= _json_lines(f.value, leaf, out, counter, indent, gen)
                    continue
                counter[0] += 1
                local = f"_j{counter[0]}"
                if may_be_absent:
                    out.append(f"{indent}if {key} in {code}:")
                    out.append(f"{indent}    {local} = {code}[{key}]")
                    looks |= _json_lines(f.value, local, out, counter, indent + "    ", gen)
                else:
                    out.append(f"{indent}{local} = {code}[{key}]")
                    looks |= _json_lines(f.value, local, out, counter, indent, gen)
        case OutEach(emit=emit):
            counter[0] += 1
            local = f"_j{counter[0]}"
            out.append(f"{indent}for {local} in {code}:")
            looks = _json_lines(emit, local, out, counter, indent + "    ", gen)
        case OutList() | OutJson():
            # Positions are not fixed (an element missing is dropped): the writer's own look, at
            # this list only.
            out.append(f"{indent}if _wrongly({code}):")
            out.append(f"{indent}    return False")
            looks = True
    return looks


def _render(spec: Spec, gen: _Gen, em: Emitter) -> str:
    lineage = {}
    for idx, (_file, line, col, path) in enumerate(em.fields):
        lineage[idx] = (path, line, col)
    values = [v for v in _all_values(spec.output)]
    field_lineage: dict[str, dict[str, Any]] = {}
    for v in values:
        lin = gen.checked.lineage.get(id(v))
        if lin is None:
            continue
        key = f"{v.expr.span.line}:{v.expr.span.col}"
        field_lineage[key] = lin.as_dict()
    meta = {
        "name": spec.name,
        "version": spec.version,
        "description": spec.description,
        "spec": spec.path,
        "compiler": COMPILER_VERSION,
        "key": spec.key_path,
        "source_schema": spec.source_schema_name,
        "source_format": spec.source_format,
        "source_root": spec.source_root,
        "context": tuple((c.name, c.type.kind.value, c.required) for c in spec.context),
        "examples": {c.name: c.example for c in spec.context if c.example is not None},
        "request": _request_meta(spec),
        "constant": _constant_output(spec),
        # Decimal arithmetic is written against the runtime's MONEY context (older modules compute
        # in the thread's context, which the runtime then makes safe around each call).
        "money": "fixed",
    }
    target = spec.target
    target_code = "Target(" + literal(target.format)
    if target.xml is not None:
        x = target.xml
        target_code += (f", XmlOptions(root={literal(x.root)}, declaration={literal(x.declaration)}, "
                        f"encoding={literal(x.encoding)}, namespaces={literal(dict(x.namespaces))}, "
                        f"pretty={literal(x.pretty)})")
        gen.helper("XmlOptions")
    if target.wrap is not None:
        target_code += f", wrap={literal(target.wrap)}"
    target_code += ")"
    gen.helper("Target")
    gen.helper("MissingValue")
    env = _templates()
    header = env.get_template("module.py.j2")
    # The shell is rendered twice: first to learn where the body starts, then with the source map.
    fields = tuple((f, line, col, path) for f, line, col, path in em.fields)
    body = "\n".join(em.lines)
    if "\x01" in body:  # every function settles its reads (_Gen.settle_reads)
        raise AssertionError("a read of the input was left unsettled")
    context = dict(
        spec_path=comment_safe(spec.path), name=comment_safe(spec.name), version=comment_safe(spec.version),
        compiler=COMPILER_VERSION, imports=sorted(gen.imports), meta=literal(meta), target=target_code,
        consts=[(n, c, comment_safe(k)) for n, c, k in gen.const_defs], body=body,
        fields=literal(fields), lineage=literal(field_lineage), loops=literal(_loop_paths(spec, gen)),
        coverage=literal(_coverage_items(spec, gen)) if gen.coverage else None,
    )
    probe = header.render(**context, source_map="{}")
    offset = probe.splitlines().index("# --- functions ---") + 2
    return header.render(**context, source_map=literal(em.source_map(offset)))


def _constant_output(spec: Spec) -> bool:
    """Whether every document this mapping makes is the same: its output holds only literal
    values, with no condition, no `$each` and no let (whose evaluation could fail). The runtime
    then serializes it once (an acknowledgement answered to every callback, for instance)."""
    def constant(node: OutNode) -> bool:
        match node:
            case OutValue(expr=expr, when=when):
                return when is None and isinstance(expr, ast.Literal)
            case OutObject(fields=fields, when=when):
                return when is None and all(constant(f.value) for f in fields)
            case OutList(items=items):
                return all(constant(item) for item in items)
            case OutJson(node=inner):
                return constant(inner)
        return False
    return not spec.lets and constant(spec.output)


def _coverage_items(spec: Spec, gen: _Gen) -> dict[str, Any]:
    """What rule coverage counts, for the report: value fields (optional ones twice), branch points,
    and every table row (plus the default, where a table has one)."""
    return {
        "fields": [(index, optional) for index, optional in gen.value_fields],
        "branches": list(gen.branches),
        "tables": {t.name: {"rows": list(t.rows), "default": t.default is not None,
                            "line": t.span.line, "col": t.span.col} for t in spec.tables},
    }


def _request_meta(spec: Spec) -> dict[str, Any] | None:
    """The request's fixed parts, as literal data the runtime reads (no code, no secrets)."""
    req = spec.request
    if req is None:
        return None
    sign = None
    if req.sign is not None:
        s = req.sign
        sign = {"scheme": s.scheme, "secret": s.secret, "params": s.params, "body": s.body,
                "into": list(s.into), "options": dict(s.options), "configurable": list(s.configurable)}
    return {
        "method": req.method, "url": req.url, "sign": sign,
        "encrypt": [{"path": e.path, "scheme": e.scheme, "key": e.key, "options": dict(e.options)}
                    for e in req.encrypt],
        "encryptable": [{"path": e.path, "schemes": list(e.schemes)} for e in req.encryptable],
        "idempotency": None if req.idempotency is None else {
            "rule": req.idempotency.rule, "ttl_seconds": req.idempotency.ttl_seconds},
    }


def _loop_paths(spec: Spec, gen: _Gen) -> dict[int, tuple[str, str]]:
    """loop id → (output list path, source list path) for explain; ids follow generation order."""
    result: dict[int, tuple[str, str]] = {}
    counter = 0

    def visit(node: OutNode, path: str) -> None:
        nonlocal counter
        match node:
            case OutObject(fields=fields):
                for f in fields:
                    visit(f.value, f"{path}.{f.key}" if path else f.key)
            case OutList(items=items):
                for i, item in enumerate(items):
                    visit(item, f"{path}[{i}]")
            case OutJson(node=inner):
                visit(inner, path)
            case OutEach(emit=emit):
                counter += 1
                b = gen.checked.loop_bindings.get(id(node))
                src = b.path[:-2] if b is not None and b.path else ""
                result[counter] = (path, src)
                visit(emit, f"{path}[]")
            case _:
                return

    visit(spec.output, "")
    return result


def _all_values(node: OutNode) -> list[OutValue]:
    from dockyard.compiler.checks import iter_values

    return list(iter_values(node))


def generate_expression_module(expr: ast.Expr, checked: CheckResult, tables: dict[str, TableDef], *,
                               specialise: bool = True) -> str:
    """A module whose `evaluate(_src, _ctx, _clock)` computes one bare expression (registry
    examples, tests and the REPL use it)."""
    gen = _Gen(checked, tables=tables, specialise=specialise)
    code = gen.expr(expr)
    consts = "\n".join(f"{n} = {c}" for n, c, _ in gen.const_defs)
    imports = ", ".join(sorted(gen.imports | {"MissingValue"}))
    return (f"from dockyard.runtime.api import {imports}\n\n{consts}\n\n\n"
            f"def evaluate(_src, _ctx, _clock, _trace=None):\n    return {code}\n")
