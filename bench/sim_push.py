"""Benchmark: the simulator's CPU per callback push, aiohttp's client against the lean keep-alive
client the simulator now pushes with (dockyard.service.http_client), in one process, interleaved.

    python bench/sim_push.py [--pushes 3000] [--rounds 7] [--concurrency 32]

A server process answers every POST with a small JSON ack (aiohttp, as the service does); this
process pushes the same signed QIMEN confirm (an XML body and a signed query, as
dockyard.simulate builds it) `--pushes` times, `--concurrency` at a time, first with one client and
then the other, round after round. The figure is this process's CPU (`time.process_time`) per push,
best of the rounds: what a push costs the rig, whatever the machine's other load does to wall time.
The server's CPU is not counted (it is the same for both).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import sys
import time
from collections.abc import Awaitable, Callable
from urllib.parse import urlencode


def _serve(port_out: multiprocessing.connection.Connection) -> None:
    from aiohttp import web

    async def ack(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=b'{"flag":"success","code":"0","message":"ok"}', content_type="application/json")

    async def main() -> None:
        app = web.Application()
        app.router.add_post("/{tail:.*}", ack)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port_out.send(runner.addresses[0][1])
        await asyncio.Event().wait()

    asyncio.run(main())


async def _timed(push: Callable[[], Awaitable[bool]], pushes: int, concurrency: int) -> float:
    left = pushes

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            assert await push()

    start = time.process_time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return (time.process_time() - start) / pushes


async def _run(url: str, body: bytes, args: argparse.Namespace) -> dict[str, float]:
    import aiohttp

    from dockyard.service.http_client import HttpPool, prepare

    headers = {"Content-Type": "text/xml;charset=utf-8"}
    timeout = aiohttp.ClientTimeout(total=5.0)
    pool = HttpPool(limit=256, connect_timeout=5.0, timeout=5.0)
    best = {"aiohttp ClientSession": float("inf"), "HttpPool (now)": float("inf")}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256)) as session:

        async def with_aiohttp() -> bool:  # as the simulator's Pusher._post did
            async with session.post(url, data=body, headers=headers, timeout=timeout) as resp:
                return resp.status == 200 and bool(await resp.read())

        async def with_pool() -> bool:  # as it does now
            answer = await pool.request(prepare("POST", url, [("Content-Type", headers["Content-Type"])], body))
            return answer.status == 200 and bool(answer.body)

        for push in (with_aiohttp, with_pool):  # warm-up: connections open, code paths hot
            await _timed(push, 200, args.concurrency)
        for _ in range(args.rounds):
            best["aiohttp ClientSession"] = min(best["aiohttp ClientSession"],
                                                await _timed(with_aiohttp, args.pushes, args.concurrency))
            best["HttpPool (now)"] = min(best["HttpPool (now)"], await _timed(with_pool, args.pushes, args.concurrency))
    await pool.close()
    return best


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--pushes", type=int, default=3000)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--concurrency", type=int, default=32)
    args = ap.parse_args(argv)
    from dockyard.simulate import protocols as p

    xml = p.qimen_confirm_xml(order_no="DY20261111000001", order_id="WMS-1", warehouse_code="WH-HZ-01",
                              out_biz_code="OBC-1", when="2026-11-11 10:00:00", carrier="SF", waybill="SF1234567890",
                              weight="1.25", lines=[("1", "SKU-100215-STD", 1)])
    context = {"methodPrefix": "taobao.qimen.", "appKey": "23456789", "customerId": "STD-C-1001"}
    query = p.qimen_callback_query("deliveryorder.confirm", context, xml, "TEST-ONLY-bench-secret")
    parent, child = multiprocessing.Pipe()
    server = multiprocessing.Process(target=_serve, args=(child,), daemon=True)
    server.start()
    try:
        port = parent.recv()
        url = f"http://127.0.0.1:{port}/callbacks/qimen-std/deliveryorder.confirm?{urlencode(query)}"
        best = asyncio.run(_run(url, xml.encode("utf-8"), args))
    finally:
        server.terminate()
    base = best["aiohttp ClientSession"]
    print(f"{args.pushes} pushes x {args.rounds} rounds, {args.concurrency} in flight; this process's CPU per push, "
          "best of the rounds")
    for name, seconds in best.items():
        print(f"  {name:24} {seconds * 1e6:8.1f} µs   {seconds / base:5.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
