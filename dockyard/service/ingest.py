"""Reading orders from the order middle-platform: limits, JSON with exact decimals, the order
schema, routing and the fingerprint. Pure functions; the HTTP handler in app.py records what they
decide.

Every reason an order is refused is collected (not only the first), so that whoever fixes the
order upstream sees all of it at once, and the refused body is kept in quarantine with them.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import uuid
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from decimal import Decimal
from importlib import resources
from typing import Any

import fastjsonschema
import jsonschema
import orjson

from dockyard.runtime import safe_json
from dockyard.runtime.dates import parse_datetime
from dockyard.runtime.errors import DockyardError
from dockyard.runtime.functions import to_decimal
from dockyard.runtime.mapping import _message, _path_text
from dockyard.runtime.schema_patterns import validator_class
from dockyard.service.config import LimitsConfig
from dockyard.service.routing import Router

__all__ = ["BodyError", "Checked", "OrderChecker", "OrderValidator", "fingerprint", "inline_refs",
           "order_no_problem", "parse_json_body", "read_body", "storable_order", "storable_text"]


class BodyError(ValueError):
    """The request body is not usable at all (not JSON, too deep, wrong shape)."""


# What an order number may be: it ends up in URLs (/orders/{order_no}), file names of reports and
# the warehouses' own keys, so it is short, ASCII, and free of '/', '?', '#', '%' and spaces.
ORDER_NO_MAX = 64
ORDER_NO = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:+&=@~-]*")
REASON_MAX = 300  # characters of one reason: a refused value is shown, not echoed in full


def read_body(body: bytes, limits: LimitsConfig) -> safe_json.Parsed:
    """The JSON value of a request body, with every number bounded before it is built (see
    dockyard.runtime.safe_json). Problems inside one order (a refused number, a repeated key, a
    lone surrogate or control character) do not refuse the body: `OrderChecker.check` finds them,
    so that the other orders of a batch still go through."""
    try:
        return safe_json.loads(body, max_depth=limits.max_depth, strict=False)  # type: ignore[no-any-return]
    except safe_json.JsonProblem as exc:  # "not UTF-8 text …", "not valid JSON: …", "nests deeper than …"
        text = str(exc)
        raise BodyError(f"the body {text}" if text.startswith("nests") else f"the body is {text}") from None


def parse_json_body(body: bytes, limits: LimitsConfig) -> Any:
    """`read_body`'s value (refused numbers stay in it as markers, which `OrderChecker.check` reports)."""
    return read_body(body, limits).value


def storable_text(text: str) -> str:
    """Refused input as it is kept in quarantine: what cannot be stored (NUL, a lone surrogate) is
    written as its \\uXXXX escape."""
    return safe_json.escape_bad(text)


def storable_order(order: Any) -> str:
    """JSON text of a refused order of a batch, for quarantine: bad text escaped, refused numbers
    shown as they were sent."""
    return storable_text(json.dumps(order, ensure_ascii=False, default=_shown))


def _shown(value: Any) -> Any:
    if isinstance(value, Decimal):
        return format(value, "f") if value.is_finite() and abs(value.adjusted()) <= 64 else str(value)
    return repr(value)


def order_no_problem(value: Any) -> str | None:
    """Why `value` cannot be an order number, or None."""
    if not isinstance(value, str):
        return None  # the schema says so
    if len(value) > ORDER_NO_MAX:
        return f"order_no: {len(value)} characters, at most {ORDER_NO_MAX}"
    if value and not ORDER_NO.fullmatch(value):
        return (f"order_no: {_cut(repr(value))} may hold only ASCII letters, digits and . _ : + & = @ ~ -, "
                "starting with a letter or digit")
    return None


