"""Tests of dockyard.dsl.spans and of the YAML scalar spans that place expressions in a spec file."""

from __future__ import annotations

import pytest

from dockyard.compiler.checks import check_expression
from dockyard.dsl import ast
from dockyard.dsl.parser import ExprSyntaxError, parse_expression
from dockyard.dsl.spans import SourceText, Span
from dockyard.dsl.spec_parser import load_builtin_schema
from dockyard.dsl.yaml_nodes import YMap, YNode, YScalar, YSeq, load_yaml

# --- SourceText.position -------------------------------------------------------------------------

# (text, 0-based offset, expected 1-based (line, col))
POSITIONS = [
    ("abc", 0, (1, 1)),
    ("abc", 2, (1, 3)),
    ("abc", 3, (1, 4)),  # end of file: one past the last character
    ("abc\ndef", 3, (1, 4)),  # the newline itself ends line 1
    ("abc\ndef", 4, (2, 1)),  # right after a newline
    ("abc\ndef", 6, (2, 3)),
    ("abc\ndef", 7, (2, 4)),
    ("abc\n", 4, (2, 1)),  # end of a file that ends with a newline
    ("a\n\nb", 2, (2, 1)),  # an empty line
    ("a\n\nb", 3, (3, 1)),
    ("ab\r\ncd", 2, (1, 3)),  # CRLF: the \r is the last column of its line
    ("ab\r\ncd", 4, (2, 1)),
    ("ab\r\ncd", 5, (2, 2)),
    ("", 0, (1, 1)),  # empty file
    ("", 5, (1, 1)),  # clamped
    ("abc", -3, (1, 1)),  # clamped
    ("ab\ncd", 99, (2, 3)),  # clamped to the end
    ("中文\nx", 1, (1, 2)),  # columns count characters, not bytes
    ("中文\nx", 3, (2, 1)),
]


@pytest.mark.parametrize(("text", "offset", "expected"), POSITIONS)
def test_position(text: str, offset: int, expected: tuple[int, int]) -> None:
    assert SourceText("f", text).position(offset) == expected


# (text, start, end, expected (line, col, end_line, end_col), caret width)
SPANS = [
    ("abc", 0, 1, (1, 1, 1, 2), 1),
    ("abc", 1, 3, (1, 2, 1, 4), 2),
    ("abc", 2, 2, (1, 3, 1, 3), 1),  # empty span: still one caret
    ("abc", 2, 1, (1, 3, 1, 3), 1),  # end before start: empty at start
    ("abc\ndef", 2, 6, (1, 3, 2, 3), 1),  # multi-line: one caret
    ("abc\ndef", 4, 7, (2, 1, 2, 4), 3),
    ("ab\r\ncd", 4, 6, (2, 1, 2, 3), 2),
    ("", 0, 0, (1, 1, 1, 1), 1),
    ("abc", 3, 3, (1, 4, 1, 4), 1),
]


@pytest.mark.parametrize(("text", "start", "end", "expected", "width"), SPANS)
def test_span(text: str, start: int, end: int, expected: tuple[int, int, int, int], width: int) -> None:
    span = SourceText("dir/f.yaml", text).span(start, end)
    assert span == Span("dir/f.yaml", *expected)
    assert span.width == width
    assert str(span) == f"dir/f.yaml:{expected[0]}:{expected[1]}"


@pytest.mark.parametrize(("text", "line", "expected"), [
    ("abc\ndef", 1, "abc"),
    ("abc\ndef", 2, "def"),
    ("abc\ndef", 3, ""),
    ("abc\ndef", 0, ""),
    ("ab\r\ncd\r\n", 1, "ab"),
    ("ab\r\ncd\r\n", 2, "cd"),
    ("ab\r\ncd\r\n", 3, ""),
    ("", 1, ""),
])
def test_line_text(text: str, line: int, expected: str) -> None:
    assert SourceText("f", text).line_text(line) == expected


