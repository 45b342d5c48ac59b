"""Hostile input as a class, over the whole HTTP surface: every route the service serves (read off
its router, so a route added later is swept too) is asked with hostile text in each path
parameter, in every query parameter the handlers read, and in the operator actions' bodies, on
SQLite and on PostgreSQL. No answer is a 500 or shows Python's internals, and the service still
answers and still takes an order afterwards.

The values are the ones that broke readers before: a NUL (PostgreSQL's text cannot hold one; psycopg
refuses to send it), a lone surrogate (no UTF-8 form), bytes that are not UTF-8, control
characters, a huge number, a negative one, very long text, percent signs and SQL's wildcards.
Hypothesis adds arbitrary text on top of the fixed list."""

from __future__ import annotations

import asyncio
import json
import re
import threading
from pathlib import Path
from urllib.parse import quote

from hypothesis import given, settings
from hypothesis import strategies as st
from seckit import Env, example, no_internals, service

# Raw (already percent-encoded) pieces of a URL: what a client can put on the wire.
HOSTILE = ["%00", "a%00b", "%ED%A0%80", "%FF%FE", "%C3", "%01%1F", "%7F", "99999999999999999999999999",
           "-1", "0", "1e309", "NaN", "%25", "%27%20OR%201%3D1--", "_%25", "%5C", "..", "%2E%2E%2F%2E%2E",
           "x" * 5000, "%E4%B8%AD%E6%96%87", "%F0%9F%98%80", "null", "%20", "", "true", "[]", "%7B%7D"]

# Every query parameter a handler reads (ui.py, app.py), and a few nobody reads.
QUERY_NAMES = ["q", "since", "until", "from", "to", "warehouse", "reason", "status", "flow", "group", "limit",
               "offset", "before", "after", "page", "kind", "order_no", "token", "window", "tz", "format", "x"]

OPERATOR = "TEST-ONLY-operator-token-5e01c7"
TOKENS = {"dashboard": {"tokens": {OPERATOR: "operator"}}}  # the dashboard's routes answer only with tokens set

PATH_PARAM = re.compile(r"\{[^}]+\}")


def _routes(app: object) -> list[tuple[str, str]]:
    """(method, path template) of every route on the service's router."""
    out = []
    for route in app.router.routes():  # type: ignore[attr-defined]
        info = route.resource.get_info() if route.resource is not None else {}
        template = info.get("formatter") or info.get("path")
        if template and route.method in ("GET", "POST"):
            out.append((route.method, template))
    return sorted(set(out))


async def _ask(env: Env, method: str, path: str, body: bytes | None = None) -> int:
    headers = {"Authorization": f"Bearer {OPERATOR}"}
    if body is not None:
        headers["Content-Type"] = "application/json"
    status, answer, _ = await env.request(method, path, body=body, headers=headers)
    assert status < 500, (method, path[:300], status, answer[:300])
    no_internals(answer)
    return status


def test_every_route_refuses_hostile_path_and_query_values_without_a_500(tmp_path: Path, store_url: str,
                                                                          bundle_dir: Path) -> None:
    async def main() -> None:
        async with service(tmp_path, store_url, bundle_dir, overrides=TOKENS) as env:
            order = example()
            assert await _ask(env, "POST", "/orders", json.dumps(order).encode()) == 202
            await env.delivered(order["order_no"])
            routes = _routes(env.service.runner.app)  # type: ignore[union-attr]
            assert ("GET", "/ui/api/dlq/groups") in routes and ("GET", "/orders/{order_no}") in routes
            for method, template in routes:
                if template in ("/ui/api/stream",):
                    continue  # a stream never ends; its one parameter-free answer is tested in test_ui
                body = b"{}" if method == "POST" else None
                for value in HOSTILE:
                    path = PATH_PARAM.sub(value or "x", template)
                    await _ask(env, method, path, body)
                if PATH_PARAM.search(template):
                    continue
                for name in QUERY_NAMES:
                    for value in HOSTILE:
                        await _ask(env, method, f"{template}?{name}={value}", body)
            await env.alive()

    asyncio.run(main())


_TEXT = st.text(max_size=40)  # any code point, lone surrogates included (sent as their UTF-8-ish bytes)
_PATHS = ("/ui/api/search?q=", "/ui/api/dlq/groups?warehouse=", "/ui/api/dlq/groups?reason=", "/ui/api/errors?since=",
          "/ui/api/dlq?warehouse=", "/ui/api/orders/", "/ui/api/orders/{}/lineage", "/orders/", "/ui/api/dlq/",
          "/ui/static/")


def test_arbitrary_text_in_the_dashboards_filters_and_actions(tmp_path: Path, store_url: str,
                                                              bundle_dir: Path) -> None:
    """The service runs on a loop of its own thread; hypothesis drives requests at it from this one."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    cm = service(tmp_path, store_url, bundle_dir, overrides=TOKENS)
    env = asyncio.run_coroutine_threadsafe(cm.__aenter__(), loop).result(60)

    def ask(method: str, path: str, body: bytes | None = None) -> None:
        asyncio.run_coroutine_threadsafe(_ask(env, method, path, body), loop).result(30)

    @settings(max_examples=80, deadline=None)
    @given(value=_TEXT, number=st.integers() | st.floats() | st.none() | _TEXT)
    def sweep(value: str, number: object) -> None:
        raw = quote(value.encode("utf-8", "surrogatepass"), safe="")
        for path in _PATHS:
            ask("GET", path.replace("{}", raw) if "{}" in path else path + raw)
        for body in ({"action": value, "jobs": [value]}, {"action": "discard", "reason": value, "ids": [number]},
                     {"action": "replay", "group": {"warehouse": value, "reason": value}}, [value], value, number):
            ask("POST", "/ui/api/dlq/bulk", json.dumps(body).encode("utf-8", "surrogatepass"))
        ask("POST", f"/ui/api/dlq/{raw}/replay", b"{}")
        ask("POST", f"/orders/{raw}/cancel", b"{}")

    try:
        sweep()
        asyncio.run_coroutine_threadsafe(env.alive(), loop).result(60)
    finally:
        asyncio.run_coroutine_threadsafe(cm.__aexit__(None, None, None), loop).result(60)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
