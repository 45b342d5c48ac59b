"""Loading new bundles into a running service (SIGHUP, or `dockyard reload`), without a restart.

What a reload takes from the config file: its `bundles`, its dashboard `tokens` (so a token
can be rotated without a restart), its warehouses' callback secrets (`verify.secret` and
`verify.previous`, so a callback secret can be rotated with an overlap window) and the guards:
`ingest`, `trusted_proxies` and each callback's `guard` (so a warehouse's new callback address
can be let in on a busy night). A reload never leaves an endpoint unguarded that was guarded:
that needs a restart, where `serve` asks for its explicit allowance. Anything else
that differs from the running config needs a restart, and the reload is refused with the list of
those keys, so that a half-applied config is never running. The new mappings are loaded and
checked against the config (every flow's mapping is there, with the context and secrets it
needs) before anything changes; then the switch is one
assignment on the event loop: an attempt under way finishes with the mapping it started with,
the next one takes the new version, and no order waits or is dropped. The versions that were
running stay in `ServiceContext.archive`, so that automatic retries of a job already transformed
keep the version that transformed it (delivery.py) and the order page can explain them. Whether
a new version may break what a warehouse accepts is `dockyard diff`'s question; the compiler is
not loaded here (the runtime never imports it): `dockyard reload` asks it before it signals the
service (reload_cli.py). Every reload, done or refused, is a `reloaded` journal row with the
node and what changed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Mapping
from typing import Any

from dockyard.runtime.errors import DockyardError
from dockyard.service import logs, store
from dockyard.service.config import ServiceConfig, WarehouseConfig, check_against, load_config
from dockyard.service.context import ServiceContext, load_bundles
from dockyard.service.guards import unguarded

__all__ = ["RELOADABLE", "ReloadError", "prepare_sync", "reload_service"]

RELOADABLE = ("bundles", "tokens", "ingest", "trusted_proxies")
# set from the command line, not the file: a difference here is not a change of the file
_NOT_FROM_FILE = ("path", "store", "host", "port")


class ReloadError(DockyardError):
    """The reload was refused; the running versions are unchanged."""


def _plan(ctx: ServiceContext, fresh: ServiceConfig) -> tuple[ServiceConfig, dict[str, Any], dict[str, Any]]:
    """The config to run, the new mappings and versions; ReloadError when the file changed more
    than a reload may change, or the new bundles do not fit the config."""
    running = ctx.config
    restart = [f.name for f in dataclasses.fields(ServiceConfig)
               if f.name not in RELOADABLE + _NOT_FROM_FILE + ("warehouses",)
               and getattr(fresh, f.name) != getattr(running, f.name)]
    if _without_rotation(fresh.warehouses) != _without_rotation(running.warehouses):
        restart.append("warehouses")
    if restart:
        raise ReloadError(f"the config changed in {', '.join(restart)}: that needs a restart (a reload takes only "
                          f"{', '.join(RELOADABLE)}, callback secrets and callback guards); nothing was changed")
    (new_flows, new_ingest), (old_flows, old_ingest) = unguarded(fresh), unguarded(running)
    opened = [f for f in new_flows + new_ingest if f not in old_flows + old_ingest]
    if opened:
        raise ReloadError(f"the new config leaves {', '.join(opened)} without a guard: that needs a restart "
                          "(serve's explicit allowance); nothing was changed")
    # a warehouse's callback secrets (verify.secret, verify.previous) are the only part of
    # `warehouses` a reload takes: the rest was compared equal above
    config = dataclasses.replace(running, bundles=fresh.bundles, tokens=fresh.tokens, warehouses=fresh.warehouses,
                                 ingest=fresh.ingest, trusted_proxies=fresh.trusted_proxies)
    mappings, versions, problems = load_bundles(config.bundles)
    if not problems:
        problems = check_against(config, mappings, ctx.secrets)
    if problems:
        listed = "\n".join(f"  - {p}" for p in problems)
        raise ReloadError(f"the new bundles cannot run; nothing was changed:\n{listed}")
    return config, mappings, versions


async def reload_service(service: Any, by: str = "SIGHUP") -> dict[str, Any]:
    """Load the config file's bundles (and tokens) into `service` now. Returns what changed;
    raises ReloadError (after journaling the refusal) when nothing may change. Reading and
    loading happen in a thread; the switch itself on the event loop, between two steps of every
    task."""
    ctx: ServiceContext = service.ctx
    try:
        fresh = await asyncio.to_thread(load_config, ctx.config.path)
        config, mappings, versions = await asyncio.to_thread(_plan, ctx, fresh)
    except DockyardError as exc:
        await _journal(service, "refused", {"by": by, "owner": service.db.owner, "reason": str(exc)[:2000]})
        logs.event(logging.WARNING, "reload refused", reason=str(exc))
        raise ReloadError(str(exc)) from None
    old = ctx.versions
    changed = {name: {"from": _shown(old.get(name)), "to": _shown(versions.get(name))}
               for name in sorted(set(old) | set(versions)) if _shown(old.get(name)) != _shown(versions.get(name))}
    detail = {"by": by, "owner": service.db.owner, "changed": changed,
              "tokens_changed": dict(config.tokens) != dict(ctx.config.tokens)}
    guards_changed = _guards(config) != _guards(ctx.config)
    if guards_changed:
        detail["guards_changed"] = True  # which, not how: a guard's token is a secret's name, still
    before, after = _secrets(ctx.config), _secrets(config)
    rotated = {k: after[k] for k in after if after[k] != before.get(k)}
    if rotated:
        detail["callback_secrets"] = rotated  # secret names and overlap ends: never a value
    ctx.remember()  # the running versions stay explainable (and retries keep them)
    ctx.mappings, ctx.versions, ctx.config = mappings, versions, config
    ctx.remember()
    _forget_secrets(ctx)
    service.config = config
    if guards_changed:
        service.set_guards(config)
    await _journal(service, "ok", detail)
    logs.event(logging.WARNING, "reloaded", mappings=len(changed), by=by)
    return detail


def prepare_sync(ctx: ServiceContext) -> None:
    """The same switch on a context alone, with no service around it (the parent of `workers: N`)."""
    config, mappings, versions = _plan(ctx, load_config(ctx.config.path))
    ctx.remember()
    ctx.mappings, ctx.versions, ctx.config = mappings, versions, config
    ctx.remember()
    _forget_secrets(ctx)


def _forget_secrets(ctx: ServiceContext) -> None:
    """A rotated secret (a new file in the secrets folder) takes effect with the reload, not only
    when the cache's minute is up."""
    clear = getattr(ctx.secrets, "clear", None)
    if callable(clear):
        clear()


