"""Network namespaces as separate hosts for the multi-node tests and `bench/e2e.py --nodes N`.

A `Network` is one Linux bridge in the root namespace plus N network namespaces, each joined to
the bridge by a veth pair and given its own address on a /24 of its own; loopback is up in every
namespace. The root namespace keeps the bridge's first address (`gateway`): processes that run
there (the simulated warehouses, the load balancer in front of the nodes, the test itself) are
reachable from every namespace by that address, and every namespace by its own.

PostgreSQL is not moved anywhere: a unix socket is a file, not bound to a network namespace, so
a process in a namespace reaches the server through `postgresql:///DB?host=/var/run/postgresql`.

Names are unique per run (a random run id in every interface and namespace name; the /24 is
chosen, under a lock, among those no interface uses), so parallel runs never clash. Everything is
removed on exit, also when the test fails; a run killed before it could clean up leaves a record
in /run/dockyard-multinode/, and the next `Network` removes what a dead run left behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
import random
import shutil
import subprocess
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

__all__ = ["Host", "Network", "netns_unavailable", "pdeathsig"]

STATE_DIR = Path(os.environ.get("DOCKYARD_NETNS_STATE", "/run/dockyard-multinode"))
_LOCK = STATE_DIR / ".lock"


@dataclass(frozen=True)
class Host:
    """One namespace on the bridge: a host of its own with one address."""

    netns: str
    address: str
    index: int

    def command(self, argv: Sequence[str]) -> list[str]:
        """argv run inside this namespace. `ip netns exec` execs argv in its own process, so the
        child's pid is argv's (a SIGKILL reaches the program itself)."""
        return ["ip", "netns", "exec", self.netns, *argv]


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=False)
    if check and done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
    return done


def netns_unavailable() -> str | None:
    """Why network namespaces cannot be made here, or None when they can (tried for real)."""
    if not Path("/proc/self/ns/net").exists():
        return "this system has no network namespaces (/proc/self/ns/net is missing)"
    if shutil.which("ip") is None:
        return "the `ip` command (Debian package iproute2) is not installed"
    if os.geteuid() != 0:
        return "creating network namespaces needs root"
    probe = f"dyprobe-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    made = _ip("netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"`ip netns add` failed: {made.stderr.strip()}"
    try:
        link = f"dyp{uuid.uuid4().hex[:8]}"
        done = _ip("link", "add", link, "type", "bridge", check=False)
        if done.returncode != 0:
            return f"`ip link add … type bridge` failed: {done.stderr.strip()}"
        _ip("link", "del", link, check=False)
    finally:
        _ip("netns", "del", probe, check=False)
    return None


def pdeathsig() -> None:
    """For Popen(preexec_fn=…): the child gets SIGKILL when the test process dies, however it
    dies, so no node outlives a killed test run (its namespace is then swept by the next run)."""
    import ctypes
    import signal

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _start_time(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    with open(_LOCK, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _sweep() -> None:
    """Remove what runs that died without cleaning up left behind (called under the lock)."""
    for record in STATE_DIR.glob("*.json"):
        try:
            data = json.loads(record.read_text())
        except (OSError, ValueError):
            continue
        pid = int(data.get("pid", 0))
        if pid and _start_time(pid) == data.get("start"):
            continue  # that run is alive
        _remove(data.get("links", []), data.get("netns", []))
        record.unlink(missing_ok=True)


def _remove(links: Sequence[str], namespaces: Sequence[str]) -> None:
    for ns in namespaces:  # deleting a namespace deletes its end of each veth pair, and so the pair
        _ip("netns", "del", ns, check=False)
    for link in links:
        _ip("link", "del", link, check=False)


def _used_networks() -> list[ipaddress.IPv4Network]:
    out = _ip("-4", "-o", "addr", "show").stdout + _ip("-4", "route", "show").stdout
    nets = []
    for word in out.split():
        with contextlib.suppress(ValueError):
            if "/" in word:
                nets.append(ipaddress.ip_network(word, strict=False))
    return [n for n in nets if isinstance(n, ipaddress.IPv4Network)]


class Network:
    """A bridge and `hosts` namespaces on it: `with Network(3) as net: net.hosts[0].address …`."""

    def __init__(self, hosts: int) -> None:
        if not 1 <= hosts <= 200:
            raise ValueError("between 1 and 200 hosts")
        self.run_id = uuid.uuid4().hex[:6]
        self.bridge = f"dyb{self.run_id}"
        self.count = hosts
        self.hosts: list[Host] = []
        self.gateway = ""
        self.subnet: ipaddress.IPv4Network | None = None
        self._record = STATE_DIR / f"{self.run_id}.json"
        self._links: list[str] = []
        self._netns: list[str] = []

    def __enter__(self) -> Network:
        try:
            self.up()
        except BaseException:
            self.down()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.down()

    def _save(self) -> None:
        self._record.write_text(json.dumps({"pid": os.getpid(), "start": _start_time(os.getpid()),
                                            "links": self._links, "netns": self._netns}))

    def up(self) -> None:
        with _locked():
            _sweep()
            used = _used_networks()
            rng = random.Random()
            for _ in range(1000):
                candidate = ipaddress.ip_network(f"10.{rng.randrange(200, 250)}.{rng.randrange(0, 256)}.0/24")
                if not any(candidate.overlaps(n) for n in used):
                    self.subnet = candidate
                    break
            else:
                raise RuntimeError("no free 10.200-249.x.0/24 for the test network")
            addresses = list(self.subnet.hosts())
            self.gateway = str(addresses[0])
            # Recorded before anything exists, so that a crash in the middle is swept too.
            self._links = [self.bridge] + [f"dy{self.run_id}h{i}" for i in range(self.count)]
            self._netns = [f"dy-{self.run_id}-{i}" for i in range(self.count)]
            self._save()
            _ip("link", "add", self.bridge, "type", "bridge")
            _ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
            _ip("link", "set", self.bridge, "up")
        for i, ns in enumerate(self._netns):
            outer, inner = f"dy{self.run_id}h{i}", f"dy{self.run_id}n{i}"
            address = str(addresses[10 + i])
            _ip("netns", "add", ns)
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("link", "add", outer, "type", "veth", "peer", "name", inner)
            _ip("link", "set", inner, "netns", ns)
            _ip("link", "set", outer, "master", self.bridge)
            _ip("link", "set", outer, "up")
            _ip("-n", ns, "addr", "add", f"{address}/24", "dev", inner)
            _ip("-n", ns, "link", "set", inner, "up")
            self.hosts.append(Host(ns, address, i))

    def down(self) -> None:
        _remove(self._links, self._netns)
        self._record.unlink(missing_ok=True)
        self.hosts = []

    def exists(self) -> bool:
        """Whether any of this network's namespaces or links is still there (for the cleanup test)."""
        names = set(_ip("netns", "list", check=False).stdout.split())
        links = _ip("-o", "link", "show", check=False).stdout
        return any(ns in names for ns in self._netns) or any(f" {link}:" in links or f" {link}@" in links
                                                              for link in self._links)
