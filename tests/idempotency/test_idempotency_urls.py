"""Opening stores by URL: each scheme picks its class through the `dockyard.idempotency` entry
points, malformed and unknown URLs are refused with a clear message, and a password in a URL never
shows in an error, a traceback or a repr. Also the rule for tests that need a server."""

from __future__ import annotations

import pickle
import traceback
from collections.abc import Callable
from pathlib import Path

import pytest

from dockyard.runtime.idempotency import (
    ConflictError,
    IdempotencyError,
    IdempotencyStore,
    OwnershipError,
    open_store,
    redact_url,
)
from dockyard.runtime.idempotency.memory import MemoryStore
from dockyard.runtime.idempotency.postgres import PostgresStore
from dockyard.runtime.idempotency.redis import RedisStore
from dockyard.runtime.idempotency.sqlite import SqliteStore
from dockyard.runtime.plugins import available

PASSWORD = "TEST-ONLY-pw-c4n4ry"
CLASSES: dict[str, type[IdempotencyStore]] = {
    "memory": MemoryStore, "sqlite": SqliteStore, "postgres": PostgresStore, "redis": RedisStore}


def test_every_scheme_is_registered() -> None:
    assert set(available("dockyard.idempotency")) >= {"memory", "sqlite", "postgresql", "postgres", "redis"}


def test_open_store_picks_the_class_by_scheme(store_kind: str, store_url: str) -> None:
    cls = CLASSES[store_kind]
    with open_store(store_url) as by_scheme, cls.from_url(store_url) as direct:
        assert type(by_scheme) is cls and type(direct) is cls


def test_postgres_answers_to_both_schemes(postgres_url: str) -> None:
    assert postgres_url.startswith("postgresql://")
    for url in (postgres_url, "postgres://" + postgres_url.removeprefix("postgresql://")):
        with open_store(url) as store:
            assert isinstance(store, PostgresStore)
            assert store.table.startswith("dockyard_idem_")  # the ?table= option, not the default


def test_redis_takes_its_key_prefix_from_the_url(redis_url: str) -> None:
    with open_store(redis_url) as store:
        assert isinstance(store, RedisStore) and store.prefix.startswith("dockyard:idem:test:")


