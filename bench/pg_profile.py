"""The PostgreSQL server's CPU per statement of the store, for finding where it goes (bench only).

Used by `bench/store_writer.py --statements` and by `bench/e2e.py` with DOCKYARD_BENCH_PG_STATEMENTS=FILE
(the service process writes the table there at the end of the measured interval). The server has
no pg_stat_statements preloaded, and its configuration is not ours to change; the backend's own
on-CPU time in /proc (nanoseconds) is exact and needs neither.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["StatementProfile"]


class StatementProfile:
    """PostgreSQL: the server's CPU per statement, from the backend's own on-CPU time
    (/proc/<pid>/schedstat, nanoseconds) read just before and just after each statement the store
    runs (every connection runs one statement at a time, so what its backend spent in between is
    that statement's, with its triggers). COMMIT, BEGIN and the clock read count as statements."""

    def __init__(self) -> None:
        import threading

        from dockyard.service import db as dbmod

        self.stats: dict[str, list[int]] = {}  # statement -> [calls, ns]
        self._lock = threading.Lock()
        self._local = threading.local()
        cls = dbmod._PostgresConn
        for name in ("execute", "executemany", "execute_returning", "begin", "begin_at", "commit", "clock"):
            if hasattr(cls, name):  # begin_at: BEGIN and the clock in one round trip (branch i10p on)
                setattr(cls, name, self._wrap(name, getattr(cls, name)))

    @staticmethod
    def _cpu(raw: Any) -> int:
        return int(Path(f"/proc/{raw.info.backend_pid}/schedstat").read_text().split()[0])

    def _wrap(self, name: str, orig: Any) -> Any:
        profile = self

        def timed(conn: Any, *args: Any, **kwargs: Any) -> Any:
            if getattr(profile._local, "busy", False):  # a nested call (execute_returning of one row)
                return orig(conn, *args, **kwargs)
            profile._local.busy = True
            before = profile._cpu(conn.raw)
            try:
                return orig(conn, *args, **kwargs)
            finally:
                spent = profile._cpu(conn.raw) - before
                profile._local.busy = False
                key = " ".join(str(args[0]).split())[:150] if args else name.upper()
                if name == "executemany":
                    key = "(many) " + key
                with profile._lock:
                    entry = profile.stats.setdefault(key, [0, 0])
                    entry[0] += 1
                    entry[1] += spent
        return timed

    def table(self) -> dict[str, list[int]]:
        """statement -> [calls, ns], a copy."""
        with self._lock:
            return {k: list(v) for k, v in self.stats.items()}
