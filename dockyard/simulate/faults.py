"""Faults on demand: which misbehaviour (if any) a simulated endpoint shows for one request.

One draw of a seeded `random.Random` per request picks at most one fault, so a run with the same
seed and the same request order injects the same faults. The kinds differ in whether the
request was processed, which is what a client must get right:

- `error`   HTTP 503, the request is NOT processed (safe to retry);
- `timeout` processed, then the answer waits `timeout_seconds` (the client gives up first:
            an honest in-doubt — the order IS there);
- `slow`    processed, answered normally after `slow_seconds`;
- `reset`   processed, then the connection is aborted without an answer (in doubt as well);
- `garbage` processed, HTTP 200 with an HTML page instead of the protocol's answer;
- `lost`    read but NOT processed (it died between a proxy and the warehouse), and no answer: the
            connection is dropped after `timeout_seconds`. In doubt for the client, but the order
            is NOT there — what a recovery query must answer "not found" to.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

__all__ = ["FAULT_KINDS", "GARBAGE_PAGE", "Faults", "pick_fault"]

FAULT_KINDS = ("error", "timeout", "slow", "reset", "garbage", "lost")

GARBAGE_PAGE = (b"<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head><body>"
                b"<center><h1>502 Bad Gateway</h1></center><hr><center>nginx</center></body></html>")


@dataclass(frozen=True)
class Faults:
    """Rates (0..1) of each fault per request; their sum must not exceed 1."""

    error_rate: float = 0.0
    timeout_rate: float = 0.0
    timeout_seconds: float = 15.0
    slow_rate: float = 0.0
    slow_seconds: float = 1.0
    reset_rate: float = 0.0
    garbage_rate: float = 0.0
    lost_rate: float = 0.0

    def __post_init__(self) -> None:
        rates = (self.error_rate, self.timeout_rate, self.slow_rate, self.reset_rate, self.garbage_rate,
                 self.lost_rate)
        if any(not 0.0 <= r <= 1.0 for r in rates) or sum(rates) > 1.0 + 1e-9:
            raise ValueError(f"fault rates must each lie in 0..1 and sum to at most 1: {rates}")
        if self.timeout_seconds < 0 or self.slow_seconds < 0:
            raise ValueError("timeout_seconds and slow_seconds must not be negative")

    @property
    def any(self) -> bool:
        return (self.error_rate + self.timeout_rate + self.slow_rate + self.reset_rate + self.garbage_rate
                + self.lost_rate) > 0

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> Faults:
        """From JSON/YAML; unknown keys are refused (a typo must not silently disable a fault)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown fault setting(s) {unknown}; known: {sorted(known)}")
        return cls(**{k: float(v) for k, v in data.items()})


def pick_fault(faults: Faults, rng: random.Random) -> str | None:
    """The fault for one request, or None. A warehouse without faults draws nothing, so requests to
    it do not shift the sequence of faults the other warehouses see."""
    if not faults.any:
        return None
    r = rng.random()
    for kind, rate in (("error", faults.error_rate), ("timeout", faults.timeout_rate), ("slow", faults.slow_rate),
                       ("reset", faults.reset_rate), ("garbage", faults.garbage_rate), ("lost", faults.lost_rate)):
        if r < rate:
            return kind
        r -= rate
    return None
