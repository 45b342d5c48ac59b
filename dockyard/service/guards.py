"""Who may reach which endpoint, decided before anything of the request is read.

Three endpoints face the outside, each with its own control:

- a warehouse callback (`POST /callbacks/{warehouse}/{flow}`) is signed (feedback.verify), and may
  also have a `guard`; a flow with `verify: none` (SF's route push) must have one;
- ingest (`POST /orders`, `/orders/batch`) has the `ingest` guard;
- everything else but /healthz and /ui (which has its own login) needs a token whenever any
  token is configured: a dashboard token, or the ingest token (`require_token`).

A guard (config `GuardConfig`) passes when every check it gives passes, in this order:
`networks` (403: the client address is in none of them), `mtls_at_proxy` (403: the request did not
come through a trusted proxy that says it verified a client certificate), `token` (401: missing or
wrong; compared in constant time). The client address is the TCP peer's; X-Forwarded-For is read
only when the peer is one of `trusted_proxies`, and then the client is the last address in it that
is not a trusted proxy (the first hop a trusted proxy saw).

`unguarded(config)` lists what `dockyard serve` refuses to start with: an unsigned callback flow
without a guard, and ingest without one (each can be allowed explicitly, with a warning).
"""

from __future__ import annotations

import functools
import hmac
import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from dockyard.runtime.errors import DockyardError
from dockyard.runtime.secrets import Secrets
from dockyard.service.config import GuardConfig, ServiceConfig

__all__ = ["Guard", "Refusal", "bearer", "client_address", "require_token", "unguarded"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class Refusal:
    status: int  # 401 (no or wrong token) or 403 (not from an allowed network / proxy)
    reason: str  # for the journal and the answer; never a token's value
    outcome: str  # the metrics/journal word: guard-network, guard-mtls, guard-token


def _networks(texts: Iterable[str]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(t, strict=False) for t in texts)


# Peers and forwarded addresses repeat (keep-alive connections of a few warehouses and proxies):
# parsing one with ipaddress costs more than the rest of a guard's check. Bounded, so that a
# client sending a new X-Forwarded-For each time only evicts.
@functools.lru_cache(maxsize=4096)
def _address(text: str | None) -> Address | None:
    if not text:
        return None
    text = text.strip()
    if text.startswith("[") and "]" in text:  # [2001:db8::1]:443
        text = text[1:text.index("]")]
    elif text.count(":") == 1:  # 192.0.2.1:443
        text = text.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped  # ::ffff:192.0.2.1 is 192.0.2.1
    return address


@functools.lru_cache(maxsize=4096)
def _within(address: Address, networks: tuple[Network, ...]) -> bool:
    return any(address.version == n.version and address in n for n in networks)


def client_address(peer: str | None, forwarded_for: str | None, proxies: tuple[Network, ...]) -> Address | None:
    """The client's address: the peer's, unless the peer is a trusted proxy; then the last
    X-Forwarded-For address that is not a trusted proxy. None when it cannot be known (no peer,
    or a trusted proxy forwarded an unreadable address)."""
    address = _address(peer)
    if address is None or not proxies or not _within(address, proxies) or not forwarded_for:
        return address
    hops = [h for h in (part.strip() for part in forwarded_for.split(",")) if h]
    for hop in reversed(hops):
        hop_address = _address(hop)
        if hop_address is None:
            return None
        if not _within(hop_address, proxies):
            return hop_address
        address = hop_address
    return address


def bearer(value: str | None) -> str:
    """The token of an `Authorization: Bearer <token>` header ("" when there is none)."""
    if not value or value[:7].lower() != "bearer ":
        return ""
    return value[7:].strip()


class Guard:
    """One configured guard, ready to check requests."""

    def __init__(self, config: GuardConfig, secrets: Secrets, proxies: Sequence[Network]) -> None:
        self.config = config
        self.secrets = secrets
        self.networks = _networks(config.networks)
        self.proxies = tuple(proxies)

    def check(self, peer: str | None, headers: Mapping[str, str], path_token: str | None = None) -> Refusal | None:
        """None when the request may go on, else why not."""
        cfg = self.config
        if self.networks:
            address = client_address(peer, headers.get("X-Forwarded-For"), self.proxies)
            if address is None or not _within(address, self.networks):
                return Refusal(403, f"the client address {address or 'unknown'} is not in an allowed network",
                               "guard-network")
        if cfg.mtls_at_proxy is not None:
            via = _address(peer)
            if via is None or not _within(via, self.proxies):
                return Refusal(403, "a client certificate is required, and the request did not come through "
                               "a trusted proxy", "guard-mtls")
            if headers.get(cfg.mtls_at_proxy.header, "") != cfg.mtls_at_proxy.value:
                return Refusal(403, f"the trusted proxy did not verify a client certificate "
                               f"({cfg.mtls_at_proxy.header})", "guard-mtls")
        if cfg.token is not None:
            if cfg.token.where == "path":
                given = path_token or ""
            elif cfg.token.header.lower() == "authorization":
                given = bearer(headers.get("Authorization"))
            else:
                given = headers.get(cfg.token.header, "")
            if not given:
                where = "the URL path" if cfg.token.where == "path" else f"the {cfg.token.header} header"
                return Refusal(401, f"a token is needed in {where}", "guard-token")
            if not self._token_matches(given, cfg.token.secret):
                return Refusal(401, "the token is not valid", "guard-token")
        return None

    def _token_matches(self, given: str, secret_name: str) -> bool:
        try:
            expected = self.secrets.get(secret_name).reveal()
        except DockyardError:
            return False  # a secret that vanished refuses everyone: fail closed
        return bool(expected) and hmac.compare_digest(expected.encode("utf-8"), given.encode("utf-8", "replace"))


def require_token(config: ServiceConfig, secrets: Secrets, headers: Mapping[str, str], *,
                  operator: bool = False) -> Refusal | None:
    """The check of the service's own endpoints (/stats, /metrics, GET /orders/{no}, cancel): with
    no token configured at all they are open (a private network); once any token is configured,
    each needs `Authorization: Bearer <token>`: a dashboard token (an operator one for a state
    change when `operator`) or the ingest token (the order platform that sends the orders may
    read and cancel them)."""
    ingest = config.ingest.token if config.ingest is not None else None
    if not config.tokens and ingest is None:
        return None
    given = bearer(headers.get("Authorization"))
    if not given:
        return Refusal(401, "a token is needed (Authorization: Bearer <token>)", "guard-token")
    role = None
    for token, token_role in config.tokens.items():
        if hmac.compare_digest(token.encode("utf-8"), given.encode("utf-8", "replace")):
            role = token_role
    if role is None and ingest is not None:
        try:
            expected = secrets.get(ingest.secret).reveal()
        except DockyardError:
            expected = ""
        if expected and hmac.compare_digest(expected.encode("utf-8"), given.encode("utf-8", "replace")):
            role = "ingest"
    if role is None:
        return Refusal(401, "the token is not valid", "guard-token")
    if operator and role == "read":
        return Refusal(403, "this needs an operator token (or the ingest token), not a read-only one", "guard-role")
    return None


def unguarded(config: ServiceConfig) -> tuple[list[str], list[str]]:
    """(unsigned callback flows without a guard, [ingest] when ingest has no guard): what
    `dockyard serve` refuses to start with unless told to allow it."""
    flows = [f"{w.name}/{name}" for w in config.warehouses.values() for name, cb in w.callbacks.items()
             if cb.verify is None and cb.guard is None]
    return flows, ([] if config.ingest is not None else ["POST /orders, /orders/batch"])
