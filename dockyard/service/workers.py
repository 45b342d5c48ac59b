"""`dockyard serve` with `workers: N` > 1: N service processes behind one listening socket.

One Python process runs on one core (the GIL), and on a busy night the service's own CPU is the
limit, so `serve` can fork N workers that share the listening socket (the kernel hands each new
connection to one of them) and the state store. Every worker is a whole service: it takes orders
and callbacks, and runs delivery loops for every warehouse. They coordinate only through the
store: a claim is atomic there, so no job is taken twice, and each worker holds a lock on its own
id, so the others take back a dead worker's in-flight jobs at once. A warehouse's `concurrency`,
rate limit and circuit hold for all workers together: claims count and lock them in the store
(store.claim), exactly as for several nodes on one PostgreSQL.

The parent binds, forks, and supervises: a worker that dies is started again; SIGTERM/SIGINT stop
them all cleanly. Workers die with the parent (PR_SET_PDEATHSIG), so a parent killed with SIGKILL
leaves nothing behind that keeps sending.

A scrape of /metrics reaches whichever worker accepts it, so the workers keep their metrics in
one directory of prometheus_client multiprocess files that the parent makes (and removes), and
each answers for all (metrics.py); the parent marks a worker that ended as dead there.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import shutil
import signal
import socket
import sys
import tempfile
import time

from dockyard.service.context import ServiceContext

__all__ = ["serve_workers"]


def _die_with_parent() -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the supervisor's SIGTERM is then the only stop
        pass


def _worker(ctx: ServiceContext, sock: socket.socket, index: int, parent: int) -> int:
    _die_with_parent()
    if os.getppid() != parent:  # the parent died between fork and prctl
        return 1
    from dockyard.service.app import Service, install_uvloop, run_forever

    install_uvloop()
    service = Service(ctx)

    def ready(url: str) -> None:
        # one write, so that the lines of workers starting together never interleave
        sys.stderr.write(f"dockyard worker {index} (pid {os.getpid()}) ready; "
                         f"{service.recovered} in-flight jobs recovered\n")
        sys.stderr.flush()

    asyncio.run(run_forever(service, ready, sock=sock))
    return 0


def serve_workers(ctx: ServiceContext) -> int:
    config = ctx.config
    n = config.workers
    family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((config.host, config.port))
    sock.listen(2048)
    sock.setblocking(False)
    port = sock.getsockname()[1]
    parent = os.getpid()
    stopping = False
    children: dict[int, int] = {}
    from dockyard.service.metrics import MULTIPROC_ENV

    own_dir = not os.environ.get(MULTIPROC_ENV)
    if own_dir:  # one directory for this run (an operator's own setting is kept as given)
        os.environ[MULTIPROC_ENV] = tempfile.mkdtemp(prefix="dockyard-metrics-")
    metrics_dir = os.environ[MULTIPROC_ENV]

    def spawn(index: int) -> None:
        pid = os.fork()
        if pid == 0:  # the worker: never returns into the parent's code
            code = 1
            try:
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGUSR2, signal.SIG_DFL)
                signal.signal(signal.SIGHUP, signal.SIG_IGN)  # until the worker's loop handles it (a reload)
                code = _worker(ctx, sock, index, parent)
            finally:
                os._exit(code)
        children[pid] = index

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True
        for pid in list(children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    def forward(signum: int, frame: object) -> None:  # SIGUSR2: every worker dumps its tasks
        for pid in list(children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    def reload(signum: int, frame: object) -> None:
        """SIGHUP: every worker reloads; so does the parent's context, from which a worker that has
        to be started again is forked (else it would come back with the old versions)."""
        from dockyard.service.reload import prepare_sync

        with contextlib.suppress(Exception):  # refused: the workers journal and log why
            prepare_sync(ctx)
        forward(signum, frame)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGUSR2, forward)
    signal.signal(signal.SIGHUP, reload)
    for index in range(n):
        spawn(index)
    print(f"dockyard serving on http://{config.host}:{port} (store {_shown(config.store)}; {n} workers)",
          file=sys.stderr, flush=True)
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        except InterruptedError:  # pragma: no cover - PEP 475 retries; kept for clarity
            continue
        if pid not in children:
            continue
        index = children.pop(pid)
        _worker_gone(pid, metrics_dir)
        if stopping:
            continue
        print(f"dockyard worker {index} (pid {pid}) ended ({_describe(status)}); starting it again",
              file=sys.stderr, flush=True)
        time.sleep(0.5)  # a worker that cannot start must not spin
        spawn(index)
    sock.close()
    if own_dir:
        shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0


def _worker_gone(pid: int, metrics_dir: str) -> None:
    """Its in-flight requests and circuit states no longer count; its counters still do."""
    from prometheus_client.multiprocess import mark_process_dead

    with contextlib.suppress(OSError):
        mark_process_dead(pid, metrics_dir)  # type: ignore[no-untyped-call]


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"signal {os.WTERMSIG(status)}"
    return f"exit {os.WEXITSTATUS(status)}"


def _shown(url: str) -> str:
    from dockyard.runtime.idempotency import redact_url

    return redact_url(url)
