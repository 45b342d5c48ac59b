"""The fuzz harness's rules: two Hypothesis profiles, the run-time budget of each target, and the
bounds every example is held to.

- `dockyard-fuzz-ci` (the default): every target draws a fixed number of examples, sized so that
  the whole of tests/fuzz takes about two minutes on a CI machine.
- `dockyard-fuzz-long` (opt-in: `DOCKYARD_FUZZ=long`, or `pytest tests/fuzz --long`): each target
  runs round after round of fresh examples until its share of `LONG_SECONDS` (30 minutes in
  all; DOCKYARD_FUZZ_SECONDS changes it) is spent. Run it before a release.

Each example must finish without an uncaught exception, within `HANG_SECONDS` (a SIGALRM watchdog
raises `Hang` in the example), and without the process's peak memory growing more than
`MEMORY_MB` over where the target started.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

from hypothesis import HealthCheck, settings

LONG_SECONDS = float(os.environ.get("DOCKYARD_FUZZ_SECONDS", 30 * 60))  # the long profile's total
HANG_SECONDS = 10.0
MEMORY_MB = 400
_HEALTH = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much,
           HealthCheck.large_base_example]

settings.register_profile("dockyard-fuzz-ci", database=None, deadline=None, suppress_health_check=_HEALTH,
                          print_blob=True)
settings.register_profile("dockyard-fuzz-long", database=None, deadline=None, suppress_health_check=_HEALTH,
                          print_blob=True, max_examples=500)
LONG = os.environ.get("DOCKYARD_FUZZ", "").lower() == "long"


def enable_long() -> None:
    global LONG
    LONG = True


def fuzz_settings(ci_examples: int) -> settings:
    """The settings of one target: `ci_examples` in the CI profile, rounds of 500 in the long one."""
    if LONG:
        return settings(settings.get_profile("dockyard-fuzz-long"))
    return settings(settings.get_profile("dockyard-fuzz-ci"), max_examples=ci_examples)


def run(target: Callable[[], None], share: float) -> None:
    """Run a @given target once (CI), or (long) round after round for `share` of LONG_SECONDS."""
    if not LONG:
        target()
        return
    deadline = time.monotonic() + LONG_SECONDS * share
    while time.monotonic() < deadline:
        target()


class Hang(Exception):
    """An example ran past HANG_SECONDS."""


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Bounds:
    """The per-example bounds of one target: call `with bounds.example():` around each example."""

    def __init__(self) -> None:
        self.start_mb = _peak_mb()

    @contextlib.contextmanager
    def example(self, what: Any = "") -> Iterator[None]:
        def alarm(signum: int, frame: Any) -> None:
            raise Hang(f"an example ran past {HANG_SECONDS}s: {str(what)[:300]!r}")

        previous = signal.signal(signal.SIGALRM, alarm)
        signal.setitimer(signal.ITIMER_REAL, HANG_SECONDS)
        try:
            yield
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
        grown = _peak_mb() - self.start_mb
        assert grown < MEMORY_MB, f"peak memory grew by {grown:.0f} MB on {str(what)[:300]!r}"
