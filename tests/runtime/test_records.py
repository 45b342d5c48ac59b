"""The runtime's `NamedTuple` (runtime/records.py) against `typing.NamedTuple`: the same class body
must give a class that behaves the same, since the runtime uses it wherever type checkers see
typing's."""

from __future__ import annotations

import keyword
import pickle
import types
import typing
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dockyard.runtime import records
from dockyard.runtime.mapping import FieldExplanation
from dockyard.runtime.target import Target, XmlOptions

NAMES = st.from_regex(r"[a-z][a-z0-9]{0,6}", fullmatch=True).filter(
    lambda n: n not in {"count", "index"} and not n.startswith("_") and not keyword.iskeyword(n))
VALUES = st.one_of(st.none(), st.integers(), st.text(max_size=5), st.booleans(),
                   st.tuples(st.integers()))


def _build(base: Any, name: str, fields: list[str], defaults: dict[str, Any], doc: str | None) -> type:
    def body(ns: dict[str, Any]) -> None:
        ns["__annotations__"] = {f: "int" for f in fields}
        ns.update(defaults)
        ns["__doc__"] = doc
        ns["__module__"] = __name__
        ns["__qualname__"] = name
        ns["first"] = property(lambda self: self[0] if len(self) else None)
        ns["twice"] = lambda self: tuple(self) * 2

    cls: type = types.new_class(name, (base,), {}, body)
    return cls


@st.composite
def class_specs(draw: st.DrawFn) -> tuple[list[str], dict[str, Any], list[Any], str | None]:
    fields = draw(st.lists(NAMES, min_size=0, max_size=6, unique=True))
    n_defaults = draw(st.integers(0, len(fields)))
    defaults = {f: draw(VALUES) for f in fields[len(fields) - n_defaults:]}
    args = [draw(VALUES) for _ in fields[: len(fields) - n_defaults + draw(st.integers(0, n_defaults))]]
    return fields, defaults, args, draw(st.one_of(st.none(), st.text(max_size=8)))


@given(class_specs())
def test_the_same_body_gives_the_same_behaviour(spec: tuple[list[str], dict[str, Any], list[Any], str | None]) -> None:
    fields, defaults, args, doc = spec
    ours = _build(records.NamedTuple, "Rec", fields, defaults, doc)
    theirs = _build(typing.NamedTuple, "Rec", fields, defaults, doc)
    assert issubclass(ours, tuple)
    for attr in ("_fields", "_field_defaults", "__match_args__", "__doc__", "__module__", "__qualname__",
                 "__slots__"):
        assert getattr(ours, attr) == getattr(theirs, attr), attr
    assert list(ours.__annotations__) == list(theirs.__annotations__)  # typing makes ForwardRefs of the texts
    a, b = ours(*args), theirs(*args)
    assert tuple(a) == tuple(b)
    assert a == b  # tuples compare by value, as typing's do
    assert hash(a) == hash(b)
    assert repr(a) == repr(b)
    assert a._asdict() == b._asdict()
    assert a.first == b.first  # type: ignore[attr-defined]
    assert a.twice() == b.twice()  # type: ignore[attr-defined]
    if fields:
        assert a._replace(**{fields[0]: "x"}) == b._replace(**{fields[0]: "x"})
    with pytest.raises(TypeError):
        ours(*args, *range(len(fields) + 1))


def test_a_field_without_default_after_one_with_is_refused_as_typing_does() -> None:
    for base in (records.NamedTuple, typing.NamedTuple):
        with pytest.raises(TypeError):
            _build(base, "Bad", ["a", "b"], {"a": 1}, None)


def test_a_keyword_as_a_field_is_refused_as_typing_refuses_it() -> None:
    for base in (records.NamedTuple, typing.NamedTuple):
        with pytest.raises(ValueError, match="keyword"):
            _build(base, "Bad", ["in"], {}, None)


def test_namedtuple_made_attributes_cannot_be_overwritten() -> None:
    def body(ns: dict[str, Any]) -> None:
        ns["__annotations__"] = {"a": "int"}
        ns["__module__"] = __name__
        ns["_replace"] = lambda self: self

    for base in (records.NamedTuple, typing.NamedTuple):
        with pytest.raises(AttributeError):
            types.new_class("Bad", (base,), {}, body)


def test_the_runtime_classes_keep_their_fields_defaults_and_methods() -> None:
    assert Target._fields == ("format", "xml", "wrap")
    assert Target("json") == ("json", None, None)
    assert Target("xml", XmlOptions("request")).content_type == "text/xml;charset=utf-8"
    assert XmlOptions._fields == ("root", "declaration", "encoding", "namespaces", "pretty")
    assert XmlOptions("r")[1:3] == (True, "UTF-8")
    assert FieldExplanation._fields[:3] == ("path", "value", "spec")
    assert Target.__doc__ is None or isinstance(Target.__doc__, str)
    assert XmlOptions.__doc__ is not None and "namespaces" in XmlOptions.__doc__
    target = Target("json", None, wrap="array")  # (XmlOptions' default namespaces, a mappingproxy, never pickled)
    assert pickle.loads(pickle.dumps(target)) == target
    assert Target.__module__ == "dockyard.runtime.target"
