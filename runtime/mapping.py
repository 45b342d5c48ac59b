"""A compiled mapping at run time: runs the generated `transform`, and turns every failure inside
it into a `TransformError` that names the spec location, the output field and the business key.

It also validates inputs against the source schema on request, checks the caller's context
values, injects the clock, serializes the document, and explains where each value came from.
"""

from __future__ import annotations

import decimal
import types
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from decimal import Decimal

from dockyard.runtime.api import MissingValue
from dockyard.runtime.errors import ContextError, DockyardError, InputError, TransformError
from dockyard.runtime.functions import MONEY
from dockyard.runtime.serialize import _json_default, serialize, to_json_bytes
from dockyard.runtime.target import Target

# Without `typing` at run time, which costs a fresh process about 3.5 ms (see `records`).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, NamedTuple

    import jsonschema
else:
    from dockyard.runtime.records import NamedTuple

__all__ = ["Clock", "CompiledMapping", "FieldExplanation", "load_module", "schema_problems"]

Clock = Callable[[], datetime]

# Money arithmetic must not depend on whatever decimal context the host thread has set. Modules of
# this compiler compute it in MONEY themselves (meta "money": "fixed"); for a module of an older
# compiler, which uses Python's operators, the runtime enters a copy of it around each call when
# the thread's context is not safe for money.
_DECIMAL_CONTEXT = MONEY.copy()
_EMPTY: Mapping[str, Any] = types.MappingProxyType({})


def _context_is_safe(_get: Callable[[], decimal.Context] = decimal.getcontext,
                     _invalid: type[decimal.DecimalException] = decimal.InvalidOperation,
                     _by_zero: type[decimal.DecimalException] = decimal.DivisionByZero,
                     _overflow: type[decimal.DecimalException] = decimal.Overflow) -> bool:
    """Whether the thread's decimal context already computes money as ours does. Entering a
    local context costs about ten times this check, so it is entered only when needed. (The
    defaults make every name a local read: this runs once per order.)"""
    c = _get()
    traps = c.traps
    return c.prec >= 28 and c.Emax >= 999999 and traps[_invalid] and traps[_by_zero] and traps[_overflow]


# A value of exactly one of these classes is accepted at once; a subclass is checked with isinstance.
_CONTEXT_TYPES: dict[str, tuple[type, ...]] = {"string": (str,), "int": (int,), "decimal": (Decimal, int, str),
                                               "bool": (bool,)}
# The one class per kind that check_context passes through unchanged (a decimal as text or int is converted).
_EXACT_CONTEXT_CLASS: dict[str, type] = {"string": str, "int": int, "decimal": Decimal, "bool": bool}
_getcontext = decimal.getcontext
_INVALID, _BY_ZERO, _OVERFLOW = decimal.InvalidOperation, decimal.DivisionByZero, decimal.Overflow


def system_clock() -> datetime:
    return datetime.now(UTC)


def load_module(source: str | bytes, filename: str, module_name: str, code: types.CodeType | None = None, *,
                on_disk: bool = False) -> types.ModuleType:
    """Compile generated source into a fresh module (or run `code`, compiled from that source
    before). The source is the compiler's own output, never input data; linecache gets it so
    that tracebacks show the generated lines (`on_disk`: the file at `filename` holds exactly
    this source, verified, and linecache reads it from there when a traceback needs it)."""
    if code is None:
        code = compile(source, filename, "exec", dont_inherit=True)
    module = types.ModuleType(module_name)
    module.__file__ = filename
    if not on_disk:
        if isinstance(source, bytes):
            source = source.decode("utf-8")
        import linecache  # here, not at the top: loading a bundle never needs it

        linecache.cache[filename] = (len(source), None, source.splitlines(keepends=True), filename)
    exec(code, module.__dict__)  # noqa: S102 - generated code, checked by compile() above
    return module


def schema_problems(schema: Mapping[str, Any], document: Any, limit: int = 20) -> tuple[tuple[str, str], ...]:
    """Every way `document` breaks `schema`, as (path, message), path written like items[2].qty.
    jsonschema is imported here, not with the module: loading and running mappings never needs it."""
    from dockyard.runtime.schema_patterns import validator_class

    validator = validator_class()(schema, format_checker=_format_checker())
    problems = []
    for err in sorted(validator.iter_errors(document), key=lambda e: [str(p) for p in e.absolute_path]):
        problems.append((_path_text(err.absolute_path), _message(err)))
        if len(problems) >= limit:
            break
    return tuple(problems)


