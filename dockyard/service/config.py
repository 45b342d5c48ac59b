"""The service configuration (`dockyard.yaml`): its data model, loading and checking.

The model below is the contract between the config loader and the service. Loading validates the
file against the published JSON Schema (`dockyard/service/config.schema.json`), then checks what a
schema cannot say (routes naming known warehouses, the default rule last, files that exist,
endpoint URLs, dashboard tokens), and reports every problem at once as `file:line:col` with a
caret, like spec errors. `check_against` checks the loaded configuration against the bundles and
the secrets when the service starts.
"""

from __future__ import annotations

import difflib
import functools
import ipaddress
import json
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import jsonschema

from dockyard.dsl.diagnostics import Diagnostic, DiagnosticsError, Severity, display_path
from dockyard.dsl.spans import SourceText, Span
from dockyard.dsl.yaml_nodes import YamlProblem, YMap, YNode, YScalar, YSeq, compose, load_yaml, to_plain
from dockyard.dsl.yaml_nodes import _convert as _yaml_convert
from dockyard.runtime.errors import DockyardError
from dockyard.runtime.fieldcrypto import get_cipher
from dockyard.runtime.schema_patterns import validator_class
from dockyard.runtime.signing import get_signer
from dockyard.runtime.wire import WIRE_KEY, WireError, WireSettings, unused_encryption
from dockyard.service.retention import RetentionConfig

if TYPE_CHECKING:
    from dockyard.runtime.mapping import CompiledMapping
    from dockyard.runtime.secrets import Secrets

__all__ = [
    "DEFAULT_SECRETS_ENV_PREFIX",
    "CallbackConfig",
    "CircuitConfig",
    "FlowConfig",
    "GuardConfig",
    "LimitsConfig",
    "MtlsConfig",
    "RateLimitConfig",
    "RetryConfig",
    "Route",
    "ServiceConfig",
    "TokenConfig",
    "UpstreamConfig",
    "VerifyConfig",
    "WarehouseConfig",
    "check_against",
    "config_schema",
    "load_config",
]


@dataclass(frozen=True)
class RetryConfig:
    max_attempts: int = 8  # attempts in all, the first included
    base_delay: float = 0.5  # seconds before the first retry; doubles each time
    max_delay: float = 60.0  # cap of one delay
    jitter: float = 0.5  # each delay is multiplied by a random factor in [1 - jitter, 1 + jitter]


@dataclass(frozen=True)
class CircuitConfig:
    failures: int = 20  # consecutive retryable failures that open the circuit
    open_for: float = 10.0  # seconds the circuit stays open before one probe is let through


@dataclass(frozen=True)
class RateLimitConfig:
    """Calls per second to one warehouse, as a token bucket shared by every worker and node
    (enforced by delivery; the warehouse's `Retry-After` is honoured on top of it)."""

    per_second: float  # the sustained rate: tokens added per second
    burst: int  # the bucket's size: calls that may start at once after a quiet spell


@dataclass(frozen=True)
class FlowConfig:
    request: str  # mapping name (in a bundle) that turns the order into the request
    response: str | None = None  # mapping name that turns the warehouse's answer into an `outcome`


@dataclass(frozen=True)
class VerifyConfig:
    scheme: str  # a signing scheme name (dockyard.crypto), e.g. qimen-md5, sf-msgdigest, cainiao-link
    secret: str  # secret NAME
    params: str | None = None  # query | form: where the signed parameters are; default from the scheme
    body: str = "default"  # default | body | none | form.<field> | query.<field>: what is signed as the body
    window: float = 300.0  # seconds: accepted clock skew of the signed timestamp (replay window)
    options: Mapping[str, str] = field(default_factory=dict)  # scheme options, as in a spec's sign block
    previous: PreviousSecret | None = None  # the secret being rotated out, accepted until a moment


@dataclass(frozen=True)
class PreviousSecret:
    """The secret a warehouse signed with before a rotation: callbacks signed with it still verify
    until `until` (the overlap window), after `secret` (the new one) failed."""

    secret: str  # secret NAME
    until: datetime  # aware (UTC): from this moment on the previous secret is refused


@dataclass(frozen=True)
class TokenConfig:
    secret: str  # secret NAME holding the token
    where: str = "header"  # header | path (a callback's last URL segment)
    header: str = "X-Dockyard-Token"  # Authorization means `Bearer <token>`


@dataclass(frozen=True)
class MtlsConfig:
    header: str  # set (and overwritten) by a trusted proxy that verified the client certificate
    value: str = "SUCCESS"


@dataclass(frozen=True)
class GuardConfig:
    """Who may reach an endpoint; every check given must pass (see dockyard.service.guards)."""

    networks: tuple[str, ...] = ()  # CIDR allow-list of the client address
    token: TokenConfig | None = None
    mtls_at_proxy: MtlsConfig | None = None


@dataclass(frozen=True)
class CallbackConfig:
    name: str  # the {flow} of POST /callbacks/{warehouse}/{flow}
    mapping: str  # inbound mapping name (its target is status-event)
    ack: str | None = None  # mapping that renders the warehouse's exact acknowledgement
    verify: VerifyConfig | None = None  # None only when the warehouse signs nothing (must be explicit)
    decrypt: tuple[Mapping[str, Any], ...] = ()  # [{path, scheme, key, options}] applied before the mapping
    guard: GuardConfig | None = None  # required for verify: none (or serve --allow-unsigned-callbacks)


