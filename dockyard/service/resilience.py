"""Retry timing and circuit breaking: pure logic, no I/O, so both are tested on their own.

Backoff is exponential with multiplicative jitter, so that after a warehouse's outage the retries
of thousands of orders spread out instead of arriving together. The breaker counts consecutive
*retryable* failures of one warehouse (5xx, timeouts, refused connections): rejections of bad
orders say nothing about the warehouse's health and never open it. While open, nothing is claimed
for that warehouse, so its jobs wait in the outbox and the other warehouses' workers go on; after
`open_for` one probe batch is let through (half-open), and its result closes or reopens it.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

from dockyard.service.config import CircuitConfig, RetryConfig

__all__ = ["Breaker", "backoff_seconds"]


def backoff_seconds(policy: RetryConfig, attempt: int, rng: Callable[[], float] = random.random) -> float:
    """Delay before attempt `attempt + 1`, after `attempt` attempts (>= 1) have failed."""
    base = min(policy.max_delay, policy.base_delay * (2 ** max(0, attempt - 1)))
    factor = 1.0 + policy.jitter * (2.0 * rng() - 1.0)
    return float(max(0.0, min(policy.max_delay, base * factor)))


class Breaker:
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"

    def __init__(self, policy: CircuitConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.policy = policy
        self._clock = clock
        self.failures = 0
        self.opened_at: float | None = None
        self.probing = False
        self.opened_count = 0

    @property
    def state(self) -> str:
        if self.opened_at is None:
            return self.CLOSED
        if self._clock() - self.opened_at >= self.policy.open_for:
            return self.HALF_OPEN
        return self.OPEN

    def allow(self) -> int:
        """How many requests may start now: None limit when closed (-1), 1 probe when half-open and
        no probe is out, else 0."""
        state = self.state
        if state == self.CLOSED:
            return -1
        if state == self.HALF_OPEN and not self.probing:
            self.probing = True
            return 1
        return 0

    def seconds_until_probe(self) -> float:
        if self.opened_at is None:
            return 0.0
        return max(0.0, self.policy.open_for - (self._clock() - self.opened_at))

    def success(self) -> None:
        self.failures = 0
        self.opened_at = None
        self.probing = False

    def failure(self) -> None:
        self.failures += 1
        if self.probing or (self.opened_at is None and self.failures >= self.policy.failures):
            self.opened_at = self._clock()
            self.opened_count += 1
        self.probing = False
