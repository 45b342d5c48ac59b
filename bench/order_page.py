"""An order's page (`GET /orders/{no}`'s read, `queries.order_status` through `Database.read_sync`)
as of a commit and in this tree, on one filled store, alone and beside threads that keep the GIL
busy with pure Python (as the event loop and the other readers do during a delivery run).

    python bench/order_page.py --against c41e480 [--store postgres] [-n 1000000] [--busy 0 --busy 1]

The store is filled as bench/overview_scale.py fills it (N orders of history, each with its job);
the page asked for is a history order's. Both trees' `Database` (db.py) and `queries.py` are used:
the one as of COMMIT is read from git and run beside this tree's, on the same store, the calls
alternating in blocks of 50. Per setting: wall time per call (p50, p99, mean) of each, and this
process's CPU per call.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import types
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from overview_scale import fill, pct  # noqa: E402

from dockyard.service import queries  # noqa: E402
from dockyard.service.db import Database  # noqa: E402


def as_of(commit: str, path: str) -> types.ModuleType:
    """The module at `path` as of `commit` (read from git), beside this tree's own."""
    source = subprocess.run(["git", "-C", str(HERE.parent), "show", f"{commit}:{path}"], capture_output=True,
                            text=True, check=True).stdout
    name = f"_as_of_{commit}_{Path(path).stem}"
    module = sys.modules[name] = types.ModuleType(name)  # (dataclasses look their module up)
    exec(compile(source, f"{commit}:{path}", "exec"), module.__dict__)  # noqa: S102 - our own file
    return module


def _spin(stop: threading.Event) -> None:
    """Pure Python that holds the GIL until the interpreter's switch interval takes it away."""
    n = 0
    while not stop.is_set():
        for i in range(1000):
            n += i


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--against", required=True, metavar="COMMIT")
    ap.add_argument("--store", choices=("sqlite", "postgres"), default="sqlite")
    ap.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    ap.add_argument("--pg-database", default="dockyard_order_page_bench",
                    help="the database made afresh for the run (dropped first: never name one in use)")
    ap.add_argument("-n", type=int, default=1_000_000, help="orders of history")
    ap.add_argument("--calls", type=int, default=2000, help="calls per tree and setting")
    ap.add_argument("--busy", type=int, action="append", metavar="THREADS",
                    help="threads spinning in Python meanwhile (repeatable; default: 0 and 1)")
    args = ap.parse_args(argv)
    if args.store == "postgres":
        import psycopg

        with psycopg.connect(args.pg_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{args.pg_database}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{args.pg_database}"')
        url = args.pg_url.rsplit("/", 1)[0] + "/" + args.pg_database
        folder: Path | None = None
    else:
        folder = Path(tempfile.mkdtemp(prefix="dockyard-order-page-"))
        url = f"sqlite:///{folder / 'state.db'}"
    old_db = as_of(args.against, "dockyard/service/db.py")
    old_q = as_of(args.against, "dockyard/service/queries.py")
    trees = {args.against: (old_db.Database(url, readers=1), old_q.order_status),
             "this tree": (Database(url, readers=1), queries.order_status)}
    db = trees["this tree"][0]
    try:
        fill(db, args.n, 100, db.read_sync(lambda c: c.now))
        if db.dialect == "postgres":
            db.claim_sync(lambda c: c.execute("ANALYZE"))
        probe = f"H{max(1, args.n // 2)}"
        for name, (tree_db, fn) in trees.items():  # the same answer, and warm (psycopg prepares on the 6th use)
            for _ in range(10):
                assert tree_db.read_sync(lambda c, f=fn: f(c, probe)) == db.read_sync(
                    lambda c: queries.order_status(c, probe)), name
        print(f"{args.store}: {args.n:,} orders of history; the page of {probe}, {args.calls:,} calls per tree "
              f"and setting, in alternating blocks of 50")
        for busy in args.busy or [0, 1]:
            stop = threading.Event()
            spinners = [threading.Thread(target=_spin, args=(stop,), daemon=True) for _ in range(busy)]
            for t in spinners:
                t.start()
            wall: dict[str, list[float]] = {name: [] for name in trees}
            cpu: dict[str, float] = dict.fromkeys(trees, 0.0)
            try:
                for _ in range(args.calls // 50):
                    for name, (tree_db, fn) in trees.items():
                        c0 = time.thread_time()
                        for _ in range(50):
                            t0 = time.perf_counter()
                            tree_db.read_sync(lambda c, f=fn: f(c, probe))
                            wall[name].append((time.perf_counter() - t0) * 1000)
                        cpu[name] += time.thread_time() - c0
            finally:
                stop.set()
                for t in spinners:
                    t.join()
            for name, values in wall.items():
                per_call = cpu[name] / len(values) * 1e6
                print(f"  {busy} busy thread(s), {name:<10} p50 {pct(values, 50):7.3f} ms   "
                      f"p99 {pct(values, 99):7.3f} ms   mean {statistics.fmean(values):7.3f} ms   "
                      f"this thread's CPU {per_call:6.0f} µs per call")
    finally:
        for tree_db, _ in trees.values():
            tree_db.close()
        if folder is not None:  # a million orders' SQLite store: not left in /tmp
            shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
