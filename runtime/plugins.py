"""Named, pluggable policies: crypto schemes, idempotency stores and secret providers.

Each kind is an entry-point group (`dockyard.crypto`, `dockyard.idempotency`, `dockyard.secrets`).
Dockyard registers its own built-ins through the same groups in its pyproject.toml, so a plugin
package is a peer of the built-ins: install it, name its scheme in a spec, nothing else changes.
"""

from __future__ import annotations

import functools
from importlib.metadata import entry_points
from typing import Any

from dockyard.runtime.errors import DockyardError

__all__ = ["GROUPS", "PluginError", "available", "load", "load_as"]

GROUPS = ("dockyard.crypto", "dockyard.idempotency", "dockyard.secrets")


class PluginError(DockyardError):
    """An unknown name, or a plugin that failed to load."""


@functools.cache
def _registry(group: str) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for ep in entry_points(group=group):
        found.setdefault(ep.name, ep)
    return found


def available(group: str) -> list[str]:
    return sorted(_registry(group))


_loaded: dict[tuple[str, str], Any] = {}  # entry points already loaded: loading one imports and looks up


def load(group: str, name: str) -> Any:
    """The object a plugin registered under `name` in `group`."""
    found = _loaded.get((group, name))
    if found is not None:
        return found
    ep = _registry(group).get(name)
    if ep is None:
        known = ", ".join(available(group)) or "none"
        raise PluginError(f"no {group.split('.')[-1]} policy named {name!r} (known: {known})")
    try:
        found = _loaded[(group, name)] = ep.load()
    except Exception as exc:  # a broken plugin must not take the process down with a traceback
        raise PluginError(f"{group} plugin {name!r} ({ep.value}) failed to load: {exc}") from exc
    return found


def load_as(group: str, name: str, kind: type, what: str) -> Any:
    """`load`, checking that the object is a `kind` (one group may hold several kinds, e.g. signers
    and field ciphers); `what` names the kind in the error."""
    found = load(group, name)
    if not isinstance(found, kind):
        raise PluginError(f"{name!r} is not a {what}")
    return found


def refresh() -> None:
    """Forget what was discovered (after installing a plugin in a running process)."""
    _registry.cache_clear()
    _loaded.clear()
