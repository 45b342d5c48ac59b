"""Fuzz: warehouse callback bodies. Mutations of real callbacks (the mapping library's test data)
and hostile documents, for every inbound mapping:

- without a server (many examples): reading raises only InputError, mapping only a Dockyard
  error, and an event that comes out can be stored (no bad text) and given a dedupe identity;
- against the real `dockyard serve` (a child process, SQLite): each body, correctly signed where
  the flow is signed so that it reaches the parser, gets an answer below 500 that speaks no
  Python, within a time bound; the service's peak memory stays bounded; it still answers.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

import aiohttp
import orjson
import pytest
from fuzzkit import HANG_SECONDS, Bounds, fuzz_settings, run
from hypothesis import given
from hypothesis import strategies as st

from dockyard.compiler.api import compile_file
from dockyard.demo import DemoPlan, account, free_port
from dockyard.runtime import safe_json
from dockyard.runtime.errors import DockyardError, InputError
from dockyard.runtime.mapping import CompiledMapping
from dockyard.service.config import CallbackConfig, VerifyConfig
from dockyard.service.replay import dedupe_identity
from dockyard.simulate.protocols import cainiao_sign, qimen_callback_query

ROOT = Path(__file__).resolve().parents[2]
MAPPINGS = ROOT / "mappings"
SERVICE_MEMORY_MB = 600
# (warehouse, flow, spec, kind, sample bodies)
FLOWS: list[tuple[str, str, str, str, list[bytes]]] = [
    ("qimen-std", "deliveryorder.confirm", "qimen/deliveryorder.confirm", "xml",
     [p.read_bytes() for p in sorted((MAPPINGS / "qimen/testdata").glob("confirm-*.xml"))]),
    ("qimen-std", "orderprocess.report", "qimen/orderprocess.report", "xml",
     [(MAPPINGS / "qimen/testdata/orderprocess-pick.xml").read_bytes()]),
    ("cainiao", "consign-order-confirm", "cainiao/consign-order-confirm", "form",
     [p.read_bytes().strip() for p in sorted((MAPPINGS / "cainiao/testdata/inbound").glob("confirm-*.form"))]),
    ("cainiao", "order-status-upload", "cainiao/order-status-upload", "form",
     [p.read_bytes().strip() for p in sorted((MAPPINGS / "cainiao/testdata/inbound").glob("status-*.form"))][:6]),
    ("sf", "route-push", "sf/route-push", "json",
     [p.read_bytes() for p in sorted((MAPPINGS / "sf/testdata/inbound").glob("*.json"))]),
]
HOSTILE = [b"", b"[" * 5000, b"{" * 3000, b'{"a": NaN}', b'{"a": 1e99999999}', b'{"a": 1, "a": 2}',
           b'"\\ud800"', b'{"Body": {"WaybillRoute": [{"mailno": "\\u0000"}]}}', b"<request>" * 300,
           b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><request>&x;</request>',
           b"\xff\xfe\x00", b"a=%00&b=%ZZ", b"logistics_interface=[[[[[[&logistics_interface=x", b"\x00" * 64]
CONTEXTS = {"qimen-std": "qimen-std", "cainiao": "cainiao", "sf": "sf"}


@st.composite
def mutated(draw: st.DrawFn, samples: list[bytes]) -> bytes:
    if draw(st.integers(0, 4)) == 0:
        return draw(st.sampled_from(HOSTILE))
    data = bytearray(draw(st.sampled_from(samples)))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data)))
        op = draw(st.sampled_from(["insert", "delete", "replace", "dup"]))
        chunk = draw(st.one_of(st.binary(max_size=6), st.sampled_from(
            [b"&#0;", b"&#xD800;", b"\\ud800", b"\\u0000", b"%00", b"%ED%A0%80", b"NaN", b"1e99999", b"<a>" * 40,
             b"[" * 70, b'"', b"<", b"&", b"=", b"%", b"]]>", b"<!--", b"<![CDATA[", b"\r\n"])))
        if op == "insert":
            data[at:at] = chunk
        elif op == "delete":
            del data[at:at + draw(st.integers(1, 20))]
        elif op == "replace":
            data[at:at + len(chunk)] = chunk
        else:
            data[at:at] = data[max(0, at - 30):at]
    return bytes(data)


@pytest.fixture(scope="module")
def mappings() -> dict[str, CompiledMapping]:
    return {spec: compile_file(MAPPINGS / f"{spec}.yaml") for _, _, spec, _, _ in FLOWS}


def _verify(kind: str, warehouse: str) -> VerifyConfig | None:
    if warehouse == "qimen-std":
        return VerifyConfig(scheme="qimen-md5", secret="S", params="query")
    if warehouse == "cainiao":
        return VerifyConfig(scheme="cainiao-link", secret="S", params="form", body="form.logistics_interface")
    return None


def _reading(mapping: CompiledMapping, context: Any, cfg: CallbackConfig, samples: list[bytes],
             bounds: Bounds) -> Any:
    @fuzz_settings(ci_examples=120)
    @given(mutated(samples))
    def target(body: bytes) -> None:
        with bounds.example(body[:200]):
            try:
                document = mapping.parse_input(body)
            except InputError:
                return
            try:
                event = mapping.transform(document, context)
            except DockyardError:
                return
            assert safe_json.bad_text(orjson.dumps(event, default=str).decode()) is None
            assert dedupe_identity(cfg, mapping, {}, {}, body, event)

    return target


def test_callback_bodies_read_and_map_to_a_verdict(mappings: dict[str, CompiledMapping]) -> None:
    bounds = Bounds()
    for warehouse, flow, spec, kind, samples in FLOWS:
        cfg = CallbackConfig(flow, spec, verify=_verify(kind, warehouse))
        run(_reading(mappings[spec], account(MAPPINGS, CONTEXTS[warehouse]), cfg, samples, bounds), share=0.04)


# -- against the real service ---------------------------------------------------------------------

def _signed(warehouse: str, flow: str, body: bytes, secrets: dict[str, str]) -> tuple[str, bytes, dict[str, str]]:
    """(path with query, body, headers): a QIMEN body signed over its text, a Cainiao form with its
    logistics_interface digest put right, SF as it is (its guard lets loopback in)."""
    path = f"/callbacks/{warehouse}/{flow}"
    if warehouse == "qimen-std":
        query = qimen_callback_query(flow, {"methodPrefix": "taobao.qimen.", "appKey": "23456789",
                                            "customerId": "STD-C-1001"}, body.decode("utf-8", "replace"),
                                     secrets["QIMEN_APP_SECRET"])
        return f"{path}?{urlencode(query)}", body, {"Content-Type": "text/xml"}
    if warehouse == "cainiao":
        try:
            form = dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
        except UnicodeDecodeError:
            form = {}
        if "logistics_interface" in form:
            fixed = {**form, "data_digest": cainiao_sign(form["logistics_interface"], secrets["CAINIAO_SECRET_KEY"])}
            body = urlencode(fixed).encode()
        return path, body, {"Content-Type": "application/x-www-form-urlencoded"}
    return path, body, {"Content-Type": "application/json"}


def _peak_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def test_the_real_service_answers_every_callback_body_below_500(tmp_path: Path) -> None:
    from dockyard.demo import build_demo_bundle

    plan = DemoPlan(tmp_path / "work", MAPPINGS, warehouses=("qimen-std", "sf", "cainiao"),
                    retry={"max_attempts": 1, "base_delay": 0.1, "max_delay": 0.1, "jitter": 0.0})
    plan.sim_base = "http://127.0.0.1:9"  # nothing is delivered: the callbacks are the point
    build_demo_bundle(MAPPINGS, plan.bundle)
    port = free_port()
    config = plan.write(port)
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "dockyard.cli", "serve", "--config", str(config)],
                                   stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "DOCKYARD_NO_UVLOOP": "1"})
    try:
        deadline = time.monotonic() + 60
        while "serving on" not in log.read_text(errors="replace"):
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        url = f"http://127.0.0.1:{port}"
        asyncio.run(_fuzz_service(url, plan.secret_values, process.pid))
    finally:
        process.terminate()
        process.wait(20)


async def _fuzz_service(url: str, secrets: dict[str, str], pid: int) -> None:
    timeout = aiohttp.ClientTimeout(total=HANG_SECONDS * 3)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        loop = asyncio.get_running_loop()
        answered: dict[int, int] = {}

        @fuzz_settings(ci_examples=250)
        @given(st.sampled_from(FLOWS).flatmap(lambda f: st.tuples(st.just(f), mutated(f[4]))))
        def target(case: tuple[tuple[str, str, str, str, list[bytes]], bytes]) -> None:
            (warehouse, flow, _spec, _kind, _samples), body = case
            path, data, headers = _signed(warehouse, flow, body, secrets)

            async def send() -> tuple[int, bytes]:
                async with session.post(url + path, data=data, headers=headers) as resp:
                    return resp.status, await resp.read()

            status, answer = asyncio.run_coroutine_threadsafe(send(), loop).result(HANG_SECONDS * 3)
            answered[status] = answered.get(status, 0) + 1
            assert status < 500, (warehouse, flow, body[:300], answer[:300])
            text = answer.decode("utf-8", "replace")
            for word in ("Traceback", "File \"", "object has no attribute", "NoneType"):
                assert word not in text, (word, text[:300])

        await loop.run_in_executor(None, lambda: run(target, share=0.3))
        async with session.get(url + "/healthz") as resp:
            assert resp.status == 200
        assert _peak_mb(pid) < SERVICE_MEMORY_MB
        assert sum(answered.values()) > 0 and any(s >= 400 for s in answered)