def _path_text(path: Any) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _message(err: jsonschema.ValidationError) -> str:
    if err.validator == "required":
        return str(err.message).replace(" is a required property", " is required but missing")
    if err.validator == "type":
        return f"{err.instance!r} is not of type {err.validator_value}"
    is_decimal = isinstance(err.schema, Mapping) and err.schema.get("format") == "decimal"
    if err.validator in ("format", "pattern") and is_decimal:
        return f"{err.instance!r} is not a decimal number"
    return str(err.message)


_FORMATS: jsonschema.FormatChecker | None = None


def _format_checker() -> jsonschema.FormatChecker:
    global _FORMATS
    if _FORMATS is None:
        import jsonschema

        checker = jsonschema.FormatChecker()

        @checker.checks("decimal", raises=(ValueError, TypeError))
        def _decimal(value: object) -> bool:
            if isinstance(value, str):
                from dockyard.runtime.functions import to_decimal

                to_decimal(value)
            return True

        @checker.checks("date-time", raises=(ValueError, TypeError))
        def _datetime(value: object) -> bool:
            if isinstance(value, str):
                from dockyard.runtime.dates import parse_datetime

                parse_datetime(value)
            return True

        _FORMATS = checker
    return _FORMATS


class FieldExplanation(NamedTuple):
    """One output value and where it came from. (A NamedTuple: the runtime avoids importing
    dataclasses and typing, which loading a bundle would otherwise pay for.)"""

    path: str  # concrete output path, e.g. orderLines[0].actualPrice
    value: Any
    spec: str  # file:line:col of the expression
    sources: tuple[tuple[str, Any], ...]  # (concrete source path, its value in this input)
    lets: tuple[str, ...]
    tables: tuple[str, ...]
    context: tuple[str, ...]
    clock: bool


