"""Tests of dockyard.dsl.parser: AST shapes, syntax-error messages, spans and parser properties."""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Callable
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dockyard.dsl import ast
from dockyard.dsl.parser import ExprSyntaxError, parse_expression
from dockyard.dsl.spans import SourceText

# No example database: the tests must not leave a .hypothesis folder in the repository.
PROPERTY = settings(database=None, max_examples=300, deadline=None)

# Lark's own names for terminals: none of them may ever reach a person.
LARK_LEAKS = ("RPAR", "LPAR", "$END", "LSQB", "RSQB", "LBRACE", "RBRACE", "__ANON", "Token(", "COMP_OP",
              "MUL_OP", "QUOTED_NAME")


# --- an S-expression view of the AST (spans ignored) --------------------------------------------

def _literal(value: ast.LiteralValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal):
        return f"{value}d"  # marks a Decimal apart from an int
    if isinstance(value, int):
        return str(value)
    return json.dumps(value, ensure_ascii=False)


def _name(name: str) -> str:
    return name if name.isidentifier() else f"`{name}`"


def sexp(node: ast.Expr) -> str:
    """`(?? (. buyer nick) "x")`: the shape of a tree, for tables of expected parses."""
    match node:
        case ast.Literal(value=v):
            return _literal(v)
        case ast.Omit():
            return "(omit)"  # apart from a field named omit
        case ast.Name(name=n):
            return _name(n)
        case ast.Var(name=n):
            return f"${n}"
        case ast.Field(obj=o, name=n):
            return f"(. {sexp(o)} {_name(n)})"
        case ast.Index(obj=o, index=i):
            return f"([] {sexp(o)} {sexp(i)})"
        case ast.Lambda(param=p, body=b):
            return f"(=> ${p} {sexp(b)})"
        case ast.Call(func=f, args=args):
            return f"(call {f}{''.join(' ' + sexp(a) for a in args)})"
        case ast.Unary(op=op, operand=x):
            return f"({op} {sexp(x)})"
        case ast.Binary(op=op, left=left, right=right):
            return f"({op} {sexp(left)} {sexp(right)})"
        case ast.If(cond=c, then=t, else_=e):
            return f"(if {sexp(c)} {sexp(t)} {sexp(e)})"
        case ast.ListLit(items=items):
            return "(list" + "".join(" " + sexp(i) for i in items) + ")"
        case ast.ObjectLit(entries=entries):
            return "(object" + "".join(f" ({json.dumps(k, ensure_ascii=False)} {sexp(v)})"
                                       for k, _, v in entries) + ")"
    raise AssertionError(node)  # pragma: no cover


def test_sexp_helper_shows_spans_are_ignored() -> None:
    assert sexp(parse_expression("a  +  b")) == sexp(parse_expression("a+b")) == "(+ a b)"


# --- valid expressions → AST shape ---------------------------------------------------------------

