"""The idempotency model: what a store remembers about a key, what reserving a key answers, the
errors, and the contract every store keeps (built-in or plugin), plus `open_store(url)`.

Idempotency is tied to delivery. Before sending, the runtime RESERVES the key; after a definite
answer it COMMITS the key with a summary of the response; after a definite failure it RELEASES the
key so that a retry may send again; when the outcome is unknown (a timeout, a crash after sending)
it marks the key IN DOUBT, and an operator or a recovery query later RESOLVES it. Reserving is the
one step that must be atomic: however many threads, processes and hosts reserve the same fresh key
at once, exactly one of them is told `new`.

This module also owns how a store URL is shown: `redact_url` hides the password of a URL (in its
userinfo or in a `password=` option), and `store_failure` turns a driver error into an
`IdempotencyError` whose text holds neither.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from types import TracebackType
from typing import Any, NoReturn, Self
from urllib.parse import unquote, urlsplit, urlunsplit

from dockyard.runtime import plugins
from dockyard.runtime.errors import DockyardError

__all__ = [
    "GROUP",
    "ConflictError",
    "IdempotencyError",
    "IdempotencyStore",
    "OwnershipError",
    "Record",
    "Reservation",
    "State",
    "Status",
    "open_store",
    "redact_url",
]

GROUP = "dockyard.idempotency"


class State(StrEnum):
    """Where a key stands in its delivery."""

    RESERVED = "reserved"  # an attempt holds it and may be sending right now
    COMMITTED = "committed"  # delivered: the record carries the outcome (or None when none was kept)
    IN_DOUBT = "in_doubt"  # sent, outcome unknown: neither resend blindly nor forget


class Status(StrEnum):
    """What `reserve` answers."""

    NEW = "new"  # this caller now holds the reservation: send
    DUPLICATE = "duplicate"  # committed earlier; the record carries the outcome
    IN_FLIGHT = "in_flight"  # another attempt holds the reservation
    IN_DOUBT = "in_doubt"  # an earlier attempt's outcome is unknown
    CONFLICT = "conflict"  # the key was first used with another payload


@dataclass(frozen=True)
class Record:
    """A key as a store holds it. Datetimes are aware and in UTC; `expires_at` None = keep forever."""

    key: str
    fingerprint: str  # sha256 hex of the payload, computed by the caller
    state: State
    owner: str  # opaque token of the attempt that reserved the key
    request_id: str  # the request id used on the wire, kept so that a `resend` rule can reuse it
    summary: dict[str, Any] | None  # the response summary, JSON-serialisable
    reason: str | None  # why the key was marked in doubt
    created_at: datetime
    updated_at: datetime
    expires_at: datetime | None

    def live(self, now: datetime) -> bool:
        """Whether the record still counts at `now`: an expired record counts as absent."""
        return self.expires_at is None or self.expires_at > now


@dataclass(frozen=True)
class Reservation:
    """The answer of `reserve`: the status, and the record as stored after the call (for `new`,
    the fresh record with this caller as owner; otherwise the record that was already there)."""

    status: Status
    record: Record


class IdempotencyError(DockyardError):
    """A store is unusable (unreachable, misconfigured, closed) or a call breaks the model."""


class OwnershipError(IdempotencyError):
    """A commit, release or in-doubt mark by an attempt that does not hold the reservation: another
    attempt holds it, it was already settled, or it expired or was never made."""


class ConflictError(IdempotencyError):
    """For callers that raise on `Status.CONFLICT`: the same key with a different payload."""

    def __init__(self, key: str, fingerprint: str) -> None:
        self.key = key
        self.fingerprint = fingerprint
        super().__init__(key, fingerprint)  # so that it pickles back through __init__

    def __str__(self) -> str:
        return (f"key {self.key!r} was first used with a different payload (fingerprint {self.fingerprint}), "
                f"refusing to send a different one under the same key")


def classify(existing: Record, fingerprint: str) -> Status:
    """The status `reserve` answers for a live record that is already there."""
    if existing.fingerprint != fingerprint:
        return Status.CONFLICT  # whatever its state: a different payload never rides on this key
    if existing.state is State.COMMITTED:
        return Status.DUPLICATE
    if existing.state is State.IN_DOUBT:
        return Status.IN_DOUBT
    return Status.IN_FLIGHT


def ownership_error(action: str, key: str, owner: str, found: Record | None) -> OwnershipError:
    """Why `action` by `owner` was refused, from the live record found (if any)."""
    if found is None:
        why = "it holds no reservation (never reserved, released, or expired)"
    elif found.state is not State.RESERVED:
        why = f"it is {found.state.value}, no longer reserved"
    else:
        why = f"the reservation belongs to another attempt ({found.owner!r}), not to {owner!r}"
    return OwnershipError(f"cannot {action} key {key!r}: {why}")


def resolve_error(key: str, found: Record | None) -> IdempotencyError:
    why = "it is not reserved (never reserved, released, or expired)" if found is None else "it is already committed"
    return IdempotencyError(f"cannot resolve key {key!r}: {why}")


# -- argument checks shared by the stores ------------------------------------------------------

def check_key(key: str, what: str = "key") -> str:
    if not isinstance(key, str) or not key:
        raise IdempotencyError(f"the idempotency {what} must be a non-empty text, not {key!r}")
    return key


def ttl_millis(ttl: timedelta | None) -> int | None:
    """The ttl in whole milliseconds (at least 1), or None to keep the record forever."""
    if ttl is None:
        return None
    if not isinstance(ttl, timedelta) or ttl <= timedelta(0):
        raise IdempotencyError(f"ttl must be a positive timedelta or None, not {ttl!r}")
    return max(1, ttl // timedelta(milliseconds=1))


def check_reserve(key: str, fingerprint: str, owner: str, request_id: str, ttl: timedelta | None) -> int | None:
    """Check the arguments of `reserve`; the ttl in milliseconds."""
    check_key(key)
    check_key(fingerprint, "fingerprint")
    check_key(owner, "owner")
    check_key(request_id, "request id")
    return ttl_millis(ttl)


def check_moment(now: datetime | None) -> datetime | None:
    """`now` as given to `purge_expired`, in UTC; a naive datetime would be read in some local zone."""
    if now is None:
        return None
    if not isinstance(now, datetime) or now.utcoffset() is None:
        raise IdempotencyError(f"now must be an aware datetime, not {now!r}")
    return now.astimezone(UTC)


def encode_summary(summary: Mapping[str, Any] | None) -> str | None:
    """The summary as JSON text. Every store keeps JSON, so a value JSON cannot carry is refused
    here, before anything changes, and in the same way by every store."""
    if summary is None:
        return None
    if not isinstance(summary, Mapping):
        raise IdempotencyError(f"a summary is a mapping or None, not {type(summary).__name__}")
    try:
        return json.dumps(dict(summary), ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise IdempotencyError(f"the summary is not JSON-serialisable: {exc}") from exc


def decode_summary(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    value = json.loads(text)
    if not isinstance(value, dict):  # pragma: no cover - only a hand-edited store holds this
        raise IdempotencyError(f"a stored summary is not a JSON object: {text[:80]!r}")
    return value


def utcnow() -> datetime:
    return datetime.now(UTC)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def to_micros(moment: datetime) -> int:
    """Microseconds since the epoch: exact integers that SQL compares without any time zone rule."""
    return (moment - _EPOCH) // timedelta(microseconds=1)


def from_micros(micros: int) -> datetime:
    return _EPOCH + timedelta(microseconds=micros)


# -- URLs --------------------------------------------------------------------------------------

# Query options that carry a credential (libpq accepts `?password=`; others have their own names).
_SECRET_OPTIONS = frozenset({"password", "passwd", "pwd", "pass", "secret", "token", "sslpassword", "auth"})


def redact_url(url: str) -> str:
    """The URL with the password of its userinfo and any credential option replaced by ***."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<a malformed URL>"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")  # the last @: a raw @ in a password stays hidden
        user, colon, _ = userinfo.partition(":")
        netloc = f"{user}:***@{hostport}" if colon else f"{user}@{hostport}"
    query = "&".join(
        f"{piece.partition('=')[0]}=***" if unquote(piece.partition("=")[0]).lower() in _SECRET_OPTIONS else piece
        for piece in parts.query.split("&")
    ) if parts.query else ""
    if (netloc, query) == (parts.netloc, parts.query):
        return url  # nothing to hide; urlunsplit would also drop the // of an empty host (memory://)
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def url_secrets(url: str) -> tuple[str, ...]:
    """Every credential text a URL carries, as written and percent-decoded."""
    found: set[str] = set()
    try:
        parts = urlsplit(url)
    except ValueError:
        return ()
    if "@" in parts.netloc:
        userinfo = parts.netloc.rpartition("@")[0]
        _, colon, password = userinfo.partition(":")
        if colon and password:
            found.update((password, unquote(password)))
    for piece in parts.query.split("&") if parts.query else ():
        name, _, value = piece.partition("=")
        if unquote(name).lower() in _SECRET_OPTIONS and value:
            found.update((value, unquote(value)))
    return tuple(sorted((s for s in found if s), key=len, reverse=True))