class CompiledMapping:
    """What `compile_file` and `load_bundle` give: `transform(order) -> dict` and friends."""

    def __init__(self, module: types.ModuleType, source: str | bytes,
                 source_schema: Mapping[str, Any] | None) -> None:
        self.module = module
        # A bundle hands over the module's verified bytes: decoding 100 modules' text that only
        # `dockyard show` reads would be ~2 ms of a load's 50 ms budget. See `source`.
        self._source = source
        self.source_schema = source_schema
        meta: dict[str, Any] = module.__dockyard_mapping__
        self.meta = meta
        self.name: str = meta["name"]
        self.version: str = meta["version"]
        self.spec_path: str = meta["spec"]
        self.target: Target = module.TARGET
        self._fn = module.transform
        # Whether the generated code computes money in MONEY itself (no decimal-context check needed).
        self._money_fixed = meta.get("money") == "fixed"
        # Modules of this compiler record explain's lineage in `transform_traced` only; a module
        # of the 1.0 bundle format has one `transform` that does both.
        self._traced = getattr(module, "transform_traced", module.transform)
        # Whether a document holds no None and no float, judged from what the compiler knows: the
        # JSON writer's check, and the JSON form of any target's document (its fingerprint). Absent
        # in modules of the 1.0 bundle format, and in older modules of targets other than JSON: the
        # writer then checks every value. `_json_plain` is set for JSON targets only: it is what
        # makes render() one call around orjson.
        self._plain_check: Callable[[Any], bool] | None = getattr(module, "json_plain", None)
        self._json_plain = self._plain_check if self.target.format == "json" else None
        self._filename = module.__file__
        # A mapping whose every document is the same (the compiler says so: only literals, no
        # condition, no context) is serialized once, on the first render that succeeds.
        self._constant = bool(meta.get("constant")) and not meta["context"]
        self._rendered: bytes | None = None
        self._fields: tuple[tuple[str, int, int, str], ...] = module.__dockyard_fields__
        self._sourcemap: dict[int, int] = module.__dockyard_sourcemap__
        self._key_path: tuple[str | int, ...] = tuple(meta["key"])
        self._context: tuple[tuple[str, str, bool], ...] = tuple(meta["context"])
        # (name, class) per declared context value: a caller's dict holding each of them with
        # exactly that class is what check_context would hand back unchanged (anything else, a
        # None, a subclass or a decimal given as text included, goes through check_context).
        self._context_classes: tuple[tuple[str, type], ...] = tuple(
            (name, _EXACT_CONTEXT_CLASS[kind]) for name, kind, _ in self._context)
        # The compiler's `transform()` in one call (modules of this compiler): it checks what this
        # method checks, for this mapping's context values, and hands anything else to this method.
        # As an attribute of the instance it is what `mapping.transform(...)` finds first.
        entry = getattr(module, "transform_entry", None)
        if entry is not None and type(self).transform is CompiledMapping.transform:
            # (An entry of an older compiler also checks the thread's decimal context: it takes the helpers.)
            helpers: dict[str, Any] = {} if self._money_fixed else {
                "_getcontext": _getcontext, "_invalid": _INVALID, "_by_zero": _BY_ZERO, "_overflow": _OVERFLOW}
            fast = entry(
                _general=types.MethodType(CompiledMapping.transform, self), _translate=self._translate,
                _refused=DockyardError, _system_clock=system_clock, **helpers)
            fast.__doc__ = CompiledMapping.transform.__doc__  # help(mapping.transform) reads as before
            vars(self)["transform"] = fast
        # A JSON mapping's render() as one call around transform() and orjson (see _json_render).
        if (self._json_plain is not None and self.target.wrap is None and not self._constant
                and type(self).render is CompiledMapping.render and type(self)._render is CompiledMapping._render):
            vars(self)["render"] = self._json_render()

    def __repr__(self) -> str:
        return f"<CompiledMapping {self.name} {self.version} from {self.spec_path}>"

    @property
    def source(self) -> str:
        """The generated module's text."""
        if isinstance(self._source, bytes):
            self._source = self._source.decode("utf-8")
        return self._source

    # -- running --------------------------------------------------------------------------
    def transform(self, order: Mapping[str, Any], context: Mapping[str, Any] | None = None,
                  clock: Clock | datetime | None = None, *, validate: bool = False,
                  _trace: list[tuple[int, int, int, Any]] | None = None) -> dict[str, Any]:
        """The output document for one input. `validate=True` checks the source schema first
        (the service does this at ingest; a dry-run always does)."""
        if order.__class__ is not dict and not isinstance(order, Mapping):  # the ABC check is slow
            raise InputError(f"the input must be a JSON object, not {type(order).__name__}")
        if validate and self.source_schema is not None:
            problems = schema_problems(self.source_schema, order)
            if problems:
                raise InputError("the input does not match the source schema", self.business_key(order), problems)
        ctx = self._checked_context(context)
        clk = system_clock if clock is None else _as_clock(clock)
        if _trace is not None:
            traced: dict[str, Any] = self.call(self._traced, order, ctx, clk, _trace)
            return traced
        try:  # `call`, written out, and `_context_is_safe` too: two calls less per order
            if self._money_fixed:
                result: dict[str, Any] = self._fn(order, ctx, clk)
                return result
            c = _getcontext()
            traps = c.traps
            if c.prec >= 28 and c.Emax >= 999999 and traps[_INVALID] and traps[_BY_ZERO] and traps[_OVERFLOW]:
                result = self._fn(order, ctx, clk)
                return result
            with decimal.localcontext(_DECIMAL_CONTEXT):
                result = self._fn(order, ctx, clk)
                return result
        except MissingValue as exc:
            raise self._translate(exc, order) from None
        except DockyardError:
            raise
        except Exception as exc:
            raise self._locate(exc, order) from exc

    def bind(self, context: Mapping[str, Any] | None = None, clock: Clock | datetime | None = None
             ) -> Callable[[Mapping[str, Any]], dict[str, Any]]:
        """`transform` with the context checked and the clock chosen once: the returned callable
        takes only the order, and each call costs the generated function plus error translation
        (which stays: it keeps errors spec-located), and for a module of an older compiler the
        decimal-context check. The context is checked here, once, and the values the spec
        declares are copied: changing the caller's dict afterwards changes nothing here (else a
        value set to None or to another class later would pass unchecked)."""
        ctx = self._checked_context(context)
        if ctx is context:  # the caller's own dict, handed back unchanged by the check
            ctx = {name: value for name, _kind, _required in self._context if (value := ctx.get(name)) is not None}
        clk = system_clock if clock is None else _as_clock(clock)
        fn: Callable[..., dict[str, Any]] = self._fn
        if not self._money_fixed:  # an older compiler's module: money in the runtime's context, as `call` does
            generated = fn

            def fn(order: Mapping[str, Any], ctx: Mapping[str, Any], clk: Clock) -> dict[str, Any]:
                if _context_is_safe():
                    return generated(order, ctx, clk)
                with decimal.localcontext(_DECIMAL_CONTEXT):
                    return generated(order, ctx, clk)

        def run(order: Mapping[str, Any]) -> dict[str, Any]:
            if order.__class__ is not dict and not isinstance(order, Mapping):
                raise InputError(f"the input must be a JSON object, not {type(order).__name__}")
            try:
                return fn(order, ctx, clk)
            except MissingValue as exc:  # translated exactly as `call` does
                raise self._translate(exc, order) from None
            except DockyardError:
                raise
            except Exception as exc:
                raise self._locate(exc, order) from exc

        return run

    def call(self, fn: Callable[..., Any], order: Mapping[str, Any], *args: Any) -> Any:
        """Run a function of the generated module on `order`; every failure inside it becomes a
        TransformError naming the spec location, the field and the business key."""
        try:
            if self._money_fixed or _context_is_safe():
                return fn(order, *args)
            with decimal.localcontext(_DECIMAL_CONTEXT):
                return fn(order, *args)
        except MissingValue as exc:
            raise self._translate(exc, order) from None
        except DockyardError:
            raise
        except Exception as exc:  # a failure inside generated code: name the spec, not the Python line
            raise self._locate(exc, order) from exc

    def _translate(self, exc: Exception, order: Mapping[str, Any]) -> Exception:
        """The error to raise for a failure inside generated code (a DockyardError as it is)."""
        if isinstance(exc, MissingValue):
            file, line, col, path = self._fields[exc.field_index]
            return TransformError("required value is missing", location=f"{file}:{line}:{col}", field=path,
                                  key=self.business_key(order), mapping=self.name,
                                  problems=self._input_problems(order))
        if isinstance(exc, DockyardError):
            return exc
        return self._locate(exc, order)

    def render(self, order: Mapping[str, Any], context: Mapping[str, Any] | None = None,
               clock: Clock | datetime | None = None, *, validate: bool = False) -> bytes:
        """The serialized document (JSON, XML or form), exactly as it would be sent."""
        if self._constant and not validate and order.__class__ is dict and (context is None or
                                                                         context.__class__ is dict):
            rendered = self._rendered
            if rendered is None:
                rendered = self._rendered = self._render(order, context, clock, validate)
            return rendered
        return self._render(order, context, clock, validate)

    def _json_render(self) -> Callable[..., bytes]:
        """`render` for a JSON target without a wrap: what `_render` does, without its calls in
        between (the method, `to_json_bytes` and its keyword): the instance's `transform`, the
        module's `json_plain`, then orjson with the writer's hook. A document that json_plain
        does not vouch for, or that orjson refuses, goes to `to_json_bytes` as before, which
        checks it and names the path of the problem; so bytes and errors are the same."""
        transform = self.transform  # the generated entry, when the module has one
        check = self._json_plain
        assert check is not None
        dumps: Callable[..., bytes] | None = None
        option = 0

        def render(order: Mapping[str, Any], context: Mapping[str, Any] | None = None,
                   clock: Clock | datetime | None = None, *, validate: bool = False) -> bytes:
            nonlocal dumps, option
            # Positional when there is no validate (the usual call): a keyword costs CPython 3.11
            # a slower call of the entry, about 2% of a reference document's render.
            doc = transform(order, context, clock, validate=validate) if validate else transform(order, context, clock)
            if check(doc) is not True:
                return to_json_bytes(doc)
            if dumps is None:  # orjson is imported on first use (see runtime.serialize)
                from dockyard.runtime.serialize import _orjson

                oj = _orjson()
                dumps, option = oj.dumps, oj.OPT_PASSTHROUGH_DATETIME
            try:
                return dumps(doc, default=_json_default, option=option)
            except TypeError:  # orjson's JSONEncodeError: the writer names what it cannot write
                return to_json_bytes(doc, plain=True)

        render.__doc__ = CompiledMapping.render.__doc__
        return render

    def _render(self, order: Mapping[str, Any], context: Mapping[str, Any] | None,
                clock: Clock | datetime | None, validate: bool) -> bytes:
        doc = self.transform(order, context, clock, validate=validate)
        check = self._json_plain
        if check is not None and self.target.wrap is None:  # JSON: straight to the writer
            return to_json_bytes(doc, plain=check(doc) is True)
        return serialize(doc, self.target, plain=self.json_plain(doc))

    def json_plain(self, doc: Any) -> bool:
        """Whether a document this mapping made holds no None and no float, so the JSON writer
        need not look (False when unsure, e.g. for a module of the 1.0 bundle format). Any target:
        every document also has a JSON form (`build_request`'s fingerprint)."""
        check = self._plain_check
        return check is not None and check(doc) is True

    def parse_input(self, data: bytes | str) -> Any:
        """Raw input (an order, a response, a callback) read by the spec's source format."""
        from dockyard.runtime.inputs import parse_input

        return parse_input(data, self.meta.get("source_format", "json"), self.source_schema,
                           root=self.meta.get("source_root"))

    def business_key(self, order: Any) -> str | None:
        """The value at the spec's `source.key`, as errors name it; None when the input has no
        single value there (missing, or a list or object: never a dump of the message)."""
        value = order
        for part in self._key_path:
            if isinstance(part, int):
                value = value[part] if isinstance(value, list) and part < len(value) else None
            else:
                value = value.get(part) if isinstance(value, Mapping) else None
        if value is None or isinstance(value, Mapping | list | tuple):
            return None
        text = str(value)
        return text if len(text) <= 200 else text[:199] + "…"

    def _checked_context(self, context: Mapping[str, Any] | None) -> Mapping[str, Any]:
        """check_context's answer, found without it when the caller's dict holds every declared
        value with exactly its class (then check_context would return the dict unchanged)."""
        if context.__class__ is dict:
            for name, cls in self._context_classes:
                if context.get(name).__class__ is not cls:
                    return self.check_context(context)
            return context
        if context is None and not self._context:
            return _EMPTY
        return self.check_context(context)

    def check_context(self, context: Mapping[str, Any] | None) -> Mapping[str, Any]:
        """The context as the generated code reads it: every value the spec declares checked for
        its type, decimals given as text or int converted. The caller's mapping is returned as it
        is when nothing needs converting (generated code only reads it), so that a call with a
        context costs a few type checks, not a copy."""
        source: Mapping[str, Any] = _EMPTY if context is None else context
        converted: dict[str, Any] | None = None
        for name, kind, required in self._context:
            value = source.get(name)
            if value is None:
                if required:
                    raise ContextError(f"mapping {self.name} needs the context value {name!r}")
                continue
            allowed = _CONTEXT_TYPES[kind]
            if value.__class__ not in allowed and (
                    not isinstance(value, allowed) or (kind == "int" and isinstance(value, bool))):
                raise ContextError(f"context value {name!r} must be {kind}, not {type(value).__name__}")
            if kind == "decimal" and not isinstance(value, Decimal):
                from dockyard.runtime.functions import to_decimal

                converted = dict(source) if converted is None else converted
                converted[name] = to_decimal(value)
        return source if converted is None else types.MappingProxyType(converted)

    def _input_problems(self, order: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
        return schema_problems(self.source_schema, order) if self.source_schema is not None else ()

    def _locate(self, exc: Exception, order: Mapping[str, Any]) -> TransformError:
        tb = exc.__traceback__
        lineno = None
        while tb is not None:
            if tb.tb_frame.f_code.co_filename == self._filename:
                lineno = tb.tb_lineno
            tb = tb.tb_next
        index = self._sourcemap.get(lineno) if lineno is not None else None
        location = field = None
        if index is not None:
            file, line, col, field = self._fields[index]
            location = f"{file}:{line}:{col}"
        return TransformError(_describe(exc), location=location, field=field, key=self.business_key(order),
                              mapping=self.name, problems=self._input_problems(order))

    # -- lineage --------------------------------------------------------------------------
    def explain(self, order: Mapping[str, Any], context: Mapping[str, Any] | None = None,
                clock: Clock | datetime | None = None) -> tuple[dict[str, Any], list[FieldExplanation]]:
        """The document and, for each output value, the spec line and the input values it came from."""
        trace: list[tuple[int, int, int, Any]] = []
        doc = self.transform(order, context, clock, _trace=trace)
        loops: dict[int, tuple[str, str]] = self.module.__dockyard_loops__
        # (output list path, position) → source index, so `[]` paths can be made concrete.
        emitted: dict[tuple[str, int], int] = {}
        for loop_id, position, index, element in trace:
            out_path, src_path = loops[loop_id]
            emitted[(out_path, position)] = _source_index(order, src_path, index, element)
        lineage: dict[str, dict[str, Any]] = self.module.__dockyard_lineage__
        by_path: dict[str, tuple[str, dict[str, Any]]] = {}
        for file, line, col, path in self._fields:
            info = lineage.get(f"{line}:{col}")
            if info is not None and not path.endswith(("$each", "$where", "$when")) and "$" not in path.split(".")[-1]:
                by_path.setdefault(path, (f"{file}:{line}:{col}", info))
        result: list[FieldExplanation] = []
        for concrete, generic, value, positions in _leaves(doc):
            found = by_path.get(generic)
            if found is None:
                continue
            spec, info = found
            sources = []
            for src_path in info["paths"]:
                sources.extend(_concrete_sources(src_path, generic, positions, loops, emitted, order))
            result.append(FieldExplanation(concrete, value, spec, tuple(sources), tuple(info["lets"]),
                                           tuple(info["tables"]), tuple(info["context"]), bool(info["clock"])))
        return doc, result


def _source_index(order: Mapping[str, Any], src_path: str, index: int, element: Any) -> int:
    """The element's index in the input list. A loop over a filtered let counts its own
    positions, so the element is found by identity in the list the input really holds."""
    items = _read_path(order, src_path) if src_path and "[]" not in src_path else None
    if not isinstance(items, list):
        return index
    if index < len(items) and items[index] is element:
        return index
    for i, candidate in enumerate(items):
        if candidate is element:
            return i
    return index


def _as_clock(clock: Clock | datetime | None) -> Clock:
    if clock is None:
        return system_clock
    if isinstance(clock, datetime):
        if clock.tzinfo is None:
            raise ContextError("a fixed clock needs a UTC offset")
        fixed = clock
        return lambda: fixed
    return clock


def _describe(exc: Exception) -> str:
    if isinstance(exc, KeyError):
        return f"the input has no field {exc.args[0]!r}"
    if isinstance(exc, decimal.DivisionByZero | ZeroDivisionError):
        return "division by zero"
    if isinstance(exc, decimal.InvalidOperation):
        return "not a valid decimal operation (is a number in the input malformed?)"
    if isinstance(exc, AttributeError | TypeError):
        return f"a value in the input has the wrong type ({exc})"
    return str(exc) or type(exc).__name__


def _leaves(doc: Any, path: str = "", generic: str = "",
            positions: tuple[tuple[str, int], ...] = ()) -> list[tuple[str, str, Any, tuple[tuple[str, int], ...]]]:
    """(concrete path, generic path with [], value, ((list path, 1-based position), …)) per leaf."""
    out: list[tuple[str, str, Any, tuple[tuple[str, int], ...]]] = []
    if isinstance(doc, Mapping):
        for k, v in doc.items():
            key = str(k)
            out.extend(_leaves(v, f"{path}.{key}" if path else key, f"{generic}.{key}" if generic else key, positions))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out.extend(_leaves(v, f"{path}[{i}]", f"{generic}[]", (*positions, (generic, i + 1))))
    else:
        out.append((path, generic, doc, positions))
    return out


def _concrete_sources(src_path: str, generic: str, positions: tuple[tuple[str, int], ...],
                      loops: dict[int, tuple[str, str]], emitted: dict[tuple[str, int], int],
                      order: Mapping[str, Any]) -> list[tuple[str, Any]]:
    concrete = src_path
    for out_list, position in positions:
        index = emitted.get((out_list, position))
        for _id, (out_path, src_list) in loops.items():
            if out_path == out_list and index is not None and concrete.startswith(f"{src_list}[]"):
                concrete = f"{src_list}[{index}]" + concrete[len(src_list) + 2 :]
    if "[]" in concrete:
        return [(concrete, None)]
    return [(concrete, _read_path(order, concrete))]


def _read_path(doc: Any, path: str) -> Any:
    value = doc
    for part in path.replace("[", ".[").split("."):
        if not part:
            continue
        if part.startswith("["):
            idx = int(part[1:-1])
            value = value[idx] if isinstance(value, list) and -len(value) <= idx < len(value) else None
        else:
            value = value.get(part) if isinstance(value, Mapping) else None
    return value
