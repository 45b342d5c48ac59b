"""The HTTP surface: once any token is configured every endpoint but /healthz, the callbacks and
ingest (which have their own guards) needs one; a cookie-authenticated state change needs the
dashboard's header whatever else comes with it, and login/logout check the Origin; every answer
carries nosniff and JSON a CSP; a client that sends half its headers, or half its body, is cut
off; a 500 shows an error id, which is also in the log, and nothing of the code."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path
from typing import Any

import pytest
from seckit import Env, example, no_internals, service

from dockyard.service import queries
from dockyard.service.middleware import JSON_CSP

READ = "TEST-ONLY-read-token-1c9e52"
OPERATOR = "TEST-ONLY-operator-token-7d0a33"
INGEST = "TEST-ONLY-ingest-token-45bb10"
TOKENS = {"dashboard": {"tokens": {READ: "read", OPERATOR: "operator"}}}


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _status(env: Env, method: str, path: str, headers: dict[str, str] | None = None,
                  body: str | None = None) -> int:
    status, answer, _ = await env.request(method, path, headers=headers, body=body)
    no_internals(answer)
    return status


def test_every_endpoint_but_health_callbacks_and_ingest_needs_a_token(tmp_path: Path, sqlite_url: str,
                                                                       bundle_dir: Path) -> None:
    async def main() -> None:
        async with service(tmp_path, sqlite_url, bundle_dir, overrides=TOKENS) as env:
            order = example()
            assert await _status(env, "POST", "/orders", body=json.dumps(order)) == 202  # ingest: its own guard
            await env.delivered(order["order_no"])
            reads = ["/stats", "/metrics", f"/orders/{order['order_no']}"]
            for path in reads:
                for headers in (None, _bearer("wrong"), {"Authorization": f"Basic {READ}"}):
                    assert await _status(env, "GET", path, headers) == 401, (path, headers)
                assert await _status(env, "GET", path, _bearer(READ)) == 200, path
            cancel = f"/orders/{order['order_no']}/cancel"
            assert await _status(env, "POST", cancel) == 401
            assert await _status(env, "POST", cancel, _bearer(READ)) == 403  # a read token cannot cancel
            assert (await env.rows("SELECT kind FROM dy_jobs WHERE kind = 'cancel'")) == []
            assert await _status(env, "POST", cancel, _bearer(OPERATOR)) in (200, 202)
            assert await _status(env, "GET", "/healthz") == 200

    asyncio.run(main())


def test_the_ingest_token_alone_closes_the_other_endpoints_too(tmp_path: Path, sqlite_url: str,
                                                               bundle_dir: Path) -> None:
    async def main() -> None:
        overrides = {"ingest": {"token": {"secret": "INGEST_TOKEN"}}}
        async with service(tmp_path, sqlite_url, bundle_dir, overrides=overrides,
                           secrets={"INGEST_TOKEN": INGEST}) as env:
            assert await _status(env, "GET", "/stats") == 401
            assert await _status(env, "GET", "/stats", _bearer(INGEST)) == 200
            assert await _status(env, "POST", "/orders/X1/cancel", _bearer(INGEST)) == 404  # allowed; no such order

    asyncio.run(main())


def test_cookie_actions_need_the_dashboard_header_and_login_checks_the_origin(tmp_path: Path, sqlite_url: str,
                                                                              bundle_dir: Path) -> None:
    async def main() -> None:
        async with service(tmp_path, sqlite_url, bundle_dir, overrides=TOKENS) as env:
            own = env.url
            form = {"Content-Type": "application/x-www-form-urlencoded"}
            for origin in ("http://evil.example", "null", "http://127.0.0.1:1", "file://x", "http://[::1"):
                for path in ("/ui/login", "/ui/logout"):
                    status, answer, headers = await env.request("POST", path, body=f"token={OPERATOR}",
                                                                headers={**form, "Origin": origin})
                    assert status == 403 and "dockyard_token" not in headers.get("Set-Cookie", ""), (origin, path)
            status, _, headers = await env.request("POST", "/ui/login", body=f"token={OPERATOR}",
                                                   headers={**form, "Origin": own})
            assert status == 303
            cookie = headers["Set-Cookie"].split(";", 1)[0]
            status, _, _ = await env.request("POST", "/ui/login", body=f"token={OPERATOR}",
                                             headers={**form, "Sec-Fetch-Site": "cross-site"})
            assert status == 403  # no Origin, but the browser says it is another site
            for extra in ({}, {"Authorization": "Basic Zm9vOmJhcg=="}, {"Authorization": "Digest x"},
                          {"Authorization": "bearer"}, {"X-Dockyard-UI": "0"}):
                status, answer, _ = await env.request("POST", "/ui/api/dlq/1/replay",
                                                      headers={"Cookie": cookie, **extra})
                assert status == 403 and b"X-Dockyard-UI" in answer, extra
            status, _, _ = await env.request("POST", "/ui/api/dlq/1/replay",
                                             headers={"Cookie": cookie, "X-Dockyard-UI": "1"})
            assert status == 404  # allowed through: there is no job 1
            status, _, _ = await env.request("POST", "/ui/api/dlq/1/replay", headers=_bearer(OPERATOR))
            assert status == 404  # a bearer token is a deliberate client, not a browser's form

    asyncio.run(main())


def test_every_answer_says_nosniff_and_json_answers_a_csp(tmp_path: Path, sqlite_url: str, bundle_dir: Path) -> None:
    async def main() -> None:
        async with service(tmp_path, sqlite_url, bundle_dir, warehouses=("qimen-std", "sf"), overrides=TOKENS) as env:
            answers = [await env.request("GET", "/healthz"), await env.request("GET", "/stats"),
                       await env.request("GET", "/stats", headers=_bearer(READ)),
                       await env.request("POST", "/orders", body=json.dumps(example())),
                       await env.request("POST", "/orders", body="{"),
                       await env.request("GET", "/nowhere"), await env.request("DELETE", "/orders"),
                       await env.request("POST", "/callbacks/none/x"), await env.request("GET", "/ui/login"),
                       await env.request("POST", "/callbacks/sf/route-push", body="[")]
            for status, body, headers in answers:
                assert headers.get("X-Content-Type-Options") == "nosniff", (status, body[:100])
                if headers.get("Content-Type", "").startswith("application/json"):
                    assert headers.get("Content-Security-Policy") == JSON_CSP, (status, body[:100])
            ui = answers[8][2]
            assert "script-src 'self'" not in ui["Content-Security-Policy"]  # the login page keeps its own

    asyncio.run(main())


def test_a_client_sending_half_its_headers_or_body_is_cut_off(tmp_path: Path, sqlite_url: str,
                                                              bundle_dir: Path) -> None:
    async def main() -> None:
        limits = {"limits": {"header_timeout": 1, "body_timeout": 1}}
        async with service(tmp_path, sqlite_url, bundle_dir, overrides=limits) as env:
            host, port = env.url.removeprefix("http://").split(":")

            async def held_for(data: bytes) -> tuple[float, bytes]:
                reader, writer = await asyncio.open_connection(host, int(port))
                started = time.monotonic()
                writer.write(data)
                await writer.drain()
                got = await asyncio.wait_for(reader.read(), 20)  # until the server closes
                writer.close()
                return time.monotonic() - started, got

            took, got = await held_for(b"POST /orders HTTP/1.1\r\nHost: x\r\nContent-Type: appl")
            assert took < 10 and got == b""  # cut off (it was still connected after 150 s)
            took, got = await held_for(b"POST /orders HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"a\":")
            assert took < 10 and got.startswith(b"HTTP/1.1 408")
            took, got = await held_for(b"")  # connected, silent
            assert took < 10 and got == b""
            await env.alive()

    asyncio.run(main())


def test_a_500_shows_an_error_id_that_is_in_the_log_and_nothing_else(
        tmp_path: Path, sqlite_url: str, bundle_dir: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    def broken(conn: Any) -> Any:
        raise RuntimeError("'dict' object has no attribute 'secret_internal_detail'")

    async def main() -> None:
        async with service(tmp_path, sqlite_url, bundle_dir) as env:
            monkeypatch.setattr(queries, "summary", broken)
            with caplog.at_level(logging.ERROR, logger="dockyard.service"):
                status, answer, _ = await env.request("GET", "/stats")
            assert status == 500
            body = json.loads(answer)
            assert set(body) == {"error", "error_id"} and body["error"] == "internal error"
            no_internals(answer)
            assert b"secret_internal_detail" not in answer
            [record] = [r for r in caplog.records if getattr(r, "error_id", None) == body["error_id"]]
            assert record.exc_info is not None and "secret_internal_detail" in str(record.exc_info[1])
            assert getattr(record, "route", None) == "/stats"
            await env.alive()

    asyncio.run(main())
