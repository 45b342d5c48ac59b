"""What a running service holds: the checked config, the mappings of its bundles, the secrets
resolver, the router and the state store. Built once at start; `ServiceError` lists everything
that keeps the service from starting, all at once.

Every mapping carries its identity (`MappingVersion`: the spec's version, the sha256 of its
compiled module and of its bundle's manifest), which delivery journals with each transformed job.
`archive` keeps every mapping this process has loaded by module hash, so that the order page can
explain what an older version sent after a reload, and say plainly when that version is gone."""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import orjson

from dockyard.runtime.bundle import Bundle, load_bundle
from dockyard.runtime.errors import DockyardError
from dockyard.runtime.mapping import CompiledMapping
from dockyard.runtime.secrets import DirSecrets, EnvSecrets, Secret, SecretProvider, Secrets
from dockyard.service.config import ServiceConfig, check_against
from dockyard.service.routing import Router

__all__ = ["CachingSecrets", "MappingVersion", "ServiceContext", "ServiceError", "load_bundles", "load_order",
           "rewrite_url"]


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

    def clear(self) -> None:
        """Forget every cached value: the next use reads the providers again (a reload does this,
        so that a rotated secret takes effect at once, not within `ttl`)."""
        self._cache.clear()


@dataclass(frozen=True)
class MappingVersion:
    """Which code turned an order into bytes: the spec's declared version, the sha256 of the
    compiled module (two compiles of one spec give the same bytes, so this names the code) and the
    sha256 of the bundle's manifest. Hashes are kept to 16 hex digits: enough to tell versions apart."""

    name: str
    version: str
    module: str
    bundle: str

    def as_detail(self) -> dict[str, str]:
        return {"mapping_version": self.version, "mapping_sha": self.module, "bundle": self.bundle}


def load_bundles(paths: Iterable[str | os.PathLike[str]]
                 ) -> tuple[dict[str, CompiledMapping], dict[str, MappingVersion], list[str]]:
    """The mappings of every bundle with their versions, and what is wrong (each problem once)."""
    mappings: dict[str, CompiledMapping] = {}
    versions: dict[str, MappingVersion] = {}
    problems: list[str] = []
    for path in paths:
        try:
            bundle = load_bundle(path)
        except DockyardError as exc:
            problems.append(str(exc))
            continue
        digest = bundle_hash(bundle)
        for name in bundle:
            if name in mappings:
                problems.append(f"mapping {name!r} is in more than one bundle (second: {path})")
            mappings[name] = bundle[name]
            module_sha = str(bundle.manifest["mappings"][name]["module_sha256"])
            versions[name] = MappingVersion(name, bundle[name].version, module_sha[:16], digest)
    return mappings, versions, problems


def bundle_hash(bundle: Bundle) -> str:
    """The manifest's sha256 (over its canonical JSON: it names every file's hash, so it names the bundle)."""
    text = json.dumps(bundle.manifest, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


@dataclass
class ServiceContext:
    config: ServiceConfig
    mappings: Mapping[str, CompiledMapping]
    secrets: Secrets
    router: Router
    versions: Mapping[str, MappingVersion] = field(default_factory=dict)
    # module hash -> mapping, for every version loaded since start (a reload keeps the old ones here)
    archive: dict[str, CompiledMapping] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.remember()

    def remember(self) -> None:
        """Put the current mappings in the archive (by module hash)."""
        for name, version in self.versions.items():
            self.archive.setdefault(version.module, self.mappings[name])

    @classmethod
    def build(cls, config: ServiceConfig, secrets: Secrets | None = None) -> ServiceContext:
        mappings, versions, problems = load_bundles(config.bundles)
        if secrets is None:
            providers: list[SecretProvider] = [EnvSecrets(config.secrets_env_prefix)]
            if config.secrets_dir is not None:
                providers.append(DirSecrets(config.secrets_dir))
            secrets = CachingSecrets(providers)
        if not problems:
            problems += check_against(config, mappings, secrets)
        if problems:
            raise ServiceError("the service cannot start:\n" + "\n".join(f"  - {p}" for p in problems))
        return cls(config, mappings, secrets, Router(config.routes), versions)


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
