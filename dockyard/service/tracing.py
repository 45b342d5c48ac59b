"""OpenTelemetry spans for an order's path — ingest, each delivery attempt, each callback — when
`opentelemetry` is installed; without it, `span()` is a null context and costs a function call.

An order's steps run in different tasks and processes, joined only by the store, so the trace is
carried by the store too: the order's tracking id (128 random bits, 32 hex digits) *is* its
OpenTelemetry trace id, and every span of the order is started under a remote parent with that
trace id. Ingest, delivery and feedback therefore land in one trace in any backend, across
restarts and workers, with nothing extra stored. Configure the SDK and exporter as usual
(`opentelemetry-instrument`, or the SDK in your own entry point); Dockyard only creates spans.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

_ENABLED = False
try:  # optional: the service runs the same without it
    from opentelemetry import trace as _trace
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, set_span_in_context

    _ENABLED = True
except ImportError:  # pragma: no cover - exercised where opentelemetry is absent
    pass

__all__ = ["enabled", "span"]


def enabled() -> bool:
    return _ENABLED


@contextlib.contextmanager
def _otel_span(name: str, tracking_id: str | None, start_us: int | None, attributes: dict[str, Any]) -> Iterator[Any]:
    context = None
    if tracking_id and len(tracking_id) == 32:
        try:
            trace_id = int(tracking_id, 16)
        except ValueError:
            trace_id = 0
        if trace_id:
            parent = SpanContext(trace_id=trace_id, span_id=int(tracking_id[16:], 16) or 1, is_remote=True,
                                 trace_flags=TraceFlags(TraceFlags.SAMPLED))
            context = set_span_in_context(NonRecordingSpan(parent))
    tracer = _trace.get_tracer("dockyard.service")
    clean = {k: v for k, v in attributes.items() if v is not None}
    start = None if start_us is None else start_us * 1000
    with tracer.start_as_current_span(name, context=context, attributes=clean, start_time=start) as current:
        yield current


def span(name: str, tracking_id: str | None = None, attributes: dict[str, Any] | None = None, *,
         start_us: int | None = None) -> contextlib.AbstractContextManager[Any]:
    """A span named `name` in the trace of the order with `tracking_id` (its own trace otherwise);
    `start_us` backdates its start (epoch microseconds) to when the work began."""
    if not _ENABLED:
        return contextlib.nullcontext()
    return _otel_span(name, tracking_id, start_us, attributes or {})
