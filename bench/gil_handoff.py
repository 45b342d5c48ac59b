"""Benchmark: what a call that lets go of the GIL costs the event loop's thread while the store's
writer thread runs Python.

    python bench/gil_handoff.py [--rounds 5] [-n 2000]

The service's event loop shares the GIL with the writer thread, which runs Python between SQLite
calls and lets go of the GIL around each call. A call on the loop that lets go of the GIL too (lxml
parsing a callback, `uuid.uuid4()` through `os.urandom`, hashing more than 2 KiB) must win it back,
and while the writer is busy that takes a hand-off or a switch interval. This script times such
calls, CPU time of the calling thread and wall time, once alone and once beside a thread that does
what the writer does (about 25 µs of Python, then an SQLite insert, in a loop), interleaved, best
of the rounds; next to each, a call of pure Python of about the same size, which never lets go.

It says how much each hand-off costs on this machine; bench/README.md (stop 25) has what came of
acting on it in the service (nothing measurable: the figures there).
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import threading
import time
import uuid
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable
from pathlib import Path

from lxml import etree

HERE = Path(__file__).resolve().parent
SAMPLE = HERE.parent / "mappings" / "qimen" / "testdata" / "confirm-partial.xml"
# the parser the runtime reads callbacks with (runtime/inputs.py)
PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False,
                         remove_comments=True, remove_pis=True)


class WriterLike:
    """A thread that runs Python in short stretches with an SQLite call between them."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        db = sqlite3.connect(":memory:")
        db.execute("create table t (a)")
        while not self._stop.is_set():
            x = 0
            for i in range(500):
                x += i
            db.execute("insert into t values (?)", (x,))
            db.execute("delete from t")

    def __enter__(self) -> WriterLike:
        self._thread.start()
        time.sleep(0.05)
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def _timed(fn: Callable[[], object], n: int) -> tuple[float, float]:
    """(CPU µs, wall µs) per call of this thread."""
    wall, cpu = time.perf_counter(), time.thread_time()
    for _ in range(n):
        fn()
    return (time.thread_time() - cpu) / n * 1e6, (time.perf_counter() - wall) / n * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=2000, help="calls per candidate per round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    data = SAMPLE.read_bytes()

    def python_work() -> int:
        x = 0
        for i in range(300):
            x += i
        return x

    calls: dict[str, Callable[[], object]] = {
        "lxml fromstring (a QIMEN callback)": lambda: etree.fromstring(data, PARSER),
        "ElementTree XMLParser (expat)": lambda: ElementTree.fromstring(data),
        "uuid.uuid4()": uuid.uuid4,
        "pure Python, ~7 µs (never lets go)": python_work,
    }
    best: dict[tuple[str, bool], tuple[float, float]] = {}
    for _ in range(args.rounds):
        for busy in (False, True):
            for name, fn in calls.items():
                if busy:
                    with WriterLike():
                        got = _timed(fn, args.n)
                else:
                    got = _timed(fn, args.n)
                old = best.get((name, busy), (float("inf"), float("inf")))
                best[(name, busy)] = (min(old[0], got[0]), min(old[1], got[1]))
    print(f"{args.n} calls per candidate, best of {args.rounds} rounds, Python {sys.version.split()[0]}, "
          f"switch interval {sys.getswitchinterval() * 1000:.1f} ms")
    print(f"  {'call':38s} {'alone CPU':>10s} {'beside a writer: CPU':>21s} {'wall':>9s} {'CPU ratio':>10s}")
    for name in calls:
        (alone_cpu, _), (beside_cpu, beside_wall) = best[(name, False)], best[(name, True)]
        print(f"  {name:38s} {alone_cpu:8.1f}µs {beside_cpu:19.1f}µs {beside_wall:7.1f}µs "
              f"{beside_cpu / alone_cpu:9.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