@dataclass(frozen=True)
class WarehouseConfig:
    name: str  # the key under `warehouses:`; used in URLs, the journal and routing
    endpoint: str | None  # e.g. http://127.0.0.1:9001 — replaces scheme://host of the specs' URLs
    context: Mapping[str, Any]  # per-warehouse config values given to every flow (`config:` merged over `config_file:`)
    secrets: tuple[str, ...]  # secret names this warehouse needs (checked at start)
    concurrency: int = 32  # requests in flight to this warehouse at most
    connect_timeout: float = 3.0
    timeout: float = 10.0  # whole request
    retry: RetryConfig = field(default_factory=RetryConfig)
    circuit: CircuitConfig = field(default_factory=CircuitConfig)
    flows: Mapping[str, FlowConfig] = field(default_factory=dict)  # create (required), cancel, query, update
    callbacks: Mapping[str, CallbackConfig] = field(default_factory=dict)
    rate_limit: RateLimitConfig | None = None  # None: no limit but `concurrency`
    # Signing options and fields to encrypt, within what the specs allow (`wire:` of the config file,
    # key by key under `wire:` here); build_request(..., wire=warehouse.wire) applies them.
    wire: WireSettings = field(default_factory=WireSettings)


@dataclass(frozen=True)
class Route:
    warehouse: str
    shops: tuple[str, ...] = ()  # order.shop_code in …
    channels: tuple[str, ...] = ()  # order.channel in …
    provinces: tuple[str, ...] = ()  # order.receiver.province in …
    sku_prefixes: tuple[str, ...] = ()  # any line's sku starts with one of these
    default: bool = False  # matches every order; must be the last rule
    # A rule matches when every criterion it gives matches (criteria given as lists match any element).


@dataclass(frozen=True)
class UpstreamConfig:
    url: str  # the order middle-platform's webhook for status events
    timeout: float = 5.0
    batch: int = 100  # events per POST (a JSON array)
    secret: str | None = None  # secret NAME: when set, X-Dockyard-Signature: hmac-sha256 hex of the body
    retry: RetryConfig = field(default_factory=RetryConfig)


@dataclass(frozen=True)
class LimitsConfig:
    max_body_bytes: int = 4 * 1024 * 1024
    max_batch: int = 1000  # orders per POST /orders/batch
    max_depth: int = 32  # nesting of JSON objects/arrays in one order
    max_lines: int = 1000  # items of one order
    header_timeout: float = 30.0  # seconds to send the headers; also the idle keep-alive time
    body_timeout: float = 60.0  # seconds to send the body once the headers are in


@dataclass(frozen=True)
class ServiceConfig:
    path: Path  # the file it was read from; relative paths below are resolved against its folder
    store: str  # sqlite:///path (default sqlite:///dockyard-state.db beside the file) | postgresql://…
    host: str
    port: int
    bundles: tuple[Path, ...]
    secrets_dir: Path | None  # a directory of secret files (name = file name); environment variables always count
    # DOCKYARD_SECRET_ by default: QIMEN_APP_SECRET is read from DOCKYARD_SECRET_QIMEN_APP_SECRET
    secrets_env_prefix: str
    on_change: str  # reject | update: a repeated order_no with different content
    limits: LimitsConfig
    warehouses: Mapping[str, WarehouseConfig]
    routes: tuple[Route, ...]
    upstream: UpstreamConfig | None
    workers: int = 1  # service processes sharing the listening socket and the store
    tokens: Mapping[str, str] = field(default_factory=dict)  # reserved for the dashboard (token -> role)
    ingest: GuardConfig | None = None  # who may POST orders (or serve --allow-open-ingest)
    trusted_proxies: tuple[str, ...] = ()  # CIDRs whose X-Forwarded-For is believed
    retention: RetentionConfig = field(default_factory=RetentionConfig)  # days kept per table class
    time_zone: str = "UTC"  # what the dashboard shows times in (UTC on hover)
    readers: int = 4  # reader threads (and PostgreSQL reader connections) of each service process



# ---------------------------------------------------------------------------------------------
# Loading

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
DEFAULT_SECRETS_ENV_PREFIX = "DOCKYARD_SECRET_"
DEFAULT_STORE_FILE = "dockyard-state.db"
UPSTREAM_RETRY = RetryConfig(max_attempts=10)  # the upstream's default retry
ROLES = ("read", "operator")
FLOWS = ("create", "cancel", "query", "update")
OVERRIDES_FILE = "<overrides>"  # the file name that spans of values given as overrides carry

_STR = "tag:yaml.org,2002:str"
_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_BOOL = "tag:yaml.org,2002:bool"
_NULL = "tag:yaml.org,2002:null"
_CRITERIA = (("shop", "shops"), ("channel", "channels"), ("province", "provinces"), ("sku_prefix", "sku_prefixes"))


def config_schema() -> dict[str, Any]:
    """The published JSON Schema of `dockyard.yaml` (draft 2020-12)."""
    copy: dict[str, Any] = json.loads(json.dumps(_schema()))  # callers may not change the cached one
    return copy


@functools.cache
def _schema() -> dict[str, Any]:
    text = resources.files("dockyard.service").joinpath("config.schema.json").read_text(encoding="utf-8")
    result: dict[str, Any] = json.loads(text)
    return result


@functools.cache
def _validator() -> jsonschema.Draft202012Validator:
    validator: jsonschema.Draft202012Validator = validator_class()(_schema())  # `$` as ECMA-262 reads it
    return validator


def load_config(path: str | Path, overrides: Mapping[str, Any] | None = None) -> ServiceConfig:
    """Read and check `dockyard.yaml`; raises DiagnosticsError with every problem found.

    `overrides` replaces top-level keys of the file (a value of None removes the key), e.g.
    ``{"store": "sqlite:////tmp/x.db", "listen": {"port": 0}}``; relative paths in it are relative
    to the file's folder too. Problems in overridden values are reported at ``<overrides>:1:1``."""
    return _Loader(Path(path), overrides or {}).load()