PARSES = [
    # atoms
    ("order_no", "order_no"),
    ("$lines", "$lines"),
    ("42", "42"),
    ("007", "7"),
    ("59.90", "59.90d"),
    ("true", "true"),
    ("false", "false"),
    ('"JYCK"', '"JYCK"'),
    # `omit` is a keyword; a field of that name is written `omit` in backticks, or after a '.'
    ("omit", "(omit)"),
    ("if remark == \"\" then omit else remark", '(if (== remark "") (omit) remark)'),
    ("[a, omit]", "(list a (omit))"),
    ("`omit`", "omit"),
    ("a.omit", "(. a omit)"),
    ("omitted", "omitted"),
    ("'JYCK'", '"JYCK"'),
    ("buyer.nick", "(. buyer nick)"),
    ("buyer . nick", "(. buyer nick)"),
    ("$ctx.owner_code", "(. $ctx owner_code)"),
    # precedence, lowest first: if, or, and, not, comparison, ??, + -, * / %, unary -, postfix
    ("if a then b else c or d", "(if a b (or c d))"),
    ("if a or b then c else d", "(if (or a b) c d)"),
    ("if a then b else if c then d else e", "(if a b (if c d e))"),
    ("if a then if b then c else d else e", "(if a (if b c d) e)"),
    ("a or b and c", "(or a (and b c))"),
    ("a and b or c", "(or (and a b) c)"),
    ("a or b or c", "(or (or a b) c)"),
    ("a and b and c", "(and (and a b) c)"),
    ("not a and b", "(and (not a) b)"),
    ("not a or not b", "(or (not a) (not b))"),
    ("not not a", "(not (not a))"),
    ("not a == b", "(not (== a b))"),
    ("a == b and c != d", "(and (== a b) (!= c d))"),
    ("a < b or a <= b", "(or (< a b) (<= a b))"),
    ("a > b and a >= b", "(and (> a b) (>= a b))"),
    ("a == b ?? c", "(== a (?? b c))"),
    ("a ?? b == c", "(== (?? a b) c)"),
    ("a ?? b + c", "(?? a (+ b c))"),
    ("a + b ?? c", "(?? (+ a b) c)"),
    ("a + b * c", "(+ a (* b c))"),
    ("a * b + c", "(+ (* a b) c)"),
    ("a - b - c", "(- (- a b) c)"),
    ("a + b - c", "(- (+ a b) c)"),
    ("a * b / c % d", "(% (/ (* a b) c) d)"),
    ("(a + b) * c", "(* (+ a b) c)"),
    ("((a))", "a"),
    ("-a * b", "(* (- a) b)"),
    ("-a.b", "(- (. a b))"),
    ("- -a", "(- (- a))"),
    ("1 - -1", "(- 1 (- 1))"),
    ("-a[0]", "(- ([] a 0))"),
    ("a.b[0].c", "(. ([] (. a b) 0) c)"),
    ("items[-1].sku", "(. ([] items (- 1)) sku)"),
    ('extend_props["k"]', '([] extend_props "k")'),
    ("f(x).y", "(. (call f x) y)"),
    ("true.x", "(. true x)"),
    # ?? is right-associative
    ("a ?? b ?? c", "(?? a (?? b c))"),
    ("remark ?? buyer_message ?? \"\"", '(?? remark (?? buyer_message ""))'),
    ('buyer.nick ?? "x"', '(?? (. buyer nick) "x")'),
    # calls and lambdas as arguments
    ("now()", "(call now)"),
    ("trim(receiver.address)", "(call trim (. receiver address))"),
    ("f(a,)", "(call f a)"),
    ("f(g(x), h())", "(call f (call g x) (call h))"),
    ("sum($lines, $l => $l.qty)", "(call sum $lines (=> $l (. $l qty)))"),
    ("filter(items, $i => $i.qty > 0 and not $i.is_gift)",
     "(call filter items (=> $i (and (> (. $i qty) 0) (not (. $i is_gift)))))"),
    ("map(items, $i => {sku: $i.sku})", '(call map items (=> $i (object ("sku" (. $i sku)))))'),
    ("count(map(items, $i => $i.sku), $s => $s == \"A\")",
     '(call count (call map items (=> $i (. $i sku))) (=> $s (== $s "A")))'),
    ("f($x => if $x then 1 else 2)", "(call f (=> $x (if $x 1 2)))"),
    ("f($x => $x ?? 0, 1)", "(call f (=> $x (?? $x 0)) 1)"),
    # list and object literals
    ("[]", "(list)"),
    ("[1, 2.5, \"x\", true]", '(list 1 2.5d "x" true)'),
    ("[1, 2,]", "(list 1 2)"),
    ("[[1], []]", "(list (list 1) (list))"),
    ("{}", "(object)"),
    ('{a: 1, "b c": x.y, `d-e`: [2]}', '(object ("a" 1) ("b c" (. x y)) ("d-e" (list 2)))'),
    ("{a: 1,}", '(object ("a" 1))'),
    ("{if: 1, not: 2}", '(object ("if" 1) ("not" 2))'),
    ("{a: {b: c}}", '(object ("a" (object ("b" c))))'),
    # backtick-quoted names
    ("`order no`", "`order no`"),
    ("`order no`.x", "(. `order no` x)"),
    ("a.`b-c`", "(. a `b-c`)"),
    ("a.`if`", "(. a if)"),
    # keywords are field names after a dot
    ("x.if", "(. x if)"),
    ("x.then", "(. x then)"),
    ("x.else", "(. x else)"),
    ("x.and", "(. x and)"),
    ("x.or", "(. x or)"),
    ("x.not", "(. x not)"),
    ("x.true", "(. x true)"),
    ("x.false", "(. x false)"),
    ("x.if.then.else", "(. (. (. x if) then) else)"),
    ("if x.if then x.then else x.else", "(if (. x if) (. x then) (. x else))"),
    # whitespace, including newlines from YAML block scalars
    ("a\n  + b", "(+ a b)"),
    ("\tf(\r\n a )", "(call f a)"),
]


