"""Secrets: named in specs and config, resolved at run time, and never printed.

A `Secret` holds its value privately: its `repr`/`str` show only the name, it refuses to be
pickled, and the value is read with `reveal()` at the one place a signer or cipher needs it.
Providers resolve names: environment variables and a secrets directory are built in; more are
registered under the `dockyard.secrets` entry-point group. `redact()` removes every known
secret value from a text before it is shown.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import NoReturn, Protocol

from dockyard.runtime.errors import DockyardError

__all__ = [
    "TEST_SECRET_MARK",
    "DirSecrets",
    "EnvSecrets",
    "MappingSecrets",
    "Secret",
    "SecretError",
    "SecretProvider",
    "Secrets",
    "marked_test_secrets",
]

# Test secrets carry this mark in their value, so one is never mistaken for a real credential.
TEST_SECRET_MARK = "TEST-ONLY-"
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")


class SecretError(DockyardError):
    """A secret is missing or malformed. The message names the secret, never its value."""


class Secret:
    __slots__ = ("_value", "name")

    def __init__(self, name: str, value: str) -> None:
        self.name = name
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret({self.name!r})"

    __str__ = __repr__

    def __reduce__(self) -> NoReturn:
        raise TypeError(f"secret {self.name!r} cannot be pickled")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other.name == self.name and other._value == self._value

    def __hash__(self) -> int:
        return hash(self.name)


class SecretProvider(Protocol):
    """Resolves a secret name to its value; None when this provider does not know the name."""

    def lookup(self, name: str) -> str | None: ...


class EnvSecrets:
    """Secrets from environment variables: the name is the variable (optionally prefixed)."""

    def __init__(self, prefix: str = "", environ: Mapping[str, str] | None = None) -> None:
        self.prefix = prefix
        self.environ = environ if environ is not None else os.environ

    def lookup(self, name: str) -> str | None:
        return self.environ.get(self.prefix + name)


class DirSecrets:
    """Secrets as files in a directory (one file per name, as Kubernetes and Docker mount them);
    a single trailing newline is dropped."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)

    def lookup(self, name: str) -> str | None:
        if not _NAME.fullmatch(name) or name in (".", ".."):
            return None
        path = self.directory / name
        try:
            text = path.read_text(encoding="utf-8")
        except (FileNotFoundError, IsADirectoryError):
            return None
        except OSError as exc:
            raise SecretError(f"secret {name!r}: cannot read {path}: {exc.strerror}") from None
        return text[:-1] if text.endswith("\n") else text


class MappingSecrets:
    """Secrets from a mapping (tests, and `--test-secrets` with clearly marked values)."""

    def __init__(self, values: Mapping[str, str]) -> None:
        self.values = dict(values)

    def lookup(self, name: str) -> str | None:
        return self.values.get(name)


def marked_test_secrets(request_meta: Mapping[str, object] | None) -> dict[str, str]:
    """Deterministic, clearly marked test values for every secret a request section names.
    Keys for field ciphers are 16 characters (a 128-bit key read as UTF-8 bytes) and still start
    with the TEST-ONLY- mark; signing secrets are the mark plus the name."""
    import hashlib

    values: dict[str, str] = {}
    if not request_meta:
        return values
    sign = request_meta.get("sign")
    if isinstance(sign, Mapping):
        name = str(sign["secret"])
        values[name] = TEST_SECRET_MARK + name
    encrypt = request_meta.get("encrypt")
    for enc in encrypt if isinstance(encrypt, list) else []:
        name = str(enc["key"])
        digest = hashlib.sha256(name.encode()).hexdigest()
        values[name] = (TEST_SECRET_MARK + digest)[:16]
    return values


class Secrets:
    """The providers in order; the first that knows a name wins. Remembers every value it has
    handed out, so that `redact` can scrub them from any text before it is shown."""

    def __init__(self, providers: Iterable[SecretProvider]) -> None:
        self.providers = list(providers)
        self._seen: set[str] = set()

    def get(self, name: str) -> Secret:
        if not _NAME.fullmatch(name):
            raise SecretError(f"{name!r} is not a valid secret name")
        for provider in self.providers:
            value = provider.lookup(name)
            if value is not None:
                if not value:
                    raise SecretError(f"secret {name!r} is empty")
                self._seen.add(value)
                return Secret(name, value)
        raise SecretError(f"secret {name!r} is not set (looked in: "
                          f"{', '.join(type(p).__name__ for p in self.providers) or 'no providers'})")

    def redact(self, text: str) -> str:
        for value in sorted(self._seen, key=len, reverse=True):
            if len(value) >= 4:
                text = text.replace(value, "***")
        return text
