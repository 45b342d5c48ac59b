"""The generated standalone parser (`dsl/_expr_parser.py`) is fresh: built from today's grammar,
and parsing exactly as Lark itself does with the grammar file, on good and bad expressions."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lark import Lark
from lark.exceptions import UnexpectedInput

from dockyard.dsl import _expr_parser
from dockyard.dsl.parser import _lark
from dockyard.dsl.parser_build import _OPTIONS, grammar_sha256, grammar_text

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def reference() -> Lark:
    return Lark(grammar_text(), **_OPTIONS)


def test_built_from_the_current_grammar() -> None:
    assert grammar_sha256() == _expr_parser.GRAMMAR_SHA256, (
        "expr.lark changed: run `python -m dockyard.dsl.parser_build` and commit dsl/_expr_parser.py")


def _shape(node: object) -> object:
    """A parse tree as plain data: rule names, token types, texts and positions (Lark names some
    rules with a Token where the standalone module uses a str; both mean the same)."""
    if hasattr(node, "children"):
        meta = node.meta  # type: ignore[attr-defined]
        where = (meta.line, meta.column, meta.end_line, meta.end_column) if not meta.empty else None
        return (str(node.data), where, [_shape(kid) for kid in node.children])  # type: ignore[attr-defined]
    return (node.type, str(node), node.start_pos, node.end_pos)  # type: ignore[attr-defined]


def _outcome(parser: object, text: str) -> str:
    try:
        return repr(_shape(parser.parse(text)))  # type: ignore[attr-defined]
    except (UnexpectedInput, _expr_parser.UnexpectedInput) as exc:  # each module has its own classes
        expected = sorted(getattr(exc, "expected", None) or ())
        return f"error {type(exc).__name__} at {getattr(exc, 'pos_in_stream', None)} expecting {expected}"


def _spec_expressions() -> list[str]:
    """Expression-looking values of every spec in mappings/: enough variety of real syntax."""
    found: set[str] = set()
    for path in sorted((REPO / "mappings").rglob("*.yaml")):
        for line in path.read_text(encoding="utf-8").splitlines():
            m = re.match(r"\s*[\w$@#-]+:\s+(.+\(.*\).*)$", line)
            if m and not m.group(1).startswith(("{", "[", "'", '"')):
                found.add(m.group(1).split(" #")[0].strip())
    return sorted(found)


def test_parses_real_expressions_like_lark(reference: Lark) -> None:
    texts = _spec_expressions()
    assert len(texts) > 20
    for text in texts:
        assert _outcome(_lark(), text) == _outcome(reference, text), text


_PIECES = st.sampled_from(["a", "b.c", "$x", "f(", ")", "(", ",", "+", "-", "*", "??", "and", "or", "not",
                           "if", "then", "else", "==", "<", "[", "]", "{", "}", ":", "=>", "1", "2.50", "'s'",
                           '"t"', "`q`", "true", "false", ".", " ", "&&", "!"])


@settings(max_examples=300, deadline=None)
@given(st.lists(_PIECES, max_size=12))
def test_parses_anything_like_lark(reference: Lark, pieces: list[str]) -> None:
    text = " ".join(pieces)
    assert _outcome(_lark(), text) == _outcome(reference, text)
