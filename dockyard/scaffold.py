"""`dockyard init`: a project to start from, made from the installed warehouse library.

The project is laid out like the repository, so that the copied integration's tests find their
example orders at `../../examples/orders/` as they do in the library:

    README.md                   next steps
    dockyard.yaml               the service config: every library integration, routed by channel
    mappings/<integration>/     a copy of one integration, to edit (specs, tests, schemas, configs)
    mappings/<integration>/<create spec>.example.test.yaml   a mapping test of the example order
    examples/orders/            the example orders
    warehouses/                 the example configs of the other integrations, to edit
    secrets/                    one file per secret, values marked TEST-ONLY (replace them)
    build/warehouses.dybundle   the compiled bundle dockyard.yaml loads

`dockyard test mappings/`, `dockyard dry-run …` and `dockyard serve` work in it as they are. No
existing file is ever overwritten: the project is refused, naming what is in the way.
"""

from __future__ import annotations

import json
import os
import secrets as pysecrets
import shutil
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from dockyard.runtime.errors import DockyardError

__all__ = ["INTEGRATIONS", "Project", "ScaffoldError", "scaffold"]

# Integration folder → the name its warehouse gets in dockyard.yaml (as in `dockyard demo`).
INTEGRATIONS = {"qimen": "qimen-std", "sf": "sf", "jd": "jd", "cainiao": "cainiao"}
BUNDLE = "build/warehouses.dybundle"
EXAMPLE_ORDER = "tmall-basic"
EXAMPLE_NOW = "2023-11-11T00:00:00+08:00"


class ScaffoldError(DockyardError):
    """The project cannot be made here (files in the way, an unknown integration)."""


@dataclass
class Project:
    root: Path
    source: str
    summary: list[str] = field(default_factory=list)


