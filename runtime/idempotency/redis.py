"""The Redis idempotency store (`redis://[:password@]host:port/db?prefix=dockyard:idem:`), for
deliveries from several hosts. redis-py; one hash per key, under a key prefix.

Every change is one Lua script, and Redis runs a script with nothing else interleaved: `reserve`
checks for the key and writes the reserved record in one script (EVALSHA, falling back to EVAL),
so of many clients reserving the same fresh key exactly one finds it absent. The transitions
(commit, release, mark in doubt, resolve) are one script as well, which compares the owner and the
state and writes in the same step.

Expiry is Redis's own: a ttl becomes PEXPIRE on the hash, and an expired key is gone for every
command, so expired records count as absent with no extra check. Times are the Redis server's
clock (`TIME` inside the scripts), the same clock its expiry uses. Hash fields are written once
by Python (as JSON for the summary) and never re-encoded by Lua, whose cjson would turn `{}` into
`[]` and large numbers into floats.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Self

import redis

from dockyard.runtime.idempotency.base import (
    IdempotencyError,
    IdempotencyStore,
    Record,
    Reservation,
    State,
    Status,
    check_key,
    check_moment,
    check_reserve,
    classify,
    closed_error,
    decode_summary,
    encode_summary,
    ownership_error,
    redact_url,
    resolve_error,
    store_failure,
    url_options,
)

__all__ = ["DEFAULT_PREFIX", "RedisStore"]

DEFAULT_PREFIX = "dockyard:idem:"

# The server clock in whole milliseconds, formatted as an integer (Lua 5.1's tostring would print
# 13-digit numbers in exponent form past %.14g).
_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# KEYS[1] the record; ARGV fingerprint, owner, request_id, ttl in ms ('' = keep until released).
# Answers {1, fields} when it reserved the key, {0, fields} with the record that was there.
_RESERVE = _NOW + """
local cur = redis.call('HGETALL', KEYS[1])
if #cur > 0 then
  return {0, cur}
end
local stamp = string.format('%d', now)
redis.call('HSET', KEYS[1], 'fingerprint', ARGV[1], 'state', 'reserved', 'owner', ARGV[2],
           'request_id', ARGV[3], 'created_ms', stamp, 'updated_ms', stamp)
if ARGV[4] ~= '' then
  local ttl = tonumber(ARGV[4])
  redis.call('HSET', KEYS[1], 'expires_ms', string.format('%d', now + ttl))
  redis.call('PEXPIRE', KEYS[1], ttl)
end
return {1, redis.call('HGETALL', KEYS[1])}
"""

# KEYS[1] the record; ARGV action (commit | doubt | release | resolve), owner, payload (the summary
# JSON for commit/resolve, '' for none; the reason for doubt). Answers {verdict, fields}: 'ok', or
# why not: 'absent', 'state', 'owner' (with the record as found). Writing a hash keeps its TTL.
_TRANSITION = _NOW + """
local cur = redis.call('HGETALL', KEYS[1])
if #cur == 0 then
  return {'absent', cur}
end
local state = redis.call('HGET', KEYS[1], 'state')
local action = ARGV[1]
if action == 'resolve' then
  if state == 'committed' then
    return {'state', cur}
  end
else
  if state ~= 'reserved' then
    return {'state', cur}
  end
  if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[2] then
    return {'owner', cur}
  end
end
if action == 'release' then
  redis.call('DEL', KEYS[1])
  return {'ok', cur}
end
local stamp = string.format('%d', now)
if action == 'doubt' then
  redis.call('HSET', KEYS[1], 'state', 'in_doubt', 'reason', ARGV[3], 'updated_ms', stamp)
else
  redis.call('HSET', KEYS[1], 'state', 'committed', 'updated_ms', stamp)
  if ARGV[3] == '' then
    redis.call('HDEL', KEYS[1], 'summary')
  else
    redis.call('HSET', KEYS[1], 'summary', ARGV[3])
  end
end
return {'ok', redis.call('HGETALL', KEYS[1])}
"""

# KEYS[1] a record; ARGV[1] the moment in ms ('' = the server's now). Deletes it if it has
# expired by then; answers 1 if it did.
_PURGE = _NOW + """
local moment = now
if ARGV[1] ~= '' then
  moment = tonumber(ARGV[1])