def did_you_mean(word: str, choices: Iterable[str]) -> str | None:
    close = difflib.get_close_matches(word, sorted(choices), n=1, cutoff=0.6)
    return f"did you mean {close[0]!r}?" if close else None


def _compose(source: SourceText) -> tuple[YNode | None, list[Diagnostic]]:
    """The node tree and the YAML problems. Duplicate keys (e.g. a warehouse named twice) are
    reported without hiding the rest of the file: the tree keeps the first of them."""
    try:
        return load_yaml(source), []
    except YamlProblem as exc:
        problems = exc.diagnostics
    if any(d.code not in ("yaml-duplicate-key", "yaml-key", "yaml-merge") for d in problems):
        return None, problems  # a syntax error: there is no tree
    node = compose(source.text)  # the same bounded composer, which has passed already
    if node is None:
        return None, problems
    return _yaml_convert(node, source, []), problems


def _synthetic(value: Any, span: Span) -> YNode:
    """A node for a value given in Python (an override), so that it is checked like the file."""
    if isinstance(value, Mapping):
        return YMap(tuple((YScalar(str(k), '"', _STR, span, 0, 0), _synthetic(v, span)) for k, v in value.items()),
                    span)
    if isinstance(value, list | tuple):
        return YSeq(tuple(_synthetic(v, span) for v in value), span)
    if value is None:
        return YScalar("null", None, _NULL, span, 0, 0)
    if isinstance(value, bool):
        return YScalar("true" if value else "false", None, _BOOL, span, 0, 0)
    if isinstance(value, int):
        return YScalar(str(value), None, _INT, span, 0, 0)
    if isinstance(value, float | Decimal):
        return YScalar(str(value), None, _FLOAT, span, 0, 0)
    return YScalar(os.fspath(value) if isinstance(value, os.PathLike) else str(value), '"', _STR, span, 0, 0)


def _where(path: Iterable[Any]) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "the configuration"


def _scalar_value(node: YScalar) -> Any:
    """A config (context) value: as YAML reads it, except that a number with a point is an exact
    Decimal (context values of type decimal are money; a float would not be accepted)."""
    value = to_plain(node)
    if isinstance(value, float):
        try:
            return Decimal(node.value.replace("_", ""))
        except ArithmeticError:
            return value
    return value


