"""The warehouse library as installed: where it is, what it holds, and finding a spec by name.

Dockyard ships its warehouse library (`mappings/`: one folder per integration, with specs, their
tests, schemas, test data and example warehouse configs) and its examples (`examples/`: orders, an
example service config) inside the package, at `dockyard/mappings` and `dockyard/examples`
(pyproject.toml maps the repository's top-level folders there). In a source checkout they are the
folders beside `dockyard/`. Either way the layout is the repository's, so relative paths between
them (a library test's `../../examples/orders/…`) hold in both.

This module owns locating both (`library_root`, `examples_root`), reading what the library holds
without compiling anything (`integrations`: every spec with its name, version, kind of flow,
signing scheme and what a warehouse may configure), and resolving what a person types on the
command line (`resolve_spec`: a file, or `qimen/deliveryorder.create`, or a mapping name;
`resolve_order`: a file, or the name of an example order).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from dockyard.runtime.errors import DockyardError

__all__ = ["Integration", "LibraryError", "LibrarySpec", "example_orders", "examples_root", "integrations",
           "library_root", "resolve_order", "resolve_path", "resolve_spec", "spec_files"]

_PACKAGE = Path(__file__).resolve().parent


class LibraryError(DockyardError):
    """The library is not where it should be, or a name does not name anything in it."""


def _is(kind: str, text: str) -> bool:
    """Whether `text` names an existing file ("file") or anything ("any"). A name the OS cannot
    even look up (too long, a NUL byte) names nothing: typed text never raises here."""
    if not text:
        return False
    try:
        path = Path(text)
        return path.is_file() if kind == "file" else path.exists()
    except (OSError, ValueError):
        return False


def _located(name: str, marker: str) -> Path:
    # Installed: inside the package. Checkout: beside it.
    for candidate in (_PACKAGE / name, _PACKAGE.parent / name):
        if (candidate / marker).exists():
            return candidate
    raise LibraryError(f"the Dockyard installation has no {name}/ folder (looked in {_PACKAGE} and its parent); "
                       "reinstall Dockyard")


def library_root() -> Path:
    """The warehouse library's folder (one sub-folder per integration)."""
    return _located("mappings", "README.md")


def examples_root() -> Path:
    """The examples' folder (orders/, specs/, service/)."""
    return _located("examples", "orders")


def example_orders() -> dict[str, Path]:
    """The example orders shipped with Dockyard, by name (tmall-basic → …/tmall-basic.json)."""
    return {p.stem: p for p in sorted((examples_root() / "orders").glob("*.json"))}


def spec_files(folder: Path) -> list[Path]:
    """The specs of one integration folder: its *.yaml files, not the tests (and not the configs
    in its sub-folders)."""
    return sorted(p for p in folder.glob("*.yaml") if not p.name.endswith(".test.yaml"))


# -- what the library holds ---------------------------------------------------------------------


@dataclass(frozen=True)
class LibrarySpec:
    """One spec as the library lists it (read from its YAML, not compiled)."""

    ref: str  # integration/stem: what to type on the command line
    path: Path
    name: str  # the mapping name (in bundles and service configs)
    version: str
    kind: str  # request | response | callback | ack | document
    description: str = ""
    target: str = ""  # the target format (json, xml, form)
    method: str | None = None  # request specs: the HTTP method and URL template
    url: str | None = None
    sign: str | None = None  # the signing scheme
    configurable: tuple[str, ...] = ()  # sign options a warehouse's config may set
    encryptable: tuple[str, ...] = ()  # output fields a warehouse's config may encrypt
    encrypted: tuple[str, ...] = ()  # output fields the spec always encrypts
    duplicate_rule: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {"ref": self.ref, "path": str(self.path), "name": self.name, "version": self.version,
                "kind": self.kind, "description": self.description, "target": self.target,
                "method": self.method, "url": self.url, "sign": self.sign, "configurable": list(self.configurable),
                "encryptable": list(self.encryptable), "encrypted": list(self.encrypted),
                "duplicate_rule": self.duplicate_rule}


@dataclass(frozen=True)
class Integration:
    """One folder of the library: its specs and its example warehouse configs."""

    name: str
    path: Path
    specs: tuple[LibrarySpec, ...]
    configs: tuple[Path, ...] = field(default=())

    @property
    def signing(self) -> list[str]:
        return sorted({s.sign for s in self.specs if s.sign})

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "path": str(self.path), "signing": self.signing,
                "configs": [str(c) for c in self.configs], "specs": [s.as_json() for s in self.specs]}


