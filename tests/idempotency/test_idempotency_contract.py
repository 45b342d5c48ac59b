"""The store contract, run against every store (memory, sqlite, postgres, redis) through
`open_store`: reserve, commit, release, mark in doubt, resolve, conflicts, ownership, expiry,
purge, get and close behave the same whatever keeps the records."""

from __future__ import annotations

import hashlib
import pickle
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from dockyard.runtime.idempotency import (
    ConflictError,
    IdempotencyError,
    IdempotencyStore,
    OwnershipError,
    Reservation,
    State,
    Status,
    open_store,
)

FP = hashlib.sha256(b'{"order": "A-1"}').hexdigest()
OTHER_FP = hashlib.sha256(b'{"order": "A-1", "qty": 2}').hexdigest()
SUMMARY: dict[str, Any] = {"code": "200", "wms_order": "WMS-9", "message": "已接收", "lines": [1, 2],
                           "flags": {}, "ok": True, "none": None, "price": 12.5}


def new_key() -> str:
    return f"order-{uuid.uuid4().hex}"


def reserve(store: IdempotencyStore, key: str, owner: str = "attempt-1", fingerprint: str = FP,
            ttl: timedelta | None = None) -> Reservation:
    return store.reserve(key, fingerprint, owner=owner, request_id=f"req-{owner}", ttl=ttl)


def assert_utc(moment: datetime) -> None:
    assert moment.utcoffset() == timedelta(0)
    # Every clock involved (this process, the database servers) is on this machine.
    assert abs(moment - datetime.now(UTC)) < timedelta(minutes=1)


def test_a_fresh_key_is_new_and_recorded_as_reserved(store: IdempotencyStore) -> None:
    key = new_key()
    assert store.get(key) is None
    got = reserve(store, key)
    assert got.status is Status.NEW
    record = got.record
    assert (record.key, record.fingerprint, record.state, record.owner, record.request_id) == (
        key, FP, State.RESERVED, "attempt-1", "req-attempt-1")
    assert record.summary is None and record.reason is None and record.expires_at is None
    assert_utc(record.created_at)
    assert record.updated_at == record.created_at
    assert store.get(key) == record


def test_commit_turns_later_reservations_into_duplicates_with_the_summary(store: IdempotencyStore) -> None:
    key = new_key()
    reserve(store, key)
    committed = store.commit(key, "attempt-1", SUMMARY)
    assert committed.state is State.COMMITTED and committed.summary == SUMMARY
    assert committed.updated_at >= committed.created_at
    again = reserve(store, key, owner="attempt-2")
    assert again.status is Status.DUPLICATE
    # The record is the first attempt's: its owner, its request id (a `resend` rule reuses it), its outcome.
    assert (again.record.owner, again.record.request_id, again.record.summary) == ("attempt-1", "req-attempt-1",
                                                                                   SUMMARY)
    assert store.get(key) == committed == again.record


def test_a_commit_may_record_no_summary(store: IdempotencyStore) -> None:
    key = new_key()
    reserve(store, key)
    assert store.commit(key, "attempt-1", None).summary is None
    got = reserve(store, key, owner="attempt-2")
    assert got.status is Status.DUPLICATE and got.record.summary is None


def test_the_stored_summary_is_not_the_callers_dict(store: IdempotencyStore) -> None:
    key = new_key()
    reserve(store, key)
    lines = [1]
    summary = {"code": "200", "lines": lines}
    store.commit(key, "attempt-1", summary)
    lines.append(2)
    record = store.get(key)
    assert record is not None and record.summary == {"code": "200", "lines": [1]}


def test_release_lets_a_retry_reserve_again(store: IdempotencyStore) -> None:
    key = new_key()
    reserve(store, key)
    store.release(key, "attempt-1")
    assert store.get(key) is None
    # Released means absent: the retry holds it now, even with a payload that changed meanwhile.
    retry = reserve(store, key, owner="attempt-2", fingerprint=OTHER_FP)
    assert retry.status is Status.NEW
    assert (retry.record.owner, retry.record.fingerprint) == ("attempt-2", OTHER_FP)


def test_a_held_reservation_is_in_flight_for_everyone_else(store: IdempotencyStore) -> None:
    key = new_key()
    first = reserve(store, key).record
    for owner in ("attempt-2", "attempt-3", "attempt-1"):  # even the holder, asking again, is told to wait
        got = reserve(store, key, owner=owner)
        assert got.status is Status.IN_FLIGHT
        assert got.record == first


def test_an_attempt_marked_in_doubt_is_in_doubt_for_everyone(store: IdempotencyStore) -> None:
    key = new_key()
    reserve(store, key)
    marked = store.mark_in_doubt(key, "attempt-1", "read timeout after 30 s")
    assert (marked.state, marked.reason, marked.owner) == (State.IN_DOUBT, "read timeout after 30 s", "attempt-1")
    got = reserve(store, key, owner="attempt-2")
    assert got.status is Status.IN_DOUBT
    assert got.record == marked == store.get(key)