def scrub(text: str, url: str) -> str:
    """`text` with every credential of `url` replaced by ***."""
    for secret in url_secrets(url):
        text = text.replace(secret, "***")
    return text


def _chain_text(exc: BaseException | None) -> str:
    texts: list[str] = []
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        texts.append(f"{exc!s} {exc!r}")
        exc = exc.__cause__ or exc.__context__
    return " ".join(texts)


def store_failure(url: str, action: str, exc: BaseException) -> NoReturn:
    """Raise an IdempotencyError for a driver error. The message names the store by its redacted
    URL and holds no credential; the driver error stays chained for the traceback unless its own
    text (or that of an error it chains) would show a credential, in which case it is dropped."""
    message = scrub(f"idempotency store {redact_url(url)}: {action} failed: {exc}", url)
    error = IdempotencyError(message)
    chain = _chain_text(exc)
    if any(secret in chain for secret in url_secrets(url)):
        raise error from None
    raise error from exc


def url_options(url: str, names: frozenset[str]) -> tuple[str, dict[str, str]]:
    """Split our own `?name=value` options (e.g. `table`, `prefix`) off a URL: the rest of the URL
    goes to the driver untouched, which would refuse an option it does not know."""
    parts = urlsplit(url)
    kept: list[str] = []
    options: dict[str, str] = {}
    for piece in parts.query.split("&") if parts.query else ():
        name, _, value = piece.partition("=")
        if unquote(name) in names:
            options[unquote(name)] = unquote(value)
        else:
            kept.append(piece)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "&".join(kept), parts.fragment)), options


