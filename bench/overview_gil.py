"""Benchmark: what one dashboard overview costs the reader thread that computes it, and how long it
keeps another Python thread (the event loop, in the service) waiting for the GIL (issue 12: "ten
open dashboards don't move ingest's p99").

    python bench/overview_gil.py STORE.db [--rounds 3] [--computes 40]

STORE.db is a SQLite store of a run (e.g. `bench/dashboard_ingest.py --workdir DIR` leaves
DIR/state.db). Its counter rows are copied, bucket by bucket in turn, into a scratch copy so that
the overview's five-minute window is full and ends now (60 buckets: what the overview reads at the
end of a long run), and the overview is computed there:

- per statement: wall time, thread CPU and rows returned (median of `--computes` overviews);
- the GIL: the main thread spins in Python, as the event loop does while it answers a request,
  while a second thread computes one overview every 50 ms; the spinner's time asleep (wall − on a
  CPU − waiting for a CPU, from /proc/self/task/<tid>/schedstat) is its wait for the GIL, since it
  does nothing else that sleeps. Phases with and without the computing alternate, `--rounds`
  times; the figure is (asleep with − asleep without) per overview.

Run it with each tree's interpreter on the same store to compare two trees' `ui.overview`. The
wait is in wall time, so another load on the machine inflates both phases alike; CPU figures are
per thread.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any


def fill_window(src: Path, dst: Path) -> int:
    """dst: a copy of src whose counters fill the window that ends now (src's buckets repeated)."""
    import sqlite3

    from dockyard.service.counters import BUCKET_US  # the tree's own bucket width

    shutil.copyfile(src, dst)
    conn = sqlite3.connect(dst)
    conn.execute("PRAGMA journal_mode=DELETE")
    rows = conn.execute("SELECT bucket, warehouse, kind, node, n, sum_us FROM dy_counters").fetchall()
    by_bucket: dict[int, list[tuple[Any, ...]]] = {}
    for row in rows:
        by_bucket.setdefault(int(row[0]), []).append(row[1:])
    if not by_bucket:
        raise SystemExit(f"{src} has no counter rows")
    sources = [by_bucket[b] for b in sorted(by_bucket)]
    now_bucket = time.time_ns() // 1000 // BUCKET_US * BUCKET_US
    conn.execute("DELETE FROM dy_counters")
    out = [(now_bucket - (61 - k) * BUCKET_US, *r) for k in range(62) for r in sources[k % len(sources)]]
    conn.executemany("INSERT INTO dy_counters (bucket, warehouse, kind, node, n, sum_us) VALUES (?, ?, ?, ?, ?, ?)",
                     out)
    conn.commit()
    conn.close()
    return len(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("store", type=Path)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--computes", type=int, default=40)
    args = ap.parse_args(argv)

    from dockyard.service import ui
    from dockyard.service.db import _SqliteConn

    work = Path(tempfile.mkdtemp(prefix="dockyard-overview-gil-"))
    try:
        rows = fill_window(args.store, work / "state.db")
        conn = _SqliteConn(str(work / "state.db"))
        now = time.time_ns() // 1000
        statements: dict[str, list[float]] = {}
        plain = conn.execute

        def timed(sql: str, params: Any = ()) -> list[tuple[Any, ...]]:
            w, c = time.perf_counter(), time.thread_time()
            got = plain(sql, params)
            entry = statements.setdefault(" ".join(sql.split())[:90], [0.0, 0.0, 0.0])
            entry[0] += time.perf_counter() - w
            entry[1] += time.thread_time() - c
            entry[2] += len(got)
            return got

        def one() -> None:
            conn.raw.execute("BEGIN")
            try:
                ui.overview(conn, now)
            finally:
                conn.raw.execute("COMMIT")

        conn.execute = timed  # type: ignore[method-assign]
        walls, cpus = [], []
        for _ in range(args.computes):
            w, c = time.perf_counter(), time.thread_time()
            one()
            walls.append(time.perf_counter() - w)
            cpus.append(time.thread_time() - c)
        conn.execute = plain  # type: ignore[method-assign]
        k = args.computes
        print(f"ui.overview from {ui.__file__}\nwindow: {rows} counter rows in 62 buckets ending now")
        print(f"one overview: wall {statistics.median(walls) * 1e3:.2f} ms, thread CPU "
              f"{statistics.median(cpus) * 1e3:.2f} ms (median of {k})")
        for sql, (w, c, n) in sorted(statements.items(), key=lambda kv: -kv[1][1]):
            print(f"  {w / k * 1e3:6.2f} ms wall {c / k * 1e3:6.2f} ms CPU {n / k:6.0f} rows  {sql}")

        tid = threading.get_native_id()

        def sched() -> tuple[float, float]:
            on_cpu, waiting, _ = Path(f"/proc/self/task/{tid}/schedstat").read_text().split()
            return int(on_cpu) / 1e9, int(waiting) / 1e9

        def computing(active: bool) -> None:
            for _ in range(k):
                time.sleep(0.05)
                if active:
                    one()

        asleep: dict[bool, list[float]] = {False: [], True: []}
        for r in range(args.rounds):
            for active in ((False, True) if r % 2 == 0 else (True, False)):
                t = threading.Thread(target=computing, args=(active,))
                (cpu0, wait0), wall0 = sched(), time.perf_counter()
                t.start()
                while t.is_alive():
                    pass  # the spinner: Python that wants the GIL all the time
                (cpu1, wait1), wall = sched(), time.perf_counter() - wall0
                asleep[active].append(wall - (cpu1 - cpu0) - (wait1 - wait0))
        per = [(on - off) / k * 1e3 for on, off in zip(asleep[True], asleep[False], strict=True)]
        print(f"the spinner's wait for the GIL per overview: {statistics.median(per):.2f} ms (median of "
              f"{args.rounds} rounds: {', '.join(f'{x:.2f}' for x in per)}); asleep without computing "
              f"{statistics.median(asleep[False]) / k * 1e3:.2f} ms per 50 ms")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