class _Loader:
    def __init__(self, path: Path, overrides: Mapping[str, Any]) -> None:
        self.path = path.resolve()
        self.name = display_path(path)
        self.base = self.path.parent
        self.overrides = overrides
        self.diags: list[Diagnostic] = []
        self.sources: dict[str, str] = {}
        self.contexts: dict[str, dict[str, Any]] = {}
        self.wires: dict[str, WireSettings] = {}
        self.tokens: dict[str, str] = {}
        self.has_proxies = False

    def error(self, span: Span, message: str, code: str, hint: str | None = None) -> None:
        self.diags.append(Diagnostic(span, message, code, Severity.ERROR, hint))

    def fail(self) -> DiagnosticsError:
        return DiagnosticsError(self.diags, self.sources)

    def resolve(self, text: str) -> Path:
        return Path(os.path.normpath(self.base / Path(text).expanduser()))

    # -- the whole file -------------------------------------------------------------------
    def load(self) -> ServiceConfig:
        try:
            text = self.path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            self.error(Span(self.name, 1, 1, 1, 1), f"cannot read the configuration: {exc}", "config-read")
            raise self.fail() from None
        self.sources[self.name] = text
        root, problems = _compose(SourceText(self.name, text))
        self.diags.extend(problems)
        if root is None:
            raise self.fail()
        if not isinstance(root, YMap):
            self.error(root.span, "the configuration must be a YAML mapping (dockyard: 1, bundles:, warehouses:, …)",
                       "config-structure")
            raise self.fail()
        root = self.apply_overrides(root)
        plain = to_plain(root)
        for err in sorted(_validator().iter_errors(plain), key=lambda e: [str(p) for p in e.absolute_path]):
            self.schema_error(root, err)
        self.check(root, plain)
        if any(d.is_error for d in self.diags):
            raise self.fail()
        return self.build(plain)

    def apply_overrides(self, root: YMap) -> YMap:
        if not self.overrides:
            return root
        span = Span(OVERRIDES_FILE, 1, 1, 1, 1)
        items = [(k, v) for k, v in root.items if k.value not in self.overrides]
        for key, value in self.overrides.items():
            if value is not None:
                items.append((YScalar(str(key), '"', _STR, span, 0, 0), _synthetic(value, span)))
        return YMap(tuple(items), root.span)

    # -- schema errors, located -----------------------------------------------------------
    @staticmethod
    def locate(root: YNode, path: Iterable[Any]) -> tuple[YNode, YScalar | None]:
        node: YNode = root
        key: YScalar | None = None
        for part in path:
            if isinstance(node, YMap) and isinstance(part, str):
                k, nxt = node.key_node(part), node.get(part)
                if k is None or nxt is None:
                    break
                node, key = nxt, k
            elif isinstance(node, YSeq) and isinstance(part, int) and part < len(node.items):
                node, key = node.items[part], None
            else:
                break
        return node, key

    def schema_error(self, root: YMap, err: jsonschema.ValidationError) -> None:
        path = list(err.absolute_path)
        node, key = self.locate(root, path)
        where = _where(path)
        kind = err.validator
        value: Any = err.validator_value
        schema = err.schema if isinstance(err.schema, dict) else {}
        if kind == "additionalProperties" and isinstance(err.instance, dict) and isinstance(node, YMap):
            allowed = set((schema.get("properties") or {}).keys())
            for extra in err.instance:
                if extra in allowed:
                    continue
                k = node.key_node(extra)
                hint = did_you_mean(extra, allowed) or (f"expected one of: {', '.join(sorted(allowed))}"
                                                        if allowed else None)
                self.error(k.span if k else node.span, f"unknown key {extra!r} in {where}", "config-unknown-key",
                           hint=hint)
        elif kind == "required":
            missing = str(err.message).split("'")[1] if "'" in err.message else str(err.message)
            span = key.span if key is not None else (node.span if path else Span(root.span.file, 1, 1, 1, 1))
            if missing == "verify":
                self.error(span, f"callback {path[-1]!r} has no `verify`", "config-verify-missing",
                           hint="say how its signature is checked ({scheme: …, secret: …}), or write "
                                "`verify: none` if the warehouse signs nothing")
            else:
                self.error(span, f"{where} needs the key {missing!r}", "config-missing-key")
        elif "propertyNames" in err.schema_path and isinstance(node, YMap) and isinstance(err.instance, str):
            k = node.key_node(err.instance)
            parent = self.parent_description(path)
            self.error(k.span if k else node.span, f"{where}: the name {err.instance!r} is not allowed",
                       "config-bad-name", hint=parent)
        elif kind in ("enum", "const"):
            options = list(value) if kind == "enum" else [value]
            hint = did_you_mean(str(err.instance), [str(o) for o in options])
            if path and path[-1] == "verify":
                hint = "write `verify: none` for a warehouse that signs nothing, or {scheme: …, secret: …}"
            self.error(node.span, f"{where} must be {' or '.join(map(repr, options))}", "config-bad-value", hint=hint)
        elif kind == "type":
            wanted = [value] if isinstance(value, str) else list(value)
            words = [{"object": "mapping", "array": "list", "number": "number"}.get(w, w) for w in wanted]
            text = " or ".join(f"{'an' if w[:1] in 'aeiou' else 'a'} {w}" for w in words)
            hint = "quote it" if "string" in wanted and isinstance(node, YScalar) else None
            if path and path[-1] == "verify":
                hint = "write `verify: none` for a warehouse that signs nothing, or {scheme: …, secret: …}"
            self.error(node.span, f"{where} must be {text}", "config-bad-type", hint=hint)
        elif kind == "pattern":
            self.error(node.span, f"{where}: {err.instance!r} is not allowed here", "config-bad-value",
                       hint=schema.get("description") or self.parent_description(path))
        elif kind in ("minimum", "maximum", "exclusiveMinimum"):
            bound = {"minimum": "at least", "maximum": "at most", "exclusiveMinimum": "more than"}[kind]
            self.error(node.span, f"{where} must be {bound} {value}", "config-bad-value")
        elif kind in ("minItems", "minProperties"):
            self.error(key.span if key is not None else node.span, f"{where} may not be empty", "config-bad-value")
        elif kind == "minLength":
            self.error(node.span, f"{where} may not be empty", "config-bad-value")
        elif kind == "uniqueItems":
            self.error(node.span, f"{where} names the same value twice", "config-bad-value")
        else:
            self.error(key.span if key is not None else node.span, f"{where}: {err.message}", "config-structure")

    @staticmethod
    def parent_description(path: list[Any]) -> str | None:
        """The description of the property at `path` in the schema (for hints)."""
        schema: Any = _schema()
        defs = schema["$defs"]
        for part in path:
            if "$ref" in schema:
                schema = defs[schema["$ref"].rsplit("/", 1)[1]]
            props = schema.get("properties", {})
            if isinstance(part, str) and part in props:
                schema = props[part]
            elif isinstance(part, int) and isinstance(schema.get("items"), dict):
                schema = schema["items"]
            elif isinstance(schema.get("additionalProperties"), dict):
                schema = schema["additionalProperties"]
            else:
                return None
        description = schema.get("description")
        return str(description) if description else None

    # -- checks the schema cannot express -------------------------------------------------
    def check(self, root: YMap, plain: dict[str, Any]) -> None:
        proxies_node = root.get("trusted_proxies")
        self.has_proxies = isinstance(proxies_node, YSeq) and bool(proxies_node.items)
        store = root.get("store")
        if isinstance(store, YScalar) and isinstance(plain.get("store"), str):
            self.check_store(store, plain["store"])
        bundles = root.get("bundles")
        if isinstance(bundles, YSeq):
            for item in bundles.items:
                if isinstance(item, YScalar) and isinstance(to_plain(item), str) and item.value:
                    self.check_path(item, "bundle", folder=True)
        secrets = root.get("secrets")
        if isinstance(secrets, YMap):
            folder = secrets.get("dir")
            if isinstance(folder, YScalar) and isinstance(to_plain(folder), str) and folder.value:
                self.check_path(folder, "secrets folder", folder=True)
        upstream = root.get("upstream")
        if isinstance(upstream, YMap):
            url = upstream.get("url")
            if isinstance(url, YScalar) and isinstance(to_plain(url), str):
                self.check_url(url, "the upstream URL", allow_query=True)
            self.check_retry(upstream.get("retry"))
        dashboard = root.get("dashboard")
        if isinstance(dashboard, YMap):
            self.check_tokens(dashboard.get("tokens"))
        zone = root.get("time_zone")
        if isinstance(zone, YScalar) and isinstance(to_plain(zone), str):
            from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

            try:
                ZoneInfo(str(zone.value))
            except (ZoneInfoNotFoundError, ValueError):
                self.error(zone.span, f"{zone.value!r} is not a time zone name", "config-time-zone",
                           hint="an IANA name such as Asia/Shanghai or UTC")
        proxies = root.get("trusted_proxies")
        if isinstance(proxies, YSeq):
            self.check_networks(proxies, "trusted_proxies")
        self.check_guard(root.get("ingest"), "ingest", ingest=True, proxies=isinstance(proxies, YSeq) and
                         bool(proxies.items))
        warehouses = root.get("warehouses")
        names: list[str] = []
        if isinstance(warehouses, YMap):
            for key, node in warehouses.items:
                names.append(key.value)
                if isinstance(node, YMap):
                    self.check_warehouse(key.value, node)
        routing = root.get("routing")
        if isinstance(routing, YSeq):
            self.check_routing(routing, names if isinstance(warehouses, YMap) else None)

    def check_store(self, node: YScalar, url: str) -> None:
        if not url.startswith("sqlite:///"):
            return
        file = url[len("sqlite:///"):].partition("?")[0]
        if not file or file == ":memory:":
            return
        folder = self.resolve(file).parent
        if not folder.is_dir():
            self.error(node.span, f"the store's folder {display_path(folder)} does not exist", "config-missing-file")

    def check_path(self, node: YScalar, what: str, *, folder: bool) -> Path | None:
        path = self.resolve(node.value)
        if not path.exists():
            self.error(node.span, f"the {what} {node.value!r} does not exist (looked for {display_path(path)})",
                       "config-missing-file", hint="relative paths are relative to the configuration file's folder")
            return None
        if folder and not path.is_dir():
            self.error(node.span, f"the {what} {node.value!r} is not a folder", "config-missing-file")
            return None
        if not folder and not path.is_file():
            self.error(node.span, f"the {what} {node.value!r} is not a file", "config-missing-file")
            return None
        return path

    def check_url(self, node: YScalar, what: str, *, allow_query: bool) -> None:
        problem = _url_problem(node.value, allow_query=allow_query)
        if problem is not None:
            self.error(node.span, f"{what} {node.value!r} {problem}", "config-url",
                       hint="write http(s)://host[:port][/path]" + ("" if allow_query else ", without a query"))

    def check_retry(self, node: YNode | None) -> None:
        if not isinstance(node, YMap):
            return
        base, top = node.get("base_delay"), node.get("max_delay")
        base_value = to_plain(base) if base is not None else RetryConfig.base_delay
        if isinstance(top, YScalar) and _is_number(to_plain(top)) and _is_number(base_value) \
                and to_plain(top) < base_value:
            self.error(top.span, f"max_delay ({to_plain(top)}) is shorter than base_delay ({base_value})",
                       "config-bad-value")

    def check_tokens(self, node: YNode | None) -> None:
        if not isinstance(node, YMap):
            return
        for key, value in node.items:
            if isinstance(value, YScalar) and isinstance(to_plain(value), str):
                token, span = key.value, key.span
                if not token.strip():
                    self.error(key.span, "a dashboard token may not be empty", "config-token")
                    continue
            elif isinstance(value, YMap) and isinstance(value.get("env"), YScalar):
                env = value.get("env")
                assert isinstance(env, YScalar)
                found = os.environ.get(env.value, "")
                if not found.strip():
                    self.error(env.span, f"the environment variable {env.value!r} (dashboard token {key.value!r}) "
                               "is not set", "config-token")
                    continue
                token, span = found.strip(), env.span
            else:
                continue  # reported by the schema
            role_node = value if isinstance(value, YScalar) else value.get("role")
            role = to_plain(role_node) if role_node is not None else None
            if token in self.tokens:
                self.error(span, f"dashboard token {key.value!r} is given twice", "config-token")
            elif role in ROLES:
                self.tokens[token] = str(role)

    def check_warehouse(self, name: str, node: YMap) -> None:
        endpoint = node.get("endpoint")
        if isinstance(endpoint, YScalar) and isinstance(to_plain(endpoint), str):
            self.check_url(endpoint, f"the endpoint of {name!r}", allow_query=False)
        context: dict[str, Any] = {}
        wire_nodes: list[YNode] = []
        config_file = node.get("config_file")
        if isinstance(config_file, YScalar) and isinstance(to_plain(config_file), str) and config_file.value:
            path = self.check_path(config_file, "config file", folder=False)
            if path is not None:
                context.update(self.read_config_file(path, wire_nodes))
        config = node.get("config")
        if isinstance(config, YMap):
            context.update(self.config_values(config, "config"))
        self.contexts[name] = {k: v for k, v in context.items() if v is not None}
        inline = node.get(WIRE_KEY)
        if inline is not None:
            wire_nodes.append(inline)
        self.wires[name] = self.read_wire(name, wire_nodes)
        timeout = node.get("timeout")
        if isinstance(timeout, YMap):
            connect, total = timeout.get("connect"), timeout.get("total")
            total_value = to_plain(total) if total is not None else WarehouseConfig.timeout
            if isinstance(connect, YScalar) and _is_number(to_plain(connect)) and _is_number(total_value) \
                    and to_plain(connect) > total_value:
                self.error(connect.span, f"the connect timeout ({to_plain(connect)}) is longer than the total "
                           f"timeout ({total_value})", "config-bad-value")
        self.check_retry(node.get("retry"))
        callbacks = node.get("callbacks")
        if isinstance(callbacks, YMap):
            for key, cb in callbacks.items:
                if isinstance(cb, YMap):
                    self.check_guard(cb.get("guard"), f"warehouses.{name}.callbacks.{key.value}.guard", ingest=False,
                                     proxies=self.has_proxies)

    def check_networks(self, node: YSeq, where: str) -> None:
        for index, item in enumerate(node.items):
            if isinstance(item, YScalar) and isinstance(to_plain(item), str):
                try:
                    ipaddress.ip_network(item.value, strict=False)
                except ValueError:
                    self.error(item.span, f"{where}[{index}]: {item.value!r} is not a network", "config-bad-value",
                               hint="write an address (192.0.2.7) or a CIDR block (192.0.2.0/24, 2001:db8::/32)")

    def check_guard(self, node: YNode | None, where: str, *, ingest: bool, proxies: bool) -> None:
        if not isinstance(node, YMap):
            return
        networks = node.get("networks")
        if isinstance(networks, YSeq):
            self.check_networks(networks, f"{where}.networks")
        token = node.get("token")
        if ingest and isinstance(token, YMap):
            place = token.get("in")
            if isinstance(place, YScalar) and place.value == "path":
                self.error(place.span, "the ingest token cannot be in the URL path", "config-bad-value",
                           hint="clients of POST /orders send it in a header: Authorization: Bearer <token>")
        mtls_key = node.key_node("mtls_at_proxy")
        if mtls_key is not None and not proxies:
            self.error(mtls_key.span, f"{where}: mtls_at_proxy needs trusted_proxies", "config-bad-value",
                       hint="only a header set by a proxy you name can vouch for a client certificate: list the "
                            "proxy's address under trusted_proxies")

    def read_wire(self, warehouse: str, nodes: list[YNode]) -> WireSettings:
        """The warehouse's wire settings: the config file's `wire:`, with `wire:` under the warehouse
        in this file replacing it key by key (sign, encrypt). Problems are reported at the node."""
        merged: dict[str, Any] = {}
        for node in nodes:
            value = to_plain(node)
            if not isinstance(value, dict):
                self.error(node.span, f"the wire settings of {warehouse!r} must be a mapping with sign: and/or "
                           "encrypt:", "config-wire")
                return WireSettings()
            merged.update(value)
        try:
            return WireSettings.parse(merged or None, f"warehouses.{warehouse}.wire")
        except WireError as exc:
            for problem in exc.problems:
                self.error(nodes[-1].span, problem, "config-wire")
            return WireSettings()

    def read_config_file(self, path: Path, wire_nodes: list[YNode] | None = None) -> dict[str, Any]:
        name = display_path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            self.error(Span(name, 1, 1, 1, 1), f"cannot read the config file: {exc}", "config-file")
            return {}
        self.sources[name] = text
        root, problems = _compose(SourceText(name, text))
        self.diags.extend(problems)
        if root is None:
            return {}
        if not isinstance(root, YMap):
            self.error(root.span, "a config file must be a mapping of name: value", "config-file")
            return {}
        wire = root.get(WIRE_KEY)
        if wire is not None and wire_nodes is not None:
            wire_nodes.append(wire)
        return self.config_values(root, None)

    def config_values(self, node: YMap, where: str | None) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for key, value in node.items:
            if where is None and key.value == WIRE_KEY:
                continue  # a config file's wire settings, read by read_wire
            if isinstance(value, YScalar):
                values[key.value] = _scalar_value(value)
            elif where is None:  # in `config:` the schema reports it
                self.error(value.span, f"config value {key.value!r} must be text, a number or true/false",
                           "config-file")
        return values

    def check_routing(self, routing: YSeq, warehouses: list[str] | None) -> None:
        last = len(routing.items) - 1
        for index, rule in enumerate(routing.items):
            if not isinstance(rule, YMap):
                continue
            target = rule.get("warehouse")
            if warehouses is not None and isinstance(target, YScalar) and isinstance(to_plain(target), str) \
                    and target.value not in warehouses:
                self.error(target.span, f"routing[{index}] names the warehouse {target.value!r}, which is not "
                           "under `warehouses:`", "config-unknown-warehouse",
                           hint=did_you_mean(target.value, warehouses)
                           or f"warehouses: {', '.join(warehouses) or '(none)'}")
            criteria = [name for name, _ in _CRITERIA if rule.get(name) is not None]
            default_key, default_node = rule.key_node("default"), rule.get("default")
            if default_key is not None and default_node is not None and to_plain(default_node) is True:
                if criteria:
                    self.error(default_key.span, f"routing[{index}] is the default rule and also has criteria "
                               f"({', '.join(criteria)})", "config-route",
                               hint="a default rule matches every order: drop `default: true` or the criteria")
                if index != last:
                    self.error(default_key.span, f"the default rule routing[{index}] must be the last rule",
                               "config-route", hint=f"the {last - index} rule(s) after it would never match")
            elif not criteria and target is not None:
                self.error(rule.span, f"routing[{index}] has no criteria", "config-route",
                           hint="give shop, channel, province or sku_prefix; or write `default: true` to route "
                                "every remaining order")

    # -- the model ------------------------------------------------------------------------
    def build(self, doc: dict[str, Any]) -> ServiceConfig:
        listen = doc.get("listen", {})
        secrets = doc.get("secrets", {})
        upstream = doc.get("upstream")
        return ServiceConfig(
            path=self.path,
            store=self.store_url(doc.get("store")),
            host=listen.get("host", DEFAULT_HOST),
            port=listen.get("port", DEFAULT_PORT),
            bundles=tuple(self.resolve(b) for b in doc["bundles"]),
            secrets_dir=self.resolve(secrets["dir"]) if "dir" in secrets else None,
            secrets_env_prefix=secrets.get("env_prefix", DEFAULT_SECRETS_ENV_PREFIX),
            on_change=doc.get("orders", {}).get("on_change", "reject"),
            limits=LimitsConfig(**doc.get("limits", {})),
            warehouses={name: self.build_warehouse(name, w) for name, w in doc["warehouses"].items()},
            routes=tuple(_route(rule) for rule in doc.get("routing", [])),
            upstream=None if upstream is None else UpstreamConfig(
                url=upstream["url"],
                timeout=float(upstream.get("timeout", UpstreamConfig.timeout)),
                batch=upstream.get("batch", UpstreamConfig.batch),
                secret=upstream.get("secret"),
                retry=_retry(upstream.get("retry"), UPSTREAM_RETRY),
            ),
            workers=doc.get("workers", ServiceConfig.workers),
            tokens=dict(self.tokens),
            ingest=_guard(doc.get("ingest"), ingest=True),
            trusted_proxies=tuple(doc.get("trusted_proxies", ())),
            retention=RetentionConfig(**doc.get("retention", {})),
            time_zone=doc.get("time_zone", ServiceConfig.time_zone),
            readers=doc.get("readers", ServiceConfig.readers),
        )

    def store_url(self, url: str | None) -> str:
        if url is None:
            return f"sqlite:///{self.base / DEFAULT_STORE_FILE}"
        if url.startswith("sqlite:///"):
            file, sep, query = url[len("sqlite:///"):].partition("?")
            if file != ":memory:" and not file.startswith("/"):
                return f"sqlite:///{self.resolve(file)}{sep}{query}"
        return url

    def build_warehouse(self, name: str, doc: dict[str, Any]) -> WarehouseConfig:
        timeout = doc.get("timeout", {})
        circuit = doc.get("circuit", {})
        return WarehouseConfig(
            name=name,
            endpoint=doc.get("endpoint"),
            context=self.contexts.get(name, {}),
            secrets=tuple(doc.get("secrets", ())),
            concurrency=doc.get("concurrency", WarehouseConfig.concurrency),
            connect_timeout=float(timeout.get("connect", WarehouseConfig.connect_timeout)),
            timeout=float(timeout.get("total", WarehouseConfig.timeout)),
            retry=_retry(doc.get("retry"), RetryConfig()),
            circuit=CircuitConfig(failures=circuit.get("failures", CircuitConfig.failures),
                                  open_for=float(circuit.get("open_for", CircuitConfig.open_for))),
            flows={flow: FlowConfig(request=f["request"], response=f.get("response"))
                   for flow, f in doc["flows"].items()},
            callbacks={cb: _callback(cb, c) for cb, c in doc.get("callbacks", {}).items()},
            rate_limit=_rate_limit(doc.get("rate_limit")),
            wire=self.wires.get(name, WireSettings()),
        )


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | Decimal) and not isinstance(value, bool)


