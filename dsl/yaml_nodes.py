"""YAML → our own node tree with exact spans; the only module that touches PyYAML's marks.

PyYAML marks are 0-based and a quoted scalar's mark sits on its opening quote; a block scalar
(`|`, `>`) starts on the line after its indicator. `expression_text` returns, for a scalar, the
exact slice of the file that holds its expression and the offset where that slice starts, so
that the expression parser reports positions in file coordinates.

A YAML file is untrusted input (a spec from a change under review, a config): composing it is
bounded before anything walks the node graph. Aliases (`*name`) may be used at most
`MAX_ALIASES` times, the document with every alias expanded may have at most `MAX_NODES` nodes
(a few aliases of aliases make billions: the "billion laughs"), an alias may not refer to a node
that contains it, and nesting is at most `MAX_DEPTH` levels (PyYAML composes recursively). Each
bound is a diagnostic at the place it is crossed, never a RecursionError or a machine out of
memory. `safe_load` is `yaml.safe_load` with the same bounds, for the YAML files that are read
as plain data (mapping tests, context files).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

from dockyard.dsl.diagnostics import Diagnostic
from dockyard.dsl.spans import SourceText, Span

__all__ = ["MAX_ALIASES", "MAX_DEPTH", "MAX_NODES", "YMap", "YNode", "YScalar", "YSeq", "YamlProblem", "compose",
           "load_yaml", "safe_load", "to_plain"]

MAX_ALIASES = 100  # uses of `*name` in one document
MAX_NODES = 100_000  # nodes of the document with every alias expanded
MAX_DEPTH = 100  # nesting of mappings and lists


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


class _Bounded(yaml.YAMLError):
    """A bound of the module's docstring was crossed at `index` of the text."""

    def __init__(self, message: str, index: int, code: str, hint: str) -> None:
        super().__init__(message)
        self.message = message
        self.index = index
        self.code = code
        self.hint = hint


class _BoundedComposer(yaml.SafeLoader):
    """SafeLoader whose composer counts aliases and nesting as it goes."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._aliases = 0
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                raise _Bounded(f"YAML: more than {MAX_ALIASES} aliases (*name) in one file",
                               self._at(), "yaml-aliases",
                               "write the values out; a spec or config needs few aliases, if any")
            return self._compose(parent, index)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _Bounded(f"YAML: nested more than {MAX_DEPTH} levels deep", self._at(),
                               "yaml-depth", "a spec or config is never this deep; is a bracket or an indent wrong?")
            return self._compose(parent, index)
        finally:
            self._depth -= 1

    def _compose(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        node = super().compose_node(parent, index)
        assert node is not None  # PyYAML's stubs allow None; compose_node never returns it
        return node

    def _at(self) -> int:
        index: int = self.peek_event().start_mark.index  # type: ignore[no-untyped-call]
        return index


def _check_expansion(root: yaml.Node) -> None:
    """Raise _Bounded when an alias refers to a node containing it, or when the document with
    every alias expanded has more than MAX_NODES nodes. Iterative, and each node is counted once
    (its expanded size is remembered), so a bomb is measured without being expanded."""
    sizes: dict[int, int] = {}
    open_: set[int] = set()  # the nodes on the path from the root to the current one
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        children: list[yaml.Node] = []
        if isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            children = [part for pair in node.value for part in pair]
        if done:
            open_.discard(id(node))
            size = 1 + sum(sizes[id(c)] for c in children)
            if size > MAX_NODES:
                raise _Bounded(f"YAML: with its aliases expanded, this value has more than {MAX_NODES:,} parts",
                               node.start_mark.index, "yaml-aliases",
                               "aliases of aliases multiply: write the values out")
            sizes[id(node)] = size
            continue
        if id(node) in sizes:
            continue
        if id(node) in open_:
            raise _Bounded("YAML: an alias refers to a value that contains it", node.start_mark.index,
                           "yaml-aliases", "a spec or config cannot be infinitely deep")
        open_.add(id(node))
        stack.append((node, True))
        stack.extend((c, False) for c in children if id(c) not in sizes)


def compose(text: str) -> yaml.Node | None:
    """`yaml.compose` with the bounds of the module's docstring (raises YAMLError subclasses)."""
    loader = _BoundedComposer(text)
    try:
        node: yaml.Node | None = loader.get_single_node()
    finally:
        loader.dispose()
    if node is not None:
        _check_expansion(node)
    return node


def safe_load(text: str) -> Any:
    """`yaml.safe_load` with the same bounds; a crossed bound is a `yaml.YAMLError` whose message
    says which."""
    loader = _BoundedComposer(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_expansion(node)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def load_yaml(source: SourceText) -> YNode:
    """Compose (not construct) the document, so every node keeps its position."""
    try:
        node = compose(source.text)
    except _Bounded as exc:
        at = min(exc.index, max(0, len(source.text) - 1))
        raise YamlProblem([Diagnostic(source.span(at, at + 1), exc.message, exc.code, hint=exc.hint)]) from None
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
