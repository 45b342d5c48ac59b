"""Expression parsing: text → our AST, with syntax errors worded for people.

Lark (LALR, contextual lexer) builds a parse tree; `_Builder` turns it into `dockyard.dsl.ast`
nodes with spans in the *spec file's* coordinates (the caller passes the offset at which the
expression text starts in the file). Lark's token names never reach a user: `_explain` turns
every `UnexpectedInput` into a sentence and, where a common mistake is recognised, a hint.
"""

from __future__ import annotations

import functools
import re
from decimal import Decimal
from importlib import resources

from lark import Lark, Token, Tree
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from dockyard.dsl import ast
from dockyard.dsl.diagnostics import Diagnostic
from dockyard.dsl.spans import SourceText, Span
from dockyard.runtime.errors import DockyardError

__all__ = ["MAX_DEPTH", "ExprSyntaxError", "parse_expression"]

# Deeper expressions are refused: the AST builder, the checker and the code generator recurse, and
# CPython refuses generated expressions nested more than 200 parentheses deep. Real mappings stay
# far below this.
MAX_DEPTH = 64


class ExprSyntaxError(DockyardError):
    """An expression that does not parse. Carries a ready `Diagnostic`."""

    def __init__(self, diagnostic: Diagnostic) -> None:
        self.diagnostic = diagnostic
        super().__init__(diagnostic)

    def __str__(self) -> str:
        return self.diagnostic.one_line()


@functools.cache
def _lark() -> Lark:
    grammar = resources.files("dockyard.dsl").joinpath("expr.lark").read_text(encoding="utf-8")
    return Lark(grammar, parser="lalr", lexer="contextual", propagate_positions=True,
                maybe_placeholders=False)


def parse_expression(text: str, source: SourceText | None = None, offset: int = 0) -> ast.Expr:
    """Parse one expression. `source`/`offset` place it in a file for spans and errors."""
    src = source if source is not None else SourceText("<expr>", text)
    try:
        tree = _lark().parse(text)
    except UnexpectedInput as exc:
        raise ExprSyntaxError(_explain(exc, text, src, offset)) from None
    too_deep = _too_deep(tree)
    if too_deep is not None:
        span = _Builder(src, offset).span_of(too_deep)
        raise ExprSyntaxError(Diagnostic(span, f"this expression is nested too deeply (more than {MAX_DEPTH} levels)",
                                         "syntax-too-deep", hint="split it into `let` values"))
    return _Builder(src, offset).build(tree)


def _too_deep(tree: Tree[Token]) -> Tree[Token] | None:
    """The first subtree past MAX_DEPTH, found without recursion (the tree may be very deep)."""
    stack: list[tuple[Tree[Token], int]] = [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            return node
        stack.extend((kid, depth + 1) for kid in node.children if isinstance(kid, Tree))
    return None


# --- building the AST ------------------------------------------------------------------------

_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "'": "'", "0": "\0", "/": "/"}


