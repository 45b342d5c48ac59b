"""YAML → our own node tree with exact spans; the only module that touches PyYAML's marks.

PyYAML marks are 0-based and a quoted scalar's mark sits on its opening quote; a block scalar
(`|`, `>`) starts on the line after its indicator. `expression_text` returns, for a scalar, the
exact slice of the file that holds its expression and the offset where that slice starts, so
that the expression parser reports positions in file coordinates.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

from dockyard.dsl.diagnostics import Diagnostic
from dockyard.dsl.spans import SourceText, Span

__all__ = ["YMap", "YNode", "YScalar", "YSeq", "YamlProblem", "load_yaml", "to_plain"]


@dataclass(frozen=True, slots=True)
class YScalar:
    value: str  # the scalar's text as YAML reads it (escapes decoded, blocks folded)
    style: str | None  # None = plain, '"' or "'" = quoted, '|' or '>' = block
    tag: str  # the resolved YAML tag (tag:yaml.org,2002:int, …)
    span: Span
    start: int  # character offsets of the node in the file
    end: int

    @property
    def quoted(self) -> bool:
        return self.style in ('"', "'")

    @property
    def is_null(self) -> bool:
        return self.tag == "tag:yaml.org,2002:null"

    def expression_text(self, source: SourceText) -> tuple[str, int]:
        """(text, offset) of this scalar's expression as written in the file."""
        raw = source.text[self.start : self.end]
        if self.style in ("|", ">"):
            newline = raw.find("\n")
            if newline < 0:
                return "", self.end
            return raw[newline + 1 :], self.start + newline + 1
        return raw, self.start


@dataclass(frozen=True, slots=True)
class YMap:
    items: tuple[tuple[YScalar, YNode], ...]
    span: Span

    def get(self, key: str) -> YNode | None:
        for k, v in self.items:
            if k.value == key:
                return v
        return None

    def key_node(self, key: str) -> YScalar | None:
        for k, _ in self.items:
            if k.value == key:
                return k
        return None


@dataclass(frozen=True, slots=True)
class YSeq:
    items: tuple[YNode, ...]
    span: Span


YNode = YScalar | YMap | YSeq


class YamlProblem(Exception):
    def __init__(self, diagnostics: list[Diagnostic]) -> None:
        self.diagnostics = diagnostics
        super().__init__(diagnostics)


def load_yaml(source: SourceText) -> YNode:
    """Compose (not construct) the document, so every node keeps its position."""
    try:
        node = yaml.compose(source.text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        offset = mark.index if mark is not None else 0
        problem = (exc.problem or "invalid YAML").strip()
        message, hint = _explain_yaml(problem, source.text[offset : offset + 1])
        raise YamlProblem([Diagnostic(source.span(offset, offset + 1), message, "yaml-syntax", hint=hint)]) from None
    except yaml.YAMLError as exc:
        raise YamlProblem([Diagnostic(source.span(0, 1), f"YAML: {exc}", "yaml-syntax")]) from None
    if node is None:
        raise YamlProblem([Diagnostic(source.span(0, 0), "the file is empty", "spec-empty")])
    problems: list[Diagnostic] = []
    result = _convert(node, source, problems)
    if problems:
        raise YamlProblem(problems)
    return result


_QUOTED_EXPRESSION = ("an expression that starts with a quote, '{' or '[' must be a block scalar: "
                      "write `key: >-` and the expression on the next line, indented")
# PyYAML's own token names (<block end>, <scalar>) mean nothing to a spec author.
_YAML_WORDS = {"<block end>": "the end of the block", "<scalar>": "a value",
               "<block mapping start>": "a nested mapping",
               "<block sequence start>": "a list", "<flow mapping end>": "'}'", "<flow sequence end>": "']'",
               "<document start>": "a new document", "<stream end>": "the end of the file"}


def _explain_yaml(problem: str, char: str) -> tuple[str, str | None]:
    if problem.startswith("expected <block end>, but found '<scalar>'"):
        return "YAML: unexpected text after a value", _QUOTED_EXPRESSION
    if problem.startswith("expected <block end>, but found '<block mapping start>'"):
        return "YAML: this line is indented less than the lines around it", "line it up with its neighbours"
    if problem == "mapping values are not allowed here":
        return ("YAML: ': ' is not allowed here",
                "check the indentation; an expression containing ': ' must be a block scalar (`key: >-`)")
    if "cannot start any token" in problem:
        return f"YAML: a value cannot start with {char!r}", _QUOTED_EXPRESSION
    for token, words in _YAML_WORDS.items():
        problem = problem.replace(f"'{token}'", words).replace(token, words)
    return f"YAML: {problem}", None


def _convert(node: yaml.Node, source: SourceText, problems: list[Diagnostic]) -> YNode:
    span = source.span(node.start_mark.index, node.end_mark.index)
    if isinstance(node, yaml.ScalarNode):
        return YScalar(str(node.value), node.style, node.tag, span, node.start_mark.index, node.end_mark.index)
    if isinstance(node, yaml.SequenceNode):
        return YSeq(tuple(_convert(item, source, problems) for item in node.value), span)
    assert isinstance(node, yaml.MappingNode)
    items: list[tuple[YScalar, YNode]] = []
    seen: dict[str, YScalar] = {}
    for key_node, value_node in node.value:
        key = _convert(key_node, source, problems)
        if not isinstance(key, YScalar):
            problems.append(Diagnostic(key.span, "a key must be a plain name, not a list or a mapping", "yaml-key"))
            continue
        if key.value == "<<" and key.style is None:
            problems.append(Diagnostic(key.span, "YAML merge keys ('<<') are not supported in specs", "yaml-merge",
                                       hint="write the keys out, or use a `let` value"))
            continue
        if key.value in seen:
            first = seen[key.value].span
            problems.append(Diagnostic(key.span, f"duplicate key {key.value!r} (first at line {first.line})",
                                       "yaml-duplicate-key"))
            continue
        seen[key.value] = key
        items.append((key, _convert(value_node, source, problems)))
    return YMap(tuple(items), span)


_BOOL = {"true": True, "false": False, "yes": True, "no": False, "on": True, "off": False}


def to_plain(node: YNode) -> Any:
    """Plain Python data for JSON-Schema validation (types follow the YAML core schema)."""
    if isinstance(node, YMap):
        return {k.value: to_plain(v) for k, v in node.items}
    if isinstance(node, YSeq):
        return [to_plain(item) for item in node.items]
    if node.style is not None:
        return node.value
    if node.tag.endswith(":int"):
        try:
            return int(node.value.replace("_", ""), 0)
        except ValueError:
            return node.value
    if node.tag.endswith(":float"):
        try:
            return float(node.value.replace("_", ""))
        except ValueError:
            return node.value
    if node.tag.endswith(":bool"):
        return _BOOL.get(node.value.lower(), node.value)
    if node.tag.endswith(":null"):
        return None
    return node.value
