"""Fixtures of the security suite: the store (SQLite and PostgreSQL where storage is involved) and
the warehouse library compiled once. PostgreSQL follows the suite's rule: a missing server skips
the test only when CI is unset."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from seckit import MAPPINGS

from dockyard.demo import build_demo_bundle


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'state.db'}"
        return
    from e2e import fresh_postgres_database

    with fresh_postgres_database() as url:
        yield url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'state.db'}"


@pytest.fixture(scope="session")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bundle") / "bundle"
    build_demo_bundle(MAPPINGS, out)
    return out