class _Builder:
    def __init__(self, source: SourceText, offset: int) -> None:
        self.source = source
        self.offset = offset

    def span_of(self, item: Tree[Token] | Token) -> Span:
        if isinstance(item, Token):
            start, end = item.start_pos or 0, item.end_pos or 0
        else:
            start, end = item.meta.start_pos, item.meta.end_pos
        return self.source.span(self.offset + start, self.offset + end)

    def build(self, node: Tree[Token] | Token) -> ast.Expr:
        if isinstance(node, Token):  # pragma: no cover - every token is wrapped in a rule
            raise AssertionError(f"bare token {node.type}")
        span = self.span_of(node)
        kids = node.children
        match node.data:
            case "name":
                return ast.Name(_name_text(kids[0]), span)
            case "var":
                return ast.Var(str(kids[0])[1:], span)
            case "string":
                tok = kids[0]
                assert isinstance(tok, Token)
                return ast.Literal(self.unquote(tok), span)
            case "decimal":
                return ast.Literal(Decimal(str(kids[0])), span)
            case "integer":
                digits = str(kids[0])
                if len(digits) > 40:  # far past any quantity or amount; int() refuses > 4300 digits
                    raise ExprSyntaxError(Diagnostic(span, "this number has too many digits", "syntax-number"))
                return ast.Literal(int(digits), span)
            case "true":
                return ast.Literal(True, span)
            case "false":
                return ast.Literal(False, span)
            case "omit":
                return ast.Omit(span)
            case "paren":
                return self.build(kids[1])
            case "field":
                name_node = kids[2]
                assert isinstance(name_node, Tree)
                tok = name_node.children[0]
                return ast.Field(self.build(kids[0]), _name_text(tok), span, self.span_of(tok))
            case "index":
                return ast.Index(self.build(kids[0]), self.build(kids[2]), span)
            case "binary":
                op = str(kids[1])
                return ast.Binary(op, self.build(kids[0]), self.build(kids[2]), span)
            case "unary":
                return ast.Unary(str(kids[0]), self.build(kids[1]), span)
            case "if_expr":
                return ast.If(self.build(kids[1]), self.build(kids[3]), self.build(kids[5]), span)
            case "call":
                func = kids[0]
                args: list[ast.Expr] = []
                for kid in kids[2:-1]:
                    assert isinstance(kid, Tree)
                    args.extend(self.build(a) for a in kid.children if isinstance(a, Tree))
                return ast.Call(str(func), tuple(args), span, self.span_of(func))
            case "lambda":
                return ast.Lambda(str(kids[0])[1:], self.build(kids[2]), span)
            case "list":
                return ast.ListLit(tuple(self.build(k) for k in kids if isinstance(k, Tree)), span)
            case "object":
                entries = []
                for kid in kids:
                    if isinstance(kid, Tree):
                        key_tok = kid.children[0]
                        assert isinstance(key_tok, Token)
                        key = self.unquote(key_tok) if key_tok.type == "STRING" else _name_text(key_tok)
                        entries.append((key, self.span_of(key_tok), self.build(kid.children[2])))
                return ast.ObjectLit(tuple(entries), span)
        raise AssertionError(f"unhandled rule {node.data}")  # pragma: no cover

    def unquote(self, tok: Token) -> str:
        """Decode a string literal by hand: data never goes through Python's own parser."""
        body = str(tok)[1:-1]
        out: list[str] = []
        i = 0
        while i < len(body):
            ch = body[i]
            if ch != "\\":
                out.append(ch)
                i += 1
                continue
            nxt = body[i + 1]  # the lexer guarantees a character after a backslash
            if nxt in _ESCAPES:
                out.append(_ESCAPES[nxt])
                i += 2
            elif nxt == "u" and re.fullmatch(r"[0-9A-Fa-f]{4}", body[i + 2 : i + 6]):
                out.append(chr(int(body[i + 2 : i + 6], 16)))
                i += 6
            elif nxt == "u":
                start = (tok.start_pos or 0) + 1 + i
                raise ExprSyntaxError(Diagnostic(
                    self.source.span(self.offset + start, self.offset + start + 2),
                    "'\\u' needs four hex digits, as in \\u4e2d", "syntax-escape"))
            else:
                start = (tok.start_pos or 0) + 1 + i
                raise ExprSyntaxError(Diagnostic(
                    self.source.span(self.offset + start, self.offset + start + 2),
                    f"unknown escape '\\{nxt}' in a string",
                    "syntax-escape",
                    hint='use \\" \\\' \\\\ \\n \\t \\r or \\uXXXX',
                ))
        return "".join(out)


def _name_text(tok: Tree[Token] | Token) -> str:
    text = str(tok)
    return text[1:-1] if text.startswith("`") else text


# --- explaining syntax errors ------------------------------------------------------------------