def test_source_text_equality_ignores_the_line_index() -> None:
    assert SourceText("f", "a\nb") == SourceText("f", "a\nb")
    assert SourceText("f", "a\nb") != SourceText("g", "a\nb")


# --- YAML scalar spans → expression positions in the file ---------------------------------------

ORDER = load_builtin_schema("order")


def _scalar_at(root: YNode, path: tuple[str | int, ...]) -> YScalar:
    node = root
    for part in path:
        if isinstance(node, YMap) and isinstance(part, str):
            found = node.get(part)
            assert found is not None, part
            node = found
        elif isinstance(node, YSeq) and isinstance(part, int):
            node = node.items[part]
        else:  # pragma: no cover
            raise AssertionError(path)
    assert isinstance(node, YScalar)
    return node


def _text_at(text: str, line: int, col: int, length: int) -> str:
    return text.splitlines()[line - 1][col - 1 : col - 1 + length]


# (case, YAML text, path to the scalar, style, expected (line, col) of the unknown field 'nik')
UNKNOWN_FIELD = [
    ("plain", "name: demo\noutput:\n  buyer: buyer.nik\n", ("output", "buyer"), None, (3, 16)),
    ("plain-deep", "a: 1\nb:\n  c:\n    d:    trim(buyer.nik)\n", ("b", "c", "d"), None, (4, 22)),
    ("plain-multiline", "output:\n  v: concat(order_no,\n       buyer.nik)\n", ("output", "v"), None,
     (3, 14)),
    ("plain-comment", "output:\n  v: buyer.nik   # the nick\n", ("output", "v"), None, (2, 12)),
    ("flow-mapping", "output: {v: buyer.nik, w: 1}\n", ("output", "v"), None, (1, 19)),
    ("sequence", "output:\n  - order_no\n  - buyer.nik\n", ("output", 1), None, (3, 11)),
    ("literal", "output:\n  v: |\n    concat(order_no,\n      buyer.nik)\n", ("output", "v"), "|", (4, 13)),
    ("literal-strip", "output:\n  v: |-\n    buyer.nik\nnext: 1\n", ("output", "v"), "|", (3, 11)),
    ("literal-comment", "output:\n  v: | # note\n\n    buyer.nik\n", ("output", "v"), "|", (4, 11)),
    ("folded", "output:\n  v: >\n    concat(order_no,\n      buyer.nik)\n", ("output", "v"), ">", (4, 13)),
    ("folded-keep", "output:\n  v: >+\n      buyer.nik\n\nw: 1\n", ("output", "v"), ">", (3, 13)),
    ("crlf", "name: x\r\noutput:\r\n  v: remark ??\r\n     buyer.nik\r\n", ("output", "v"), None, (4, 12)),
    ("crlf-literal", "output:\r\n  v: |\r\n    buyer.nik\r\n", ("output", "v"), "|", (3, 11)),
    ("unicode-before", "描述: 顺丰\noutput:\n  收件人: buyer.nik\n", ("output", "收件人"), None, (3, 14)),
]


@pytest.mark.parametrize(("case", "text", "path", "style", "where"), UNKNOWN_FIELD,
                         ids=[u[0] for u in UNKNOWN_FIELD])
def test_unknown_field_is_reported_at_its_place_in_the_file(
    case: str, text: str, path: tuple[str | int, ...], style: str | None, where: tuple[int, int]
) -> None:
    src = SourceText(f"{case}.yaml", text)
    scalar = _scalar_at(load_yaml(src), path)
    assert scalar.style == style
    expr_text, offset = scalar.expression_text(src)
    expr = parse_expression(expr_text, src, offset)
    result, _ = check_expression(expr, ORDER)
    [diag] = result.diagnostics
    assert diag.code == "unknown-path"
    assert diag.message == "unknown field 'nik' in buyer"
    assert diag.hint == "did you mean 'nick'?"
    assert (diag.span.file, diag.span.line, diag.span.col) == (f"{case}.yaml", *where)
    assert _text_at(text, *where, 3) == "nik"
    assert diag.span.width == 3