def _url_problem(text: str, *, allow_query: bool) -> str | None:
    if any(ch.isspace() for ch in text):
        return "contains a space"
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        return f"is not a valid URL ({exc})"
    del port
    if parts.scheme not in ("http", "https"):
        return "must start with http:// or https://"
    if not parts.hostname:
        return "has no host"
    if parts.username is not None or parts.password is not None:
        return "may not carry a user name or password"
    if not allow_query and "?" in text:
        return "may not have a query (?…)"
    if "#" in text:
        return "may not have a fragment (#…)"
    return None


def _retry(doc: Mapping[str, Any] | None, default: RetryConfig) -> RetryConfig:
    doc = doc or {}
    return RetryConfig(
        max_attempts=doc.get("max_attempts", default.max_attempts),
        base_delay=float(doc.get("base_delay", default.base_delay)),
        max_delay=float(doc.get("max_delay", default.max_delay)),
        jitter=float(doc.get("jitter", default.jitter)),
    )


def _rate_limit(doc: Mapping[str, Any] | None) -> RateLimitConfig | None:
    """The warehouse's rate limit; `burst` defaults to one second's worth of calls (at least 1)."""
    if doc is None:
        return None
    per_second = float(doc["per_second"])
    return RateLimitConfig(per_second=per_second, burst=int(doc.get("burst", max(1, math.ceil(per_second)))))


