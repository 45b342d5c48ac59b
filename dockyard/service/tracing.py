"""OpenTelemetry spans for an order's path — ingest, each delivery attempt and its HTTP exchange,
each callback — when `opentelemetry` is installed *and* a tracer provider that exports something
is configured. Otherwise `span()` returns one shared null context and `enabled()` is False: no
tracer, no span, no context switch (the no-op API alone cost about 105 µs per order).

An order's steps run in different tasks and processes, joined only by the store, so the trace is
carried by the store too: the order's tracking id names its trace, and every span of the order is
started under a remote parent taken from it. A tracking id is either
  * 32 lowercase hex digits (128 random bits): the order's own trace, whose id it is; or
  * `<trace-id>-<parent-id>-<flags>`, the W3C `traceparent` of the request that brought the order
    in, without its version: the order's spans continue the caller's trace as children of the
    caller's span, sampled as the caller decided (`continued_tracking_id`).
Ingest, delivery and feedback therefore land in one trace in any backend, across restarts and
workers, with nothing else stored.

Configure the SDK and exporter as usual (`opentelemetry-instrument`, or the SDK in your own entry
point) before the service starts: `Service.start` calls `refresh()`, which looks at the global
tracer provider once; `enabled()` afterwards only reads a flag.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

_OTEL = False
try:  # optional: the service runs the same without it
    from opentelemetry import trace as _trace
    from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags, set_span_in_context
    from opentelemetry.trace.status import Status, StatusCode

    _OTEL = True
except ImportError:  # pragma: no cover - exercised where opentelemetry is absent
    pass

__all__ = ["NULL_SPAN", "continued_tracking_id", "enabled", "http_attributes", "http_result", "http_span",
           "parse_traceparent", "refresh", "span", "trace_id_of"]


class NullSpan:
    """What `span()` and `http_span()` yield when no spans are made: the few `Span` methods
    Dockyard calls, doing nothing, so call sites need no `if`."""

    __slots__ = ()

    def set_attribute(self, key: str, value: Any) -> None:
        return None

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        return None

    def set_status(self, *args: Any, **kwargs: Any) -> None:
        return None

    def record_exception(self, *args: Any, **kwargs: Any) -> None:
        return None

    def is_recording(self) -> bool:
        return False


NULL_SPAN = NullSpan()
_NULL = contextlib.nullcontext(NULL_SPAN)  # stateless: one instance serves every caller at once
_active: bool | None = None  # None: not looked at yet


def _exporting_provider() -> bool:
    """True when the global tracer provider would hand spans to someone: an SDK provider with at
    least one span processor, or a provider of another make (assumed to record). The API's proxy
    and no-op providers, and an SDK provider without processors (OTEL_TRACES_EXPORTER=none),
    would only make spans to throw away."""
    if not _OTEL:
        return False
    provider = _trace.get_tracer_provider()
    if isinstance(provider, _trace.ProxyTracerProvider | _trace.NoOpTracerProvider):
        return False
    multi = getattr(provider, "_active_span_processor", None)  # the SDK's; other makes lack it
    processors = getattr(multi, "_span_processors", None)
    if isinstance(processors, tuple):
        return bool(processors)
    return True


def refresh() -> bool:
    """Look at the tracer provider again (the service calls this when it starts, after the SDK is
    configured); returns whether spans are made from now on."""
    global _active
    _active = _exporting_provider()
    return _active


def enabled() -> bool:
    """Whether spans are made: a flag read, after the first call."""
    active = _active
    if active is None:
        active = refresh()
    return active


# -- trace context -----------------------------------------------------------------------------
_HEX32 = re.compile(r"[0-9a-f]{32}")
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?", re.DOTALL)
_CONTINUED = re.compile(r"([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")


def parse_traceparent(value: str | None) -> tuple[str, str, int] | None:
    """(trace id, parent span id, flags) of a W3C Trace Context `traceparent` header, or None when
    it is absent or not valid by the specification: version `ff`, an all-zero trace or span id,
    upper-case hex, a wrong length, or a version-00 header with anything after the flags."""
    if not value or len(value) > 512:
        return None
    match = _TRACEPARENT.fullmatch(value.strip(" \t"))
    if match is None:
        return None
    version, trace_id, span_id, flags, rest = match.groups()
    if version == "ff" or (version == "00" and rest is not None):
        return None
    if trace_id == "0" * 32 or span_id == "0" * 16:
        return None
    return trace_id, span_id, int(flags, 16)


def continued_tracking_id(headers: Mapping[str, str]) -> str | None:
    """The tracking id to give the orders of a request that carries a valid `traceparent`, so that
    their spans continue the caller's trace under the caller's span: `<trace-id>-<parent-id>-<flags>`.
    None when there is no valid one: each order then keeps its own random tracking id. Works with
    or without OpenTelemetry (logs carry the trace id either way)."""
    parsed = parse_traceparent(headers.get("traceparent"))
    if parsed is None:
        return None
    trace_id, span_id, flags = parsed
    return f"{trace_id}-{span_id}-{flags & 0xFF:02x}"


def trace_id_of(tracking_id: str | None) -> str | None:
    """The trace id (32 hex digits) within a tracking id of either form: what logs carry."""
    if tracking_id is None:
        return None
    return tracking_id[:32]


def _parent(tracking_id: str | None) -> Any:
    """The remote parent context a tracking id names, or None (a new trace)."""
    if not tracking_id:
        return None
    if len(tracking_id) == 32 and _HEX32.fullmatch(tracking_id):
        trace_id, span_id, flags = int(tracking_id, 16), int(tracking_id[16:], 16) or 1, TraceFlags.SAMPLED
    else:
        match = _CONTINUED.fullmatch(tracking_id)
        if match is None:
            return None
        trace_id, span_id, flags = int(match[1], 16), int(match[2], 16), int(match[3], 16) & TraceFlags.SAMPLED
    if not trace_id or not span_id:
        return None
    parent = SpanContext(trace_id=trace_id, span_id=span_id, is_remote=True, trace_flags=TraceFlags(flags))
    return set_span_in_context(NonRecordingSpan(parent))


# -- spans ---------------------------------------------------------------------------------------
_KINDS = ("internal", "server", "client", "producer", "consumer")


@contextlib.contextmanager
def _otel_span(name: str, context: Any, start_us: int | None, attributes: Mapping[str, Any],
               kind: str) -> Iterator[Any]:
    tracer = _trace.get_tracer("dockyard.service")
    clean = {k: v for k, v in attributes.items() if v is not None}
    start = None if start_us is None else start_us * 1000
    with tracer.start_as_current_span(name, context=context, kind=SpanKind[kind.upper()], attributes=clean,
                                      start_time=start) as current:
        yield current


def span(name: str, tracking_id: str | None = None, attributes: dict[str, Any] | None = None, *,
         start_us: int | None = None, kind: str = "internal") -> contextlib.AbstractContextManager[Any]:
    """A span named `name` in the trace of the order with `tracking_id` (under the current span,
    or in a trace of its own, without one); `start_us` backdates its start (epoch microseconds) to
    when the work began. Yields the span, or `NULL_SPAN` when spans are off; attributes that are
    None are left out. Call sites with costly attributes guard them with `enabled()`."""
    active = _active
    if active is None:
        active = refresh()
    if not active:
        return _NULL
    if kind not in _KINDS:
        raise ValueError(f"span kind {kind!r}: expected one of {', '.join(_KINDS)}")
    return _otel_span(name, _parent(tracking_id), start_us, attributes or {}, kind)


_KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "QUERY"})


def _safe_url(url: str) -> tuple[str, str | None, int | None]:
    """url.full with every query value replaced by REDACTED (signatures, app keys and tokens ride
    in warehouses' query strings), no user info and no fragment; and the server address and port."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "REDACTED", None, None
    host = parts.hostname
    if port is None:
        port = {"http": 80, "https": 443}.get(parts.scheme)
    netloc = parts.netloc.rpartition("@")[2]
    query = "&".join(f"{item.partition('=')[0]}=REDACTED" for item in parts.query.split("&") if item)
    return urlunsplit((parts.scheme, netloc, parts.path, query, "")), host, port


def http_attributes(method: str, url: str, *, status: int | None = None, error: str | None = None,
                    attempt: int | None = None, request_bytes: int | None = None,
                    response_bytes: int | None = None) -> dict[str, Any]:
    """The HTTP client semantic-convention attributes of one exchange with a warehouse:
    `http.request.method` (`_OTHER` for an unknown one, with `http.request.method_original`),
    `url.full` (query values REDACTED), `server.address`, `server.port`,
    `http.request.resend_count` (from the second attempt on), the body sizes, and once known
    `http.response.status_code` and `error.type` (the status code as text from 400 on, or the
    failure's class: timeout, reset, refused, …)."""
    full, host, port = _safe_url(url)
    upper = method.upper()
    attrs: dict[str, Any] = {"http.request.method": upper if upper in _KNOWN_METHODS else "_OTHER",
                             "url.full": full}
    if upper not in _KNOWN_METHODS or upper != method:
        attrs["http.request.method_original"] = method
    if host:
        attrs["server.address"] = host
    if port is not None:
        attrs["server.port"] = port
    if attempt is not None and attempt > 1:
        attrs["http.request.resend_count"] = attempt - 1
    if request_bytes is not None:
        attrs["http.request.body.size"] = request_bytes
    attrs.update(_response_attributes(status, error, response_bytes))
    return attrs


def _response_attributes(status: int | None, error: str | None, response_bytes: int | None) -> dict[str, Any]:
    attrs: dict[str, Any] = {}
    if status is not None:
        attrs["http.response.status_code"] = status
    if response_bytes is not None:
        attrs["http.response.body.size"] = response_bytes
    if error:
        attrs["error.type"] = error
    elif status is not None and status >= 400:
        attrs["error.type"] = str(status)
    return attrs


def http_span(method: str, url: str, *, attempt: int | None = None, request_bytes: int | None = None,
              attributes: dict[str, Any] | None = None,
              start_us: int | None = None) -> contextlib.AbstractContextManager[Any]:
    """A CLIENT span for one HTTP exchange, named by its method as the conventions ask, under the
    current span (e.g. inside `span("dockyard.deliver", …)`). Say how it ended with `http_result`."""
    if not enabled():
        return _NULL
    attrs = http_attributes(method, url, attempt=attempt, request_bytes=request_bytes)
    if attributes:
        attrs.update(attributes)
    return span(attrs["http.request.method"] if attrs["http.request.method"] != "_OTHER" else "HTTP", None, attrs,
                start_us=start_us, kind="client")


def http_result(current: Any, *, status: int | None = None, error: str | None = None,
                response_bytes: int | None = None) -> None:
    """Record the answer (status, size) or the failure class on an `http_span`; from 400 on, or
    on a failure, the span's status is Error as the client conventions ask."""
    if current is NULL_SPAN or not _OTEL:
        return
    current.set_attributes(_response_attributes(status, error, response_bytes))
    if error or (status is not None and status >= 400):
        current.set_status(Status(StatusCode.ERROR, error or f"HTTP {status}"))