def scaffold(root: Path, source: str) -> Project:
    """Write a project into `root` (created if missing), copying the library integration `source`."""
    from dockyard.demo import INGEST_GUARD, WAREHOUSES
    from dockyard.library import examples_root, library_root

    if source not in INTEGRATIONS:
        raise ScaffoldError(f"no integration {source!r} to copy (choose one of {', '.join(INTEGRATIONS)})")
    library = library_root()
    root = root.resolve()
    copy_from = library / source
    files: dict[Path, bytes] = {}  # everything to write, checked for collisions before anything is written
    schema = (Path(__file__).resolve().parent / "dsl" / "schemas" / "spec.schema.json")
    if not schema.is_file():  # a checkout: the stage folders sit beside the package
        schema = Path(__file__).resolve().parent.parent / "dsl" / "schemas" / "spec.schema.json"
    for path in sorted(copy_from.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            data = path.read_bytes()
            if path.suffix == ".yaml":  # editors find the spec schema of this installation
                data = data.replace(b"$schema=../../dsl/schemas/spec.schema.json",
                                    f"$schema={schema.as_uri()}".encode())
            files[root / "mappings" / source / path.relative_to(copy_from)] = data
    for path in sorted((examples_root() / "orders").iterdir()):
        if path.is_file():
            files[root / "examples" / "orders" / path.name] = path.read_bytes()

    warehouses: dict[str, Any] = {}
    secret_names: list[str] = []
    bundle_specs: list[Path] = []
    from dockyard.library import spec_files

    for integration, name in INTEGRATIONS.items():
        spec = WAREHOUSES[name]
        config_rel = Path(spec["config_file"])  # relative to the library, e.g. sf/accounts/example.yaml
        if integration == source:
            config_file = Path("mappings") / config_rel
            bundle_specs.extend(root / "mappings" / source / p.name for p in spec_files(copy_from))
        else:
            config_file = Path("warehouses") / f"{name}.yaml"
            files[root / config_file] = (library / config_rel).read_bytes()
            bundle_specs.extend(spec_files(library / integration))
        secret_names.append(spec["secret"])
        warehouses[name] = {"config_file": config_file.as_posix(), "secrets": [spec["secret"]],
                            "flows": spec["flows"], **({"callbacks": spec["callbacks"]} if spec["callbacks"] else {})}
    for name in secret_names:
        files[root / "secrets" / name] = f"TEST-ONLY-init-{pysecrets.token_hex(12)}".encode()
    config = {
        "dockyard": 1,
        "store": "sqlite:///dockyard-state.db",
        "listen": {"host": "127.0.0.1", "port": 8080},
        "bundles": [BUNDLE],
        "secrets": {"dir": "secrets"},
        "ingest": INGEST_GUARD,
        "warehouses": warehouses,
        "routing": [{"warehouse": "jd", "channel": ["jd"]}, {"warehouse": "sf", "channel": ["douyin"]},
                    {"warehouse": "cainiao", "channel": ["miniapp"]}, {"warehouse": "qimen-std", "default": True}],
    }
    files[root / "dockyard.yaml"] = (_CONFIG_HEADER.format(source=source, bundle=BUNDLE)
                                     + yaml.safe_dump(config, allow_unicode=True, sort_keys=False)).encode()
    create_name = WAREHOUSES[INTEGRATIONS[source]]["flows"]["create"]["request"]
    create_spec = next(p for p in spec_files(copy_from) if _mapping_name(p) == create_name)
    test_path = root / "mappings" / source / f"{create_spec.stem}.example.test.yaml"
    files[test_path] = _example_test(create_spec, root / "mappings" / source).encode()
    compile_cmd = (f"dockyard compile -o {BUNDLE} mappings/{source} "
                   + " ".join(i for i in INTEGRATIONS if i != source))
    files[root / "README.md"] = _readme(root, source, create_spec, compile_cmd).encode()
    files[root / ".gitignore"] = b"build/\nsecrets/\ndockyard-state.db*\n"

    in_the_way = sorted(p for p in [*files, root / "build", root / "secrets"] if p.exists())
    if in_the_way:
        shown = ", ".join(str(p.relative_to(root)) for p in in_the_way[:5])
        more = f" and {len(in_the_way) - 5} more" if len(in_the_way) > 5 else ""
        raise ScaffoldError(f"{root} already holds {shown}{more}; init never overwrites a file: "
                            "choose an empty or new directory")
    (root / "secrets").mkdir(mode=0o700, parents=True)
    for path, data in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.parent == root / "secrets":  # readable by the owner only, from the first byte
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(data)
        else:
            path.write_bytes(data)
    try:
        _compile(bundle_specs, root / BUNDLE)
    except BaseException:
        shutil.rmtree(root / "build", ignore_errors=True)
        raise
    others = ", ".join(i for i in INTEGRATIONS if i != source)
    return Project(root, source, [
        f"dockyard.yaml        the service config: {', '.join(warehouses)}, routed by channel",
        f"mappings/{source}/  a copy of the {source} integration to edit, with its tests",
        f"{test_path.relative_to(root)}  a mapping test of the example order",
        "examples/orders/     example orders",
        f"warehouses/          the example configs of {others}",
        "secrets/             TEST-ONLY secrets: replace them before talking to a real warehouse",
        f"{BUNDLE}  compiled; rebuild with: {compile_cmd}",
    ])


def _mapping_name(path: Path) -> str | None:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    return str(data.get("name")) if isinstance(data, dict) else None


def _compile(specs: list[Path], out: Path) -> None:
    from dockyard.compiler.bundle import build_bundle

    build_bundle([str(p) for p in specs], out)


def _example_test(spec: Path, folder: Path) -> str:
    """A mapping test of the example order: the document the spec makes of it today, pinned, so
    that an edit of the spec shows what it changes (as a diff) until the test is brought along."""
    from dockyard.compiler.api import compile_file
    from dockyard.library import example_orders
    from dockyard.runtime.serialize import to_json_text

    mapping = compile_file(spec)
    order = json.loads(example_orders()[EXAMPLE_ORDER].read_text(encoding="utf-8"))
    document = mapping.transform(order, mapping.meta.get("examples", {}), datetime.fromisoformat(EXAMPLE_NOW))
    expected = json.loads(to_json_text(document))
    body = {"spec": spec.name, "now": EXAMPLE_NOW, "cases": [{
        "name": f"the example order {EXAMPLE_ORDER} (context: the spec's example values)",
        "input_file": f"../../examples/orders/{EXAMPLE_ORDER}.json",
        "expect": {"document": expected},
    }]}
    return (f"# A mapping test to start from, written by `dockyard init`: {spec.name} on the example order,\n"
            "# with the document it gave then. Edit the spec and `dockyard test mappings/` shows what changed;\n"
            "# then update this expectation, or add cases (input, context, now, secrets; expect document,\n"
            "# document_subset, absent, rendered, request or error: see docs/integrations-contract.md).\n"
            + yaml.safe_dump(body, allow_unicode=True, sort_keys=False, width=100))


_CONFIG_HEADER = """\
# The service config of this project (`dockyard serve` reads it). Reference of every key:
# docs/service-config.md in the Dockyard repository, or `dockyard serve --help`.
#
# Every library integration is a warehouse here; mappings/{source}/ is your copy of one of them.
# The specs run from the compiled bundle {bundle}: rebuild it after editing a spec (README.md).
# Secrets are files in secrets/ (or environment variables DOCKYARD_SECRET_<NAME>); the ones
# written by `dockyard init` are TEST-ONLY values.
# `ingest:` and each unsigned callback's `guard:` let only this machine in: name your order
# platform's and your warehouses' networks, or give them tokens, before going live
# (docs/security.md); `dockyard serve` refuses to start with either open to everyone.
"""


def _readme(root: Path, source: str, create_spec: Path, compile_cmd: str) -> str:
    from dockyard import __version__
    from dockyard.demo import WAREHOUSES

    name = INTEGRATIONS[source]
    config = f"mappings/{WAREHOUSES[name]['config_file']}"
    spec = f"mappings/{source}/{create_spec.name}"
    others = ", ".join(i for i in INTEGRATIONS if i != source)
    return f"""\
# {root.name}: a Dockyard project

Made by `dockyard init` (Dockyard {__version__}) from the installed warehouse library.

| path | what it is |
| --- | --- |
| `dockyard.yaml` | the service config: the warehouses `{"`, `".join(INTEGRATIONS.values())}`, routed by sales channel |
| `mappings/{source}/` | your copy of the library's `{source}` integration: specs, tests, schemas, configs |
| `mappings/{source}/{create_spec.stem}.example.test.yaml` | a mapping test of the example order |
| `examples/orders/` | example orders (`dockyard orders generate` makes more) |
| `warehouses/` | the example configs of the library integrations used as they are ({others}) |
| `secrets/` | one file per secret, with TEST-ONLY values |
| `build/warehouses.dybundle` | the compiled specs the service loads |

## Next steps

1. **Run the mapping tests** (with rule coverage):

       dockyard test mappings/ --min-coverage 90

2. **See the exact request** a warehouse would get for an order, signature included:

       dockyard dry-run {spec} examples/orders/tmall-basic.json --warehouse {config} --secrets-dir secrets

   `--explain` adds where every value came from. A library spec needs no path:
   `dockyard dry-run sf/create-order examples/orders/tmall-basic.json`; `dockyard library` lists them.

3. **Make it yours.** Edit the specs in `mappings/{source}/` and the per-warehouse values in
   `{config}` (host, keys, codes; signing options and fields to encrypt go under `wire:`), then
   rebuild the bundle:

       {compile_cmd}

   `dockyard check --warehouse {config} mappings/{source}` checks a warehouse's config
   against the specs.

4. **Serve**: `dockyard serve` (reads `dockyard.yaml`), then `POST http://127.0.0.1:8080/orders`
   with an order. Until the configs name real hosts, deliveries fail and are retried, then
   dead-lettered with the reason (`dockyard dlq list`); `dockyard simulate` runs simulated
   warehouses to point `endpoint:` at instead.

5. **Before a real warehouse**: replace every file in `secrets/` (or set `DOCKYARD_SECRET_<NAME>`),
   and keep `secrets/` out of version control (`.gitignore` does).
"""
