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

__all__ = ["Breaker", "SharedCircuit", "backoff_seconds", "retry_after_seconds"]


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


class SharedCircuit:
    """This node's side of a warehouse's circuit, whose state lives in the store (dy_limits) so that
    every node sees the same one: the node counts its own consecutive retryable failures (the
    policy's threshold), says when they should open the circuit for everyone, and mirrors the
    state the last claim saw (for /metrics and the dashboard)."""

    CLOSED, OPEN, HALF_OPEN = Breaker.CLOSED, Breaker.OPEN, Breaker.HALF_OPEN

    def __init__(self, policy: CircuitConfig) -> None:
        self.policy = policy
        self.failures = 0
        self.state = self.CLOSED
        self.opened_count = 0

    def failure(self) -> bool:
        """Count one; True when this failure should open the circuit (the threshold is reached)."""
        self.failures += 1
        return self.state == self.CLOSED and self.failures >= self.policy.failures

    def success(self) -> None:
        self.failures = 0

    def observe(self, state: str, *, opened: bool = False) -> None:
        if opened and self.state != self.OPEN:
            self.opened_count += 1
        if state == self.CLOSED and self.state != self.CLOSED:
            self.failures = 0
        self.state = state


def retry_after_seconds(value: str | None, *, cap: float = 300.0,
                        now: Callable[[], float] = time.time) -> float:
    """Seconds a `Retry-After` header asks for (delta-seconds or an HTTP date), capped; 0 when
    absent or unreadable."""
    if not value:
        return 0.0
    text = value.strip()
    if text.isdigit():  # "²" and "①" are digits to isdigit() but no number to float(): unreadable, so 0
        return min(cap, float(text)) if text.isascii() else 0.0
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return 0.0
    if when.tzinfo is None:
        return 0.0
    return max(0.0, min(cap, when.timestamp() - now()))