# How each terminal is named in a message. Lark's own names (RPAR, $END) never reach a user.
_TOKEN_WORDS = {
    "IF": "'if'", "THEN": "'then'", "ELSE": "'else'", "AND": "'and'", "OR": "'or'", "NOT": "'not'",
    "TRUE": "'true'", "FALSE": "'false'", "OMIT": "'omit'", "COMP_OP": "a comparison", "COALESCE": "'??'",
    "PLUS": "'+'", "MINUS": "'-'", "MUL_OP": "an operator", "DOT": "'.'", "COMMA": "','",
    "COLON": "':'", "ARROW": "'=>'", "LPAR": "'('", "RPAR": "')'", "LSQB": "'['", "RSQB": "']'",
    "LBRACE": "'{'", "RBRACE": "'}'", "NAME": "a name", "QUOTED_NAME": "a name", "VAR": "a variable",
    "STRING": "a string", "DECIMAL": "a number", "INT": "a number", "$END": "the end of the expression",
}
# Tokens that may follow a complete value: if one is expected, a value has just ended.
_OPERATORS = {"AND", "OR", "COMP_OP", "COALESCE", "PLUS", "MINUS", "MUL_OP", "DOT", "LSQB", "THEN", "ELSE"}
# Tokens that can start a value: if any is expected, the message says "a value".
_VALUE_START = {"NAME", "QUOTED_NAME", "VAR", "STRING", "DECIMAL", "INT", "TRUE", "FALSE", "OMIT", "LPAR",
                "LSQB", "LBRACE", "MINUS", "NOT", "IF"}
# Characters people type from other languages, with what to write instead.
_FOREIGN_OPERATORS = {
    "&&": ("'&&' is not an operator", "write 'and'"),
    "||": ("'||' is not an operator", "write 'or', or '??' for a default value"),
    "!": ("'!' is not an operator", "write 'not'"),
    "=": ("'=' is not an operator", "write '==' to compare"),
    "|": ("'|' is not an operator", "write 'or', or '??' for a default value"),
    "&": ("'&' is not an operator", "write 'and'"),
    "$": ("'$' must be followed by a name", "as in $total"),
    "@": ("'@' is not allowed in an expression", "attributes are written as '@name' keys in the output tree"),
    "#": ("'#' is not allowed in an expression", "YAML comments need a space before '#'"),
}


def _describe_expected(expected: set[str]) -> str:
    words: list[str] = []
    if expected & _VALUE_START:
        words.append("a value")
    if len(expected & _OPERATORS) > 2:
        words.append("an operator")
        expected = expected - _OPERATORS
    for name in sorted(expected - _VALUE_START):
        word = _TOKEN_WORDS.get(name)
        if word and word not in words and name != "$END":
            words.append(word)
    if "$END" in expected and len(words) < 3:
        words.append("the end of the expression")
    if not words:
        return "something else"
    words = words[:3]  # a long list of alternatives helps nobody
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


def _token_text(tok: Token) -> str:
    if tok.type == "$END":
        return "the end of the expression"
    if tok.type in ("NAME", "QUOTED_NAME"):
        return f"the name '{str(tok).strip('`')}'"
    kind = {"VAR": "the variable", "STRING": "the string", "DECIMAL": "the number", "INT": "the number"}.get(tok.type)
    return f"{kind} {tok}" if kind else f"'{tok}'"


