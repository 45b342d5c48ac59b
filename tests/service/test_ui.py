"""The operator dashboard's API (/ui/api) over real HTTP, on SQLite and PostgreSQL: tokens and
roles, the overview against the store's own counts, search, timeline, field lineage, DLQ replay
recorded in the journal, the server-sent event stream, and no secret in any answer."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import Any

import aiohttp
import pytest
from test_service import example

from dockyard.service import queries, ui
from dockyard.service.metrics import Metrics
from dockyard.simulate import Feedback

READ = "test-only-ui-read-token-0123456789"
OPERATOR = "test-only-ui-operator-token-0123456789"
TOKENS = {"dashboard": {"tokens": {READ: "read", OPERATOR: "operator"}}}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def fetch(run: Any, path: str, token: str | None = OPERATOR, method: str = "GET",
                seen: list[str] | None = None) -> tuple[int, Any]:
    headers = bearer(token) if token else {}
    async with run.session.request(method, run.url + path, headers=headers, allow_redirects=False) as resp:
        text = await resp.text()
        if seen is not None:
            seen.append(text)
        try:
            return resp.status, json.loads(text)
        except ValueError:
            return resp.status, text


def test_the_dashboard_is_disabled_without_tokens(env: Any) -> None:
    async def main() -> None:
        async with env() as run:
            for path in ("/ui/", "/ui/login", "/ui/api/overview", "/ui/api/stream", "/ui/api/dlq"):
                status, body = await fetch(run, path, None)
                assert (status, body) == (403, "dashboard disabled: configure dashboard.tokens"), path
                status, body = await fetch(run, path, "anything")
                assert status == 403, path
            status, _ = await fetch(run, "/ui/api/dlq/1/replay", "anything", "POST")
            assert status == 403
            status, _ = await fetch(run, "/healthz", None)
            assert status == 200

    asyncio.run(main())


def test_tokens_roles_and_the_login_cookie(env: Any) -> None:
    async def main() -> None:
        async with env(overrides=TOKENS) as run:
            for path in ("/ui/api/overview", "/ui/api/search?q=x", "/ui/api/dlq", "/ui/api/errors",
                         "/ui/api/stream", "/ui/static/app.js"):
                assert (await fetch(run, path, None))[0] == 401, path
                assert (await fetch(run, path, "wrong-token"))[0] == 401, path
            status, _ = await fetch(run, "/ui/", None)
            assert status == 303  # a browser goes to the login form
            assert (await fetch(run, "/ui/api/whoami", READ))[1] == {"role": "read"}
            assert (await fetch(run, "/ui/api/whoami", OPERATOR))[1] == {"role": "operator"}
            status, page = await fetch(run, "/ui/login", None)
            assert status == 200 and 'name="token"' in page
            async with run.session.post(run.url + "/ui/login", data={"token": "wrong"}, allow_redirects=False) as r:
                assert r.status == 401 and "dockyard_token" not in r.cookies
            async with run.session.post(run.url + "/ui/login", data={"token": READ}, allow_redirects=False) as r:
                assert r.status == 303 and r.headers["Location"] == "/ui/"
                cookie = r.headers["Set-Cookie"]
                assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/ui" in cookie
                jar = {"Cookie": f"dockyard_token={r.cookies['dockyard_token'].value}"}
            async with run.session.get(run.url + "/ui/", headers=jar, allow_redirects=False) as r:
                assert r.status == 200 and "<title>Dockyard dashboard</title>" in await r.text()
                assert "script-src 'self'" in r.headers["Content-Security-Policy"]
                assert "http" not in (await r.text()).replace("http-equiv", "")  # no external URL
            async with run.session.get(run.url + "/ui/api/whoami", headers=jar) as r:
                assert (await r.json()) == {"role": "read"}
            async with run.session.post(run.url + "/ui/login", data={"token": OPERATOR}, allow_redirects=False) as r:
                jar = {"Cookie": f"dockyard_token={r.cookies['dockyard_token'].value}"}
            async with run.session.post(run.url + "/ui/api/dlq/1/replay", headers=jar) as r:
                assert r.status == 403  # a cookie alone (a cross-site form) cannot replay
            async with run.session.post(run.url + "/ui/api/dlq/1/replay", headers={**jar, "X-Dockyard-UI": "1"}) as r:
                assert r.status == 404  # no job 1 in an empty store; the request itself was allowed

    asyncio.run(main())


def test_overview_search_timeline_lineage_errors_and_replay(env: Any) -> None:
    async def main() -> None:
        async with env(warehouses=("qimen-std", "jd"), overrides=TOKENS, feedback=Feedback(step_delay=0.02)) as run:
            seen: list[str] = []
            good, other, bad = example(), example("jd-three-decimal-discount"), example("all-lines-zero")
            bad["channel"] = "jd"
            await run.post("/orders/batch", [good, other, bad])
            await run.until(good["order_no"], lambda d: d["delivery"] == "delivered" and d["waybills"])
            await run.until(other["order_no"], lambda d: d["delivery"] == "delivered")
            await run.until(bad["order_no"], lambda d: d["delivery"] == "dlq")
            for _ in range(400):  # the feedback of the delivered orders settles (nothing left to push or forward)
                if (run.sim.stats()["pending_lifecycles"] == 0
                        and (await run.service.db.read(queries.summary))["outbox_depth"] == 0):
                    break
                await asyncio.sleep(0.05)

            # overview: the same numbers as the store's
            status, ov = await fetch(run, "/ui/api/overview", READ, seen=seen)
            assert status == 200
            summary = await run.service.db.read(queries.summary)
            counted = await run.service.db.read(lambda c: dict(c.execute(
                "SELECT warehouse, COUNT(*) FROM dy_journal WHERE step = 'received' AND outcome = 'ok' "
                "GROUP BY warehouse")))
            dead = await run.service.db.read(lambda c: c.execute(
                "SELECT COUNT(*) FROM dy_jobs WHERE state = 'dead'")[0][0])
            assert ov["outbox_depth"] == summary["outbox_depth"]
            assert ov["in_doubt"] == summary["in_doubt"] == 0
            assert ov["dlq_size"] == dead == 1
            for warehouse, n in counted.items():
                assert ov["warehouses"][warehouse]["total"]["received"] == n
                assert sum(ov["warehouses"][warehouse]["received"]) == n
            assert ov["warehouses"]["qimen-std"]["total"]["delivered"] >= 1
            assert ov["warehouses"]["jd"]["total"] == {"received": 2, "delivered": 1, "failed": 1}
            assert 0 < ov["success_rate"] < 1
            assert ov["latency_ms"]["count"] >= 2 and ov["latency_ms"]["p50"] > 0
            assert ov["latency_ms"]["p99"] >= ov["latency_ms"]["p50"]
            assert ov["circuits"] == {"qimen-std": "closed", "jd": "closed"}

            # search by order number, waybill and shop
            doc = await run.order(good["order_no"])
            waybill = doc["waybills"][0]
            waybill = waybill if isinstance(waybill, str) else next(iter(waybill.values()))
            for q in (good["order_no"], str(waybill), good["shop_code"]):
                status, found = await fetch(run, f"/ui/api/search?q={q}", READ, seen=seen)
                assert status == 200 and good["order_no"] in [r["order_no"] for r in found["results"]], q
            status, found = await fetch(run, "/ui/api/search?q=no-such-order-%25", READ)
            assert found["results"] == []

            # timeline and lineage
            status, tl = await fetch(run, f"/ui/api/orders/{good['order_no']}", READ, seen=seen)
            names = [s["step"] for s in tl["timeline"]]
            assert status == 200 and names[:7] == ["received", "validated", "routed", "transformed", "sent",
                                                   "response", "committed"]
            assert "feedback" in names and tl["order"]["delivery"] == "delivered"
            assert any("body" in (s["detail"] or {}) for s in tl["timeline"])
            status, lineage = await fetch(run, f"/ui/api/orders/{good['order_no']}/lineage", READ, seen=seen)
            assert status == 200
            fields = {f["field"]: f for f in lineage["fields"]}
            code = fields["deliveryOrder.deliveryOrderCode"]
            assert code["value"] == good["order_no"] and [s["path"] for s in code["sources"]] == ["order_no"]
            assert (await fetch(run, "/ui/api/orders/nope", READ))[0] == 404

            # DLQ, errors, replay
            status, dlq = await fetch(run, "/ui/api/dlq", READ, seen=seen)
            [job] = [j for j in dlq["jobs"] if j["order_no"] == bad["order_no"]]
            status, shown = await fetch(run, f"/ui/api/dlq/{job['id']}", READ, seen=seen)
            assert status == 200 and shown["reason"] and "dead-lettered" in [s["step"] for s in shown["history"]]
            status, errs = await fetch(run, "/ui/api/errors", READ, seen=seen)
            assert any(g["warehouse"] == "jd" and g["count"] >= 1 and bad["order_no"] in g["orders"]
                       for g in errs["groups"])
            status, _ = await fetch(run, f"/ui/api/dlq/{job['id']}/replay", READ, "POST")
            assert status == 403
            status, done = await fetch(run, f"/ui/api/dlq/{job['id']}/replay", OPERATOR, "POST", seen=seen)
            assert (status, done["result"], done["by"]) == (200, "replayed", "dashboard:operator")
            replayed = [s for s in await run.journal(bad["order_no"]) if s["step"] == "replayed"]
            assert replayed and replayed[0]["detail"]["by"] == "dashboard:operator"
            await run.until(bad["order_no"], lambda d: d["delivery"] == "dlq")  # still bad: dead again
            status, _ = await fetch(run, "/ui/api/dlq/99999999/replay", OPERATOR, "POST")
            assert status == 404

            for text in seen:
                for value in run.plan.secret_values.values():
                    assert value not in text

    asyncio.run(main())


def test_the_event_stream_pushes_the_overview_every_second(env: Any) -> None:
    async def main() -> None:
        async with aiohttp.ClientSession() as own:
            async with env(overrides=TOKENS) as run:
                await run.post("/orders", example())
                events: list[dict[str, Any]] = []
                start = time.monotonic()
                async with run.session.get(run.url + "/ui/api/stream", headers=bearer(READ)) as resp:
                    assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/event-stream")
                    async for line in resp.content:
                        if line.startswith(b"data: "):
                            events.append(json.loads(line[6:]))
                            if len(events) == 2:
                                break
                        assert time.monotonic() - start < 3.5
                assert events[-1]["warehouses"]["qimen-std"]["total"]["received"] == 1
                for value in run.plan.secret_values.values():
                    assert value not in json.dumps(events)
                # a client that stays connected does not keep the service from stopping
                kept = await own.get(run.url + "/ui/api/stream", headers=bearer(READ))
                await kept.content.readline()
                stopping = time.monotonic()
            assert time.monotonic() - stopping < 5
            kept.close()

    asyncio.run(asyncio.wait_for(main(), 30))


def test_answers_are_encoded_and_redacted_off_the_event_loop(env: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The event loop answers ingest and callbacks: the dashboard's answers (an order's timeline
    holds every request and answer, scanned for every secret's value) are encoded and redacted in
    the reader thread that read them, /metrics' text is made there too, and so is GET /orders/{no}'s
    JSON. The answers are the same as ever, 404s included."""
    threads: dict[str, set[int]] = {}

    def where(name: str, plain: Any) -> Any:
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            threads.setdefault(name, set()).add(threading.get_ident())
            return plain(*args, **kwargs)
        return wrapped

    monkeypatch.setattr(ui._Dashboard, "_encode", where("dashboard", ui._Dashboard._encode))
    monkeypatch.setattr(Metrics, "render", where("metrics", Metrics.render))
    monkeypatch.setattr(queries, "order_status", where("order", queries.order_status))

    async def main() -> None:
        async with env(overrides=TOKENS) as run:
            order = example()
            await run.post("/orders", order)
            await run.until(order["order_no"], lambda d: d["delivery"] == "delivered")
            loop = threading.get_ident()  # the service runs on this test's event loop
            threads.clear()
            no = order["order_no"]
            for path in ("/ui/api/overview", f"/ui/api/orders/{no}", f"/ui/api/search?q={no}", "/ui/api/dlq",
                         "/ui/api/dlq/groups", "/ui/api/errors", "/metrics", f"/orders/{no}"):
                status, body = await fetch(run, path, READ)
                assert status == 200, (path, body)
                assert all(value not in json.dumps(body) for value in run.plan.secret_values.values())
            status, body = await fetch(run, f"/orders/{no}", READ)
            assert body["order_no"] == no and body["delivery"] == "delivered" and body["jobs"]
            status, body = await fetch(run, f"/ui/api/orders/{no}", READ)
            assert body["order"]["order_no"] == no and body["timeline"]
            for path, error in (("/ui/api/orders/nope", "no order 'nope'"), ("/ui/api/dlq/12345", "no such job"),
                                ("/orders/nope", "no order 'nope'")):
                assert await fetch(run, path, READ) == (404, {"error": error})
            assert set(threads) == {"dashboard", "metrics", "order"}
            assert all(loop not in idents for idents in threads.values()), threads

    asyncio.run(asyncio.wait_for(main(), 60))
