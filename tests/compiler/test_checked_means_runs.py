"""What `dockyard check` accepts must compile, load and run: a spec that checks clean never makes a
bundle that cannot be loaded (the service would not start) or a transform that fails inside
Python instead of with a Dockyard error.

Specs are generated from the function registry: every function, called with arguments of every
kind it takes and with literal arguments drawn from a pool of hostile constants (empty and
letter-less date patterns, unknown zones, broken regular expressions, huge places, NULs…). Most
generated specs are refused by check, as they should be; each one check accepts is compiled,
loaded and run on real orders.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from dockyard.compiler.api import check_file, compile_file
from dockyard.dsl.functions import REGISTRY, Function
from dockyard.dsl.types import Kind
from dockyard.runtime.errors import DockyardError, TransformError
from dockyard.runtime.functions import WrongKind
from dockyard.sample_orders import generate

SETTINGS = settings(database=None, max_examples=250, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
ORDERS = [json.loads(json.dumps(o), parse_float=Decimal) for o in generate(6, seed=21)]
CLOCK = datetime(2023, 11, 11, 8, 0, tzinfo=UTC)

# Expressions of each kind, over the order schema (some may be missing in an order).
SOURCES: dict[Kind, list[str]] = {
    Kind.STRING: ["order_no", "buyer.nick", "remark", '""', '"x"', "receiver.address", "items[0].sku"],
    Kind.INT: ["count(items)", "items[0].qty", "0", "7", "length(order_no)"],
    Kind.DECIMAL: ["amounts.paid_total", "1.50", "decimal(\"0\")", "items[0].unit_price"],
    Kind.DATETIME: ["parse_datetime(created_at)", "now()"],
    Kind.BOOL: ["true", "items[0].is_gift", "present(remark)"],
    Kind.LIST: ["items", 'split(order_no, "0")', "[]"],
    # constants too, written or folded (`concat()` is ''): generated code must not compare a
    # literal with `is`, which Python warns about
    Kind.ANY: ["order_no", "items", "amounts.paid_total", "buyer", "omit", '""', "7", "1.50", "true", "concat()"],
}
# `omit` (missing on purpose) may stand wherever a value of any kind may be missing.
for _kind in (Kind.STRING, Kind.DECIMAL, Kind.LIST):
    SOURCES[_kind].append("omit")
SOURCES[Kind.STRING].append("(if present(remark) then remark else omit)")
# Constants for literal parameters: the hostile ones check must refuse or the runtime must take.
LITERAL_TEXT = ["---", "", " ", "yyyy", "yyyyMMdd", "yyyy-MM-dd HH:mm:ss", "'q'", "''", "%", "%Y%m", "XXX", "Z",
                "EEE", "SSS", "yyyy'", "HH:mm", "Asia/Shanghai", "UTC", "Nowhere/Zone", "../../etc/passwd", "(",
                "a{2,1}", "(?P<x>a)", ".*", "[", "\\\\", "\\x00", "\\u0000", "HALF_UP", "half_up", "*", "**", "中",
                "x" * 300]
LITERAL_INT = ["0", "1", "2", "34", "35", "-1", "100000", "99999999999999999999"]
FUNCTIONS = sorted(REGISTRY.values(), key=lambda f: f.name)
# Exceptions that mean the compiler let through what the runtime cannot do: a typed, checked spec
# on a schema-valid order never meets them. (A WrongKind, the runtime's own check of a value whose
# type is known only at run time, e.g. what parse_json made, is the input's fault, worded as such.)
INTERNAL = (TypeError, AttributeError, NameError, UnboundLocalError, AssertionError, RecursionError, MemoryError)


def _spec(expr: str, fmt: str = "json") -> str:
    target = {"json": "  format: json\n", "xml": "  format: xml\n  root: request\n", "form": "  format: form\n"}[fmt]
    return (f"dockyard: 1\nname: gen.spec\nversion: \"1.0.0\"\nsource:\n  schema: order\n  key: order_no\n"
            f"target:\n{target}tables:\n  T:\n    rows: {{a: \"1\", b: \"2\"}}\n    default: \"0\"\n"
            f"output:\n  f0?: >-\n    {expr}\n")


def _quote(text: str) -> str:
    """A string literal of the language; backslashes in `text` are the language's escapes."""
    return '"' + text.replace('"', '\\"') + '"'


