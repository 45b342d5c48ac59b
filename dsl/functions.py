"""The function registry: every function of the language, in one place.

Each `Function` names its parameters and their types, says whether it is pure, documents itself
with runnable examples, computes its result type (`returns`), and tells the code generator how to
call it (`emit`). The checker, `docs/language.md` and the example test are all driven from here, so
a function cannot exist without documentation and a test.

`emit` receives a `CallSite` (implemented by the code generator) and returns a Python expression.
Argument code in a CallSite is generated code, never user text; literal arguments reach generated
code only through `CallSite.const`, which writes them with `repr()`.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dockyard.dsl.types import ANY, BOOL, DATETIME, DECIMAL, INT, STRING, Kind, Type, list_of
from dockyard.runtime.dates import DatePatternError, compile_pattern
from dockyard.runtime.functions import PAD_LIMIT

__all__ = ["REGISTRY", "ROUNDING_MODES", "CallSite", "Example", "Function", "Param", "TypeProblem"]

ROUNDING_MODES = ("HALF_UP", "HALF_EVEN", "HALF_DOWN", "UP", "DOWN", "CEILING", "FLOOR")


class TypeProblem(Exception):
    """Raised by a `returns` or `check_literal` hook: the message is shown at the argument."""

    def __init__(self, message: str, arg: int | None = None, hint: str | None = None) -> None:
        self.message, self.arg, self.hint = message, arg, hint
        super().__init__(message)


@dataclass(frozen=True)
class Param:
    name: str
    kinds: tuple[Kind, ...]  # accepted kinds; (Kind.ANY,) accepts anything
    doc: str
    literal: bool = False  # must be a constant written in the spec (patterns, zones, modes, places)
    choices: tuple[str, ...] = ()
    optional: bool = False
    lambda_: bool = False  # a `$x => expr` argument
    table: bool = False  # the bare name of a table
    variadic: bool = False
    handles_missing: bool = False  # a missing value here does not make the result missing

    def describe(self) -> str:
        if self.lambda_:
            return "$x => …"
        if self.table:
            return "TABLE"
        return "|".join(k.value for k in self.kinds)


@dataclass(frozen=True)
class Example:
    expr: str
    result: Any  # the expected value; None means "missing"
    input: Mapping[str, Any] = field(default_factory=dict)


class CallSite(Protocol):
    """What `emit` sees: generated argument code, literal values and constant registration."""

    @property
    def args(self) -> Sequence[str]:
        """Generated code of each argument (already converted to the parameter's kind)."""

    @property
    def literals(self) -> Sequence[Any]:
        """The literal value of each argument, or None when it is not a literal."""

    @property
    def lambdas(self) -> Sequence[tuple[str, str, bool] | None]:
        """Per argument: (loop variable, body code, body may be missing) for a lambda, else None."""

    @property
    def table(self) -> str | None:
        """The generated name of the table constant, for table functions."""

    @property
    def types(self) -> Sequence[Type]:
        """The checked type of each argument."""

    @property
    def result(self) -> Type:
        """The checked result type of this call."""

    def const(self, value: Any) -> str:
        """A module-level constant holding `value` (written with repr()); returns its name."""

    def helper(self, name: str) -> str:
        """The generated name of a runtime API function, imported into the module."""

    def temp(self) -> str:
        """A fresh local name for a walrus temporary."""

    def const_call(self, helper: str, *args: Any) -> str:
        """A module-level constant `helper(*args)` (a runtime API factory on literal arguments)."""


@dataclass(frozen=True)
class Function:
    name: str
    params: tuple[Param, ...]
    returns: Callable[[Sequence[Type], Sequence[Any]], Type]
    emit: Callable[[CallSite], str]
    doc: str
    category: str
    examples: tuple[Example, ...]
    pure: bool = True
    check_literal: Callable[[Sequence[Any]], None] | None = None

    @property
    def min_args(self) -> int:
        return sum(1 for p in self.params if not p.optional and not p.variadic)

    @property
    def max_args(self) -> int | None:
        return None if any(p.variadic for p in self.params) else len(self.params)

    def param_at(self, index: int) -> Param | None:
        if index < len(self.params):
            return self.params[index]
        if self.params and self.params[-1].variadic:
            return self.params[-1]
        return None

    def signature(self) -> str:
        parts = []
        for p in self.params:
            text = f"{p.name}: {p.describe()}"
            if p.variadic:
                text += ", …"
            if p.optional:
                text = f"[{text}]"
            parts.append(text)
        return f"{self.name}({', '.join(parts)})"


REGISTRY: dict[str, Function] = {}

# Short names for parameter kinds, to keep the table below readable.
S, Z, D, B, T, L, A = (Kind.STRING, Kind.INT, Kind.DECIMAL, Kind.BOOL, Kind.DATETIME, Kind.LIST, Kind.ANY)
NUM = (Z, D)


def _register(fn: Function) -> None:
    assert fn.name not in REGISTRY, fn.name
    REGISTRY[fn.name] = fn


def fixed(t: Type) -> Callable[[Sequence[Type], Sequence[Any]], Type]:
    return lambda _types, _lits: t


def same_as(index: int) -> Callable[[Sequence[Type], Sequence[Any]], Type]:
    return lambda types, _lits: types[index].required()


# --- literal checks --------------------------------------------------------------------------

def _places(value: Any, arg: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 12:
        raise TypeProblem("decimal places must be a whole number from 0 to 12", arg)


def _check_zone(value: Any, arg: int) -> None:
    try:
        ZoneInfo(str(value))
    except (ZoneInfoNotFoundError, ValueError):
        raise TypeProblem(f"unknown time zone {value!r}", arg,
                          hint="use an IANA name such as 'Asia/Shanghai'") from None


def _check_pattern(value: Any, arg: int) -> None:
    try:
        parts = compile_pattern(str(value))
    except DatePatternError as exc:
        raise TypeProblem(str(exc), arg) from None
    if not any(directive for directive, _ in parts):
        raise TypeProblem(f"the pattern {str(value)!r} has no date or time part (yyyy MM dd HH mm ss SSS XXX)", arg,
                          hint="a pattern without one would write (or read) the same text for every date-time; "
                               "write that text as a quoted constant instead")


def _pad_checks(lits: Sequence[Any]) -> None:
    """A literal pad width is at most PAD_LIMIT (a computed one is checked at run time), and the
    fill character is one character."""
    width = lits[1] if len(lits) > 1 else None
    if isinstance(width, int) and not isinstance(width, bool) and width > PAD_LIMIT:
        raise TypeProblem(f"a pad width of {width} is more than the limit of {PAD_LIMIT:,} characters", 1)
    _one_char(2)(lits)


def _pad(method: str) -> Callable[[CallSite], str]:
    def emit(c: CallSite) -> str:
        width = c.args[1]
        if not isinstance(c.literals[1], int):  # computed: a width from the input could be huge
            width = f"{c.helper('pad_width')}({width})"
        return f"{c.args[0]}.{method}({width}, {c.args[2] if len(c.args) > 2 else repr(' ')})"
    return emit


def _one_char(index: int) -> Callable[[Sequence[Any]], None]:
    """The fill or mask character at `index`, when given, is exactly one character."""
    def check(lits: Sequence[Any]) -> None:
        if len(lits) > index and lits[index] is not None and len(str(lits[index])) != 1:
            raise TypeProblem(f"{str(lits[index])!r} is not a single character", index,
                              hint='one character, such as "0" or "*"')
    return check


def _check_regex(value: Any, arg: int) -> None:
    try:
        re.compile(str(value))
    except re.error as exc:
        raise TypeProblem(f"invalid regular expression: {exc}", arg) from None


def _rounding(c: CallSite, index: int) -> str:
    mode = c.literals[index] if index < len(c.literals) and c.literals[index] is not None else "HALF_UP"
    return c.helper("ROUND_" + str(mode))


def _quantum(c: CallSite, places: Any) -> str:
    return c.const(Decimal(1).scaleb(-int(places)))


# --- strings ---------------------------------------------------------------------------------

_register(Function(
    "trim", (Param("s", (S,), "the text"),), fixed(STRING), lambda c: f"{c.args[0]}.strip()",
    "Removes whitespace at both ends; inner whitespace is kept.", "strings",
    (Example('trim("  a  b \\t")', "a  b"), Example("trim(remark)", None, {}))))
_register(Function(
    "trim_start", (Param("s", (S,), "the text"),), fixed(STRING), lambda c: f"{c.args[0]}.lstrip()",
    "Removes whitespace at the start.", "strings", (Example('trim_start("  a ")', "a "),)))
_register(Function(
    "trim_end", (Param("s", (S,), "the text"),), fixed(STRING), lambda c: f"{c.args[0]}.rstrip()",
    "Removes whitespace at the end.", "strings", (Example('trim_end("  a ")', "  a"),)))
_register(Function(
    "upper", (Param("s", (S,), "the text"),), fixed(STRING), lambda c: f"{c.args[0]}.upper()",
    "Upper case.", "strings", (Example('upper("sku-1a")', "SKU-1A"),)))
_register(Function(
    "lower", (Param("s", (S,), "the text"),), fixed(STRING), lambda c: f"{c.args[0]}.lower()",
    "Lower case.", "strings", (Example('lower("SF")', "sf"),)))
_register(Function(
    "length", (Param("value", (S, L), "a text or a list"),), fixed(INT), lambda c: f"len({c.args[0]})",
    "Number of characters of a text, or of elements of a list.", "strings",
    (Example('length("顺丰速运")', 4), Example("length([1, 2, 3])", 3))))
_register(Function(
    "substring",
    (Param("s", (S,), "the text"), Param("start", (Z,), "first character, 0-based; negative counts from the end"),
     Param("end", (Z,), "one past the last character; defaults to the end", optional=True)),
    fixed(STRING),
    lambda c: f"{c.args[0]}[{c.args[1]}:{c.args[2] if len(c.args) > 2 else ''}]",
    "The characters from `start` up to (not including) `end`.", "strings",
    (Example('substring("TM20231111000123", 2, 10)', "20231111"), Example('substring("abc", -2)', "bc"))))
_register(Function(
    "pad_left",
    (Param("s", (S,), "the text"), Param("width", (Z,), "the minimum length"),
     Param("char", (S,), "a single fill character, default space", literal=True, optional=True)),
    fixed(STRING),
    _pad("rjust"),
    f"Pads on the left up to `width` characters (a width over {PAD_LIMIT:,} is an error).", "strings",
    (Example('pad_left("7", 3, "0")', "007"), Example('pad_left("1234", 3, "0")', "1234")),
    check_literal=_pad_checks),
)
_register(Function(
    "pad_right",
    (Param("s", (S,), "the text"), Param("width", (Z,), "the minimum length"),
     Param("char", (S,), "a single fill character, default space", literal=True, optional=True)),
    fixed(STRING),
    _pad("ljust"),
    f"Pads on the right up to `width` characters (a width over {PAD_LIMIT:,} is an error).", "strings",
    (Example('pad_right("ab", 4, ".")', "ab.."),),
    check_literal=_pad_checks))
_register(Function(
    "replace",
    (Param("s", (S,), "the text"), Param("old", (S,), "the text to find"), Param("new", (S,), "its replacement")),
    fixed(STRING), lambda c: f"{c.args[0]}.replace({c.args[1]}, {c.args[2]})",
    "Replaces every occurrence of `old` (plain text, not a pattern).", "strings",
    (Example('replace("a-b-c", "-", "/")', "a/b/c"),)))
_register(Function(
    "split", (Param("s", (S,), "the text"), Param("sep", (S,), "the separator (not empty)")),
    fixed(list_of(STRING)), lambda c: f"{c.helper('split')}({c.args[0]}, {c.args[1]})",
    "Splits at each separator; an empty text gives an empty list.", "strings",
    (Example('split("a,b,,c", ",")', ["a", "b", "", "c"]), Example('split("", ",")', []))))
def _join_returns(types: Sequence[Type]) -> Type:
    item = types[0].item if types and types[0].item is not None else ANY
    if item.kind not in (Kind.STRING, Kind.ANY):
        raise TypeProblem(f"join needs a list of texts, not a list of {item.name}", 0,
                          hint='turn each into a text first: join(map(items, $x => $x.sku), ",")')
    return STRING


_register(Function(
    "join", (Param("items", (L,), "a list of texts", handles_missing=True), Param("sep", (S,), "the separator")),
    lambda types, _l: _join_returns(types), lambda c: f"{c.args[1]}.join({c.args[0]})",
    "Joins a list of texts with a separator; a missing list gives an empty text.", "strings",
    (Example('join(["a", "b"], "+")', "a+b"), Example('join(split("x y", " "), "-")', "x-y"))))
_register(Function(
    "concat", (Param("parts", (S,), "texts", variadic=True),), fixed(STRING),
    lambda c: "(" + " + ".join(c.args) + ")" if c.args else repr(""),
    "Joins texts. Missing if any part is missing: use `??` on a part that may be missing.", "strings",
    (Example('concat("TM", "-", "001")', "TM-001"), Example('concat("a", remark ?? "")', "a"))))
_register(Function(
    "mask",
    (Param("s", (S,), "the text"), Param("keep_start", (Z,), "characters kept at the start"),
     Param("keep_end", (Z,), "characters kept at the end"),
     Param("char", (S,), "the mask character, default *", literal=True, optional=True)),
    fixed(STRING), lambda c: f"{c.helper('mask')}({', '.join(c.args)})",
    "Replaces the middle with a mask character, keeping the length (a text too short is masked whole).",
    "strings", (Example('mask("13912340366", 3, 4)', "139****0366"), Example('mask("ab", 3, 4)', "**")),
    check_literal=_one_char(3)))
_register(Function(
    "starts_with", (Param("s", (S,), "the text"), Param("prefix", (S,), "the prefix")), fixed(BOOL),
    lambda c: f"{c.args[0]}.startswith({c.args[1]})", "Whether the text starts with the prefix.", "strings",
    (Example('starts_with("SKU-1", "SKU-")', True),)))
_register(Function(
    "ends_with", (Param("s", (S,), "the text"), Param("suffix", (S,), "the suffix")), fixed(BOOL),
    lambda c: f"{c.args[0]}.endswith({c.args[1]})", "Whether the text ends with the suffix.", "strings",
    (Example('ends_with("SKU-1-STD", "-STD")', True),)))
_register(Function(
    "contains", (Param("s", (S,), "the text"), Param("part", (S,), "the text to look for")), fixed(BOOL),
    lambda c: f"({c.args[1]} in {c.args[0]})", "Whether the text contains `part`.", "strings",
    (Example('contains("不要发票", "发票")', True),)))
_register(Function(
    "nonblank", (Param("s", (S,), "the text"),), fixed(STRING.optional()),
    lambda c: (lambda t: f"({t} if ({t} := {c.args[0]}).strip() else None)")(c.temp()),
    "The text, or missing when it is empty or only whitespace (XML sends `<code/>` for nothing).",
    "strings", (Example('nonblank("  ")', None), Example('nonblank(" a ")', " a "),
                Example('nonblank("") ?? "none"', "none"))))
_register(Function(
    "string", (Param("value", (S, Z, D, B, T), "a text, number, boolean or date-time"),), fixed(STRING),
    lambda c: (c.args[0] if c.types[0].kind is Kind.STRING else f"str({c.args[0]})" if c.types[0].kind is Kind.INT
               else f"{c.helper('to_string')}({c.args[0]})"),
    "Converts to text: numbers in plain notation (never exponents), booleans as true/false, "
    "date-times as ISO-8601.", "conversion",
    (Example("string(12)", "12"), Example("string(1.50)", "1.50"), Example("string(true)", "true"))))

# --- regular expressions (patterns must be literals, checked when the spec compiles) ---------


def _regex_literals(lits: Sequence[Any]) -> None:
    if len(lits) > 1 and lits[1] is not None:
        _check_regex(lits[1], 1)


_register(Function(
    "matches", (Param("s", (S,), "the text"), Param("pattern", (S,), "a regular expression", literal=True)),
    fixed(BOOL), lambda c: f"({c.const(re.compile(c.literals[1]))}.search({c.args[0]}) is not None)",
    "Whether the pattern matches anywhere in the text (Python `re` syntax).", "regex",
    (Example('matches("13912340366", "^1[3-9][0-9]{9}$")', True),), check_literal=_regex_literals))
_register(Function(
    "regex_replace",
    (Param("s", (S,), "the text"), Param("pattern", (S,), "a regular expression", literal=True),
     Param("replacement", (S,), "the replacement; \\1 refers to a group", literal=True)),
    fixed(STRING), lambda c: f"{c.const(re.compile(c.literals[1]))}.sub({c.args[2]}, {c.args[0]})",
    "Replaces every match of the pattern.", "regex",
    (Example('regex_replace("a  b   c", " +", " ")', "a b c"),), check_literal=_regex_literals))
_register(Function(
    "regex_extract",
    (Param("s", (S,), "the text"), Param("pattern", (S,), "a regular expression", literal=True),
     Param("group", (Z,), "the group to return, default 0 (the whole match)", literal=True, optional=True)),
    fixed(STRING.optional()),
    lambda c: f"{c.helper('regex_extract')}({c.const(re.compile(c.literals[1]))}, {c.args[0]}, "
              f"{c.args[2] if len(c.args) > 2 else '0'})",
    "The first match (or one of its groups); missing when nothing matches.", "regex",
    (Example('regex_extract("SKU-100215-STD", "SKU-([0-9]+)", 1)', "100215"),
     Example('regex_extract("abc", "[0-9]+")', None)), check_literal=_regex_literals))

# --- numbers ---------------------------------------------------------------------------------


def _round_literals(lits: Sequence[Any]) -> None:
    if len(lits) > 1:
        _places(lits[1], 1)


_register(Function(
    "decimal", (Param("value", (S, Z, D), "a decimal text or a number"),), fixed(DECIMAL),
    lambda c: f"{c.helper('to_decimal')}({c.args[0]})",
    "Converts to an exact decimal. Text must be a plain decimal such as \"-12.345\".", "numbers",
    (Example('decimal("59.9")', Decimal("59.9")), Example("decimal(3)", Decimal(3)))))
_register(Function(
    "int", (Param("value", (S, Z, D), "a whole-number text or a number without fraction"),), fixed(INT),
    lambda c: f"{c.helper('to_int')}({c.args[0]})",
    "Converts to a whole number; a fraction is an error (round first).", "numbers",
    (Example('int("42")', 42), Example("int(3.00)", 3))))
_register(Function(
    "round",
    (Param("x", (D,), "the number (a whole number is converted)"),
     Param("places", (Z,), "decimal places", literal=True),
     Param("mode", (S,), "rounding mode, default HALF_UP", literal=True, optional=True, choices=ROUNDING_MODES)),
    fixed(DECIMAL),
    lambda c: f"{c.args[0]}.quantize({_quantum(c, c.literals[1])}, {_rounding(c, 2)}, {c.helper('MONEY')})",
    "Rounds to `places` decimals. HALF_UP (四舍五入) unless another mode is named.", "numbers",
    (Example("round(286.655, 2)", Decimal("286.66")), Example('round(128.705, 2, "HALF_EVEN")', Decimal("128.70")),
     Example("round(2.5, 0)", Decimal("3"))), check_literal=_round_literals))
def _emit_format_decimal(c: CallSite) -> str:
    """A rounded negative zero ("-0.00") is written "0.00". Only a zero needs that, so only a zero
    pays for it (`copy_abs`, the same value as the `+ Decimal(0)` this used to add to every
    number: places are 0 to 12, so the exponent of a rounded value is never above 0)."""
    tmp = c.temp()
    rounded = f"{c.args[0]}.quantize({_quantum(c, c.literals[1])}, {_rounding(c, 2)}, {c.helper('MONEY')})"
    # str() writes a value whose adjusted exponent is below -6 in exponent form ("0E-7", "1.000E-9"):
    # with up to 6 places a rounded value never is; beyond, format(…, "f") writes the digits.
    if int(c.literals[1]) <= 6:
        return f"str({tmp} if ({tmp} := {rounded}) else {tmp}.copy_abs())"
    return f'format({tmp} if ({tmp} := {rounded}) else {tmp}.copy_abs(), "f")'


_register(Function(
    "format_decimal",
    (Param("x", (D,), "the number (a whole number is converted)"),
     Param("places", (Z,), "decimal places", literal=True),
     Param("mode", (S,), "rounding mode, default HALF_UP", literal=True, optional=True, choices=ROUNDING_MODES)),
    fixed(STRING),
    _emit_format_decimal,
    "Rounds (HALF_UP by default) and writes exactly `places` decimals, never in exponent form.", "numbers",
    (Example('format_decimal(decimal("128.5"), 2)', "128.50"), Example("format_decimal(99, 2)", "99.00"),
     Example("format_decimal(-0.001, 2)", "0.00")), check_literal=_round_literals))
_register(Function(
    "abs", (Param("x", NUM, "the number"),), same_as(0),
    lambda c: f"abs({c.args[0]})" if c.result.kind is not Kind.DECIMAL else f"{c.helper('money_abs')}({c.args[0]})",
    "The absolute value.", "numbers", (Example("abs(-1.5)", Decimal("1.5")),)))

# --- lists -----------------------------------------------------------------------------------


def _lambda_type(types: Sequence[Type], index: int) -> Type:
    return types[index] if index < len(types) else ANY


def _map_returns(types: Sequence[Type], _lits: Sequence[Any]) -> Type:
    return list_of(_lambda_type(types, 1).required())


def _over(c: CallSite, build: Callable[[str], str]) -> str:
    """A comprehension over the list argument. Python refuses an assignment expression (the
    generated code's `(_t := …)` temporaries) in a comprehension's iterable, so a list argument
    that holds one is passed in as a lambda's default, evaluated where it stands."""
    if ":=" not in c.args[0]:
        return build(c.args[0])
    return f"(lambda _dy_list={c.args[0]}: {build('_dy_list')})()"


def _emit_map(c: CallSite) -> str:
    lam = c.lambdas[1]
    assert lam is not None
    var, body, maybe = lam
    if maybe:  # elements whose value is missing are left out
        tmp = c.temp()
        return _over(c, lambda it: f"[{tmp} for {var} in {it} if ({tmp} := {body}) is not None]")
    return _over(c, lambda it: f"[{body} for {var} in {it}]")


def _emit_filter(c: CallSite) -> str:
    lam = c.lambdas[1]
    assert lam is not None
    var, body, _ = lam
    return _over(c, lambda it: f"[{var} for {var} in {it} if {body}]")


def _emit_sum(c: CallSite) -> str:
    # The start value keeps an int sum an int and a decimal sum a Decimal, even for an empty list;
    # a decimal sum adds in the runtime's money context (money_sum), never the thread's.
    if c.result.kind is Kind.DECIMAL:
        add, start = c.helper("money_sum"), c.const(Decimal(0))
    else:
        add, start = "sum", "0"
    lam = c.lambdas[1] if len(c.lambdas) > 1 else None
    if lam is None:
        return _over(c, lambda it: f"{add}([_x for _x in {it} if _x is not None], {start})")
    var, body, maybe = lam
    if maybe:
        tmp = c.temp()
        return _over(c, lambda it: f"{add}([{tmp} for {var} in {it} if ({tmp} := {body}) is not None], {start})")
    return _over(c, lambda it: f"{add}([{body} for {var} in {it}], {start})")


def _emit_count(c: CallSite) -> str:
    lam = c.lambdas[1] if len(c.lambdas) > 1 else None
    if lam is None:
        return f"len({c.args[0]})"
    var, body, _ = lam
    return _over(c, lambda it: f"sum([1 for {var} in {it} if {body}])")


def _element_type(types: Sequence[Type]) -> Type:
    if len(types) > 1:
        return types[1].required()
    item = types[0].item if types and types[0].item is not None else ANY
    return item.required()


def _sum_returns(types: Sequence[Type], _lits: Sequence[Any]) -> Type:
    t = _element_type(types)
    if t.kind is Kind.INT:
        return INT
    if t.kind in (Kind.DECIMAL, Kind.ANY):
        return DECIMAL
    raise TypeProblem(f"sum needs numbers, not {t.name}", 1 if len(types) > 1 else 0)


def _emit_minmax(name: str) -> Callable[[CallSite], str]:
    def emit(c: CallSite) -> str:
        # Decimals are compared in MONEY (money_min/money_max), never by the thread's context.
        fn = c.helper(f"money_{name}") if c.result.kind is Kind.DECIMAL else name
        lam = c.lambdas[1] if len(c.lambdas) > 1 else None
        if lam is None:
            return _over(c, lambda it: f"{fn}([_x for _x in {it} if _x is not None], default=None)")
        var, body, _ = lam
        tmp = c.temp()
        return _over(c, lambda it: f"{fn}([{tmp} for {var} in {it} if ({tmp} := {body}) is not None], default=None)")
    return emit


def _minmax_returns(types: Sequence[Type], _lits: Sequence[Any]) -> Type:
    t = _element_type(types)
    if t.kind not in (Kind.INT, Kind.DECIMAL, Kind.STRING, Kind.DATETIME, Kind.ANY):
        raise TypeProblem(f"cannot compare values of type {t.name}", 0)
    return t.optional()


_LIST = Param("list", (L,), "the list; a missing list counts as empty", handles_missing=True)
_register(Function(
    "map", (_LIST, Param("f", (A,), "the value for each element", lambda_=True)), _map_returns, _emit_map,
    "The value of `f` for each element, in order. Elements whose value is missing are left out.", "lists",
    (Example("map(items, $i => $i.sku)", ["A", "B"], {"items": [{"sku": "A"}, {"sku": "B"}]}),
     Example("map([1, 2], $n => {n: $n})", [{"n": 1}, {"n": 2}]),
     Example("map([1, 2, 3], $n => if $n == 2 then omit else $n * 10)", [10, 30]))))
_register(Function(
    "filter", (_LIST, Param("keep", (B,), "true for the elements to keep", lambda_=True)),
    lambda types, _l: list_of(types[0].item or ANY), _emit_filter,
    "The elements for which `keep` is true (missing counts as false), in order.", "lists",
    (Example("count(filter(items, $i => $i.qty > 0))", 1, {"items": [{"qty": 0}, {"qty": 2}]}),)))
_register(Function(
    "sum", (_LIST, Param("f", NUM, "the number to add for each element", lambda_=True, optional=True)),
    _sum_returns, _emit_sum,
    "Adds the numbers (or the value of `f` for each element), exactly; missing values are skipped; "
    "an empty list gives 0.", "lists",
    # Without a source schema the elements' type is unknown, so the sum is an exact decimal.
    (Example("sum(items, $i => $i.qty)", Decimal(3), {"items": [{"qty": 1}, {"qty": 2}]}),
     Example("sum([1, 2, 3])", 6),
     Example('sum(map(["1.10", "2.205"], $p => decimal($p)))', Decimal("3.305")),
     Example("sum([], $x => 1)", 0))))
_register(Function(
    "count", (_LIST, Param("keep", (B,), "count only elements for which this is true", lambda_=True, optional=True)),
    fixed(INT),
    lambda c: _emit_count(c),
    "The number of elements (for which `keep` is true).", "lists",
    (Example("count(items)", 2, {"items": [{"qty": 0}, {"qty": 2}]}),
     Example("count(items, $i => $i.qty > 0)", 1, {"items": [{"qty": 0}, {"qty": 2}]}))))
_register(Function(
    "min", (_LIST, Param("f", (A,), "the value to compare", lambda_=True, optional=True)), _minmax_returns,
    _emit_minmax("min"), "The smallest value; missing for an empty list.", "lists",
    (Example("min([3, 1, 2])", 1), Example("min([], $x => $x)", None))))
_register(Function(
    "max", (_LIST, Param("f", (A,), "the value to compare", lambda_=True, optional=True)), _minmax_returns,
    _emit_minmax("max"), "The largest value; missing for an empty list.", "lists",
    (Example("max(items, $i => decimal($i.price))", Decimal("9.9"), {"items": [{"price": "9.9"}, {"price": "1"}]}),)))
_register(Function(
    "first", (_LIST,), lambda types, _l: (types[0].item or ANY).optional(),
    lambda c: f"{c.helper('first')}({c.args[0]})", "The first element; missing for an empty list.", "lists",
    (Example('first(["a", "b"])', "a"), Example("first([])", None))))
_register(Function(
    "last", (_LIST,), lambda types, _l: (types[0].item or ANY).optional(),
    lambda c: f"{c.helper('last')}({c.args[0]})", "The last element; missing for an empty list.", "lists",
    (Example('last(["a", "b"])', "b"),)))

# --- tables ----------------------------------------------------------------------------------


def _emit_lookup(c: CallSite) -> str:
    assert c.table is not None
    if len(c.args) > 2:
        return f"{c.table}.get({c.args[1]}, {c.args[2]})"
    return f"{c.table}.get({c.args[1]})"


_register(Function(
    "lookup",
    (Param("table", (S,), "the table's name, as declared under `tables:`", table=True),
     Param("key", (S,), "the key to look up", handles_missing=True),
     Param("default", (S,), "the value when the key is missing or not in the table", optional=True)),
    lambda types, _l: STRING.optional(len(types) < 3 or types[2].maybe), _emit_lookup,
    "Looks a key up in a table. Without a default (here or the table's own `default:`), a key that is "
    "missing or not in the table gives a missing value.", "tables",
    (Example('lookup(CARRIERS, "SF")', "SF"), Example('lookup(CARRIERS, "EMS", "OTHER")', "OTHER"),
     Example("lookup(CARRIERS, carrier_preference, \"OTHER\")", "OTHER"))))

# --- date-times ------------------------------------------------------------------------------


def _date_literals(pattern_at: int | None, zone_at: int | None) -> Callable[[Sequence[Any]], None]:
    def check(lits: Sequence[Any]) -> None:
        if pattern_at is not None and len(lits) > pattern_at and lits[pattern_at] is not None:
            _check_pattern(lits[pattern_at], pattern_at)
        if zone_at is not None and len(lits) > zone_at and lits[zone_at] is not None:
            _check_zone(lits[zone_at], zone_at)
    return check


def _emit_parse(c: CallSite) -> str:
    if len(c.args) == 1:
        return f"{c.helper('parse_datetime')}({c.args[0]})"
    parser = c.const_call("datetime_parser", c.literals[1], c.literals[2])
    return f"{parser}({c.args[0]})"


def _emit_format(c: CallSite) -> str:
    fmt = c.const_call("datetime_formatter", c.literals[1])
    value = c.args[0]
    if len(c.args) > 2:
        value = f"{value}.astimezone({c.const_call('zone', c.literals[2])})"
    return f"{fmt}({value})"


def _parse_literals(lits: Sequence[Any]) -> None:
    if len(lits) == 2:
        raise TypeProblem("a pattern needs a time zone too", 1,
                          hint='parse_datetime(s, "yyyy-MM-dd HH:mm:ss", "Asia/Shanghai")')
    _date_literals(1, 2)(lits)


_register(Function(
    "parse_datetime",
    (Param("s", (S,), "the text"),
     Param("pattern", (S,), "a pattern for text that is not ISO-8601 (see format_datetime)", literal=True,
           optional=True),
     Param("zone", (S,), "the time zone of a pattern without an offset", literal=True, optional=True)),
    fixed(DATETIME), _emit_parse,
    "Reads an ISO-8601 date-time with an offset or `Z` (fractional seconds allowed). With a pattern and a "
    "zone, reads local times such as QIMEN's \"yyyy-MM-dd HH:mm:ss\". A text without an offset is an error.",
    "date-times",
    (Example('string(parse_datetime("2023-11-10T16:30:00Z"))', "2023-11-10T16:30:00+00:00"),
     Example('string(parse_datetime("2023-11-11 00:01:23", "yyyy-MM-dd HH:mm:ss", "Asia/Shanghai"))',
             "2023-11-11T00:01:23+08:00")),
    check_literal=_parse_literals))


_register(Function(
    "to_timezone", (Param("dt", (T,), "the date-time"), Param("zone", (S,), "an IANA time zone", literal=True)),
    fixed(DATETIME), lambda c: f"{c.args[0]}.astimezone({c.const_call('zone', c.literals[1])})",
    "The same instant in another time zone.", "date-times",
    (Example('string(to_timezone(parse_datetime("2023-11-10T16:30:00Z"), "Asia/Shanghai"))',
             "2023-11-11T00:30:00+08:00"),), check_literal=_date_literals(None, 1)))
_register(Function(
    "format_datetime",
    (Param("dt", (T,), "the date-time"),
     Param("pattern", (S,), "yyyy MM dd HH mm ss SSS XXX and 'quoted text'", literal=True),
     Param("zone", (S,), "convert to this time zone first", literal=True, optional=True)),
    fixed(STRING), _emit_format,
    "Writes a date-time with a Java-style pattern (yyyy-MM-dd HH:mm:ss). Fractional seconds are "
    "truncated unless the pattern asks for SSS.", "date-times",
    (Example('format_datetime(parse_datetime("2023-11-10T16:00:01.999Z"), "yyyy-MM-dd HH:mm:ss", "Asia/Shanghai")',
             "2023-11-11 00:00:01"),
     Example('format_datetime(parse_datetime("2023-11-11T08:00:00+08:00"), "yyyyMMdd")', "20231111")),
    check_literal=_date_literals(1, 2)))
_register(Function(
    "epoch_seconds", (Param("dt", (T,), "the date-time"),), fixed(INT),
    lambda c: f"int({c.args[0]}.timestamp())",
    "Whole seconds since 1970-01-01T00:00:00Z (fractions are dropped).", "date-times",
    (Example('epoch_seconds(parse_datetime("2023-11-11T00:00:00+08:00"))', 1699632000),)))
_register(Function(
    "epoch_millis", (Param("dt", (T,), "the date-time"),), fixed(INT),
    # Integer arithmetic on the parts: float timestamps can be off by one millisecond.
    lambda c: f"{c.helper('epoch_millis')}({c.args[0]})",
    "Whole milliseconds since 1970-01-01T00:00:00Z, as SF's timestamps are written.", "date-times",
    (Example('epoch_millis(parse_datetime("2023-11-11T00:00:00.123+08:00"))', 1699632000123),)))
_register(Function(
    "now", (), fixed(DATETIME), lambda c: "_clock()",
    "The current time from the injected clock (UTC), so that output is reproducible in tests and dry-runs.",
    "date-times", (), pure=False))

# --- presence and conversion -----------------------------------------------------------------

_register(Function(
    "fail", (Param("message", (S,), "why the input cannot be mapped", literal=True),), fixed(ANY),
    lambda c: f"{c.helper('fail')}({c.args[0]})",
    "Refuses the input: the mapping stops with an error naming the spec location, the field, the order "
    "and this message. Use it in a branch: `if count($lines) > 0 then … else fail(\"every line has qty 0\")`.",
    "presence", (Example('if true then "sent" else fail("never reached")', "sent"),)))
def _present(c: CallSite) -> str:
    # A constant argument (a literal, or a call folded to one, such as `concat()` → '') is decided
    # here: `'' is not None` is what Python warns about ("is not" with a literal), and a warning
    # is an error where warnings are errors.
    try:
        value = ast.literal_eval(c.args[0])
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return f"({c.args[0]} is not None)"
    return repr(value is not None)


_register(Function(
    "present", (Param("value", (A,), "any value", handles_missing=True),), fixed(BOOL), _present,
    "True when the value is there (not absent and not null).", "presence",
    (Example("present(invoice)", True, {"invoice": {"title": "个人"}}),
     Example("present(invoice)", False, {"invoice": None}),
     Example("present(omit)", False))))
_register(Function(
    "parse_json", (Param("text", (S,), "JSON text"),), fixed(ANY.optional()),
    lambda c: f"{c.helper('parse_json')}({c.args[0]})",
    "Reads JSON text into a value (numbers as exact decimals): SF's msgData, Cainiao's logistics_interface, "
    "SF's double-encoded apiResultData. Its shape is checked when the mapping runs; text that is not JSON "
    "is an error naming the field.", "conversion",
    (Example('parse_json("{\\"a\\": [1, 2.50]}").a[1]', Decimal("2.50")),
     Example('parse_json("{}").missing ?? "none"', "none"))))
_register(Function(
    "to_json", (Param("value", (A,), "an object, list or value"),), fixed(STRING),
    lambda c: f"{c.helper('to_json_text')}({c.args[0]})",
    "Serializes to compact JSON text (exact decimals, non-ASCII kept), e.g. for a form field.", "conversion",
    (Example('to_json({a: 1, b: "顺丰"})', '{"a":1,"b":"顺丰"}'),)))