end
local expires = redis.call('HGET', KEYS[1], 'expires_ms')
if expires and tonumber(expires) <= moment then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"""


class RedisStore(IdempotencyStore):
    def __init__(self, url: str, *, prefix: str = DEFAULT_PREFIX) -> None:
        if not isinstance(prefix, str) or not prefix:
            raise IdempotencyError(f"the redis key prefix must be a non-empty text, not {prefix!r}")
        self.prefix = prefix
        self._url = url
        self._closed = False
        try:
            # Timeouts: redis-py would otherwise wait forever on a host that does not answer.
            self._client = redis.Redis.from_url(url, decode_responses=True, socket_connect_timeout=10,
                                                socket_timeout=30)
        except (ValueError, TypeError, redis.RedisError) as exc:  # a malformed URL or an unknown option
            store_failure(url, "reading the URL", exc)
        self._reserve = self._client.register_script(_RESERVE)
        self._transition = self._client.register_script(_TRANSITION)
        self._purge = self._client.register_script(_PURGE)
        try:
            self._client.ping()  # fail at open, as the SQL stores do, not at the first reserve
        except (redis.RedisError, TypeError, ValueError) as exc:  # TypeError: an option redis-py does not know
            self._client.close()
            store_failure(url, "opening", exc)

    @classmethod
    def from_url(cls, url: str) -> Self:
        try:
            rest, options = url_options(url, frozenset({"prefix"}))
        except ValueError as exc:
            raise IdempotencyError(f"{redact_url(url)} is not a usable redis store URL: {exc}") from None
        return cls(rest, prefix=options.get("prefix", DEFAULT_PREFIX))

    def __repr__(self) -> str:
        return f"RedisStore({redact_url(self._url)!r}, prefix={self.prefix!r})"

    def _run(self, action: str, script: Any, key: str, *args: str) -> Any:
        if self._closed:
            raise closed_error(self)
        try:
            return script(keys=[self.prefix + key], args=list(args))
        except redis.RedisError as exc:
            store_failure(self._url, action, exc)

    def reserve(self, key: str, fingerprint: str, *, owner: str, request_id: str,
                ttl: timedelta | None = None) -> Reservation:
        millis = check_reserve(key, fingerprint, owner, request_id, ttl)
        fresh, fields = self._run("reserve", self._reserve, key, fingerprint, owner, request_id,
                                  "" if millis is None else str(millis))
        record = _record(key, fields)
        return Reservation(Status.NEW if fresh == 1 else classify(record, fingerprint), record)

    def _change(self, action: str, key: str, owner: str, payload: str) -> Record | None:
        verdict, fields = self._run(action, self._transition, key, action, owner, payload)
        found = _record(key, fields) if fields else None
        if verdict != "ok":
            if action == "resolve":
                raise resolve_error(key, found)
            raise ownership_error({"doubt": "mark in doubt"}.get(action, action), key, owner, found)
        return found

    def commit(self, key: str, owner: str, summary: Mapping[str, Any] | None) -> Record:
        return _present(self._change("commit", key, owner, encode_summary(summary) or ""))

    def mark_in_doubt(self, key: str, owner: str, reason: str) -> Record:
        return _present(self._change("doubt", key, owner, check_key(reason, "in-doubt reason")))

    def release(self, key: str, owner: str) -> None:
        self._change("release", key, owner, "")

    def resolve(self, key: str, summary: Mapping[str, Any] | None) -> Record:
        return _present(self._change("resolve", key, "", encode_summary(summary) or ""))

    def get(self, key: str) -> Record | None:
        if self._closed:
            raise closed_error(self)
        try:
            fields = self._client.hgetall(self.prefix + key)
        except redis.RedisError as exc:
            store_failure(self._url, "get", exc)
        return _record(key, fields) if fields else None

    def purge_expired(self, now: datetime | None = None) -> int:
        """Redis drops expired keys by itself, so with no `now` this finds nothing. With a later
        `now` it walks the prefix (SCAN, hashes only) and deletes, one script per key, each record
        whose expiry falls before it: a maintenance call, O(keys in the database)."""
        if self._closed:
            raise closed_error(self)
        moment = check_moment(now)
        millis = "" if moment is None else str((moment - _EPOCH) // timedelta(milliseconds=1))
        pattern = _glob_escape(self.prefix) + "*"
        purged = 0
        try:
            batch: list[str] = []
            for name in self._client.scan_iter(match=pattern, count=500, _type="HASH"):
                batch.append(name)
                if len(batch) == 500:
                    purged += self._purge_batch(batch, millis)
                    batch = []
            purged += self._purge_batch(batch, millis)
        except redis.RedisError as exc:
            store_failure(self._url, "purge", exc)
        return purged

    def _purge_batch(self, names: list[str], millis: str) -> int:
        if not names:
            return 0
        # One script per key (not one for the batch): each names a single key, as Redis Cluster wants.
        with self._client.pipeline(transaction=False) as pipe:
            for name in names:
                self._purge(keys=[name], args=[millis], client=pipe)
            return sum(int(done) for done in pipe.execute())

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._client.close()


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _glob_escape(text: str) -> str:
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in text)


def _moment(millis: str) -> datetime:
    return _EPOCH + timedelta(milliseconds=int(millis))


def _present(record: Record | None) -> Record:
    if record is None:  # pragma: no cover - the scripts answer 'ok' with the record they wrote
        raise IdempotencyError("the store answered ok without a record")
    return record


def _record(key: str, fields: Any) -> Record:
    """A record from HGETALL: a dict from redis-py, a flat [name, value, ...] list from a script."""
    data: dict[str, str] = fields if isinstance(fields, dict) else dict(zip(fields[::2], fields[1::2], strict=True))
    expires = data.get("expires_ms")
    return Record(key, data["fingerprint"], State(data["state"]), data["owner"], data["request_id"],
                  decode_summary(data.get("summary")), data.get("reason"), _moment(data["created_ms"]),
                  _moment(data["updated_ms"]), None if expires is None else _moment(expires))
