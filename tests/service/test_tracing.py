"""OpenTelemetry: an order's ingest, delivery attempt and feedback spans land in one trace whose
id is the order's tracking id, across tasks joined only by the store."""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
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


CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"


def _order_spans(order_no: str) -> list[Any]:
    return [s for s in EXPORTER.get_finished_spans()
            if s.attributes and s.attributes.get("dockyard.order_no") == order_no]


def test_an_incoming_traceparent_continues_the_orders_trace(env: Any) -> None:
    """The order's spans join the caller's trace as children of the caller's span, through the
    store (delivery and feedback run later, in other tasks); an unsampled caller gets no spans
    of its order; a malformed traceparent is ignored (the order keeps a trace of its own)."""

    async def main() -> None:
        async with env() as run:
            EXPORTER.clear()
            order, quiet, odd = example(), example(), example()
            quiet["order_no"], odd["order_no"] = order["order_no"] + "-Q", order["order_no"] + "-X"
            _, body = await run.post("/orders", order, headers={"traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"})
            assert body["tracking_id"] == f"{CALLER_TRACE}-{CALLER_SPAN}-01"
            _, quiet_body = await run.post("/orders/batch", [quiet],
                                           headers={"traceparent": f"00-{'1' * 32}-{'2' * 16}-00"})
            _, odd_body = await run.post("/orders", odd, headers={"traceparent": f"00-{CALLER_TRACE.upper()}-"
                                                                                 f"{CALLER_SPAN}-01"})
            for o in (order, quiet, odd):
                await run.until(o["order_no"], lambda d: d["delivery"] == "delivered")
            status, _ = await _post_qimen(run, _confirm(order["order_no"], "OBC-T2"))
            assert status == 200
            spans = _order_spans(order["order_no"])
            assert sorted(s.name for s in spans) == ["dockyard.deliver", "dockyard.feedback", "dockyard.ingest"]
            for s in spans:
                assert format(s.context.trace_id, "032x") == CALLER_TRACE
                assert s.parent is not None and format(s.parent.span_id, "016x") == CALLER_SPAN
            assert quiet_body["results"][0]["tracking_id"] == f"{'1' * 32}-{'2' * 16}-00"
            assert _order_spans(quiet["order_no"]) == []  # the caller did not sample it
            own = odd_body["tracking_id"]
            assert len(own) == 32 and own != CALLER_TRACE.lower()
            assert {format(s.context.trace_id, "032x") for s in _order_spans(odd["order_no"])} == {own}

    asyncio.run(main())


def test_traceparent_parsing_follows_the_w3c_rules() -> None:
    ok = f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"
    assert tracing.parse_traceparent(ok) == (CALLER_TRACE, CALLER_SPAN, 1)
    assert tracing.parse_traceparent(f" {ok}\t") == (CALLER_TRACE, CALLER_SPAN, 1)  # optional whitespace
    assert tracing.parse_traceparent(f"cc-{CALLER_TRACE}-{CALLER_SPAN}-09-what-comes-later") == (
        CALLER_TRACE, CALLER_SPAN, 9)  # a later version: the first four fields are read
    for bad in (None, "", ok + "-x", f"ff-{CALLER_TRACE}-{CALLER_SPAN}-01", f"00-{'0' * 32}-{CALLER_SPAN}-01",
                f"00-{CALLER_TRACE}-{'0' * 16}-01", ok.upper(), ok[:-1], f"00-{CALLER_TRACE}-{CALLER_SPAN}01",
                f"00_{CALLER_TRACE}_{CALLER_SPAN}_01", f"0-{CALLER_TRACE}-{CALLER_SPAN}-01", ok + "\n"):
        assert tracing.parse_traceparent(bad) is None, bad
    assert tracing.continued_tracking_id({"traceparent": ok}) == f"{CALLER_TRACE}-{CALLER_SPAN}-01"
    assert tracing.continued_tracking_id({}) is None
    assert tracing.trace_id_of(f"{CALLER_TRACE}-{CALLER_SPAN}-01") == CALLER_TRACE


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.text(max_size=80), st.builds(
    lambda v, t, s, f, rest: f"{v}-{t}-{s}-{f}{rest}",
    st.text("0123456789abcdefABCDEF", min_size=1, max_size=3), st.text("0123456789abcdef", min_size=31, max_size=33),
    st.text("0123456789abcdef", min_size=15, max_size=17), st.text("0123456789abcdef", min_size=1, max_size=3),
    st.sampled_from(["", "-", "-x", " ", "\n"]))))
def test_any_traceparent_is_read_or_refused_never_misread(value: str) -> None:
    """Hostile headers as a class: parsing never raises; what it accepts names exactly the header's
    own ids, and the tracking id it yields is one `span()` continues (never a crash there either)."""
    parsed = tracing.parse_traceparent(value)
    if parsed is None:
        assert tracing.continued_tracking_id({"traceparent": value}) is None
        return
    trace_id, span_id, flags = parsed
    version = value.strip(" \t")[:2]
    assert version != "ff" and f"{version}-{trace_id}-{span_id}-{flags:02x}" in value
    assert int(trace_id, 16) and int(span_id, 16)
    tracking = tracing.continued_tracking_id({"traceparent": value})
    assert tracking == f"{trace_id}-{span_id}-{flags:02x}"
    with tracing.span("dockyard.test", tracking):
        pass