@pytest.mark.parametrize(("text", "expected"), PARSES, ids=[t for t, _ in PARSES])
def test_parse_shape(text: str, expected: str) -> None:
    assert sexp(parse_expression(text)) == expected


# --- decimals are Decimal, never float -----------------------------------------------------------

@pytest.mark.parametrize(("text", "value"), [
    ("0.1", Decimal("0.1")),
    ("59.90", Decimal("59.90")),
    ("00.50", Decimal("0.50")),
    ("128.705", Decimal("128.705")),
    ("12345678901234567890.123456789", Decimal("12345678901234567890.123456789")),
])
def test_decimal_literal_is_exact(text: str, value: Decimal) -> None:
    node = parse_expression(text)
    assert isinstance(node, ast.Literal)
    assert type(node.value) is Decimal
    assert node.value == value
    assert str(node.value) == str(value)  # trailing zeros kept: 59.90 stays 59.90


def test_integer_literal_is_int() -> None:
    node = parse_expression("12")
    assert isinstance(node, ast.Literal)
    assert type(node.value) is int
    assert node.value == 12


def test_booleans_are_bools_not_ints() -> None:
    node = parse_expression("[true, false]")
    assert isinstance(node, ast.ListLit)
    values = [item.value for item in node.items if isinstance(item, ast.Literal)]
    assert values == [True, False]
    assert all(type(v) is bool for v in values)


def test_minus_literal_is_a_unary() -> None:
    assert sexp(parse_expression("-1.5")) == "(- 1.5d)"


# --- string escapes ------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "value"), [
    (r'"a\nb"', "a\nb"),
    (r'"a\tb"', "a\tb"),
    (r'"a\rb"', "a\rb"),
    (r'"say \"hi\""', 'say "hi"'),
    (r'"C:\\temp"', "C:\\temp"),
    (r'"\u4e2d\u6587"', "中文"),
    (r'"\u004A"', "J"),
    (r'"a\/b"', "a/b"),
    (r'"nul\0"', "nul\0"),
    (r"'it\'s'", "it's"),
    (r"""'say "hi"'""", 'say "hi"'),
    (r'''"it's"''', "it's"),
    ('"顺丰速运"', "顺丰速运"),
    ('""', ""),
    (r'"\\n"', "\\n"),
    (r'"\\\""', '\\"'),
])
def test_string_escapes(text: str, value: str) -> None:
    node = parse_expression(text)
    assert isinstance(node, ast.Literal)
    assert node.value == value


# --- syntax errors: message, code and column -----------------------------------------------------

