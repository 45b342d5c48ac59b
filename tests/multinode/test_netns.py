"""The namespace harness itself: hosts with their own addresses that reach the root namespace
and each other, loopback up, PostgreSQL reachable through its unix socket from inside, names that
never clash between two networks at once, and nothing left behind — after a failure, or after a
run that died without cleaning up."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator

import pytest
from netns import STATE_DIR, Network

PROBE = """
import socket, sys
host, port = sys.argv[1], int(sys.argv[2])
with socket.create_connection((host, port), timeout=5) as s:
    s.sendall(b"ping")
    print(s.recv(64).decode())
"""

LISTEN = """
import socket, sys
s = socket.socket()
s.bind((sys.argv[1], 0))
s.listen()
print(s.getsockname()[1], flush=True)
c, _ = s.accept()
c.sendall(b"from " + c.recv(64))
"""


@contextlib.contextmanager
def _listening(argv: list[str]) -> Iterator[str]:
    """LISTEN in a child process; yields the port it bound."""
    with subprocess.Popen(argv, stdout=subprocess.PIPE, text=True) as child:
        try:
            assert child.stdout is not None
            yield child.stdout.readline().strip()
        finally:
            child.kill()


def _in(net: Network, i: int, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(net.hosts[i].command(argv), capture_output=True, text=True, timeout=30, check=False)


def test_hosts_reach_the_root_namespace_and_each_other(network: Callable[[int], Network]) -> None:
    net = network(2)
    a, b = net.hosts
    assert a.address != b.address and net.gateway not in (a.address, b.address)
    # the root namespace (the simulator's side) reaches a host, and a host reaches the root
    with socket.socket() as server:
        server.bind((net.gateway, 0))
        server.listen()
        port = server.getsockname()[1]
        with subprocess.Popen(a.command([sys.executable, "-c", PROBE, net.gateway, str(port)]),
                              stdout=subprocess.PIPE, text=True) as probe:
            conn, peer = server.accept()
            with conn:
                assert peer[0] == a.address, "a host's packets carry its own address"
                conn.sendall(b"root got " + conn.recv(64))
            out, _ = probe.communicate(timeout=30)
        assert out.strip() == "root got ping"
    # one host reaches the other by its address
    with _listening(b.command([sys.executable, "-c", LISTEN, b.address])) as bport:
        done = _in(net, 0, sys.executable, "-c", PROBE, b.address, bport)
        assert done.stdout.strip() == "from ping", done.stderr
    # loopback is up inside, and the root namespace's own loopback services are not visible there
    assert "UP" in _in(net, 0, "ip", "link", "show", "lo").stdout
    with _listening([sys.executable, "-c", LISTEN, "127.0.0.1"]) as lport:
        done = _in(net, 0, sys.executable, "-c", PROBE, "127.0.0.1", lport)
        assert done.returncode != 0 and "refused" in done.stderr.lower(), "127.0.0.1 inside is the host's own"


def test_postgres_is_reachable_from_a_namespace_through_its_socket(network: Callable[[int], Network],
                                                                   pg_store: str) -> None:
    net = network(1)
    code = ("import psycopg, sys\n"
            "with psycopg.connect(sys.argv[1]) as c: print(c.execute('SELECT current_database()').fetchone()[0])")
    done = _in(net, 0, sys.executable, "-c", code, pg_store)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == pg_store.split("/")[3].split("?")[0]


def test_two_networks_at_once_never_clash_and_leave_nothing(network: Callable[[int], Network]) -> None:
    one, two = network(2), network(2)
    assert one.run_id != two.run_id and one.subnet is not None and two.subnet is not None
    assert not one.subnet.overlaps(two.subnet)
    assert {h.netns for h in one.hosts}.isdisjoint(h.netns for h in two.hosts)
    one.down()
    assert not one.exists() and two.exists()


def test_cleanup_after_a_failure_inside(network: Callable[[int], Network]) -> None:
    network(1)  # the fixture is usable: namespaces can be made here
    net = Network(2)
    with pytest.raises(RuntimeError, match="boom"), net:
        assert net.exists()
        raise RuntimeError("boom")
    assert not net.exists()
    assert not (STATE_DIR / f"{net.run_id}.json").exists()


def test_a_dead_runs_leftovers_are_swept(network: Callable[[int], Network]) -> None:
    # A run that died without cleaning up: its namespaces and links are there, its record names a
    # process that is gone. The next Network removes them.
    with subprocess.Popen([sys.executable, "-c", "pass"]) as dead:
        dead.wait()
    leftover = Network(1)
    leftover.up()
    record = STATE_DIR / f"{leftover.run_id}.json"
    data = json.loads(record.read_text())
    record.write_text(json.dumps({**data, "pid": dead.pid}))
    assert leftover.exists()
    network(1)
    assert not leftover.exists() and not record.exists()