def _option_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _callback(name: str, doc: Mapping[str, Any]) -> CallbackConfig:
    verify_doc = doc["verify"]
    verify = None
    if isinstance(verify_doc, Mapping):
        verify = VerifyConfig(
            scheme=verify_doc["scheme"],
            secret=verify_doc["secret"],
            params=verify_doc.get("params"),
            body=verify_doc.get("body", VerifyConfig.body),
            window=float(verify_doc.get("window", VerifyConfig.window)),
            options={k: _option_text(v) for k, v in verify_doc.get("options", {}).items()},
            previous=_previous(verify_doc.get("previous")),
        )
    decrypt = tuple(
        {"path": d["path"], "scheme": d["scheme"], "key": d["key"],
         "options": {k: _option_text(v) for k, v in d.get("options", {}).items()}}
        for d in doc.get("decrypt", ())
    )
    return CallbackConfig(name=name, mapping=doc["mapping"], ack=doc.get("ack"), verify=verify, decrypt=decrypt,
                          guard=_guard(doc.get("guard"), ingest=False))


def _previous(doc: Mapping[str, Any] | None) -> PreviousSecret | None:
    """verify.previous: {secret, until} where until is an ISO 8601 moment with its offset (the
    schema requires one), or a datetime when YAML read it as one."""
    if not doc:
        return None
    until = doc["until"]
    moment = until if isinstance(until, datetime) else datetime.fromisoformat(str(until).replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)  # YAML timestamps without an offset are UTC
    return PreviousSecret(secret=str(doc["secret"]), until=moment.astimezone(UTC))