# (bad expression, exact message, code, 1-based column of the caret)
ERRORS = [
    ("a +", "the expression ends too early: expected a value", "syntax-incomplete", 3),
    ("a ??", "the expression ends too early: expected a value", "syntax-incomplete", 4),
    ("f(a, ", "the expression ends too early: expected a value or ')'", "syntax-incomplete", 4),
    ("", "the expression ends too early: expected a value", "syntax-incomplete", 1),
    ("(a", "a '(' is never closed", "syntax-unclosed", 2),
    ("[1, 2", "a '[' is never closed", "syntax-unclosed", 5),
    ("a[1", "a '[' is never closed", "syntax-unclosed", 3),
    ("{a: 1", "a '{' is never closed", "syntax-unclosed", 5),
    ("if a then b", "'if … then …' needs an 'else' branch", "syntax-missing-else", 11),
    ("if a", "'if' needs 'then' and 'else'", "syntax-missing-then", 4),
    ("a then b", "unexpected 'then' without a matching 'if'", "syntax-if", 3),
    ("a else b", "unexpected 'else' without a matching 'if'", "syntax-if", 3),
    ("a = b", "'=' is not an operator", "syntax-operator", 3),
    ("a === b", "'=' is not an operator", "syntax-operator", 5),
    ("a && b", "'&&' is not an operator", "syntax-operator", 3),
    ("a || b", "'||' is not an operator", "syntax-operator", 3),
    ("a & b", "'&' is not an operator", "syntax-operator", 3),
    ("a | b", "'|' is not an operator", "syntax-operator", 3),
    ("!a", "'!' is not an operator", "syntax-operator", 1),
    ("$", "'$' must be followed by a name", "syntax-operator", 1),
    ("$1", "'$' must be followed by a name", "syntax-operator", 1),
    ("a @ b", "'@' is not allowed in an expression", "syntax-operator", 3),
    ("a #b", "'#' is not allowed in an expression", "syntax-operator", 3),
    ("a ^ b", "unexpected character '^'", "syntax-character", 3),
    ('"abc', "this string is never closed", "syntax-unterminated-string", 1),
    ("'abc", "this string is never closed", "syntax-unterminated-string", 1),
    ("`abc", "this quoted name is never closed", "syntax-unterminated-name", 1),
    (r'"a\q"', "unknown escape '\\q' in a string", "syntax-escape", 3),
    ("a == b == c", "comparisons cannot be chained", "syntax-chained-comparison", 8),
    ("a < b < c", "comparisons cannot be chained", "syntax-chained-comparison", 7),
    ("f(,)", "unexpected ',': expected a value or ')'", "syntax-unexpected", 3),
    ("f(a,,b)", "unexpected ',': expected a value or ')'", "syntax-unexpected", 5),
    ("[,]", "unexpected ',': expected a value or ']'", "syntax-unexpected", 2),
    ("x.", "expected a field name after '.'", "syntax-field-name", 2),
    ("a.b.", "expected a field name after '.'", "syntax-field-name", 4),
    ("$x => 1", "'=>' belongs to a function argument like $x => $x.qty", "syntax-lambda", 4),
    ("1 +* 2", "expected a value, found '*'", "syntax-expected-value", 4),
    ("a ?? ?? b", "expected a value, found '??'", "syntax-expected-value", 6),
    ("()", "expected a value, found ')'", "syntax-expected-value", 2),
    ("{a: }", "expected a value, found '}'", "syntax-expected-value", 5),
    ("a )", "unexpected ')': expected the end of the expression", "syntax-unexpected", 3),
    ("f(a))", "unexpected ')': expected the end of the expression", "syntax-unexpected", 5),
    ("true false", "an operator is missing before 'false'", "syntax-missing-operator", 6),
    ("f(a)(b)", "an operator is missing before '('", "syntax-missing-operator", 5),
    ("a b", "an operator is missing before the name 'b'", "syntax-missing-operator", 3),
    ("1e5", "an operator is missing before the name 'e5'", "syntax-missing-operator", 2),
    ("a.1", "expected a field name after '.', found the number 1", "syntax-field-name", 3),
    ("{1: a}", "expected a key (a name or a quoted text), found the number 1", "syntax-object-key", 2),
    ("a : b", "':' only separates a key from its value inside { }", "syntax-colon", 3),
    (r'"\u12"', "'\\u' needs four hex digits, as in \\u4e2d", "syntax-escape", 2),
]


@pytest.mark.parametrize(("text", "message", "code", "col"), ERRORS, ids=[e[0] or "<empty>" for e in ERRORS])
def test_syntax_error_message(text: str, message: str, code: str, col: int) -> None:
    with pytest.raises(ExprSyntaxError) as info:
        parse_expression(text)
    diag = info.value.diagnostic
    assert (diag.message, diag.code, diag.span.line, diag.span.col) == (message, code, 1, col)
    assert diag.is_error


