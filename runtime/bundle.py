"""Loading compiled bundles: verify the manifest and every file's hash, then load the modules.

A bundle of another format, from a newer Python, or with any file that does not match its
recorded sha256 is refused with a `BundleError` that says which file and why. Loading needs
nothing but the runtime: no Lark, no Jinja2, no compiler.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import marshal
import os
import sys
import types
from collections.abc import Iterator, Mapping
from pathlib import Path

from dockyard.runtime.errors import BundleError
from dockyard.runtime.mapping import CompiledMapping, load_module

TYPE_CHECKING = False  # `typing` costs a fresh process ~3.5 ms: see runtime/records.py
if TYPE_CHECKING:
    from typing import Any

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


def _real(inside: str, rel: str, folders: dict[str, str] | None) -> str:
    """realpath(inside/rel), resolving each folder once per load: a bundle's modules share one."""
    folder, name = os.path.split(rel)
    if folders is None or not name:
        return os.path.realpath(os.path.join(inside, rel))  # noqa: PTH118 - str paths: many files
    real_folder = folders.get(folder)
    if real_folder is None:
        real_folder = folders[folder] = os.path.realpath(os.path.join(inside, folder))  # noqa: PTH118
    path = os.path.join(real_folder, name)  # noqa: PTH118
    return os.path.realpath(path) if name in (".", "..") or os.path.islink(path) else path  # noqa: PTH114


def _read_verified(root: Path, rel: str, expected: str, resolved_root: str | None = None,
                   folders: dict[str, str] | None = None) -> bytes:
    inside = resolved_root if resolved_root is not None else os.path.realpath(root)
    path = _real(inside, rel, folders)
    if not path.startswith(inside.rstrip(os.sep) + os.sep):
        raise BundleError(f"bundle {root}: {rel!r} points outside the bundle")
    try:
        with open(path, "rb") as file:
            data = file.read()
    except OSError as exc:
        raise BundleError(f"bundle {root}: cannot read {rel}: {exc.strerror or exc}") from None
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise BundleError(f"bundle {root}: {rel} does not match its manifest (sha256 {actual[:12]}…, "
                          f"expected {expected[:12]}…); recompile the bundle")
    return data


# Compiled code of a bundle's modules, kept beside them: compiling the generated source is most of
# what loading costs (about 2 ms per mapping), so it is done once per module and Python version.
# A cache file is named by the sha256 of the source it was compiled from (checked against the
# manifest before the cache is even looked at) and records that hash and the hash of the code it
# holds; anything that does not match is ignored and rewritten.
CODE_CACHE = "__pycache__"
_CACHE_MAGIC = b"dockyard-code/1 " + importlib.util.MAGIC_NUMBER


def _cache_path(root: Path, module_sha: str) -> Path:
    return root / CODE_CACHE / f"{module_sha[:40]}.{sys.implementation.cache_tag}.code"


def _cached_code(root: Path, module_sha: str) -> types.CodeType | None:
    try:
        data = _cache_path(root, module_sha).read_bytes()
    except OSError:
        return None
    head = len(_CACHE_MAGIC)
    if data[:head] != _CACHE_MAGIC or data[head : head + 64].decode("ascii", "replace") != module_sha:
        return None
    body = data[head + 128 :]
    if hashlib.sha256(body).hexdigest() != data[head + 64 : head + 128].decode("ascii", "replace"):
        return None
    try:
        code = marshal.loads(body)
    except (EOFError, ValueError, TypeError):
        return None
    return code if isinstance(code, types.CodeType) else None


def _store_code(root: Path, module_sha: str, code: types.CodeType) -> None:
    """Best effort: a read-only bundle simply compiles every time."""
    body = marshal.dumps(code)
    data = _CACHE_MAGIC + module_sha.encode("ascii") + hashlib.sha256(body).hexdigest().encode("ascii") + body
    path = _cache_path(root, module_sha)
    try:
        path.parent.mkdir(exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
    except OSError:
        return


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
        raise BundleError(f"bundle {root} has format {found!r}; this runtime reads {BUNDLE_FORMAT!r}: "
                          "recompile it with `dockyard compile`")
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
    resolved = os.path.realpath(root)
    folders: dict[str, str] = {}  # a module folder → its real path, resolved once
    schemas: dict[str, Any] = {}  # mappings of one source schema share one parsed copy
    for name, entry in sorted(entries.items()):
        try:
            module_rel, module_sha = entry["module"], entry["module_sha256"]
            schema_rel, schema_sha = entry["source_schema"], entry["source_schema_sha256"]
        except (KeyError, TypeError):
            raise BundleError(f"bundle {root}: the manifest entry of {name!r} is incomplete") from None
        source = _read_verified(root, module_rel, module_sha, resolved, folders)  # decoded if ever read
        if schema_sha not in schemas:
            schemas[schema_sha] = json.loads(_read_verified(root, schema_rel, schema_sha, resolved))
        schema = schemas[schema_sha]
        filename = os.path.join(resolved, module_rel)  # noqa: PTH118 - as above
        code = _cached_code(root, module_sha)
        if code is None or code.co_filename != filename:
            code = compile(source, filename, "exec", dont_inherit=True)
            _store_code(root, module_sha, code)
        module = load_module(source, filename, f"dockyard_bundle_{module_rel.rsplit('/', 1)[-1][:-3]}", code=code,
                             on_disk=True)
        mapping = CompiledMapping(module, source, schema)
        if mapping.name != name:
            raise BundleError(f"bundle {root}: {module_rel} holds mapping {mapping.name!r}, not {name!r}")
        mappings[name] = mapping
    return Bundle(root, manifest, mappings)
