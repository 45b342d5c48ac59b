"""Bundles: a directory of generated modules plus a manifest, written deterministically.

The manifest records the bundle format, the compiler and Python versions, and the sha256 of every
spec, every file a spec read (tables, schemas) and every module. The spec and the files it read
are kept too, as `sources/<sha256>`: a running bundle can then be compared with its successor
(`dockyard reload` runs `dockyard diff` on them) even after the specs on disk have moved on. It
holds no timestamps and its keys are sorted, so compiling the same specs twice gives identical
bytes. Files are written to a temporary name and moved into place, so a reader never sees half a
bundle file.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dockyard.compiler.api import CompiledSource, compile_source
from dockyard.compiler.codegen import COMPILER_VERSION
from dockyard.dsl.diagnostics import Diagnostic, DiagnosticsError
from dockyard.dsl.spans import Span
from dockyard.runtime.bundle import BUNDLE_FORMAT, MANIFEST

__all__ = ["build_bundle", "bundle_root", "module_filename"]


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def module_filename(name: str) -> str:
    """A file name for a mapping's module: a readable slug plus a short hash of the exact name,
    so two names that slug alike never collide."""
    slug = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") or "mapping"
    return f"{slug}_{_sha(name.encode())[:8]}.py"


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def bundle_root(specs: Sequence[str | os.PathLike[str]]) -> Path:
    """The folder a bundle names its specs relative to: the project (the nearest folder with a
    pyproject.toml) above the specs' common folder, else that common folder. The working
    directory plays no part, so the same specs give the same bundle bytes from anywhere."""
    folders = [str(Path(p).absolute().parent) for p in specs]
    common = Path(os.path.commonpath(folders)) if folders else Path.cwd()
    for candidate in (common, *common.parents):
        if (candidate / "pyproject.toml").is_file():
            return candidate
    return common


def build_bundle(specs: Sequence[str | os.PathLike[str]], out_dir: str | os.PathLike[str], *,
                 root: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Compile every spec (collecting the errors of all of them) and write the bundle. Specs are
    named relative to `root` (default: `bundle_root(specs)`) in the modules and the manifest."""
    compiled: list[CompiledSource] = []
    diags: list[Diagnostic] = []
    sources: dict[str, str] = {}
    base = Path(root) if root is not None else bundle_root(specs)
    for spec_path in specs:
        try:
            compiled.append(compile_source(spec_path, root=base))
        except DiagnosticsError as exc:
            diags.extend(exc.diagnostics)
            sources.update(exc.sources)
    names: dict[str, str] = {}
    for c in compiled:
        if c.spec.name in names:
            diags.append(Diagnostic(Span(c.spec.path, 1, 1, 1, 1),
                                    f"mapping name {c.spec.name!r} is also used by {names[c.spec.name]}",
                                    "bundle-duplicate-name"))
            sources[c.spec.path] = c.spec.text
        names[c.spec.name] = c.spec.path
    if any(d.is_error for d in diags):
        raise DiagnosticsError(diags, sources)

    out = Path(out_dir)
    mappings: dict[str, Any] = {}
    for c in sorted(compiled, key=lambda c: c.spec.name):
        module_rel = f"mappings/{module_filename(c.spec.name)}"
        module_bytes = c.source.encode("utf-8")
        schema_bytes = (json.dumps(c.spec.source_schema, sort_keys=True, ensure_ascii=False, indent=1) + "\n").encode()
        schema_rel = f"schemas/{_sha(schema_bytes)[:16]}.json"
        _write(out / module_rel, module_bytes)
        _write(out / schema_rel, schema_bytes)
        inputs = {path: _sha(text.encode("utf-8")) for path, text in sorted(c.spec.files.items())}
        for path, text in c.spec.files.items():  # the sources, by hash: what `dockyard reload` diffs
            _write(out / "sources" / inputs[path], text.encode("utf-8"))
        mappings[c.spec.name] = {
            "version": c.spec.version,
            "spec": c.spec.path,
            "spec_sha256": _sha(c.spec.text.encode("utf-8")),
            "inputs_sha256": inputs,
            "module": module_rel,
            "module_sha256": _sha(module_bytes),
            "source_schema": schema_rel,
            "source_schema_sha256": _sha(schema_bytes),
            "target": c.spec.target.format,
        }
    manifest = {
        "format": BUNDLE_FORMAT,
        "compiler": COMPILER_VERSION,
        "python": f"{sys.version_info.major}.{sys.version_info.minor}",
        "mappings": mappings,
    }
    _write(out / MANIFEST, (json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode())
    return manifest