def test_client_spans_carry_the_http_semantic_convention_attributes() -> None:
    from opentelemetry.semconv.attributes import error_attributes as err
    from opentelemetry.semconv.attributes import http_attributes as http
    from opentelemetry.semconv.attributes import server_attributes as server
    from opentelemetry.semconv.attributes import url_attributes as url
    from opentelemetry.trace import SpanKind, StatusCode

    assert tracing.refresh()
    EXPORTER.clear()
    tracking = "ab" * 16
    secret_url = "https://user:pw@wms.example.com:8443/router/rest?method=taobao.qimen.deliveryorder.create" \
                 "&sign=TEST-ONLY-SIGNATURE&app_key=23456789#frag"
    with tracing.span("dockyard.deliver", tracking, {"dockyard.order_no": "T-1"}):
        with tracing.http_span("POST", secret_url, attempt=3, request_bytes=321) as call:
            tracing.http_result(call, status=503, response_bytes=17)
        with tracing.http_span("POST", "http://127.0.0.1/x", attempt=1) as call:
            tracing.http_result(call, error="timeout")
        with tracing.http_span("post", "http://127.0.0.1:9001/ok") as call:
            tracing.http_result(call, status=200, response_bytes=2)
    spans = {s.name + str(i): s for i, s in enumerate(EXPORTER.get_finished_spans())}
    deliver = spans["dockyard.deliver3"]
    failed, timed_out, ok = spans["POST0"], spans["POST1"], spans["POST2"]
    for client in (failed, timed_out, ok):
        assert client.kind == SpanKind.CLIENT
        assert client.parent is not None and client.parent.span_id == deliver.context.span_id
        assert client.context.trace_id == int(tracking, 16)
    a = failed.attributes
    assert a[http.HTTP_REQUEST_METHOD] == "POST" and a[server.SERVER_ADDRESS] == "wms.example.com"
    assert a[server.SERVER_PORT] == 8443 and a[http.HTTP_RESPONSE_STATUS_CODE] == 503
    assert a[url.URL_FULL] == ("https://wms.example.com:8443/router/rest?method=REDACTED&sign=REDACTED"
                               "&app_key=REDACTED")
    assert a[http.HTTP_REQUEST_RESEND_COUNT] == 2 and a[err.ERROR_TYPE] == "503"
    assert a["http.request.body.size"] == 321 and a["http.response.body.size"] == 17
    assert failed.status.status_code == StatusCode.ERROR
    assert timed_out.attributes[err.ERROR_TYPE] == "timeout" and timed_out.status.status_code == StatusCode.ERROR
    assert http.HTTP_RESPONSE_STATUS_CODE not in timed_out.attributes
    assert timed_out.attributes[server.SERVER_PORT] == 80
    assert http.HTTP_REQUEST_RESEND_COUNT not in timed_out.attributes
    assert ok.status.status_code == StatusCode.UNSET and err.ERROR_TYPE not in ok.attributes
    assert ok.attributes[http.HTTP_REQUEST_METHOD_ORIGINAL] == "post"
    text = repr([dict(s.attributes or {}) for s in spans.values()])
    assert "TEST-ONLY-SIGNATURE" not in text and "pw" not in text.replace("pw@", "") and "frag" not in text
    assert tracing.http_attributes("BREW", "not a url at all")["http.request.method"] == "_OTHER"


_NO_EXPORTER = """
import sys
import opentelemetry.trace as api
from dockyard.service import tracing
mode = sys.argv[1]
if mode == "sdk-without-processor":
    from opentelemetry.sdk.trace import TracerProvider
    api.set_tracer_provider(TracerProvider())
if mode == "sdk-with-exporter":
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(InMemorySpanExporter()))
    api.set_tracer_provider(provider)
asked = []
real = api.get_tracer
api.get_tracer = lambda *a, **k: asked.append(a) or real(*a, **k)
on = tracing.enabled()
first = tracing.span("dockyard.deliver", "ab" * 16, {"x": 1})
with first as s1, tracing.span("dockyard.ingest") as s2, tracing.http_span("POST", "http://h/p") as s3:
    tracing.http_result(s3, status=500)
    same = first is tracing.span("x") and s1 is s2 is s3 is tracing.NULL_SPAN
print(on, same, len(asked))
"""


def test_no_span_is_made_without_an_exporter() -> None:
    """Without a tracer provider that exports (none at all, or the SDK with no span processor),
    nothing of OpenTelemetry runs per order: one shared null context, no tracer asked for."""
    import subprocess
    import sys

    def run(mode: str) -> str:
        done = subprocess.run([sys.executable, "-c", _NO_EXPORTER, mode], capture_output=True, text=True, timeout=60,
                              check=True)
        return done.stdout.strip()

    assert run("api-only") == "False True 0"
    assert run("sdk-without-processor") == "False True 0"
    assert run("sdk-with-exporter") == "True False 3"