# (case, YAML text, path, expected (line, col) of the mistake, expected message)
SYNTAX = [
    ("plain", "a: 1\nb:\n  c: order_no &&\n", ("b", "c"), (3, 15), "'&&' is not an operator"),
    ("plain-multiline", "b:\n  c: concat(a,\n       b c)\n", ("b", "c"), (3, 10), None),
    ("literal", "b:\n  c: |\n    if a\n    then b\n", ("b", "c"), (4, 10),
     "'if … then …' needs an 'else' branch"),
    ("folded", "b:\n  c: >-\n    x.\nd: 1\n", ("b", "c"), (3, 6), "expected a field name after '.'"),
    ("crlf", "b:\r\n  c: |\r\n    a = b\r\n", ("b", "c"), (3, 7), "'=' is not an operator"),
    ("flow", "b: {c: (a, d: 1}\n", ("b", "c"), (1, 9), "a '(' is never closed"),
]


@pytest.mark.parametrize(("case", "text", "path", "where", "message"), SYNTAX, ids=[s[0] for s in SYNTAX])
def test_syntax_error_is_reported_at_its_place_in_the_file(
    case: str, text: str, path: tuple[str, ...], where: tuple[int, int], message: str | None
) -> None:
    src = SourceText(f"{case}.yaml", text)
    scalar = _scalar_at(load_yaml(src), path)
    expr_text, offset = scalar.expression_text(src)
    with pytest.raises(ExprSyntaxError) as info:
        parse_expression(expr_text, src, offset)
    diag = info.value.diagnostic
    assert (diag.span.file, diag.span.line, diag.span.col) == (f"{case}.yaml", *where)
    if message is not None:
        assert diag.message == message


@pytest.mark.parametrize(("text", "style", "value", "where"), [
    ("k:\n  v: 'JYCK'\n", "'", "JYCK", (2, 6, 2, 12)),
    ('k:\n  v: "JYCK"\n', '"', "JYCK", (2, 6, 2, 12)),
    ('k:\n  v: "\\u4e2d\\t!"\n', '"', "中\t!", (2, 6, 2, 17)),
    ("k:\n  v:   'a b'   # c\n", "'", "a b", (2, 8, 2, 13)),
])
def test_quoted_scalar_spans_cover_the_quotes(text: str, style: str, value: str,
                                              where: tuple[int, int, int, int]) -> None:
    src = SourceText("q.yaml", text)
    scalar = _scalar_at(load_yaml(src), ("k", "v"))
    assert scalar.quoted
    assert scalar.style == style
    assert scalar.value == value
    assert (scalar.span.line, scalar.span.col, scalar.span.end_line, scalar.span.end_col) == where
    expr_text, offset = scalar.expression_text(src)
    assert expr_text[0] == expr_text[-1] == style
    node = parse_expression(expr_text, src, offset)
    assert isinstance(node, ast.Literal)
    assert node.value == value
    assert node.span == scalar.span


@pytest.mark.parametrize(("text", "expected"), [
    ("k: |\n  a +\n    b\n", ("  a +\n    b\n", 5)),
    ("k: >-\n  a\nz: 1\n", ("  a\n", 6)),
    ("k: a + b  # c\n", ("a + b", 3)),
    ("k: |\n", ("", 5)),
])
def test_expression_text(text: str, expected: tuple[str, int]) -> None:
    src = SourceText("e.yaml", text)
    scalar = _scalar_at(load_yaml(src), ("k",))
    assert scalar.expression_text(src) == expected


def test_key_spans() -> None:
    text = "output:\n  deliveryOrder:\n    orderType: \"JYCK\"\n"
    src = SourceText("k.yaml", text)
    root = load_yaml(src)
    assert isinstance(root, YMap)
    inner = root.get("output")
    assert isinstance(inner, YMap)
    key = inner.key_node("deliveryOrder")
    assert key is not None
    assert (key.span.line, key.span.col, key.span.end_col) == (2, 3, 16)
