"""How long the dashboard's overview, an order's page and the store part of /metrics take with a
large history and a busy window.

    python bench/overview_scale.py -n 1000000 -w 10000 [--store sqlite|postgres] [--against COMMIT]

Writes N orders of history (a day before the window: received, committed and feedback journal
rows, the order, its done job) and W orders in the last five minutes (received; 30% with a retry
after a 503; committed; the dashboard's counters as the service's group commits keep them), plus
2,000 ready jobs. Then times, best of --rounds and interleaved with the same functions as of
COMMIT (read from git) when --against is given:
- the overview (`ui.overview`), wall clock and this process's CPU;
- an order's page (`queries.order_status` + `queries.timeline`: `GET /orders/{no}`);
- the store's part of `/metrics` (`queries.job_counts` + `metrics.read_backlog`);
- `/stats` (`queries.summary`: the store's running totals, where it counted the tables before).
and, for this tree alone, p50/p99 over --samples calls of each.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import Any

from dockyard.service import queries
from dockyard.service.counters import tally, upsert
from dockyard.service.db import Database
from dockyard.service.metrics import read_backlog
from dockyard.service.ui import overview

WAREHOUSES = ("qimen-std", "sf", "jd", "cainiao")


def fill(db: Database, n: int, w: int, now: int) -> None:
    if db.dialect == "postgres":
        series = "SELECT g AS n FROM generate_series(1, {k}) g"
    else:
        series = "WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < {k}) SELECT n FROM s"
    day = 86_400_000_000
    old = f"({now} - {day} - 600000000 + CAST(n AS BIGINT) * {day // max(1, n)})"  # the day before the window
    wh = "CASE n % 4 WHEN 0 THEN 'qimen-std' WHEN 1 THEN 'sf' WHEN 2 THEN 'jd' ELSE 'cainiao' END"

    def history(c: Any) -> None:
        src = series.format(k=n)
        c.execute(f"INSERT INTO dy_orders (order_no, tracking_id, warehouse, fingerprint, payload, status, delivery, "
                  f"created_at, updated_at) SELECT 'H' || n, 't', {wh}, 'f', '{{}}', 'signed', 'delivered', {old}, "
                  f"{old} FROM ({src}) x")
        c.execute(f"INSERT INTO dy_jobs (lane, kind, order_no, warehouse, state, attempts, next_at, created_at, "
                  f"updated_at) SELECT 'wh', 'create', 'H' || n, {wh}, 'done', 1, {old}, {old}, {old} FROM ({src}) x")
        for k, (step, outcome) in enumerate((("received", "ok"), ("committed", "accepted"), ("feedback", "ok"))):
            c.execute(f"INSERT INTO dy_journal (at, order_no, warehouse, flow, step, outcome, elapsed_us) "
                      f"SELECT {old} + {k * 50_000}, 'H' || n, {wh}, 'create', '{step}', '{outcome}', 20000 "
                      f"FROM ({src}) x")

    db.write_sync(history)
    rows: list[tuple[Any, ...]] = []
    for i in range(w):  # the busy window, written as the service writes it (so are the counters)
        at = now - 290_000_000 + i * 280_000_000 // max(1, w)
        order, wh_name = f"W{i}", WAREHOUSES[i % 4]
        rows.append((at, order, wh_name, None, "received", "ok", None, '{"rule":"default"}'))
        if i % 10 < 3:
            rows.append((at + 30_000, order, wh_name, "create", "retry", "scheduled", 25_000,
                         '{"http_status":503,"reason":"HTTP 503"}'))
        rows.append((at + 600_000, order, wh_name, "create", "committed", "accepted", 18_000, '{"http_status":200}'))

    def window(c: Any) -> None:
        c.executemany("INSERT INTO dy_orders (order_no, tracking_id, warehouse, fingerprint, payload, status, "
                      "delivery, created_at, updated_at) VALUES (?, 't', ?, 'f', '{}', 'accepted', 'delivered', ?, ?)",
                      [(r[1], r[2], r[0], r[0]) for r in rows if r[4] == "received"])
        c.executemany("INSERT INTO dy_journal (at, order_no, warehouse, flow, step, outcome, elapsed_us, detail) "
                      "VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
        upsert(c, tally(rows, now))
        c.executemany("INSERT INTO dy_jobs (lane, kind, order_no, warehouse, state, next_at, created_at, updated_at) "
                      "VALUES ('wh', 'create', ?, ?, 'ready', ?, ?, ?)",
                      [(f"R{i}", WAREHOUSES[i % 4], now - i * 1000, now, now) for i in range(2000)])

    db.write_sync(window)


def as_of(commit: str, path: str, names: tuple[str, ...]) -> types.ModuleType:
    root = Path(__file__).resolve().parents[1]
    source = subprocess.run(["git", "-C", str(root), "show", f"{commit}:{path}"], capture_output=True, text=True,
                            check=True).stdout
    module = types.ModuleType(f"{Path(path).stem}_{commit}")
    module.__file__ = str(root / path)  # (ui.py finds its static files beside it)
    exec(compile(source, f"{commit}:{path}", "exec"), module.__dict__)  # noqa: S102 - our own file
    assert all(hasattr(module, n) for n in names)
    return module


def timed(db: Database, fn: Any) -> tuple[float, float]:
    t0, c0 = time.perf_counter(), time.process_time()
    db.read_sync(fn)
    return time.perf_counter() - t0, time.process_time() - c0


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("-n", type=int, default=1_000_000, help="orders of history")
    ap.add_argument("-w", type=int, default=10_000, help="orders in the five-minute window")
    ap.add_argument("--store", choices=("sqlite", "postgres"), default="sqlite")
    ap.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    ap.add_argument("--against", metavar="COMMIT")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--samples", type=int, default=50)
    args = ap.parse_args(argv)
    if args.store == "postgres":
        import psycopg

        with psycopg.connect(args.pg_url, autocommit=True) as conn:
            conn.execute("DROP DATABASE IF EXISTS dockyard_overview_bench WITH (FORCE)")
            conn.execute("CREATE DATABASE dockyard_overview_bench")
        url = args.pg_url.rsplit("/", 1)[0] + "/dockyard_overview_bench"
    else:
        url = f"sqlite:///{Path(tempfile.mkdtemp(prefix='dockyard-overview-')) / 'state.db'}"
    db = Database(url, readers=1)
    try:
        now = db.read_sync(lambda c: c.now)
        t0 = time.perf_counter()
        fill(db, args.n, args.w, now)
        if db.dialect == "postgres":
            db.claim_sync(lambda c: c.execute("ANALYZE"))
        filled = time.perf_counter() - t0
        journal = db.read_sync(lambda c: c.execute("SELECT COUNT(*) FROM dy_journal")[0][0])
        print(f"{args.store}: {args.n:,} orders of history, {args.w:,} in the window, {journal:,} journal rows "
              f"(written in {filled:.0f} s)")
        probes: dict[str, Any] = {
            "overview": lambda c: overview(c, c.now),
            "GET /orders/{no}": lambda c: (queries.order_status(c, "H500000"), queries.timeline(c, "H500000")),
            "/metrics (store)": lambda c: (queries.job_counts(c), read_backlog(c, c.now)),
            "/stats": queries.summary,
        }
        for name, fn in probes.items():
            samples = [timed(db, fn)[0] * 1000 for _ in range(args.samples)]
            print(f"  this tree, {name:<17} p50 {pct(samples, 50):8.1f} ms   p99 {pct(samples, 99):8.1f} ms "
                  f"({args.samples} calls)")
        if args.against:
            ui_old = as_of(args.against, "dockyard/service/ui.py", ("overview",))
            q_old = as_of(args.against, "dockyard/service/queries.py", ("job_counts", "summary"))
            pairs = {"overview": (ui_old.overview, overview),
                     "job_counts": (q_old.job_counts, queries.job_counts),
                     "/stats": (q_old.summary, queries.summary)}
            for name, (older, newer) in pairs.items():
                best = {"old": (float("inf"), float("inf")), "new": (float("inf"), float("inf"))}
                for _ in range(args.rounds):
                    for key, fn in (("old", older), ("new", newer)):
                        wall, cpu = timed(db, (lambda c, f=fn: f(c, c.now)) if name == "overview" else fn)
                        best[key] = (min(best[key][0], wall), min(best[key][1], cpu))
                (ow, oc), (nw, nc) = best["old"], best["new"]
                print(f"  {name}: as of {args.against} {ow * 1000:.1f} ms (CPU {oc * 1000:.1f} ms); this tree "
                      f"{nw * 1000:.1f} ms (CPU {nc * 1000:.1f} ms); CPU ratio {nc / oc if oc else float('nan'):.3f} "
                      f"(best of {args.rounds}, interleaved)")
    finally:
        db.close()
        if args.store == "sqlite":
            shutil.rmtree(Path(url[len("sqlite:///"):]).parent, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