@pytest.mark.parametrize("text", [e[0] for e in ERRORS], ids=[e[0] or "<empty>" for e in ERRORS])
def test_syntax_error_never_names_a_lark_token(text: str) -> None:
    with pytest.raises(ExprSyntaxError) as info:
        parse_expression(text)
    diag = info.value.diagnostic
    for shown in (diag.message, diag.hint or "", str(info.value)):
        for leak in LARK_LEAKS:
            assert leak not in shown


def test_syntax_error_hints() -> None:
    hints = {}
    for text in ("a = b", "a && b", "a || b", "!a", "(a", "if a then b", "a == b == c", "$x => 1", '"abc'):
        with pytest.raises(ExprSyntaxError) as info:
            parse_expression(text)
        hints[text] = info.value.diagnostic.hint
    assert hints == {
        "a = b": "write '==' to compare",
        "a && b": "write 'and'",
        "a || b": "write 'or', or '??' for a default value",
        "!a": "write 'not'",
        "(a": "add ')'",
        "if a then b": "write: if cond then a else b",
        "a == b == c": "combine them with 'and': a < b and b < c",
        "$x => 1": "a lambda's parameter is a $variable and it may only be a function argument",
        '"abc': 'end it with "',
    }


def test_syntax_error_str_is_one_line() -> None:
    with pytest.raises(ExprSyntaxError) as info:
        parse_expression("a && b")
    assert str(info.value) == "<expr>:1:3: error: '&&' is not an operator (write 'and')"


@pytest.mark.parametrize(("text", "width"), [("a && b", 2), ('"abc', 4), ("a == b == c", 2), ("a then b", 4)])
def test_syntax_error_caret_width(text: str, width: int) -> None:
    with pytest.raises(ExprSyntaxError) as info:
        parse_expression(text)
    assert info.value.diagnostic.span.width == width


# Mistakes whose location and code are right but whose wording is still being improved
# (reported to the lead): only the code and column are pinned here, never the message.
UNPINNED_WORDING = [
    ("f(a b)", "syntax-missing-operator", 5),
]


@pytest.mark.parametrize(("text", "code", "col"), UNPINNED_WORDING, ids=[u[0] for u in UNPINNED_WORDING])
def test_syntax_error_location_only(text: str, code: str, col: int) -> None:
    with pytest.raises(ExprSyntaxError) as info:
        parse_expression(text)
    diag = info.value.diagnostic
    assert (diag.code, diag.span.col) == (code, col)
    for leak in LARK_LEAKS:
        assert leak not in diag.message


# Messages reported to the lead as unclear or misplaced: each test states what a person needs and
# is expected to fail until the parser's `_explain` is improved.






def _points_at_the_doubled_operator(text: str) -> None:
    with pytest.raises(ExprSyntaxError) as info:
        parse_expression(text)
    assert info.value.diagnostic.span.col == 6  # today: col 9, at 'b' (the second 'or' became a name)






# Keywords are contextual (so `x.if` is a field), which makes the second `or` of `a or or b` a name.
UNCLEAR = [
    ("a or or b", _points_at_the_doubled_operator),
]


@pytest.mark.xfail(strict=True, reason="reported to the lead: message unclear or misplaced")
@pytest.mark.parametrize(("text", "check"), UNCLEAR, ids=[u[0] for u in UNCLEAR])
def test_reported_unclear_message(text: str, check: Callable[[str], None]) -> None:
    check(text)


# --- spans in file coordinates -------------------------------------------------------------------

FILE = (
    "name: demo\n"
    "output:\n"
    "  nick: buyer.nick ?? \"x\"\n"
    "  total: sum($lines,\n"
    "    $l => $l.qty)\n"
)


def _offset_of(fragment: str) -> int:
    at = FILE.index(fragment)
    assert FILE.count(fragment) == 1
    return at


