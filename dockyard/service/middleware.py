"""What every HTTP answer of the service gets, whatever the handler: no internals in a 500, the
security headers, and bounded time to send a request.

- An exception a handler did not expect becomes a 500 whose body is only
  `{"error": "internal error", "error_id": "…"}`; the same id is in the log line with the
  traceback (secrets scrubbed by the log's filter), so an operator finds the cause and a client
  learns nothing of the code.
- Every answer carries `X-Content-Type-Options: nosniff`; a JSON answer also carries a
  Content-Security-Policy that allows nothing (JSON is data, never a page to render), unless the
  handler set its own (the dashboard's pages do).
- `receive_body` reads a request's body within `limits.body_timeout` seconds (408 after). The time to
  send the headers is bounded by aiohttp's keep-alive timer, set to `limits.header_timeout` by the
  service: it runs from the moment a connection opens (or its previous answer was sent) until a
  request's headers are complete, so a client that sends half its headers is cut off.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable

import orjson
from aiohttp import web

from dockyard.service import logs
from dockyard.service.db import StoreUnavailable

__all__ = ["JSON_CSP", "error_ids", "receive_body", "security_headers"]

JSON_CSP = "default-src 'none'; frame-ancestors 'none'"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def error_ids(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except (web.HTTPException, asyncio.CancelledError):
        raise
    except StoreUnavailable as exc:  # the store is away: nothing was done, the client may try again
        logs.event(logging.WARNING, "store unavailable", route=_route(request), reason=str(exc))
        return web.Response(status=503, body=orjson.dumps({"status": "unavailable", "reason": "the state store is "
                                                           "unreachable; nothing was done: try again"}),
                            content_type="application/json", headers={"Retry-After": "1"})
    except ConnectionError:  # the client went away mid-request: nothing of ours failed, no one to answer
        logs.event(logging.DEBUG, "client went away", route=_route(request))
        return web.Response(status=400, text="the connection was lost")
    except Exception:
        error_id = uuid.uuid4().hex[:16]
        logs.LOG.error("internal error", exc_info=True,
                       extra={"error_id": error_id, "method": request.method, "route": _route(request)})
        body = orjson.dumps({"error": "internal error", "error_id": error_id})
        return web.Response(body=body, status=500, content_type="application/json")


def _route(request: web.Request) -> str:
    """The route's pattern (`/orders/{order_no}`), not the path: a path can carry a token or junk."""
    info = request.match_info.route.resource
    return info.canonical if info is not None else "?"


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    headers = response.headers
    headers.setdefault("X-Content-Type-Options", "nosniff")
    if response.content_type == "application/json" and "Content-Security-Policy" not in headers:
        headers["Content-Security-Policy"] = JSON_CSP


async def receive_body(request: web.Request, timeout: float) -> bytes:
    """The request's body, or 408 when it does not arrive within `timeout` seconds (413 past the
    size limit, as aiohttp says)."""
    if request.content.is_eof():  # all of it arrived with the headers (most callbacks): nothing to wait for
        return await request.read()
    try:
        # asyncio.timeout, not wait_for: the body is read in the handler's own task (read in
        # another task, aiohttp loses connections that are still sending)
        async with asyncio.timeout(timeout):
            return await request.read()
    except TimeoutError:
        logs.event(logging.WARNING, "request body too slow", route=_route(request), timeout=timeout)
        answer = web.HTTPRequestTimeout(text=f"the request body did not arrive within {timeout:g} s")
        answer.force_close()  # the rest of the body is not waited for
        raise answer from None
