"""Backoff and the circuit breaker, on their own (pure logic, a fake clock)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from dockyard.service.config import CircuitConfig, RetryConfig
from dockyard.service.resilience import Breaker, backoff_seconds, retry_after_seconds


@settings(database=None, max_examples=300, deadline=None)
@given(st.floats(0.01, 5), st.floats(1, 120), st.floats(0, 1), st.integers(1, 60), st.floats(0, 1))
def test_backoff_doubles_within_its_jitter_and_never_exceeds_the_cap(base: float, cap: float, jitter: float,
                                                                    attempt: int, roll: float) -> None:
    policy = RetryConfig(base_delay=base, max_delay=max(cap, base), jitter=jitter)
    delay = backoff_seconds(policy, attempt, lambda: roll)
    nominal = min(policy.max_delay, base * 2 ** (attempt - 1))
    assert 0 <= delay <= policy.max_delay
    assert nominal * (1 - jitter) - 1e-9 <= delay <= min(policy.max_delay, nominal * (1 + jitter)) + 1e-9


def test_backoff_spreads_retries() -> None:
    import random

    rng = random.Random(7)
    delays = {round(backoff_seconds(RetryConfig(base_delay=1, jitter=0.5), 3, rng.random), 3) for _ in range(50)}
    assert len(delays) > 40 and min(delays) >= 2 and max(delays) <= 6


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_breaker_opens_after_consecutive_failures_and_probes_once() -> None:
    clock = Clock()
    breaker = Breaker(CircuitConfig(failures=3, open_for=10), clock)
    assert breaker.allow() == -1
    breaker.failure()
    breaker.failure()
    breaker.success()  # a success resets the count
    for _ in range(3):
        breaker.failure()
    assert breaker.state == "open" and breaker.allow() == 0
    clock.now = 9.9
    assert breaker.allow() == 0 and 0 < breaker.seconds_until_probe() <= 0.1
    clock.now = 10
    assert breaker.state == "half_open"
    assert breaker.allow() == 1  # one probe
    assert breaker.allow() == 0  # and only one
    breaker.failure()  # the probe failed: open again for a full period
    assert breaker.state == "open" and breaker.opened_count == 2
    clock.now = 20
    assert breaker.allow() == 1
    breaker.success()
    assert breaker.state == "closed" and breaker.allow() == -1


@settings(database=None, max_examples=200, deadline=None)
@given(st.lists(st.booleans(), max_size=60), st.integers(1, 10))
def test_the_breaker_is_open_exactly_after_a_run_of_failures(outcomes: list[bool], threshold: int) -> None:
    clock = Clock()
    breaker = Breaker(CircuitConfig(failures=threshold, open_for=1000), clock)
    run = 0
    for ok in outcomes:
        if ok:
            breaker.success()
            run = 0
        else:
            breaker.failure()
            run += 1
        assert (breaker.state == "open") == (run >= threshold)


# A warehouse's Retry-After header is its text, whatever it is: any header value gives a wait
# between 0 and the cap and never an exception (which would fail the attempt's bookkeeping). Unicode
# digits that are not ASCII ("²", "①", "١") are no delta-seconds: isdigit() says yes to them.
@settings(database=None, max_examples=500, deadline=None)
@given(st.one_of(st.text(max_size=40), st.text("0123456789²³①١٢ \t", max_size=12),
                 st.integers(0, 10**6).map(str), st.none()))
def test_any_retry_after_gives_a_wait_within_the_cap(value: str | None) -> None:
    wait = retry_after_seconds(value, cap=300.0, now=lambda: 1_800_000_000.0)
    assert 0.0 <= wait <= 300.0
    text = (value or "").strip()
    if text.isascii() and text.isdigit():
        assert wait == min(300.0, float(text))
    elif text and not text.isascii() and all(c.isdigit() for c in text):
        assert wait == 0.0


def test_retry_after_reads_seconds_and_http_dates() -> None:
    now = 1_800_000_000.0  # 2027-01-15 08:00:00 UTC
    assert retry_after_seconds("120", now=lambda: now) == 120.0
    assert retry_after_seconds(" 7 ", now=lambda: now) == 7.0
    assert retry_after_seconds("100000", cap=300.0, now=lambda: now) == 300.0
    assert retry_after_seconds("Fri, 15 Jan 2027 08:00:30 GMT", now=lambda: now) == 30.0
    assert retry_after_seconds("Fri, 15 Jan 2027 07:00:00 GMT", now=lambda: now) == 0.0  # in the past
    for unreadable in ("²", "①②", "soon", "-5", "1.5", "", None):
        assert retry_after_seconds(unreadable, now=lambda: now) == 0.0