def test_spans_follow_the_file_offset() -> None:
    src = SourceText("specs/demo.yaml", FILE)
    text = 'buyer.nick ?? "x"'
    node = parse_expression(text, src, _offset_of(text))
    assert isinstance(node, ast.Binary)
    assert (node.span.file, node.span.line, node.span.col, node.span.end_line, node.span.end_col) == (
        "specs/demo.yaml", 3, 9, 3, 26)
    left = node.left
    assert isinstance(left, ast.Field)
    assert (left.span.line, left.span.col, left.span.end_col) == (3, 9, 19)
    assert (left.name_span.line, left.name_span.col, left.name_span.end_col) == (3, 15, 19)
    assert isinstance(left.obj, ast.Name)
    assert (left.obj.span.col, left.obj.span.end_col) == (9, 14)
    assert (node.right.span.line, node.right.span.col, node.right.span.end_col) == (3, 23, 26)


def test_spans_across_lines() -> None:
    src = SourceText("demo.yaml", FILE)
    text = "sum($lines,\n    $l => $l.qty)"
    node = parse_expression(text, src, _offset_of(text))
    assert isinstance(node, ast.Call)
    assert (node.span.line, node.span.col, node.span.end_line, node.span.end_col) == (4, 10, 5, 18)
    assert (node.func_span.line, node.func_span.col, node.func_span.end_col) == (4, 10, 13)
    lam = node.args[1]
    assert isinstance(lam, ast.Lambda)
    assert (lam.span.line, lam.span.col, lam.span.end_line, lam.span.end_col) == (5, 5, 5, 17)
    body = lam.body
    assert isinstance(body, ast.Field)
    assert (body.name_span.line, body.name_span.col) == (5, 14)
    assert lam.span.width == 12
    assert node.span.width == 1  # a multi-line span underlines one column


def test_every_node_span_is_inside_the_expression() -> None:
    src = SourceText("demo.yaml", FILE)
    text = "sum($lines,\n    $l => $l.qty)"
    start = _offset_of(text)
    node = parse_expression(text, src, start)
    first = src.position(start)
    last = src.position(start + len(text))
    for sub in ast.walk(node):
        assert first <= (sub.span.line, sub.span.col) <= last
        assert (sub.span.line, sub.span.col) <= (sub.span.end_line, sub.span.end_col) <= last


def test_syntax_error_in_file_coordinates() -> None:
    text = "a +\n    && b"
    full = "x: 1\nlet:\n  v: " + text + "\n"
    src = SourceText("f.yaml", full)
    with pytest.raises(ExprSyntaxError) as info:
        parse_expression(text, src, full.index(text))
    diag = info.value.diagnostic
    assert (diag.span.file, diag.span.line, diag.span.col, diag.span.end_col) == ("f.yaml", 4, 5, 7)
    assert str(info.value).startswith("f.yaml:4:5: error: '&&' is not an operator")


def test_end_of_expression_error_in_file_coordinates() -> None:
    text = "concat(a,\n  b"
    full = "k:\n  v: " + text + "\nnext: 1\n"
    src = SourceText("f.yaml", full)
    with pytest.raises(ExprSyntaxError) as info:
        parse_expression(text, src, full.index(text))
    diag = info.value.diagnostic
    assert diag.message == "a '(' is never closed"
    assert (diag.span.line, diag.span.col) == (3, 3)


def test_escape_error_in_file_coordinates() -> None:
    text = r'"ab\qc"'
    full = "a: 1\nb: " + text + "\n"
    src = SourceText("f.yaml", full)
    with pytest.raises(ExprSyntaxError) as info:
        parse_expression(text, src, full.index(text))
    diag = info.value.diagnostic
    assert (diag.span.line, diag.span.col, diag.span.end_col) == (2, 7, 9)


def test_object_key_spans() -> None:
    node = parse_expression('{a: 1, "b": 2}')
    assert isinstance(node, ast.ObjectLit)
    assert [(k, s.col, s.end_col) for k, s, _ in node.entries] == [("a", 2, 3), ("b", 8, 11)]


def test_default_source_name() -> None:
    node = parse_expression("x")
    assert node.span.file == "<expr>"


# --- properties ----------------------------------------------------------------------------------

def quote(s: str) -> str:
    """A double-quoted expression literal whose value is `s`."""
    out = []
    for ch in s:
        if ch == "\\":
            out.append("\\\\")
        elif ch == '"':
            out.append('\\"')
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif unicodedata.category(ch) == "Cc":
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