def _without_rotation(warehouses: Mapping[str, WarehouseConfig]) -> dict[str, WarehouseConfig]:
    """The warehouses with their callbacks' verification secrets and guards blanked: what must not
    change in a reload (a secret rotation or a guard may change the rest)."""
    out = {}
    for name, wh in warehouses.items():
        callbacks = {}
        for cb, c in wh.callbacks.items():
            verify = dataclasses.replace(c.verify, secret="", previous=None) if c.verify is not None else None
            callbacks[cb] = dataclasses.replace(c, guard=None, verify=verify)
        out[name] = dataclasses.replace(wh, callbacks=callbacks)
    return out


def _guards(config: ServiceConfig) -> tuple[Any, ...]:
    return (config.ingest, config.trusted_proxies,
            {(w.name, cb): c.guard for w in config.warehouses.values() for cb, c in w.callbacks.items()})


def _secrets(config: ServiceConfig) -> dict[str, Any]:
    """Which callback secrets a config names (names and overlap ends, never values), for the journal."""
    return {f"{w.name}/{cb}": {"secret": c.verify.secret,
                               "previous": c.verify.previous.secret if c.verify.previous else None,
                               "until": c.verify.previous.until.isoformat() if c.verify.previous else None}
            for w in config.warehouses.values() for cb, c in w.callbacks.items() if c.verify is not None}


def _shown(version: Any) -> str | None:
    return None if version is None else f"{version.version} ({version.module})"


async def _journal(service: Any, outcome: str, detail: dict[str, Any]) -> None:
    row = store.JournalRow(None, None, None, None, "reloaded", outcome, detail=detail)
    await service.db.write(lambda c: store.journal(c, [row]))
