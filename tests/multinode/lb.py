"""A TCP load balancer in front of the service nodes, as a warehouse sees a deployment: one
address for its callbacks, spread over the nodes.

    python lb.py LISTEN_HOST LISTEN_PORT BACKEND_HOST:PORT [BACKEND_HOST:PORT …]

Each accepted connection goes to the next backend in turn; a backend that refuses or does not
answer the connect within a second is skipped for that connection (a killed node: its address is
there, its port is closed), so a warehouse's retry after a node died lands on a live one. When no
backend takes it the client's connection is closed, as a real balancer with no healthy target
does. Prints `ready HOST:PORT` once listening; runs until stdin closes (the parent is gone).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import sys


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


async def main(host: str, port: int, backends: list[tuple[str, int]]) -> None:
    turn = itertools.count()

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        start = next(turn)
        for i in range(len(backends)):
            bhost, bport = backends[(start + i) % len(backends)]
            try:
                up_reader, up_writer = await asyncio.wait_for(asyncio.open_connection(bhost, bport), 1.0)
            except (OSError, TimeoutError):
                continue
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
            return
        writer.close()

    server = await asyncio.start_server(accept, host, port, backlog=1024)
    bound = server.sockets[0].getsockname()
    sys.stdout.write(f"ready {bound[0]}:{bound[1]}\n")
    sys.stdout.flush()
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    server.close()


if __name__ == "__main__":
    listen_host, listen_port, *targets = sys.argv[1:]
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    parsed = [(t.rsplit(":", 1)[0], int(t.rsplit(":", 1)[1])) for t in targets]
    asyncio.run(main(listen_host, int(listen_port), parsed))