# -- the store contract ------------------------------------------------------------------------

class IdempotencyStore(ABC):
    """Where keys are recorded. Every method is safe to call from many threads at once, and
    `reserve` is atomic across every process (and, for servers, every host) sharing the store.
    Expired records count as absent for `reserve`, `get` and the owner's transitions."""

    @classmethod
    @abstractmethod
    def from_url(cls, url: str) -> Self:
        """A store from its URL (see `open_store`)."""

    @abstractmethod
    def reserve(self, key: str, fingerprint: str, *, owner: str, request_id: str,
                ttl: timedelta | None = None) -> Reservation:
        """If no live record holds `key`, record it as reserved by `owner` and answer `new`;
        otherwise answer what the live record says (`duplicate`, `in_flight`, `in_doubt`), or
        `conflict` when it was recorded with another fingerprint. `ttl` counts from now; None keeps
        the record until it is released."""

    @abstractmethod
    def commit(self, key: str, owner: str, summary: Mapping[str, Any] | None) -> Record:
        """Reserved by `owner` → committed with `summary`. Otherwise OwnershipError."""

    @abstractmethod
    def release(self, key: str, owner: str) -> None:
        """Delete `owner`'s reservation so that a retry is answered `new`. Otherwise OwnershipError."""

    @abstractmethod
    def mark_in_doubt(self, key: str, owner: str, reason: str) -> Record:
        """Reserved by `owner` → in doubt, with the reason. Otherwise OwnershipError."""

    @abstractmethod
    def resolve(self, key: str, summary: Mapping[str, Any] | None) -> Record:
        """In doubt (or reserved by an attempt that died) → committed, by an operator or a recovery
        query that learnt the outcome; needs no ownership. IdempotencyError when absent or committed."""

    @abstractmethod
    def get(self, key: str) -> Record | None:
        """The live record of `key`, or None."""

    @abstractmethod
    def purge_expired(self, now: datetime | None = None) -> int:
        """Delete the records expired at `now` (default: the store's clock); how many went."""

    @abstractmethod
    def close(self) -> None:
        """Release connections. Idempotent; any later call raises IdempotencyError."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def closed_error(store: object) -> IdempotencyError:
    return IdempotencyError(f"{store!r} is closed")


def open_store(url: str) -> IdempotencyStore:
    """The store a URL names; its scheme picks the class registered in the `dockyard.idempotency`
    entry-point group: `memory://`, `sqlite:///relative.db` or `sqlite:////absolute.db`,
    `postgresql://user@host:port/db?table=name` (or `postgres://`), `redis://host:port/db?prefix=p:`."""
    shown = redact_url(url) if isinstance(url, str) else repr(url)
    try:
        scheme = urlsplit(url).scheme.lower() if isinstance(url, str) else ""
    except ValueError:
        scheme = ""
    known = plugins.available(GROUP)
    if not scheme or scheme not in known:
        what = f"scheme {scheme!r}" if scheme else "no scheme"
        raise IdempotencyError(f"no idempotency store for {shown} ({what}; known schemes: {', '.join(known)})")
    try:
        cls = plugins.load(GROUP, scheme)
    except plugins.PluginError as exc:
        raise IdempotencyError(str(exc)) from exc
    if not (isinstance(cls, type) and issubclass(cls, IdempotencyStore)):
        raise IdempotencyError(f"the {GROUP} plugin {scheme!r} is not an IdempotencyStore class: {cls!r}")
    try:
        return cls.from_url(url)
    except Exception as exc:
        # The built-in stores already keep credentials out of their errors; this also holds a
        # plugin to that, whatever it raises.
        if isinstance(exc, IdempotencyError) and not any(s in _chain_text(exc) for s in url_secrets(url)):
            raise
        store_failure(url, "opening", exc)
