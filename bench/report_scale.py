"""How long `dockyard report` takes on a large journal.

    python bench/report_scale.py -n 1000000 [--store sqlite|postgres] [--pg-url URL] [--against COMMIT]

Writes a synthetic but complete journal for N orders into a fresh store — per order the rows the
service writes for a delivered order (received, validated, routed, transformed, sent, response,
committed), about 2% retries and 0.5% dead letters, and three feedback events (accepted, shipped,
signed) with their `dy_events` rows — then times `build_report` over the whole window, and over
one hour of it, in the same run. The ratio printed is report time against the time to scan the
journal once (`SELECT COUNT(*)` over the window), the floor any report has to pay. With
`--against COMMIT` the report as of that commit is timed too, interleaved, best of --rounds.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from dockyard.service.db import Database
from dockyard.service.report import build_report

WAREHOUSES = ("qimen-std", "sf", "jd", "cainiao")
STEPS = ("received", "validated", "routed", "transformed", "sent", "response")


def fill(db: Database, n: int, start: int, seed: int = 1) -> None:
    rng = random.Random(seed)
    chunk = 20_000
    for base in range(0, n, chunk):
        journal: list[tuple[object, ...]] = []
        events: list[tuple[object, ...]] = []
        for i in range(base, min(n, base + chunk)):
            order = f"ORD{i:09d}"
            wh = WAREHOUSES[i % 4]
            at = start + i * 3600_000_000 // max(1, n // 24)  # n orders spread over 24 hours
            for k, step in enumerate(STEPS):
                journal.append((at + k * 1000, order, wh, None if k < 2 else "create", step,
                                "200" if step == "response" else "ok", None, None))
            if rng.random() < 0.02:
                journal.append((at + 7000, order, wh, "create", "retry", "scheduled", None,
                                '{"reason":"HTTP 503 from ' + wh + '"}'))
            if rng.random() < 0.005:
                journal.append((at + 9000, order, wh, "create", "dead-lettered", "dlq", None,
                                '{"reason":"rejected by ' + wh + ': missing cargoes"}'))
                continue
            done = at + rng.randint(50_000, 2_000_000)
            journal.append((done, order, wh, "create", "committed", "accepted", None, None))
            for j, status in enumerate(("accepted", "shipped", "signed")):
                when = done + (j + 1) * rng.randint(1_000_000, 600_000_000)
                journal.append((when, order, wh, "x", "feedback", "ok", None, json.dumps({"status": status})))
                events.append((wh, f"{order}-{status}", order, status, "{}", when))
        db.write_sync(lambda c, jr=journal, ev=events: (
            c.executemany("INSERT INTO dy_journal (at, order_no, warehouse, flow, step, outcome, elapsed_us, detail) "
                          "VALUES (?, ?, ?, ?, ?, ?, ?, ?)", jr),
            c.executemany("INSERT INTO dy_events (warehouse, event_id, order_no, status, document, received_at) "
                          "VALUES (?, ?, ?, ?, ?, ?)", ev)))


def _report_as_of(commit: str) -> Any:
    """build_report from dockyard/service/report.py as it was at `commit`."""
    import subprocess
    import types

    root = Path(__file__).resolve().parents[1]
    source = subprocess.run(["git", "-C", str(root), "show", f"{commit}:dockyard/service/report.py"],
                            capture_output=True, text=True, check=True).stdout
    module = types.ModuleType(f"report_{commit}")
    exec(compile(source, f"{commit}:report.py", "exec"), module.__dict__)  # noqa: S102 - our own file
    return module.build_report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("-n", type=int, default=1_000_000)
    ap.add_argument("--store", choices=("sqlite", "postgres"), default="sqlite")
    ap.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/test")
    ap.add_argument("--against", metavar="COMMIT", help="also time build_report as of this commit (read from git), "
                    "interleaved with this tree's, best of --rounds")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    if args.store == "postgres":
        import psycopg

        with psycopg.connect(args.pg_url, autocommit=True) as conn:
            conn.execute("DROP DATABASE IF EXISTS dockyard_report_bench WITH (FORCE)")
            conn.execute("CREATE DATABASE dockyard_report_bench")
        url = args.pg_url.rsplit("/", 1)[0] + "/dockyard_report_bench"
    else:
        url = f"sqlite:///{Path(tempfile.mkdtemp(prefix='dockyard-report-')) / 'state.db'}"
    db = Database(url)
    start = 1_700_000_000_000_000
    t0 = time.perf_counter()
    fill(db, args.n, start)
    if args.store == "postgres":
        db.write_sync(lambda c: c.execute("ANALYZE"))
    filled = time.perf_counter() - t0
    rows = db.read_sync(lambda c: c.execute("SELECT COUNT(*) FROM dy_journal")[0][0])
    end = start + 3 * 24 * 3600_000_000
    t0 = time.perf_counter()
    db.read_sync(lambda c: c.execute("SELECT COUNT(*) FROM dy_journal WHERE at >= ? AND at < ?", (start, end)))
    scan = time.perf_counter() - t0
    t0 = time.perf_counter()
    report = db.read_sync(lambda c: build_report(c, start, end))
    whole = time.perf_counter() - t0
    if args.against:  # wall clock and this process's CPU (SQLite runs in it; PostgreSQL's server does not)
        older = _report_as_of(args.against)
        best = {"this tree": whole, args.against: float("inf")}
        cpu = {"this tree": float("inf"), args.against: float("inf")}
        for _ in range(args.rounds):
            for name, fn in ((args.against, older), ("this tree", build_report)):
                t0, c0 = time.perf_counter(), time.process_time()
                db.read_sync(lambda c, f=fn: f(c, start, end))
                best[name] = min(best[name], time.perf_counter() - t0)
                cpu[name] = min(cpu[name], time.process_time() - c0)
        whole = best["this tree"]
    t0 = time.perf_counter()
    db.read_sync(lambda c: build_report(c, start + 3600_000_000, start + 2 * 3600_000_000))
    hour = time.perf_counter() - t0
    db.close()
    if args.store == "sqlite":
        shutil.rmtree(Path(url[len("sqlite:///"):]).parent, ignore_errors=True)
    delivered = sum(r["delivered"] for r in report["rows"])
    print(f"{args.store}: {args.n:,} orders, {rows:,} journal rows (written in {filled:.0f}s)")
    print(f"  scan of the window (baseline): {scan:.2f}s")
    print(f"  report, whole window:          {whole:.2f}s  ({whole / scan:.1f}x the scan); delivered {delivered:,}")
    print(f"  report, one hour:              {hour:.2f}s")
    if args.against:
        print(f"  report as of {args.against}, whole window: {best[args.against]:.2f}s; this tree "
              f"{whole / best[args.against]:.2f}x that (best of {args.rounds}, interleaved)")
        print(f"  CPU of this process, whole window: {args.against} {cpu[args.against]:.2f}s, this tree "
              f"{cpu['this tree']:.2f}s ({cpu['this tree'] / cpu[args.against]:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