@PROPERTY
@given(st.text(alphabet=st.characters(codec="utf-8")))  # every character but surrogates
def test_any_string_literal_round_trips(s: str) -> None:
    node = parse_expression(quote(s))
    assert isinstance(node, ast.Literal)
    assert node.value == s


@PROPERTY
@given(st.text(alphabet=st.sampled_from('\\"\n\t\r\x00\x1f\x7f\x85\u2028\'ab 中`$'), max_size=30))
def test_string_literal_round_trips_on_awkward_characters(s: str) -> None:
    node = parse_expression(quote(s))
    assert isinstance(node, ast.Literal)
    assert node.value == s


def _plain_decimals() -> st.SearchStrategy[str]:
    def build(places: int) -> st.SearchStrategy[str]:
        biggest = Decimal(10) ** (20 - places) - 1
        return st.decimals(min_value=0, max_value=biggest, places=places, allow_nan=False,
                           allow_infinity=False).map(lambda d: format(d.copy_abs(), "f"))
    return st.integers(min_value=0, max_value=19).flatmap(build)


@PROPERTY
@given(_plain_decimals())
def test_any_plain_decimal_parses_exactly(text: str) -> None:
    assert len(text.replace(".", "")) <= 20
    node = parse_expression(text)
    assert isinstance(node, ast.Literal)
    if "." in text:
        assert type(node.value) is Decimal
        assert str(node.value) == str(Decimal(text))  # same digits, same exponent
    else:
        assert type(node.value) is int
    assert node.value == Decimal(text)


@PROPERTY
@given(st.from_regex(r"[0-9]{1,10}\.[0-9]{1,10}", fullmatch=True))
def test_decimal_with_leading_and_trailing_zeros(text: str) -> None:
    node = parse_expression(text)
    assert isinstance(node, ast.Literal)
    assert type(node.value) is Decimal
    assert node.value == Decimal(text)
    assert node.value.as_tuple().exponent == -len(text.split(".")[1])


def _check_only_syntax_errors(text: str) -> None:
    try:
        node = parse_expression(text)
    except ExprSyntaxError as exc:
        diag = exc.diagnostic
        assert diag.span.file == "<expr>"
        assert diag.message
        assert diag.code.startswith("syntax")
        for leak in LARK_LEAKS:
            assert leak not in diag.message
            assert leak not in (diag.hint or "")
        src = SourceText("<expr>", text)
        assert (1, 1) <= (diag.span.line, diag.span.col) <= src.position(len(text))
    else:
        for sub in ast.walk(node):
            assert sub.span.file == "<expr>"


@PROPERTY
@given(st.text())
def test_parser_never_crashes_on_arbitrary_text(text: str) -> None:
    _check_only_syntax_errors(text)


_PIECES = ["a", "b.c", "$x", "$", "1", "2.5", '"s"', "'t'", "`q`", "(", ")", "[", "]", "{", "}", ",", ":",
           ".", "=>", "+", "-", "*", "/", "%", "??", "==", "<", ">=", "!=", "=", "!", "&&", "||", "if",
           "then", "else", "and", "or", "not", "true", "false", "f(", "\n", "\\", '"', "#", "@", "?"]


@PROPERTY
@given(st.lists(st.sampled_from(_PIECES), max_size=12).map(" ".join))
def test_parser_never_crashes_on_token_soup(text: str) -> None:
    _check_only_syntax_errors(text)


@PROPERTY
@given(st.lists(st.sampled_from(_PIECES), max_size=12).map("".join))
def test_parser_never_crashes_on_glued_tokens(text: str) -> None:
    _check_only_syntax_errors(text)


# Once crashes: each must now be an ExprSyntaxError.
def test_huge_integer_literal_does_not_crash() -> None:
    _check_only_syntax_errors("1" * 5000)


@pytest.mark.parametrize("text", ["(" * 1500 + "a" + ")" * 1500, "a" + ".b" * 1500, "-" * 1500 + "1"])
def test_deep_nesting_does_not_crash(text: str) -> None:
    _check_only_syntax_errors(text)
