"""Loading compiled bundles: verify the manifest and every file's hash, then load the modules.

A bundle of another format, from a newer Python, or with any file that does not match its
recorded sha256 is refused with a `BundleError` that says which file and why. Loading needs
nothing but the runtime: no Lark, no Jinja2, no compiler.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from dockyard.runtime.errors import BundleError
from dockyard.runtime.mapping import CompiledMapping, load_module

__all__ = ["BUNDLE_FORMAT", "MANIFEST", "Bundle", "load_bundle"]

BUNDLE_FORMAT = "dockyard-bundle/1"
MANIFEST = "manifest.json"


class Bundle(Mapping[str, CompiledMapping]):
    """The mappings of one bundle, by name."""

    def __init__(self, path: Path, manifest: dict[str, Any], mappings: dict[str, CompiledMapping]) -> None:
        self.path = path
        self.manifest = manifest
        self._mappings = mappings

    def __getitem__(self, name: str) -> CompiledMapping:
        try:
            return self._mappings[name]
        except KeyError:
            raise KeyError(f"no mapping {name!r} in bundle {self.path} (it has: {', '.join(sorted(self))})") from None

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._mappings))

    def __len__(self) -> int:
        return len(self._mappings)


def _read_verified(root: Path, rel: str, expected: str) -> bytes:
    path = (root / rel).resolve()
    if root.resolve() not in path.parents:
        raise BundleError(f"bundle {root}: {rel!r} points outside the bundle")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise BundleError(f"bundle {root}: cannot read {rel}: {exc.strerror or exc}") from None
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise BundleError(f"bundle {root}: {rel} does not match its manifest (sha256 {actual[:12]}…, "
                          f"expected {expected[:12]}…); recompile the bundle")
    return data


def load_bundle(path: str | os.PathLike[str]) -> Bundle:
    root = Path(path)
    try:
        manifest = json.loads((root / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BundleError(f"{root} is not a bundle: it has no {MANIFEST}") from None
    except (OSError, ValueError) as exc:
        raise BundleError(f"bundle {root}: cannot read {MANIFEST}: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else None
        raise BundleError(f"bundle {root} has format {found!r}; this runtime reads {BUNDLE_FORMAT!r}")
    py = str(manifest.get("python", ""))
    try:
        major, minor = (int(x) for x in py.split(".")[:2])
    except ValueError:
        raise BundleError(f"bundle {root}: unreadable Python version {py!r} in the manifest") from None
    if (major, minor) > sys.version_info[:2]:
        raise BundleError(f"bundle {root} was compiled for Python {py}; this is Python "
                          f"{sys.version_info.major}.{sys.version_info.minor}")
    mappings: dict[str, CompiledMapping] = {}
    entries = manifest.get("mappings")
    if not isinstance(entries, dict):
        raise BundleError(f"bundle {root}: the manifest lists no mappings")
    for name, entry in sorted(entries.items()):
        try:
            module_rel, module_sha = entry["module"], entry["module_sha256"]
            schema_rel, schema_sha = entry["source_schema"], entry["source_schema_sha256"]
        except (KeyError, TypeError):
            raise BundleError(f"bundle {root}: the manifest entry of {name!r} is incomplete") from None
        source = _read_verified(root, module_rel, module_sha).decode("utf-8")
        schema = json.loads(_read_verified(root, schema_rel, schema_sha))
        filename = str((root / module_rel).resolve())
        module = load_module(source, filename, f"dockyard_bundle_{module_rel.rsplit('/', 1)[-1][:-3]}")
        mapping = CompiledMapping(module, source, schema)
        if mapping.name != name:
            raise BundleError(f"bundle {root}: {module_rel} holds mapping {mapping.name!r}, not {name!r}")
        mappings[name] = mapping
    return Bundle(root, manifest, mappings)
