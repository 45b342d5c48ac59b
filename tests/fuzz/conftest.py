"""tests/fuzz: the `--long` option (the long Hypothesis profile; see fuzzkit.py)."""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--long", action="store_true", default=False,
                     help="fuzz for 30 minutes (the dockyard-fuzz-long profile); also DOCKYARD_FUZZ=long")


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("--long", default=False):
        import fuzzkit

        fuzzkit.enable_long()
