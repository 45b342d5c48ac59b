"""THE RACE: many threads, and several processes of several threads, reserve the same fresh key at
the same moment. Exactly one is told `new`; every other is told `in_flight`, or `duplicate` once
the winner has committed, and every one of them is shown the winner's record.

A barrier releases all contenders at once, so the reservations really collide; the last test
shows that the harness catches a store whose reserve is a read followed by a write. Every third
key starts out with an expired record, so the contenders also race to take an expired record
over. The memory store is per process, so it races threads only: two processes never share one.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import queue
import threading
import time
import traceback
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import pytest

from dockyard.runtime.idempotency import IdempotencyStore, Record, Reservation, State, Status, open_store
from dockyard.runtime.idempotency.base import classify
from dockyard.runtime.idempotency.memory import MemoryStore

FP = hashlib.sha256(b"the payload").hexdigest()
OTHER_FP = hashlib.sha256(b"an older payload").hexdigest()
THREADS = 32
PROCESSES = 4
THREADS_PER_PROCESS = 8
KEYS = 6
BARRIER_TIMEOUT = 60.0  # generous: spawned processes import Python and the drivers before the first round


class Waiter(Protocol):
    def wait(self, timeout: float | None = None) -> int: ...


@dataclass(frozen=True)
class Outcome:
    key: str
    owner: str
    status: str
    record_owner: str


def contend(store: IdempotencyStore, key: str, owner: str, barrier: Waiter, commit: bool) -> Outcome:
    """One contender: wait for all the others, reserve, and (if it won and `commit`) commit at once."""
    barrier.wait(BARRIER_TIMEOUT)
    got = store.reserve(key, FP, owner=owner, request_id=f"req-{owner}", ttl=timedelta(minutes=10))
    if got.status is Status.NEW and commit:
        store.commit(key, owner, {"winner": owner})
    return Outcome(key, owner, got.status.value, got.record.owner)


def race_threads(store: IdempotencyStore, keys: list[str], threads: int, barrier: Waiter, tag: str,
                 pool: ThreadPoolExecutor) -> list[Outcome]:
    """`threads` threads contend for each key in turn; every other key, the winner commits."""
    outcomes: list[Outcome] = []
    for index, key in enumerate(keys):
        futures = [pool.submit(contend, store, key, f"{tag}-t{n}", barrier, index % 2 == 1) for n in range(threads)]
        outcomes += [future.result() for future in futures]
    return outcomes


def assert_one_winner(outcomes: list[Outcome], keys: list[str], store: IdempotencyStore, contenders: int) -> None:
    for index, key in enumerate(keys):
        mine = [o for o in outcomes if o.key == key]
        assert len(mine) == contenders
        statuses = Counter(o.status for o in mine)
        winners = [o for o in mine if o.status == "new"]
        assert len(winners) == 1, f"{key}: {dict(statuses)}"
        winner = winners[0].owner
        allowed = {"new", "in_flight", "duplicate"} if index % 2 == 1 else {"new", "in_flight"}
        assert set(statuses) <= allowed, f"{key}: {dict(statuses)}"
        # Every loser was shown the winner's record, not one of its own.
        assert {o.record_owner for o in mine} == {winner}
        record = store.get(key)
        assert record is not None and record.owner == winner


def fresh_keys() -> list[str]:
    run = uuid.uuid4().hex[:8]
    return [f"race-{run}-{n}" for n in range(KEYS)]


def leave_expired_records(store: IdempotencyStore, keys: list[str]) -> None:
    """Every third key starts out held by an attempt whose reservation has expired (with another
    payload, even): the contenders race to take the expired record over, and one must win."""
    for key in keys[2::3]:
        store.reserve(key, OTHER_FP, owner="ghost", request_id="req-ghost", ttl=timedelta(milliseconds=100))
    time.sleep(0.15)


def test_threads_race_for_one_key(store_url: str) -> None:
    keys = fresh_keys()
    with open_store(store_url) as store, ThreadPoolExecutor(THREADS) as pool:
        leave_expired_records(store, keys)
        outcomes = race_threads(store, keys, THREADS, threading.Barrier(THREADS), "main", pool)
        assert_one_winner(outcomes, keys, store, THREADS)


def test_stores_opened_at_once_on_a_fresh_database_all_open(shared_url: str) -> None:
    # Each opening creates the file or table if absent: done by many at once, none may fail.
    barrier = threading.Barrier(16)

    def open_one(n: int) -> str:
        barrier.wait(BARRIER_TIMEOUT)
        with open_store(shared_url) as store:
            return store.reserve(f"first-{n}", FP, owner=f"o{n}", request_id="r").status.value

    with ThreadPoolExecutor(16) as pool:
        assert list(pool.map(open_one, range(16))) == ["new"] * 16


def process_worker(url: str, keys: list[str], tag: str, barrier: Waiter, results: Any) -> None:
    """The body of one spawned process: its threads contend with those of the other processes."""
    try:
        with open_store(url) as store, ThreadPoolExecutor(THREADS_PER_PROCESS) as pool:
            results.put(("ok", race_threads(store, keys, THREADS_PER_PROCESS, barrier, tag, pool)))
    except BaseException:
        results.put(("error", f"{tag}: {traceback.format_exc()}"))
        barrier_abort = getattr(barrier, "abort", None)
        if barrier_abort is not None:
            barrier_abort()  # do not leave the other processes waiting for this one


def test_processes_race_for_one_key(shared_url: str) -> None:
    keys = fresh_keys()
    # The store exists (file, table) before the children start; they create nothing concurrently.
    with open_store(shared_url) as store:
        leave_expired_records(store, keys)
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(PROCESSES * THREADS_PER_PROCESS)
    results = ctx.Queue()
    children = [ctx.Process(target=process_worker, args=(shared_url, keys, f"p{n}", barrier, results))
                for n in range(PROCESSES)]
    for child in children:
        child.start()
    outcomes: list[Outcome] = []
    errors: list[str] = []
    try:
        for _ in children:  # read everything before joining: a child cannot exit with a full pipe
            kind, payload = results.get(timeout=BARRIER_TIMEOUT * 2)
            if kind == "ok":
                outcomes += payload
            else:
                errors.append(payload)
    except queue.Empty:
        errors.append("a child process sent no result")
    finally:
        for child in children:
            child.join(timeout=30)
            if child.is_alive():
                child.kill()
                child.join()
    assert not errors, "\n".join(errors)
    assert all(child.exitcode == 0 for child in children)
    assert len({o.owner.split("-")[0] for o in outcomes}) == PROCESSES
    with open_store(shared_url) as store:
        assert_one_winner(outcomes, keys, store, PROCESSES * THREADS_PER_PROCESS)


class CheckThenWriteStore(MemoryStore):
    """What `reserve` must not be: look, then write. Between the two, others look too."""

    def __init__(self) -> None:
        super().__init__()
        self.records: dict[str, Record] = {}

    def reserve(self, key: str, fingerprint: str, *, owner: str, request_id: str,
                ttl: timedelta | None = None) -> Reservation:
        existing = self.records.get(key)
        if existing is not None:
            return Reservation(classify(existing, fingerprint), existing)
        time.sleep(0.01)  # the window a store has between a SELECT and an INSERT
        now = datetime.now(UTC)
        mine = Record(key, fingerprint, State.RESERVED, owner, request_id, None, None, now, now, None)
        self.records[key] = mine
        return Reservation(Status.NEW, mine)

    def get(self, key: str) -> Record | None:
        return self.records.get(key)


def test_the_harness_catches_a_store_that_checks_then_writes() -> None:
    keys = fresh_keys()[:1]
    store = CheckThenWriteStore()
    with ThreadPoolExecutor(THREADS) as pool:
        outcomes = race_threads(store, keys, THREADS, threading.Barrier(THREADS), "naive", pool)
    assert sum(o.status == "new" for o in outcomes) > 1  # the barrier made them collide
    with pytest.raises(AssertionError, match="'new'"):
        assert_one_winner(outcomes, keys, store, THREADS)