@st.composite
def _arg(draw: st.DrawFn, fn: Function, index: int, depth: int) -> str | None:
    p = fn.param_at(index)
    assert p is not None
    if p.lambda_:
        body = draw(st.sampled_from(["$x", "$x.qty", "$x.sku", "$x.unit_price", "true", "$x.qty > 1"]))
        return f"$x => {body}"
    if p.table:
        return draw(st.sampled_from(["T", "NOPE"]))
    if p.literal:
        if p.choices:
            return _quote(draw(st.sampled_from([*p.choices, "SIDEWAYS"])))
        if Kind.INT in p.kinds:
            return draw(st.sampled_from(LITERAL_INT))
        return _quote(draw(st.sampled_from(LITERAL_TEXT)))
    kind = draw(st.sampled_from(p.kinds))
    if depth < 2 and draw(st.integers(0, 3)) == 0:
        return draw(_call(depth + 1))
    return draw(st.sampled_from(SOURCES.get(kind, SOURCES[Kind.ANY])))


@st.composite
def _call(draw: st.DrawFn, depth: int = 0) -> str:
    fn = draw(st.sampled_from(FUNCTIONS))
    count = draw(st.integers(fn.min_args, fn.min_args + 2))
    if not any(p.variadic for p in fn.params):
        count = min(count, len(fn.params))
    args = [draw(_arg(fn, i, depth)) for i in range(count)]
    return f"{fn.name}({', '.join(a for a in args if a is not None)})"


OPERATORS = ["+", "-", "*", "/", "<", "<=", ">", ">=", "==", "!=", "??", "and", "or"]


@st.composite
def _binary(draw: st.DrawFn) -> str:
    """An operator between two operands of any kind (calls too): values of run-time type meet
    Python's operators here, as they meet functions in _call."""
    operand = st.one_of(_call(1), st.sampled_from([s for kind in SOURCES.values() for s in kind if s != "omit"]))
    return f"({draw(operand)}) {draw(st.sampled_from(OPERATORS))} ({draw(operand)})"


@st.composite
def specs(draw: st.DrawFn, operators: bool = True) -> str:
    fmt = draw(st.sampled_from(["json", "xml", "form"]))
    fields = draw(st.lists(st.one_of(_call(), _binary()) if operators else _call(), min_size=1, max_size=3))
    head, _, _ = _spec("", fmt).rpartition("  f0?")
    return head + "".join(f"  f{i}?: >-\n    {expr}\n" for i, expr in enumerate(fields))


@SETTINGS
@given(specs())
# What the generator found (stop 22): values of unknown type (parse_json's) reaching abs() and
# sum's lambda unchecked (Python's own TypeError), and a pad width computed from the input making a
# string of terabytes (MemoryError).
@example(_spec("abs(parse_json(to_json(buyer)))"))
@example(_spec("abs(parse_json(to_json(order_no)))"))
@example(_spec("sum(parse_json(to_json(items)), $x => $x.sku)"))
@example(_spec("substring(parse_json(to_json(items)), 1)"))
@example(_spec("epoch_millis(parse_json(to_json(order_no)))"))
@example(_spec('pad_left(order_no, epoch_millis(now()), "x")'))
@example(_spec('pad_right(order_no, epoch_millis(now()))', "xml"))
@example(_spec("(parse_json(to_json(buyer))) > (1)"))
@example(_spec('("a") + (parse_json(to_json(buyer)))'))
def test_a_spec_check_accepts_compiles_loads_and_runs(text: str) -> None:
    report = check_file("gen.yaml", text)
    if not report.ok:
        return
    mapping = compile_file("gen.yaml", text)  # check said yes: compile and load must too
    for order in ORDERS:
        try:
            mapping.render(order, clock=CLOCK)
        except TransformError as exc:
            cause = exc.__cause__
            assert not isinstance(cause, INTERNAL) or isinstance(cause, WrongKind), \
                f"{text}\n→ internal error {cause!r} on {order['order_no']}"
        except DockyardError:
            pass


def test_the_generator_reaches_clean_specs_and_every_function() -> None:
    """The property above is worth something only if clean specs come out of the generator, for
    every function of the registry."""
    clean: set[str] = set()

    @settings(database=None, max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
    @given(specs(operators=False))
    def collect(text: str) -> None:
        if check_file("gen.yaml", text).ok:
            clean.update(name for name in REGISTRY if f"{name}(" in text)

    collect()
    missing = set(REGISTRY) - clean
    assert len(missing) <= len(REGISTRY) // 4, f"no clean spec used: {sorted(missing)}"