def test_sqlite_paths_are_relative_with_three_slashes_and_absolute_with_four(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with open_store("sqlite:///relative.db") as store:
        assert isinstance(store, SqliteStore) and store.path == "relative.db"
    assert (tmp_path / "relative.db").is_file()
    absolute = tmp_path / "sub dir" / "absolute.db"
    absolute.parent.mkdir()
    with open_store(f"sqlite:///{str(absolute).replace(' ', '%20')}?timeout=5") as store:
        assert isinstance(store, SqliteStore) and (store.path, store.timeout) == (str(absolute), 5.0)
    assert absolute.is_file()


@pytest.mark.parametrize("url, message", [
    ("sqlite://host/x.db", "sqlite:///relative.db or sqlite:////absolute.db"),
    ("sqlite:///", "sqlite:///relative.db or sqlite:////absolute.db"),
    ("sqlite:///:memory:", "needs a file path"),
    ("sqlite:///x.db?journal=off", "unknown sqlite store option"),
    ("sqlite:///x.db?timeout=soon", "number of seconds"),
    ("memory://somewhere", "just memory://"),
    ("postgresql://postgres@127.0.0.1:5432/test?table=bad-name", "not a usable table name"),
    ("postgresql://postgres@127.0.0.1:5432/test?table=x;drop", "not a usable table name"),
])
def test_malformed_urls_are_refused(url: str, message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(IdempotencyError, match=message):
        open_store(url)
    assert list(tmp_path.iterdir()) == []  # nothing was created on the way


@pytest.mark.parametrize("url", ["ftp://files.example/x", "rediss://cache.example:6380/0", "no-scheme.db", ""])
def test_an_unknown_scheme_is_refused_with_the_known_ones(url: str) -> None:
    with pytest.raises(IdempotencyError) as refused:
        open_store(url)
    text = str(refused.value)
    assert "known schemes: memory, postgres, postgresql, redis, sqlite" in text


@pytest.mark.parametrize("url, shown", [
    (f"postgresql://app:{PASSWORD}@db.example:5432/orders", "postgresql://app:***@db.example:5432/orders"),
    (f"redis://:{PASSWORD}@cache.example:6379/2", "redis://:***@cache.example:6379/2"),
    (f"postgresql://app@db.example/orders?sslmode=require&password={PASSWORD}",
     "postgresql://app@db.example/orders?sslmode=require&password=***"),
    ("postgresql://app:p%40ss%2Fword@db.example/orders", "postgresql://app:***@db.example/orders"),
    (f"redis://user:{PASSWORD}@h:1/0?prefix=p:", "redis://user:***@h:1/0?prefix=p:"),
    ("postgresql://app@db.example/orders", "postgresql://app@db.example/orders"),
    ("memory://", "memory://"),
    ("http://[::1", "<a malformed URL>"),
], ids=["userinfo", "password-only", "query-option", "percent-encoded", "with-prefix", "no-password", "memory",
        "malformed"])
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def everything_shown(error: BaseException) -> str:
    """The text a user could see of an error: message, repr, and the whole printed traceback."""
    return f"{error}\n{error!r}\n{''.join(traceback.format_exception(error))}"


UNREACHABLE = [
    f"ftp://user:{PASSWORD}@files.example/x",
    f"postgresql://postgres:{PASSWORD}@127.0.0.1:1/test",
    f"postgres://postgres@127.0.0.1:1/test?password={PASSWORD}",
    f"postgresql://postgres:{PASSWORD}@127.0.0.1:5432/test?no_such_option=1",
    f"postgresql://postgres:{PASSWORD}@127.0.0.1:5432/test?table=no-good",
    f"redis://:{PASSWORD}@127.0.0.1:1/0",
    f"redis://user:{PASSWORD}@127.0.0.1:1/0?no_such_option=1",
    f"sqlite://user:{PASSWORD}@host/x.db",
    f"memory://user:{PASSWORD}@host",
]


@pytest.mark.parametrize("url", UNREACHABLE, ids=lambda url: url.split(":")[0] + "-" + url.rsplit("@")[-1][:30])
def test_a_password_in_a_url_never_shows_in_an_error(url: str) -> None:
    with pytest.raises(IdempotencyError) as refused:
        open_store(url)
    text = everything_shown(refused.value)
    assert PASSWORD not in text
    assert "***" in str(refused.value) or "table name" in str(refused.value)


def test_a_percent_encoded_password_never_shows_either() -> None:
    encoded = PASSWORD.replace("-pw-", "%40pw%2F")  # the password holds @ and /: TEST-ONLY@pw/c4n4ry
    with pytest.raises(IdempotencyError) as refused:
        open_store(f"postgresql://postgres:{encoded}@127.0.0.1:1/test")
    text = everything_shown(refused.value)
    assert encoded not in text and PASSWORD.replace("-pw-", "@pw/") not in text


def test_a_password_the_server_rejects_never_shows(redis_server: str, postgres_server: str) -> None:
    # The local Redis has no password: AUTH fails, and its answer must not carry ours.
    host = redis_server.removeprefix("redis://")
    with pytest.raises(IdempotencyError) as refused:
        open_store(f"redis://:{PASSWORD}@{host}")
    assert PASSWORD not in everything_shown(refused.value)
    # A database that does not exist: the server answers, the password stays out of the error.
    base = postgres_server.removeprefix("postgresql://").split("@", 1)[-1].rsplit("/", 1)[0]
    with pytest.raises(IdempotencyError, match="does not exist") as refused:
        open_store(f"postgresql://postgres:{PASSWORD}@{base}/no_such_database_dockyard")
    assert PASSWORD not in everything_shown(refused.value)


def test_a_store_opened_with_a_password_hides_it_in_its_repr(postgres_url: str) -> None:
    # The local PostgreSQL trusts local connections, so the password is accepted and unused.
    url = postgres_url.replace("postgresql://postgres@", f"postgresql://postgres:{PASSWORD}@")
    with open_store(url) as store:
        assert PASSWORD not in repr(store) and "postgres:***@" in repr(store)
        store.close()
        with pytest.raises(IdempotencyError, match="closed") as refused:
            store.get("k")
        assert PASSWORD not in everything_shown(refused.value)


def test_errors_pickle() -> None:
    conflict = pickle.loads(pickle.dumps(ConflictError("order-1", "ab" * 32)))
    assert isinstance(conflict, ConflictError) and (conflict.key, conflict.fingerprint) == ("order-1", "ab" * 32)
    assert "refusing to send a different one under the same key" in str(conflict)
    ownership = pickle.loads(pickle.dumps(OwnershipError("cannot commit key 'k'")))
    assert isinstance(ownership, OwnershipError) and str(ownership) == "cannot commit key 'k'"


def refuse() -> None:
    raise ConnectionRefusedError("connection refused")


def test_an_absent_server_is_skipped_only_without_ci(
        server_gate: Callable[[str, str, Callable[[], object]], None], monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"postgresql://postgres:{PASSWORD}@127.0.0.1:1/test"
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception) as skipped:
        server_gate("PostgreSQL", url, refuse)
    assert "PostgreSQL is not reachable at postgresql://postgres:***@127.0.0.1:1/test" in str(skipped.value)
    assert PASSWORD not in str(skipped.value)
    for value in ("true", "1", ""):
        monkeypatch.setenv("CI", value)
        with pytest.raises(pytest.fail.Exception, match="CI is set, so a missing server is a failure"):
            server_gate("PostgreSQL", url, refuse)
    server_gate("PostgreSQL", url, lambda: None)  # reachable: neither