def _explain(exc: UnexpectedInput, text: str, src: SourceText, offset: int) -> Diagnostic:
    pos = getattr(exc, "pos_in_stream", None) or 0
    if isinstance(exc, UnexpectedCharacters):
        two, one = text[pos : pos + 2], text[pos : pos + 1]
        span = src.span(offset + pos, offset + pos + max(1, len(two.strip()) if two in _FOREIGN_OPERATORS else 1))
        if one in "\"'":
            return Diagnostic(src.span(offset + pos, offset + len(text.rstrip())), "this string is never closed",
                              "syntax-unterminated-string", hint=f"end it with {one}")
        if one == "`":
            return Diagnostic(span, "this quoted name is never closed", "syntax-unterminated-name",
                              hint="end it with `")
        for op in (two, one):
            if op in _FOREIGN_OPERATORS:
                msg, hint = _FOREIGN_OPERATORS[op]
                return Diagnostic(src.span(offset + pos, offset + pos + len(op)), msg, "syntax-operator", hint=hint)
        return Diagnostic(span, f"unexpected character {one!r}", "syntax-character")

    if isinstance(exc, UnexpectedToken | UnexpectedEOF):
        tok: Token = exc.token if isinstance(exc, UnexpectedToken) else Token("$END", "")
        expected = set(exc.expected)
        if tok.type == "$END":
            end = len(text.rstrip())
            span = src.span(offset + max(0, end - 1), offset + end)
            if expected <= {"NAME", "QUOTED_NAME"}:
                return Diagnostic(span, "expected a field name after '.'", "syntax-field-name")
            if "ELSE" in expected:
                return Diagnostic(span, "'if … then …' needs an 'else' branch", "syntax-missing-else",
                                  hint="write: if cond then a else b")
            if "THEN" in expected:
                return Diagnostic(span, "'if' needs 'then' and 'else'", "syntax-missing-then",
                                  hint="write: if cond then a else b")
            if expected <= {"RPAR", "COMMA"} or expected == {"RPAR"}:
                return Diagnostic(span, "a '(' is never closed", "syntax-unclosed", hint="add ')'")
            if "RSQB" in expected and not (expected & _VALUE_START):
                return Diagnostic(span, "a '[' is never closed", "syntax-unclosed", hint="add ']'")
            if "RBRACE" in expected and not (expected & _VALUE_START):
                return Diagnostic(span, "a '{' is never closed", "syntax-unclosed", hint="add '}'")
            return Diagnostic(span, f"the expression ends too early: expected {_describe_expected(expected)}",
                              "syntax-incomplete")
        start = tok.start_pos or 0
        span = src.span(offset + start, offset + (tok.end_pos or start + 1))
        if tok.type == "COMP_OP" and "COMP_OP" not in expected:
            return Diagnostic(span, "comparisons cannot be chained", "syntax-chained-comparison",
                              hint="combine them with 'and': a < b and b < c")
        if tok.type == "COLON":
            return Diagnostic(span, "':' only separates a key from its value inside { }", "syntax-colon",
                              hint="write an object as {key: value}; a YAML value with ': ' needs a block scalar")
        if tok.type == "ARROW":
            return Diagnostic(span, "'=>' belongs to a function argument like $x => $x.qty", "syntax-lambda",
                              hint="a lambda's parameter is a $variable and it may only be a function argument")
        if tok.type in ("THEN", "ELSE") and "THEN" not in expected and "ELSE" not in expected:
            return Diagnostic(span, f"unexpected '{tok}' without a matching 'if'", "syntax-if")
        if expected and expected <= {"NAME", "QUOTED_NAME"}:
            return Diagnostic(span, f"expected a field name after '.', found {_token_text(tok)}", "syntax-field-name")
        if expected and expected <= {"NAME", "QUOTED_NAME", "STRING", "RBRACE"}:
            return Diagnostic(span, f"expected a key (a name or a quoted text), found {_token_text(tok)}",
                              "syntax-object-key")
        if expected & _VALUE_START and not (expected - _VALUE_START - {"$END"}):
            return Diagnostic(span, f"expected a value, found {_token_text(tok)}", "syntax-expected-value")
        value_like = ("NAME", "QUOTED_NAME", "VAR", "STRING", "DECIMAL", "INT", "LPAR", "LBRACE", "TRUE", "FALSE",
                      "OMIT")
        if tok.type in value_like and expected & _OPERATORS:
            return Diagnostic(span, f"an operator is missing before {_token_text(tok)}",
                              "syntax-missing-operator", hint="is an operator or a ',' missing?")
        return Diagnostic(span, f"unexpected {_token_text(tok)}: expected {_describe_expected(expected)}",
                          "syntax-unexpected")
    span = src.span(offset + pos, offset + pos + 1)  # pragma: no cover - every UnexpectedInput is handled above
    return Diagnostic(span, "this expression does not parse", "syntax")  # pragma: no cover
