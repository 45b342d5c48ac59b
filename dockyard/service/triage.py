"""Dead-letter triage for a bad night: the DLQ and the jobs held in doubt grouped by warehouse and
reason, filtered, and acted on a whole group (or a chosen set of jobs) at a time.

A group is (warehouse, reason with the order's own number taken out): four thousand orders that
failed for one reason are one line, with a short stable key (`group`) that the CLI and the
dashboard both accept. Each group says whether a replay can help: an order the mapping refuses
(a spec's `fail()`) or cannot transform fails the same way again, so replaying it is not offered
as the main action; fixing the order (`dockyard dlq replay JOB --order fixed.json`), loading a
mapping version that accepts it, or discarding it are.

Bulk replay and discard go through `store.replay` / `store.discard`, which journal each job with
who did it (and, for a discard, why). Only reads here; the callers write.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from dockyard.service.db import Conn
from dockyard.service.queries import _iso

__all__ = ["MAX_JOBS", "Selection", "advice", "group_key", "groups", "reason_key", "select"]

MAX_JOBS = 50_000  # one selection acts on at most this many jobs (a bigger night takes several)
_TRANSFORM = "cannot be turned into a"
_REFUSED = "refused by the mapping"


@dataclass(frozen=True)
class Selection:
    """Which dead or held jobs: all, or those of a group, a warehouse, a state, a text in the reason."""

    group: str | None = None
    warehouse: str | None = None
    state: str | None = None  # "dead" or "in_doubt"
    text: str | None = None  # a case-insensitive part of the reason
    hopeless: bool | None = None  # only jobs a replay cannot help (True), or only the others (False)


def reason_key(reason: str | None, order_no: str | None) -> str:
    """The reason without what belongs to one order: its first line, without the `; order …` tail
    a transform error adds, and with the order number itself replaced by `{order}`."""
    text = (reason or "no reason recorded").split("\n", 1)[0].split("; order ")[0].strip()
    if order_no:
        text = text.replace(order_no, "{order}")
    return text[:300]


def group_key(warehouse: str, reason: str) -> str:
    return hashlib.sha256(f"{warehouse}\0{reason}".encode()).hexdigest()[:10]


def advice(reason: str | None) -> dict[str, Any]:
    """Whether a replay can help a job that ended with `reason`, and what to do instead."""
    text = reason or ""
    if _REFUSED in text:
        return {"replay_helps": False, "why": (
            "the mapping refuses this order (a fail() in the spec): a replay sends the same order through the "
            "same mapping and fails again. Fix the order (dockyard dlq replay JOB --order fixed.json), load a "
            "mapping version that accepts it, or discard it.")}
    if _TRANSFORM in text:
        return {"replay_helps": False, "why": (
            "the order cannot be transformed by the loaded mapping: a replay fails the same way. Fix the order "
            "(dockyard dlq replay JOB --order fixed.json), load a mapping version that handles it, or discard it.")}
    return {"replay_helps": True, "why": None}


def _rows(conn: Conn) -> list[tuple[Any, ...]]:
    return conn.execute("SELECT id, state, kind, order_no, warehouse, attempts, reason, updated_at FROM dy_jobs "
                        "WHERE state IN ('dead', 'held') ORDER BY id")


def _matches(sel: Selection, warehouse: str, state: str, key: str, reason: str | None) -> bool:
    if sel.warehouse and warehouse != sel.warehouse:
        return False
    if sel.state and state != sel.state:
        return False
    if sel.group and group_key(warehouse, key) != sel.group:
        return False
    if sel.text and sel.text.lower() not in (reason or "").lower():
        return False
    return sel.hopeless is None or sel.hopeless == (not advice(reason)["replay_helps"])


def groups(conn: Conn, sel: Selection = Selection(), *, sample: int = 5) -> list[dict[str, Any]]:
    """The dead and held jobs that match, grouped by warehouse and reason, largest group first."""
    out: dict[tuple[str, str, str], dict[str, Any]] = {}
    for jid, raw_state, kind, order_no, warehouse, attempts, reason, updated in _rows(conn):
        state = "in_doubt" if raw_state == "held" else "dead"
        key = reason_key(reason, order_no)
        if not _matches(sel, warehouse, state, key, reason):
            continue
        g = out.get((warehouse, state, key))
        if g is None:
            g = out[(warehouse, state, key)] = {
                "group": group_key(warehouse, key), "warehouse": warehouse, "state": state, "reason": key,
                "count": 0, "attempts": 0, "kinds": {}, "first": _iso(updated), "last": _iso(updated),
                "jobs": [], "orders": [], **advice(reason)}
        g["count"] += 1
        g["attempts"] += int(attempts or 0)
        g["kinds"][kind] = g["kinds"].get(kind, 0) + 1
        g["first"], g["last"] = min(g["first"], _iso(updated)), max(g["last"], _iso(updated))
        if len(g["jobs"]) < sample:
            g["jobs"].append(jid)
            if order_no:
                g["orders"].append(order_no)
    return sorted(out.values(), key=lambda g: (-g["count"], g["warehouse"], g["reason"]))


def select(conn: Conn, sel: Selection) -> list[dict[str, Any]]:
    """The jobs of a selection (at most MAX_JOBS), each with its warehouse and whether a replay helps."""
    out: list[dict[str, Any]] = []
    for jid, raw_state, _kind, order_no, warehouse, _attempts, reason, _updated in _rows(conn):
        state = "in_doubt" if raw_state == "held" else "dead"
        if _matches(sel, warehouse, state, reason_key(reason, order_no), reason):
            out.append({"id": jid, "warehouse": warehouse, "order_no": order_no,
                        "replay_helps": advice(reason)["replay_helps"]})
            if len(out) >= MAX_JOBS:
                break
    return out