def test_resolve_turns_an_in_doubt_key_into_a_duplicate(store: IdempotencyStore) -> None:
    key = new_key()
    reserve(store, key)
    store.mark_in_doubt(key, "attempt-1", "connection reset")
    resolved = store.resolve(key, SUMMARY)
    assert (resolved.state, resolved.summary) == (State.COMMITTED, SUMMARY)
    assert resolved.reason == "connection reset"  # kept: why it once was in doubt
    got = reserve(store, key, owner="attempt-2")
    assert got.status is Status.DUPLICATE and got.record.summary == SUMMARY


def test_resolve_settles_a_reservation_whose_attempt_died(store: IdempotencyStore) -> None:
    key = new_key()
    reserve(store, key)
    assert store.resolve(key, None).state is State.COMMITTED
    with pytest.raises(OwnershipError):  # the dead attempt, were it to wake up, no longer holds it
        store.commit(key, "attempt-1", SUMMARY)


def test_resolve_needs_a_key_that_is_not_yet_committed(store: IdempotencyStore) -> None:
    key = new_key()
    with pytest.raises(IdempotencyError, match="cannot resolve") as absent:
        store.resolve(key, SUMMARY)
    assert not isinstance(absent.value, OwnershipError)
    reserve(store, key)
    store.commit(key, "attempt-1", {"first": True})
    with pytest.raises(IdempotencyError, match="already committed"):
        store.resolve(key, SUMMARY)
    record = store.get(key)
    assert record is not None and record.summary == {"first": True}


@pytest.mark.parametrize("state", [State.RESERVED, State.IN_DOUBT, State.COMMITTED])
def test_a_different_payload_under_the_same_key_is_a_conflict_in_every_state(store: IdempotencyStore,
                                                                               state: State) -> None:
    key = new_key()
    reserve(store, key)
    if state is State.IN_DOUBT:
        store.mark_in_doubt(key, "attempt-1", "timeout")
    elif state is State.COMMITTED:
        store.commit(key, "attempt-1", SUMMARY)
    before = store.get(key)
    got = reserve(store, key, owner="attempt-2", fingerprint=OTHER_FP)
    assert got.status is Status.CONFLICT
    assert got.record == before and got.record.state is state and got.record.fingerprint == FP
    assert store.get(key) == before  # nothing changed
    error = ConflictError(key, got.record.fingerprint)
    assert str(error) == (f"key {key!r} was first used with a different payload (fingerprint {FP}), "
                          f"refusing to send a different one under the same key")
    assert str(pickle.loads(pickle.dumps(error))) == str(error)


def test_only_the_holder_may_settle_a_reservation(store: IdempotencyStore) -> None:
    key = new_key()
    held = reserve(store, key).record
    for settle in (lambda: store.commit(key, "intruder", SUMMARY), lambda: store.release(key, "intruder"),
                   lambda: store.mark_in_doubt(key, "intruder", "guess")):
        with pytest.raises(OwnershipError, match="belongs to another attempt") as refused:
            settle()
        assert "'attempt-1'" in str(refused.value) and "'intruder'" in str(refused.value)
    assert store.get(key) == held


@pytest.mark.parametrize("setup", ["absent", "released", "committed", "in_doubt"])
def test_a_key_that_is_not_reserved_cannot_be_settled(store: IdempotencyStore, setup: str) -> None:
    key = new_key()
    if setup != "absent":
        reserve(store, key)
        if setup == "released":
            store.release(key, "attempt-1")
        elif setup == "committed":
            store.commit(key, "attempt-1", SUMMARY)
        else:
            store.mark_in_doubt(key, "attempt-1", "timeout")
    before = store.get(key)
    expected = "holds no reservation" if before is None else f"it is {before.state.value}, no longer reserved"
    for settle in (lambda: store.commit(key, "attempt-1", SUMMARY), lambda: store.release(key, "attempt-1"),
                   lambda: store.mark_in_doubt(key, "attempt-1", "again")):
        with pytest.raises(OwnershipError, match=expected):
            settle()
    assert store.get(key) == before