def _kind(data: dict[str, Any]) -> str:
    target = data.get("target") or {}
    source = data.get("source") or {}
    if data.get("request"):
        return "request"
    if target.get("schema") == "outcome":
        return "response"
    if target.get("schema") == "status-event":
        return "callback"
    return "document" if source.get("schema") == "order" else "ack"


def _read_spec(ref: str, path: Path) -> LibrarySpec | None:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    if not isinstance(data, dict) or "dockyard" not in data or "name" not in data:
        return None
    request = data.get("request") or {}
    sign = request.get("sign") or {}
    idem = request.get("idempotency") or {}
    return LibrarySpec(
        ref=ref, path=path, name=str(data["name"]), version=str(data.get("version", "")), kind=_kind(data),
        description=str(data.get("description", "")),
        # What goes on the wire: a request with a form sends the document inside a form field.
        target="form" if request.get("form") else str((data.get("target") or {}).get("format", "json")),
        method=str(request.get("method", "POST")) if request else None, url=request.get("url"),
        sign=sign.get("scheme"), configurable=tuple(str(o) for o in sign.get("configurable") or ()),
        encryptable=tuple(str(e.get("path")) for e in request.get("encryptable") or () if isinstance(e, dict)),
        encrypted=tuple(str(e.get("path")) for e in request.get("encrypt") or () if isinstance(e, dict)),
        duplicate_rule=idem.get("rule") if idem else None)


@cache
def _integrations(root: Path) -> tuple[Integration, ...]:
    found: list[Integration] = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))):
        specs = [s for p in spec_files(folder) if (s := _read_spec(f"{folder.name}/{p.stem}", p)) is not None]
        if not specs:
            continue
        configs = tuple(sorted(p for sub in ("warehouses", "accounts") for p in (folder / sub).glob("*.yaml")))
        found.append(Integration(folder.name, folder, tuple(specs), configs))
    return tuple(found)


def integrations() -> tuple[Integration, ...]:
    """Every integration of the installed library, by folder name."""
    return _integrations(library_root())


# -- names typed on the command line --------------------------------------------------------------


def resolve_spec(text: str) -> Path:
    """A spec given on the command line: an existing file as it is; otherwise a library spec named
    `integration/spec` (`qimen/deliveryorder.create`, `.yaml` optional) or by its mapping name
    (`qimen.deliveryorder.create`). LibraryError when it is neither, with the closest names."""
    if _is("file", text):
        return Path(text)
    ref = text.removesuffix(".yaml")
    specs = [s for i in integrations() for s in i.specs]
    for spec in specs:
        if ref in (spec.ref, spec.name):
            return spec.path
    close = difflib.get_close_matches(ref, [s.ref for s in specs] + [s.name for s in specs], n=3, cutoff=0.6)
    hint = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
    raise LibraryError(f"{_shown(text)} is neither a file nor a spec of the warehouse library{hint}; "
                       "`dockyard library` lists the specs")


def resolve_path(text: str) -> Path:
    """A file or folder given on the command line: an existing path as it is; otherwise an
    integration of the library by name (`sf`: its folder) or a library spec (see resolve_spec)."""
    if _is("any", text):
        return Path(text)
    names = {i.name: i.path for i in integrations()}
    if text.rstrip("/") in names:
        return names[text.rstrip("/")]
    return resolve_spec(text)


def resolve_order(text: str) -> Path:
    """An order given on the command line: an existing file, or the name of an example order
    shipped with Dockyard (`tmall-basic`). LibraryError when it is neither."""
    if _is("file", text):
        return Path(text)
    orders = example_orders()
    name = Path(text).stem if text.endswith(".json") else text
    if name in orders and "/" not in text:
        return orders[name]
    close = difflib.get_close_matches(name, list(orders), n=3, cutoff=0.6)
    hint = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
    raise LibraryError(f"{_shown(text)} is neither a file nor an example order{hint}; "
                       f"the examples: {', '.join(orders)}")


def _shown(text: str) -> str:
    """Typed text quoted for a message, kept short."""
    return repr(text if len(text) <= 80 else text[:80] + "…")