def _cut(text: str, limit: int = REASON_MAX) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def fingerprint(order: Mapping[str, Any]) -> str:
    """What "the same order" means: sha256 of the order's canonical JSON (keys sorted).

    The fingerprint is stored and compared with the one of a later copy of the order (duplicate or
    changed?), also across versions, so its bytes are fixed: those of `json.dumps(order,
    sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)` in UTF-8. orjson
    writes the same bytes four times faster for what `safe_json` reads (text, ints, Decimals,
    bools, nulls, objects, arrays: the same escapes, keys sorted by code point, a Decimal through
    `str`); a value it would write otherwise (a float, a datetime, an enum, ...) or cannot write
    (an int beyond 64 bits, a lone surrogate, a key that is not text) takes the json path."""
    if _orjson_writes_as_json(order):
        try:
            data = orjson.dumps(order, default=str, option=orjson.OPT_SORT_KEYS)
        except orjson.JSONEncodeError:  # beyond 64 bits, a lone surrogate, a non-text key, too deep
            pass
        else:
            return hashlib.sha256(data).hexdigest()
    return _json_fingerprint(order)


def _json_fingerprint(order: Any) -> str:
    """The fingerprint by its definition (`json.dumps`): what the orjson path must give."""
    text = json.dumps(order, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# Types orjson writes byte for byte as json.dumps(..., ensure_ascii=False, default=str) does (a
# test compares both on every code point and on arbitrary documents). Exact types, not
# isinstance: orjson writes a float, an enum or a datetime its own way.
_AS_JSON_LEAVES = frozenset({str, int, bool, type(None), Decimal, safe_json.ExponentDecimal, safe_json.Refused})
_AS_JSON_NODES = frozenset({dict, list, safe_json.DuplicateKeys})


def _orjson_writes_as_json(value: Any) -> bool:
    leaves, nodes = _AS_JSON_LEAVES, _AS_JSON_NODES
    stack = [value]
    while stack:
        node = stack.pop()
        kind = type(node)
        if kind in leaves:
            continue
        if kind not in nodes:
            return False
        stack.extend(node.values() if kind is not list else node)
    return True


def order_schema() -> dict[str, Any]:
    text = resources.files("dockyard.dsl").joinpath("schemas/order.schema.json").read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


@dataclass(frozen=True)
class Checked:
    order: dict[str, Any] | None  # None when refused
    order_no: str | None
    warehouse: str | None
    route: str
    reasons: tuple[str, ...]
    fingerprint: str = ""
    tracking_id: str = ""


# A decimal text as orders write it: no sign but `-`, no spaces, ASCII digits. For such a text the
# verdict of `to_decimal` is known without building a Decimal: it reads it, and its coefficient has
# the digits written less the leading zeros (`007.50` -> 750; all zeros -> 0, one digit).
_PLAIN_DECIMAL = re.compile(r"-?([0-9]+)(?:\.([0-9]+))?")


def _is_decimal(value: object) -> bool:
    """Money and quantities: a finite decimal in plain form, as the order schema describes it (a
    number written with an exponent, NaN or a refused literal is not one)."""
    if isinstance(value, str):
        plain = _PLAIN_DECIMAL.fullmatch(value)
        if plain is not None:  # nine of these per order: the regex costs a sixth of to_decimal
            whole, fraction = plain.group(1, 2)
            return len((whole + (fraction or "")).lstrip("0")) <= safe_json.MAX_DIGITS
    return _is_decimal_read(value)  # anything else as before: `+5`, ` 5 `, `x`, a Decimal


def _is_decimal_read(value: object) -> bool:
    """`_is_decimal` by reading the value (`to_decimal`): the general path, and what the plain-text
    shortcut must agree with."""
    if isinstance(value, str):
        try:
            number = to_decimal(value)
        except (ValueError, ArithmeticError, DockyardError):
            return False
        return len(number.as_tuple().digits) <= safe_json.MAX_DIGITS
    if isinstance(value, safe_json.ExponentDecimal):
        return False
    if isinstance(value, Decimal | float):
        return bool(value == value and value not in _INFINITIES)
    return not isinstance(value, safe_json.Refused)


_INFINITIES = (Decimal("Infinity"), Decimal("-Infinity"))


def _type_name(value: Any) -> str:
    return "a number that was refused" if isinstance(value, safe_json.Refused) else type(value).__name__


def _is_datetime(value: object) -> bool:
    if isinstance(value, str):  # (parse_datetime imported once: an import here took 80% of the check)
        try:
            parse_datetime(value)
        except (ValueError, DockyardError):
            return False
    return True


# Keywords beside a `$ref` that say nothing about validity: a `$ref` with only these beside it is
# its target, written in place. (Not `default`: fastjsonschema may write defaults into the data.)
_ANNOTATIONS = frozenset({"description", "title", "$comment", "examples", "deprecated"})
_DATA_KEYWORDS = frozenset({"enum", "const", "examples", "default"})  # values, not schemas: left as they are
# Keywords that change what `#/$defs/NAME` points at below them: a schema with one of these other
# than the root's `$id` is compiled as it is.
_SCOPE_KEYWORDS = frozenset({"$id", "$anchor", "$dynamicAnchor", "$dynamicRef", "$recursiveRef", "$recursiveAnchor"})


def inline_refs(schema: Mapping[str, Any]) -> dict[str, Any]:
    """`schema` with each `{"$ref": "#/$defs/NAME"}` replaced by a copy of that definition (its
    annotations kept). The same verdict: a local `$ref` applies its target where it stands. A
    recursive definition, a `$ref` elsewhere or one with validation keywords beside it stays.
    A copy throughout: fastjsonschema rewrites the `$ref`s of what it compiles in place."""
    defs = schema.get("$defs")
    defs = defs if isinstance(defs, dict) else {}

    def scoped(node: Any, root: bool) -> bool:
        if isinstance(node, list):
            return any(scoped(v, False) for v in node)
        if not isinstance(node, dict):
            return False
        keys = set(node) - {"$id"} if root else set(node)
        return bool(keys & _SCOPE_KEYWORDS) or any(scoped(v, False) for v in node.values())

    if scoped(schema, True):
        return copy.deepcopy(dict(schema))

    def walk(node: Any, inlining: tuple[str, ...]) -> Any:
        if isinstance(node, list):
            return [walk(v, inlining) for v in node]
        if not isinstance(node, dict):
            return node
        ref = node.get("$ref")
        name = ref[len("#/$defs/"):] if isinstance(ref, str) and ref.startswith("#/$defs/") else None
        if (name is not None and isinstance(defs.get(name), dict) and name not in inlining
                and "/" not in name and "~" not in name and "%" not in name
                and set(node) - {"$ref"} <= _ANNOTATIONS):
            target = walk(defs[name], (*inlining, name))
            return {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        return {k: copy.deepcopy(v) if k in _DATA_KEYWORDS else walk(v, inlining) for k, v in node.items()}

    inlined: dict[str, Any] = walk(dict(schema), ())
    return inlined


class OrderValidator:
    """The order schema, checked twice as fast as it needs to be right: fastjsonschema compiles
    the schema to Python and gives the verdict (about 30x faster than jsonschema on an order);
    only an order it refuses is checked again by jsonschema, which lists every reason. Both use
    the same format checks. The order schema uses only keywords both read the same way (a test
    checks that their verdicts agree on generated and mutated orders)."""

    def __init__(self, schema: Mapping[str, Any]) -> None:
        formats = jsonschema.FormatChecker(formats=())
        formats.checks("decimal")(_is_decimal)
        formats.checks("date-time")(_is_datetime)
        # `$` in a pattern as fastjsonschema (and ECMA-262) reads it, so that every order it refuses
        # is refused here too, with the reason (runtime/schema_patterns.py)
        self.full = validator_class()(schema, format_checker=formats)
        # Only the verdict is used (`valid`), so the exceptions carry no details, and `$defs` are
        # written in place: fastjsonschema calls a function per `$ref` and builds its path
        # argument with `.format(**locals())` in each line of `items`, even for a valid order
        # (the nine money fields of a three-line order were half of its time).
        self.fast = fastjsonschema.compile(inline_refs(schema), formats={"decimal": _is_decimal,
                                                                         "date-time": _is_datetime},
                                           detailed_exceptions=False, use_default=False)

    def valid(self, document: Any) -> bool:
        try:
            self.fast(document)
        except fastjsonschema.JsonSchemaException:
            return False
        return True

    def reasons(self, document: Any, limit: int = 50, skip: Collection[str] = (), *,
                suspect: bool = False) -> list[str]:
        """Every reason `document` is refused, each naming its path; paths in `skip` (and below
        them) are left out, having been reported already. `suspect`: the body held a number
        written with an exponent, whose format fastjsonschema does not check (it checks formats
        of strings only): jsonschema gives the verdict on an order that holds one. The rest of
        what makes a body suspect needs no jsonschema: a refused literal fails fastjsonschema's
        type check wherever the schema gives a type, and bad text or a repeated key is not the
        schema's business (`safe_json.problems` reports them). So an order of a suspect body with
        no such number is judged as in any other body; one emoji escaped as a surrogate pair
        (`\\ud83d\\ude00`) used to cost every order of its batch 400-500 µs of jsonschema."""
        fast_says_valid = self.valid(document)
        if fast_says_valid and not (suspect and _holds_exponent(document)):
            return []
        reasons: list[str] = []
        for err in sorted(self.full.iter_errors(document), key=lambda e: [str(p) for p in e.absolute_path]):
            path = _path_text(err.absolute_path)
            if any(path == s or path.startswith((s + ".", s + "[")) for s in skip):
                continue
            if isinstance(err.instance, safe_json.ExponentDecimal) and err.validator == "format":
                message = f"{err.instance} is written with an exponent; a plain decimal is expected (such as 159.00)"
            else:
                message = _message(err)
            reasons.append(_cut(f"{path or '(the order)'}: {message}"))
            if len(reasons) >= limit:
                reasons.append("… (more problems not listed)")
                break
        if reasons or skip or fast_says_valid:
            return reasons
        return ["the order does not match the order schema"]


def _holds_exponent(value: Any) -> bool:
    """Whether a number written with an exponent is anywhere in `value`."""
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, safe_json.ExponentDecimal):
            return True
    return False


class OrderChecker:
    def __init__(self, router: Router, limits: LimitsConfig, schema: Mapping[str, Any] | None = None) -> None:
        self.router = router
        self.limits = limits
        self.validator = OrderValidator(schema or order_schema())

    def check(self, order: Any, *, suspect: bool = True) -> Checked:
        """The verdict on one order. `suspect=False` (from `read_body`: nothing in the body can be
        hostile) skips the walk that looks for refused numbers, repeated keys and bad text."""
        if not isinstance(order, dict):
            return Checked(None, None, None, "", (f"an order must be a JSON object, not {_type_name(order)}",))
        raw_no = order.get("order_no")
        reasons: list[str] = []
        reported: list[str] = []  # paths whose problem is already given
        if suspect:
            for path, why in safe_json.problems(order):
                reasons.append(_cut(f"{path or '(the order)'}: {why}"))
                reported.append(path)
        bad_no = None if "order_no" in reported else order_no_problem(raw_no)
        if bad_no is not None:
            reasons.append(bad_no)
            reported.append("order_no")
        order_no = raw_no if isinstance(raw_no, str) and raw_no and "order_no" not in reported else None
        items = order.get("items")
        if isinstance(items, list) and len(items) > self.limits.max_lines:
            reasons.append(f"items: {len(items)} lines, more than the limit of {self.limits.max_lines}")
        else:
            reasons += self.validator.reasons(order, skip=reported, suspect=suspect)
        if reasons:
            return Checked(None, order_no, None, "", tuple(reasons))
        warehouse, route = self.router.decide(order)
        if warehouse is None:
            return Checked(None, order_no, None, "", ("no routing rule matches this order and no default rule "
                                                      f"is configured (shop {order.get('shop_code')!r}, "
                                                      f"channel {order.get('channel')!r})",))
        return Checked(order, order_no, warehouse, route, (), fingerprint(order),
                       uuid.uuid4().hex)
