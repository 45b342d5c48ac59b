"""What a running service holds: the checked config, the mappings of its bundles, the secrets
resolver, the router and the state store. Built once at start; `ServiceError` lists everything
that keeps the service from starting, all at once."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import orjson

from dockyard.runtime.bundle import load_bundle
from dockyard.runtime.errors import DockyardError
from dockyard.runtime.mapping import CompiledMapping
from dockyard.runtime.secrets import DirSecrets, EnvSecrets, Secret, SecretProvider, Secrets
from dockyard.service.config import ServiceConfig, check_against
from dockyard.service.routing import Router

__all__ = ["CachingSecrets", "ServiceContext", "ServiceError", "load_order", "rewrite_url"]


class ServiceError(DockyardError):
    """The service cannot start; the message lists every reason."""


class CachingSecrets(Secrets):
    """Secrets looked up at most once per `ttl` seconds each: a request never reads the secrets
    folder, and a rotated secret is still picked up within `ttl`."""

    def __init__(self, providers: Iterable[SecretProvider], ttl: float = 60.0) -> None:
        super().__init__(providers)
        self.ttl = ttl
        self._cache: dict[str, tuple[float, Secret]] = {}

    def get(self, name: str) -> Secret:
        now = time.monotonic()
        hit = self._cache.get(name)
        if hit is not None and now - hit[0] < self.ttl:
            return hit[1]
        secret = super().get(name)
        self._cache[name] = (now, secret)
        return secret


@dataclass
class ServiceContext:
    config: ServiceConfig
    mappings: Mapping[str, CompiledMapping]
    secrets: Secrets
    router: Router

    @classmethod
    def build(cls, config: ServiceConfig, secrets: Secrets | None = None) -> ServiceContext:
        mappings: dict[str, CompiledMapping] = {}
        problems: list[str] = []
        for path in config.bundles:
            try:
                bundle = load_bundle(path)
            except DockyardError as exc:
                problems.append(str(exc))
                continue
            for name in bundle:
                if name in mappings:
                    problems.append(f"mapping {name!r} is in more than one bundle (second: {path})")
                mappings[name] = bundle[name]
        if secrets is None:
            providers: list[SecretProvider] = [EnvSecrets(config.secrets_env_prefix)]
            if config.secrets_dir is not None:
                providers.append(DirSecrets(config.secrets_dir))
            secrets = CachingSecrets(providers)
        if not problems:
            problems += check_against(config, mappings, secrets)
        if problems:
            raise ServiceError("the service cannot start:\n" + "\n".join(f"  - {p}" for p in problems))
        return cls(config, mappings, secrets, Router(config.routes))


def load_order(text: str) -> dict[str, Any]:
    """An order as stored (JSON text), read back with exact decimals."""
    data: dict[str, Any] = json.loads(text, parse_float=Decimal)
    return data


def rewrite_url(url: str, endpoint: str | None) -> str:
    """The spec's URL with its scheme://host replaced by the warehouse's configured endpoint (which
    may add a path prefix): how the same specs reach a sandbox, a simulator or production."""
    if not endpoint:
        return url
    scheme_end = url.find("://")
    if scheme_end < 0:
        return endpoint.rstrip("/") + "/" + url.lstrip("/")
    rest = url[scheme_end + 3:]
    cut = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    return endpoint.rstrip("/") + rest[cut:]


def dumps(value: Any) -> str:
    """JSON text of an order or event as received: decimals stay numbers with their exact digits
    (a Decimal parsed from `159.00` is written back as `159.00`), nulls stay null."""
    return orjson.dumps(value, default=_exact).decode("utf-8")


def _exact(value: Any) -> Any:
    if isinstance(value, Decimal):
        return orjson.Fragment(format(value, "f").encode("ascii"))
    return str(value)
