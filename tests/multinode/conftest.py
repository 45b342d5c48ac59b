"""Fixtures for the multi-node tests: network namespaces (netns.py) and a PostgreSQL database of
the test's own, reached through the server's unix socket.

Namespaces need root and `ip` (iproute2). Where they cannot be made, a test skips with the reason
only when CI is unset; with CI set it fails, as an absent PostgreSQL does everywhere in this suite.
The crash test's helpers live in tests/service/e2e.py and are imported from there.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
for folder in (HERE, HERE.parent / "service"):  # netns, cluster, resolution; e2e
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

from e2e import fresh_postgres_database  # noqa: E402
from netns import Network, netns_unavailable  # noqa: E402

_checked: list[str | None] = []


def require_netns() -> None:
    """Skip (CI unset) or fail (CI set) when network namespaces cannot be made here."""
    if not _checked:
        _checked.append(netns_unavailable())
    reason = _checked[0]
    if reason is None:
        return
    if "CI" in os.environ:
        pytest.fail(f"network namespaces are needed: {reason}; CI is set, so this is a failure", pytrace=False)
    pytest.skip(f"network namespaces are needed: {reason}; with CI set this would fail")


@pytest.fixture
def network() -> Iterator[Callable[[int], Network]]:
    """`net = network(3)`: a bridge and 3 namespaces, removed when the test ends, pass or fail."""
    require_netns()
    made: list[Network] = []

    def make(hosts: int) -> Network:
        net = Network(hosts)
        made.append(net)
        net.up()
        return net

    try:
        yield make
    finally:
        for net in made:
            net.down()


@pytest.fixture
def pg_store() -> Iterator[str]:
    """A fresh database (dropped afterwards) as a unix-socket URL any namespace can use."""
    import psycopg
    from cluster import socket_url

    with fresh_postgres_database() as url:
        local = socket_url(url)
        try:
            with psycopg.connect(local, connect_timeout=5) as conn:
                conn.execute("SELECT 1")
        except Exception as exc:
            reason = f"PostgreSQL's unix socket is not usable ({local}: {type(exc).__name__}: {exc})"
            if "CI" in os.environ:
                pytest.fail(f"{reason}; CI is set, so this is a failure", pytrace=False)
            pytest.skip(f"{reason}; set DOCKYARD_TEST_POSTGRES_SOCKET; with CI set this would fail")
        yield local
