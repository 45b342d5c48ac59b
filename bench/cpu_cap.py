"""A CPU cap per process for benchmarks: each capped process gets a cgroup of its own whose CFS
quota is a fraction of one core (cgroup v2's `cpu.max`, or v1's `cpu.cfs_quota_us`).

Why: on a 2-core machine one service node already keeps both cores busy together with PostgreSQL
and the simulated warehouses, so "do two nodes deliver more than one?" can only be answered there
if each node is given what a host of its own would have, a fixed share of CPU, and the rest of the
machine is left to the shared parts. Needs root and a mounted cpu controller (`CpuCaps` says so
when there is none).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")
PERIOD_US = 100_000


def _hierarchy() -> tuple[Path, str] | None:
    """(the folder new cgroups go in, "v2" or "v1") for the cpu controller, or None."""
    try:
        if "cpu" in (ROOT / "cgroup.controllers").read_text().split():
            if "cpu" not in (ROOT / "cgroup.subtree_control").read_text().split():
                (ROOT / "cgroup.subtree_control").write_text("+cpu")
            return ROOT, "v2"
    except OSError:
        pass
    if (ROOT / "cpu" / "cpu.cfs_quota_us").exists():
        return ROOT / "cpu", "v1"
    return None


class CpuCaps:
    """Caps made by one benchmark run; `close()` removes them (their processes must have ended)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.groups: list[Path] = []
        found = _hierarchy()
        if found is None:
            raise RuntimeError("no cgroup cpu controller is mounted here (or not writable): --node-cpu needs one")
        self.base, self.kind = found

    def cap(self, pid: int, cores: float, name: str) -> Path:
        """Put process `pid` (its threads, and the children it starts later) under a quota of
        `cores` CPUs."""
        group = self.base / f"{self.prefix}-{name}"
        group.mkdir(exist_ok=True)
        quota = max(1000, int(cores * PERIOD_US))
        if self.kind == "v2":
            (group / "cpu.max").write_text(f"{quota} {PERIOD_US}")
        else:
            (group / "cpu.cfs_period_us").write_text(str(PERIOD_US))
            (group / "cpu.cfs_quota_us").write_text(str(quota))
        (group / "cgroup.procs").write_text(str(pid))
        self.groups.append(group)
        return group

    def throttled_s(self) -> dict[str, float]:
        """Seconds each capped group spent throttled (its quota used up before the period ended)."""
        out: dict[str, float] = {}
        for group in self.groups:
            stat = dict(line.split() for line in (group / "cpu.stat").read_text().splitlines() if line.strip())
            # v2 counts µs (throttled_usec), v1 ns (throttled_time)
            usec = (int(stat["throttled_usec"]) if "throttled_usec" in stat
                    else int(stat.get("throttled_time", 0)) // 1000)
            out[group.name] = usec / 1e6
        return out

    def close(self) -> None:
        for group in self.groups:
            with contextlib.suppress(OSError):
                group.rmdir()
        self.groups = []
