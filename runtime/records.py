"""`NamedTuple`, the class syntax, for the modules that loading a bundle imports, without `typing`.

Importing `typing` costs a fresh process about 3.5 ms of CPU, and `typing.NamedTuple` classes about
1 ms more each; `load_bundle`'s budget is 50 ms in all. Type checkers see `typing.NamedTuple` (the
modules import this one only when not type checking), and at run time this builds the same thing
`typing.NamedTuple` builds: a `collections.namedtuple` class with the annotated fields, their
defaults, and the body's methods, properties and docstring. `tests/runtime/test_records.py` holds
it to `typing.NamedTuple`'s behaviour on the runtime's own classes.
"""

from __future__ import annotations

from collections import namedtuple
from itertools import pairwise

__all__ = ["NamedTuple"]

# What a class body holds that is not copied to the new class (set by Python), and what it may not
# set because namedtuple made it: as typing.NamedTuple has them.
_NOT_COPIED = frozenset({"__module__", "__name__", "__annotations__", "__classcell__"})
_MADE_BY_NAMEDTUPLE = frozenset({"__new__", "__init__", "__slots__", "__getnewargs__", "_fields",
                                 "_field_defaults", "_make", "_replace", "_asdict", "_source"})


class _Meta(type):
    def __new__(mcs, typename: str, bases: tuple[type, ...], ns: dict[str, object]) -> type:
        if not bases:  # the base class below, the one class made without one
            return super().__new__(mcs, typename, bases, ns)
        annotations = ns.get("__annotations__", {})
        fields: tuple[str, ...] = tuple(annotations) if isinstance(annotations, dict) else ()
        defaults = [ns[name] for name in fields if name in ns]
        for before, name in pairwise(fields):
            if before in ns and name not in ns:  # namedtuple would give the defaults to the last fields
                raise TypeError(f"{typename}: field {name!r} has no default but follows {before!r}, which has one")
        cls = namedtuple(typename, fields, defaults=defaults, module=str(ns.get("__module__")))  # type: ignore[misc]
        cls.__annotations__ = dict(annotations) if isinstance(annotations, dict) else {}
        for key, value in ns.items():
            if key in _NOT_COPIED or key in fields:
                continue
            if key in _MADE_BY_NAMEDTUPLE:
                raise AttributeError(f"Cannot overwrite NamedTuple attribute {key}")
            setattr(cls, key, value)
        return cls


class NamedTuple(metaclass=_Meta):
    """Subclass it as `typing.NamedTuple`: the subclass is a `collections.namedtuple`."""
