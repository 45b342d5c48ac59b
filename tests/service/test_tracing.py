"""OpenTelemetry: an order's ingest, delivery attempt and feedback spans land in one trace whose
id is the order's tracking id, across tasks joined only by the store."""

from __future__ import annotations

import asyncio
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from test_callbacks import _confirm, _post_qimen
from test_service import example

from dockyard.service import tracing

EXPORTER = InMemorySpanExporter()
_PROVIDER = TracerProvider()
_PROVIDER.add_span_processor(SimpleSpanProcessor(EXPORTER))
trace.set_tracer_provider(_PROVIDER)  # once per process: the global provider cannot be replaced


def test_an_orders_spans_share_the_trace_named_by_its_tracking_id(env: Any) -> None:
    assert tracing.enabled()

    async def main() -> None:
        async with env() as run:
            EXPORTER.clear()
            order = example()
            _, body = await run.post("/orders", order)
            await run.until(order["order_no"], lambda d: d["delivery"] == "delivered")
            status, _ = await _post_qimen(run, _confirm(order["order_no"], "OBC-T1"))
            assert status == 200
            spans = [s for s in EXPORTER.get_finished_spans()
                     if s.attributes and s.attributes.get("dockyard.order_no") == order["order_no"]]
            names = sorted(s.name for s in spans)
            assert names == ["dockyard.deliver", "dockyard.feedback", "dockyard.ingest"]
            assert {format(s.context.trace_id, "032x") for s in spans} == {body["tracking_id"]}
            deliver = next(s for s in spans if s.name == "dockyard.deliver")
            assert deliver.attributes["dockyard.warehouse"] == "qimen-std"
            assert all(s.end_time >= s.start_time for s in spans)

    asyncio.run(main())
