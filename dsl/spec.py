"""The spec model: a parsed mapping spec, as frozen nodes with spans.

Built by `dockyard.dsl.spec_parser` from YAML; read by the checker and the code generator.
Expressions inside are `dockyard.dsl.ast` nodes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from dockyard.dsl import ast
from dockyard.dsl.spans import Span
from dockyard.dsl.types import Type
from dockyard.runtime.target import Target

__all__ = [
    "ContextDef",
    "EncryptDef",
    "EncryptableDef",
    "IdempotencyDef",
    "LetDef",
    "OutEach",
    "OutField",
    "OutJson",
    "OutList",
    "OutNode",
    "OutObject",
    "OutValue",
    "RequestDef",
    "SignDef",
    "Spec",
    "TableDef",
]


@dataclass(frozen=True)
class TableDef:
    name: str
    span: Span
    rows: Mapping[str, str]
    default: str | None = None
    file: str | None = None  # the file the rows came from, relative to the spec


@dataclass(frozen=True)
class ContextDef:
    name: str
    span: Span
    type: Type
    required: bool = True
    description: str = ""
    example: str | int | bool | None = None  # used by dry-run when no config is given


@dataclass(frozen=True)
class LetDef:
    name: str
    span: Span  # the key
    expr: ast.Expr


@dataclass(frozen=True)
class OutValue:
    expr: ast.Expr
    span: Span
    cdata: bool = False
    broken: bool = False  # the expression did not parse (already reported); checked as "any"
    when: ast.Expr | None = None  # `$when` beside `$value`: the field is left out when this is false


@dataclass(frozen=True)
class OutField:
    key: str  # the target field name exactly as the warehouse spells it
    span: Span  # the key
    value: OutNode
    optional: bool = False


@dataclass(frozen=True)
class OutObject:
    fields: tuple[OutField, ...]
    span: Span
    when: ast.Expr | None = None


@dataclass(frozen=True)
class OutList:
    """A YAML sequence in the output tree: a list of fixed elements."""

    items: tuple[OutNode, ...]
    span: Span


@dataclass(frozen=True)
class OutEach:
    source: ast.Expr
    var: str
    where: ast.Expr | None
    lets: tuple[LetDef, ...]
    emit: OutNode
    span: Span


@dataclass(frozen=True)
class OutJson:
    node: OutNode
    span: Span


OutNode = OutValue | OutObject | OutList | OutEach | OutJson


@dataclass(frozen=True)
class SignDef:
    scheme: str
    secret: str  # the secret's NAME; specs never hold secret values
    params: str  # "query" or "form": which fields the signer reads as its parameters
    body: str  # "body", "form.NAME", "query.NAME" or "none": what the signer reads as the body
    into: tuple[str, str]  # (section, name) where the signature goes; ("", "") = the scheme's default
    options: Mapping[str, str]
    span: Span
    configurable: tuple[str, ...] = ()  # options a warehouse's config may set (runtime/wire.py)
    configurable_spans: tuple[Span, ...] = ()  # where each is written


@dataclass(frozen=True)
class EncryptDef:
    path: str  # output path, with [] for every element of a list: orderLines[].mobile
    scheme: str
    key: str  # the key's secret NAME
    options: Mapping[str, str]
    span: Span


@dataclass(frozen=True)
class EncryptableDef:
    """An output field a warehouse's config may have encrypted (runtime/wire.py)."""

    path: str  # as in EncryptDef
    schemes: tuple[str, ...]  # the ciphers allowed; () = any
    span: Span


@dataclass(frozen=True)
class IdempotencyDef:
    key: ast.Expr
    rule: str  # skip | resend | query
    ttl_seconds: int | None
    span: Span


@dataclass(frozen=True)
class RequestDef:
    """How the document travels: method, URL template, computed query/header/form fields, and the
    policies (signing, field encryption, idempotency) that apply."""

    method: str
    url: str  # with {name} placeholders filled from context values
    url_span: Span
    query: OutObject
    headers: OutObject
    form: OutObject | None  # when set, the HTTP body is this form; `$body` is the serialized document
    sign: SignDef | None
    encrypt: tuple[EncryptDef, ...]
    idempotency: IdempotencyDef | None
    span: Span
    encryptable: tuple[EncryptableDef, ...] = ()


@dataclass(frozen=True)
class Spec:
    path: str  # as given, used in every message and comment
    text: str
    name: str
    version: str
    description: str
    source_schema_name: str
    source_schema: Mapping[str, Any]
    source_schema_span: Span
    key_path: tuple[str | int, ...]  # field names, and list indexes (Body.WaybillRoute[0].mailno)
    target: Target
    target_schema: Mapping[str, Any] | None
    target_schema_span: Span | None
    context: tuple[ContextDef, ...]
    tables: tuple[TableDef, ...]
    lets: tuple[LetDef, ...]
    output: OutObject
    files: Mapping[str, str] = field(default_factory=dict)  # every file read (spec, tables, schemas): text
    broken_lets: frozenset[str] = frozenset()  # lets whose expression did not parse (already reported)
    spans: Mapping[str, Span] = field(default_factory=dict)  # where settings are written: "target.root", …
    request: RequestDef | None = None
    source_format: str = "json"  # how raw input bytes are read: json, xml or form
    source_root: str | None = None  # xml: the root element the input must have