def _guard(doc: Mapping[str, Any] | None, *, ingest: bool) -> GuardConfig | None:
    if doc is None:
        return None
    token = doc.get("token")
    mtls = doc.get("mtls_at_proxy")
    return GuardConfig(
        networks=tuple(doc.get("networks", ())),
        token=None if token is None else TokenConfig(
            secret=token["secret"], where=token.get("in", "header"),
            header=token.get("header", "Authorization" if ingest else TokenConfig.header)),
        mtls_at_proxy=None if mtls is None else MtlsConfig(header=mtls["header"],
                                                           value=mtls.get("value", MtlsConfig.value)))


def _as_tuple(value: str | list[str] | None) -> tuple[str, ...]:
    if value is None:
        return ()
    return (value,) if isinstance(value, str) else tuple(value)


def _route(doc: Mapping[str, Any]) -> Route:
    return Route(warehouse=doc["warehouse"], shops=_as_tuple(doc.get("shop")),
                 channels=_as_tuple(doc.get("channel")), provinces=_as_tuple(doc.get("province")),
                 sku_prefixes=_as_tuple(doc.get("sku_prefix")), default=bool(doc.get("default", False)))


# ---------------------------------------------------------------------------------------------
# Checking against the loaded bundles and secrets


def check_against(config: ServiceConfig, mappings: Mapping[str, CompiledMapping], secrets: Secrets) -> list[str]:
    """What is wrong with `config` once the bundles are loaded: mappings that are not in them,
    context values a mapping needs and the warehouse does not give, unknown signing or cipher
    schemes, secrets that cannot be read, a create flow without a response mapping. Each problem
    is one line naming the warehouse, flow or callback and the mapping; never a secret's value."""
    problems: list[str] = []
    needed: dict[str, list[str]] = {}  # secret name -> who needs it, in the order first seen

    def secret(name: str, who: str) -> None:
        users = needed.setdefault(name, [])
        if who not in users:
            users.append(who)

    def scheme(kind: str, name: str, who: str) -> None:
        try:
            get_signer(name) if kind == "sign" else get_cipher(name)
        except DockyardError as exc:
            problems.append(f"{who}: {exc}")

    def mapping(name: str, warehouse: WarehouseConfig, who: str) -> CompiledMapping | None:
        found = mappings.get(name)
        if found is None:
            hint = did_you_mean(name, mappings)
            problems.append(f"{who}: the mapping {name!r} is not in the bundles" + (f" ({hint})" if hint else ""))
            return None
        try:
            found.check_context(warehouse.context)
        except DockyardError as exc:
            problems.append(f"{who}: {exc} (give it under warehouses.{warehouse.name}.config or in its config_file)")
        return found

    for wname, warehouse in config.warehouses.items():
        for name in warehouse.secrets:
            secret(name, f"warehouse {wname}")
        request_metas: list[Mapping[str, Any]] = []
        for fname, flow in warehouse.flows.items():
            who = f"warehouse {wname} flow {fname}"
            request = mapping(flow.request, warehouse, who)
            if request is not None:
                meta = request.meta.get("request")
                if not isinstance(meta, Mapping):
                    problems.append(f"{who}: the mapping {flow.request!r} has no request: section, so it cannot "
                                    "be sent")
                else:
                    request_metas.append(meta)
                    problems.extend(_wire_problems(warehouse, request, who))
                    sign = meta.get("sign")
                    if isinstance(sign, Mapping) and sign.get("scheme"):
                        scheme("sign", str(sign["scheme"]), f"{who} ({flow.request})")
                        if sign.get("secret"):
                            secret(str(sign["secret"]), f"{who} ({flow.request})")
                    for enc in meta.get("encrypt") or ():
                        if isinstance(enc, Mapping):
                            scheme("cipher", str(enc.get("scheme")), f"{who} ({flow.request})")
                            secret(str(enc.get("key")), f"{who} ({flow.request})")
            if flow.response is not None:
                mapping(flow.response, warehouse, f"{who} response")
            elif fname == "create":
                problems.append(f"{who}: a create flow needs a response mapping (the warehouse's answer → outcome)")
        for path in unused_encryption(warehouse.wire, request_metas):
            offered = sorted({str(e["path"]) for m in request_metas for e in m.get("encryptable") or ()})
            problems.append(f"warehouse {wname}: wire.encrypt {path}: none of its flows lets a warehouse encrypt this "
                            f"field (they offer: {', '.join(offered) or 'none'})")
        for enc in warehouse.wire.encrypt:
            secret(enc.key, f"warehouse {wname} wire.encrypt {enc.path}")
        for cname, callback in warehouse.callbacks.items():
            who = f"warehouse {wname} callback {cname}"
            mapping(callback.mapping, warehouse, who)
            if callback.ack is not None:
                mapping(callback.ack, warehouse, f"{who} ack")
            if callback.verify is not None:
                scheme("sign", callback.verify.scheme, f"{who} verify")
                secret(callback.verify.secret, f"{who} verify")
                if callback.verify.previous is not None:
                    secret(callback.verify.previous.secret, f"{who} verify previous")
            if callback.guard is not None and callback.guard.token is not None:
                secret(callback.guard.token.secret, f"{who} guard token")
            for item in callback.decrypt:
                scheme("cipher", str(item.get("scheme")), f"{who} decrypt {item.get('path')}")
                secret(str(item.get("key")), f"{who} decrypt {item.get('path')}")
    if config.upstream is not None and config.upstream.secret is not None:
        secret(config.upstream.secret, "upstream")
    if config.ingest is not None and config.ingest.token is not None:
        secret(config.ingest.token.secret, "ingest token")
    for name, users in needed.items():
        try:
            secrets.get(name)
        except DockyardError as exc:  # SecretError: names the secret and the providers, never a value
            problems.append(f"{exc}; needed by {', '.join(users)}")
    return problems


def _wire_problems(warehouse: WarehouseConfig, request: CompiledMapping, who: str) -> list[str]:
    """What the specs refuse of the warehouse's wire settings, one line each."""
    if not warehouse.wire:
        return []
    try:
        warehouse.wire.apply(request.meta["request"], request.name)
    except WireError as exc:
        return [f"{who}: {problem}" for problem in exc.problems]
    return []
