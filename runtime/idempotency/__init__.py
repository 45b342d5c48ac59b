"""Idempotent delivery: each order reaches a warehouse once, as the warehouse sees it.

The model, the errors, the store contract and `open_store(url)` live in `base`; the duplicate rules
in `policy`. The stores (memory, sqlite, postgres, redis) are loaded by URL scheme through the
`dockyard.idempotency` entry-point group, so importing this package imports no database driver.
"""

from __future__ import annotations

from dockyard.runtime.idempotency.base import (
    ConflictError,
    IdempotencyError,
    IdempotencyStore,
    OwnershipError,
    Record,
    Reservation,
    State,
    Status,
    open_store,
    redact_url,
)
from dockyard.runtime.idempotency.policy import Action, Decision, Rule, decide

__all__ = [
    "Action",
    "ConflictError",
    "Decision",
    "IdempotencyError",
    "IdempotencyStore",
    "OwnershipError",
    "Record",
    "Reservation",
    "Rule",
    "State",
    "Status",
    "decide",
    "open_store",
    "redact_url",
]
