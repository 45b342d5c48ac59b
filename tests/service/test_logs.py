"""Structured logs: one JSON object per line, with the order number and its trace id (the
tracking id), and no secret — even when a secret's value sits in the text being logged."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from typing import Any

from test_service import example

from dockyard.runtime.secrets import MappingSecrets, Secrets
from dockyard.service import logs


def test_a_dead_letter_is_logged_as_json_with_its_order_and_trace_id(env: Any) -> None:
    async def main() -> None:
        async with env(warehouses=("jd",)) as run:
            stream = io.StringIO()
            handler = logs.setup_logging(run.service.ctx.secrets, stream=stream)
            try:
                order = example("all-lines-zero")
                _status, body = await run.post("/orders", order)
                await run.until(order["order_no"], lambda d: d["delivery"] == "dlq")
            finally:
                logs.LOG.removeHandler(handler)
            lines = [json.loads(line) for line in stream.getvalue().splitlines()]
            dead = [x for x in lines if x["event"] == "dead-lettered"]
            assert len(dead) == 1
            assert dead[0]["order_no"] == order["order_no"] and dead[0]["trace_id"] == body["tracking_id"]
            assert dead[0]["level"] == "warning" and dead[0]["warehouse"] == "jd" and "cargoes" in dead[0]["reason"]

    asyncio.run(main())


def test_secret_values_are_scrubbed_from_messages_and_fields() -> None:
    secrets = Secrets([MappingSecrets({"K": "TEST-ONLY-leaky-value"})])
    secrets.get("K")
    stream = io.StringIO()
    handler = logs.setup_logging(secrets, stream=stream)
    try:
        logs.event(logging.WARNING, "oops TEST-ONLY-leaky-value", order_no="X1", reason="has TEST-ONLY-leaky-value")
        logs.event(logging.DEBUG, "not shown at info")
    finally:
        logs.LOG.removeHandler(handler)
    [line] = stream.getvalue().splitlines()
    data = json.loads(line)
    assert "TEST-ONLY-leaky-value" not in line
    assert data["event"] == "oops ***" and data["reason"] == "has ***" and data["order_no"] == "X1"


def test_the_text_format_carries_the_fields_a_person_needs() -> None:
    """`--log-format text` (and the demo): the event, then order, warehouse, flow, job and reason,
    quoted when they hold spaces; the trace id is the 32-digit one even for a continued trace."""
    secrets = Secrets([MappingSecrets({"K": "TEST-ONLY-leaky-value"})])
    secrets.get("K")
    stream = io.StringIO()
    handler = logs.setup_logging(secrets, stream=stream, fmt="text")
    try:
        logs.event(logging.WARNING, "dead-lettered", order_no="TM-1", trace_id="ab" * 16 + "-" + "cd" * 8 + "-01",
                   warehouse="jd", flow="create", job=7, reason='rejected by jd: "cargoes" TEST-ONLY-leaky-value',
                   extra_none=None)
    finally:
        logs.LOG.removeHandler(handler)
    [line] = stream.getvalue().splitlines()
    assert line.split(" ", 3)[2:] == ["WARNING", line.split(" ", 3)[3]]
    tail = line.split(" WARNING ", 1)[1]
    assert tail == ('dead-lettered order_no=TM-1 warehouse=jd flow=create job=7 '
                    'reason="rejected by jd: \\"cargoes\\" ***" trace_id=' + "ab" * 16), tail
    assert "TEST-ONLY" not in line and "extra_none" not in line
