"""The expression AST: closed, frozen node classes, each carrying the `Span` it was parsed from.

Lark trees never leave the parser; the checker and the code generator see only these nodes.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal

from dockyard.dsl.spans import Span

__all__ = [
    "BINARY_OPS",
    "Binary",
    "Call",
    "Expr",
    "Field",
    "If",
    "Index",
    "Lambda",
    "ListLit",
    "Literal",
    "Name",
    "ObjectLit",
    "Omit",
    "Unary",
    "Var",
    "children",
    "literal_value",
    "walk",
]

LiteralValue = str | int | Decimal | bool

# Operator spellings as the language writes them; the checker and codegen dispatch on these.
BINARY_OPS = ("??", "or", "and", "==", "!=", "<", "<=", ">", ">=", "+", "-", "*", "/", "%")


@dataclass(frozen=True, slots=True)
class Literal:
    value: LiteralValue
    span: Span


@dataclass(frozen=True, slots=True)
class Omit:
    """`omit`: a value that is missing on purpose. An optional field whose value is `omit` is left
    out, and a list drops it, exactly as for any missing value; the language has no null."""

    span: Span


@dataclass(frozen=True, slots=True)
class Name:
    """A bare name: a top-level field of the source document (`order_no`)."""

    name: str
    span: Span


@dataclass(frozen=True, slots=True)
class Var:
    """`$name`: a let value, a loop or lambda variable, `$ctx` or `$position`."""

    name: str
    span: Span


@dataclass(frozen=True, slots=True)
class Field:
    """`obj.name`: a field of an object; missing when `obj` is missing or has no such field."""

    obj: Expr
    name: str
    span: Span
    name_span: Span


@dataclass(frozen=True, slots=True)
class Index:
    """`obj[index]`: a list element (0-based; negative counts from the end) or a field by key."""

    obj: Expr
    index: Expr
    span: Span


@dataclass(frozen=True, slots=True)
class Lambda:
    """`$x => body`: allowed only as an argument of a function that takes one."""

    param: str
    body: Expr
    span: Span


@dataclass(frozen=True, slots=True)
class Call:
    func: str
    args: tuple[Expr, ...]
    span: Span
    func_span: Span


@dataclass(frozen=True, slots=True)
class Unary:
    op: str  # "-" or "not"
    operand: Expr
    span: Span


@dataclass(frozen=True, slots=True)
class Binary:
    op: str  # one of BINARY_OPS
    left: Expr
    right: Expr
    span: Span


@dataclass(frozen=True, slots=True)
class If:
    cond: Expr
    then: Expr
    else_: Expr
    span: Span


@dataclass(frozen=True, slots=True)
class ListLit:
    items: tuple[Expr, ...]
    span: Span


@dataclass(frozen=True, slots=True)
class ObjectLit:
    entries: tuple[tuple[str, Span, Expr], ...]
    span: Span


Expr = Literal | Omit | Name | Var | Field | Index | Lambda | Call | Unary | Binary | If | ListLit | ObjectLit


def children(node: Expr) -> Iterator[Expr]:
    """The direct sub-expressions of a node, in source order."""
    match node:
        case Field(obj=obj):
            yield obj
        case Index(obj=obj, index=index):
            yield obj
            yield index
        case Lambda(body=body):
            yield body
        case Call(args=args):
            yield from args
        case Unary(operand=operand):
            yield operand
        case Binary(left=left, right=right):
            yield left
            yield right
        case If(cond=c, then=t, else_=e):
            yield c
            yield t
            yield e
        case ListLit(items=items):
            yield from items
        case ObjectLit(entries=entries):
            for _, _, value in entries:
                yield value
        case _:
            return


def walk(node: Expr) -> Iterator[Expr]:
    """Every node of the tree, parents before children."""
    yield node
    for child in children(node):
        yield from walk(child)


def literal_value(node: Expr) -> LiteralValue | None:
    """The constant a node writes (a literal, or a negated number literal such as -2), else None."""
    if isinstance(node, Literal):
        return node.value
    if isinstance(node, Unary) and node.op == "-" and isinstance(node.operand, Literal):
        v = node.operand.value
        if isinstance(v, int | Decimal) and not isinstance(v, bool):
            return -v
    return None