def test_a_reservation_expires_after_its_ttl(store: IdempotencyStore) -> None:
    ttl = timedelta(milliseconds=200)
    held, done = new_key(), new_key()
    first = reserve(store, held, ttl=ttl).record
    assert first.expires_at is not None and first.expires_at - first.created_at == ttl
    reserve(store, done, ttl=ttl)
    committed = store.commit(done, "attempt-1", SUMMARY)
    assert store.get(held) == first
    assert committed.expires_at is not None
    time.sleep((committed.expires_at - datetime.now(UTC)).total_seconds() + 0.05)
    # Expired counts as absent: for get, and for reserve (even with another payload, even if committed).
    assert store.get(held) is None and store.get(done) is None
    for key in (held, done):
        again = reserve(store, key, owner="attempt-2", fingerprint=OTHER_FP, ttl=timedelta(hours=1))
        assert again.status is Status.NEW
        assert (again.record.owner, again.record.fingerprint, again.record.summary) == ("attempt-2", OTHER_FP, None)
    # The first attempt, waking up late, must not settle the key another attempt now holds.
    with pytest.raises(OwnershipError, match="another attempt"):
        store.commit(held, "attempt-1", SUMMARY)
    record = store.get(held)
    assert record is not None and (record.owner, record.state) == ("attempt-2", State.RESERVED)


def test_an_expired_reservation_cannot_be_settled(store: IdempotencyStore) -> None:
    key = new_key()
    reserve(store, key, ttl=timedelta(milliseconds=200))
    time.sleep(0.3)
    with pytest.raises(OwnershipError, match="holds no reservation"):
        store.commit(key, "attempt-1", SUMMARY)
    with pytest.raises(IdempotencyError, match="cannot resolve"):
        store.resolve(key, SUMMARY)


def test_purge_expired_deletes_what_has_expired_by_then(store: IdempotencyStore) -> None:
    soon, forever, later = new_key(), new_key(), new_key()
    reserve(store, soon, ttl=timedelta(hours=1))
    reserve(store, forever)
    reserve(store, later, ttl=timedelta(hours=2))
    store.commit(later, "attempt-1", SUMMARY)
    now = datetime.now(UTC)
    assert store.purge_expired() == 0
    assert store.purge_expired(now + timedelta(minutes=90)) == 1
    assert store.get(soon) is None and store.get(later) is not None
    assert store.purge_expired(now + timedelta(days=3650)) == 1
    assert store.get(later) is None
    assert store.get(forever) is not None  # no ttl: kept until released
    with pytest.raises(IdempotencyError, match="aware"):
        store.purge_expired(datetime(2030, 1, 1))  # naive: in which zone?


def test_purge_expired_after_expiry(store: IdempotencyStore) -> None:
    key = new_key()
    reserve(store, key, ttl=timedelta(milliseconds=100))
    time.sleep(0.15)
    # Redis has dropped the key by itself (0); the SQL and memory stores delete it now (1).
    assert store.purge_expired() in (0, 1)
    assert store.purge_expired() == 0
    assert store.get(key) is None


@pytest.mark.parametrize("summary", [{"bad": object()}, {"nan": float("nan")}, ["not", "a", "mapping"]],
                         ids=["object", "nan", "list"])
def test_a_summary_json_cannot_carry_is_refused_before_anything_changes(store: IdempotencyStore,
                                                                         summary: Any) -> None:
    key = new_key()
    held = reserve(store, key).record
    with pytest.raises(IdempotencyError, match="summary"):
        store.commit(key, "attempt-1", summary)
    assert store.get(key) == held
    assert store.commit(key, "attempt-1", {"ok": True}).state is State.COMMITTED


def test_arguments_are_checked(store: IdempotencyStore) -> None:
    key = new_key()
    with pytest.raises(IdempotencyError, match="key must be"):
        store.reserve("", FP, owner="a", request_id="r")
    with pytest.raises(IdempotencyError, match="owner must be"):
        store.reserve(key, FP, owner="", request_id="r")
    for ttl in (timedelta(0), timedelta(seconds=-1)):
        with pytest.raises(IdempotencyError, match="ttl must be"):
            store.reserve(key, FP, owner="a", request_id="r", ttl=ttl)
    assert store.get(key) is None
    reserve(store, key)
    with pytest.raises(IdempotencyError, match="reason must be"):
        store.mark_in_doubt(key, "attempt-1", "")


def test_a_closed_store_refuses_calls(store_url: str) -> None:
    with open_store(store_url) as opened:
        opened.get(new_key())
    with pytest.raises(IdempotencyError, match="closed"):
        opened.get(new_key())
    with pytest.raises(IdempotencyError, match="closed"):
        reserve(opened, new_key())
    opened.close()  # closing twice is fine


def test_two_store_objects_on_one_url_share_the_records(shared_url: str) -> None:
    key = new_key()
    with open_store(shared_url) as one, open_store(shared_url) as two:
        reserve(one, key)
        assert reserve(two, key, owner="attempt-2").status is Status.IN_FLIGHT
        one.commit(key, "attempt-1", SUMMARY)
        got = reserve(two, key, owner="attempt-2")
        assert got.status is Status.DUPLICATE and got.record.summary == SUMMARY
