"""Loading compiled bundles: only the runtime is needed, every file is verified, tampering is refused."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from dockyard.compiler.api import compile_file
from dockyard.compiler.bundle import build_bundle
from dockyard.runtime.bundle import BUNDLE_FORMAT, MANIFEST, load_bundle
from dockyard.runtime.errors import BundleError

ROOT = Path(__file__).resolve().parents[2]
SPECS = {
    "reference.deliveryorder": "mappings/reference/deliveryorder.yaml",
    "examples.qimen.deliveryorder-xml": "examples/specs/qimen-deliveryorder-xml.yaml",
    "examples.sf.create-order-form": "examples/specs/sf-create-form.yaml",
}
CONTEXT = {
    "ownerCode": "OWNER-01", "warehouseCode": "WH-HZ-01", "partnerId": "DOCKYARD_TEST",
    "senderName": "栖木仓", "senderMobile": "13800000000", "senderProvince": "浙江省",
    "senderCity": "杭州市", "senderCounty": "余杭区", "senderAddress": "文一西路969号",
}
NOW = datetime(2023, 11, 11, tzinfo=timezone(timedelta(hours=8)))
ORDERS = sorted(p.stem for p in (ROOT / "examples" / "orders").glob("*.json"))


def load_order(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((ROOT / "examples" / "orders" / f"{name}.json").read_text("utf-8"),
                                      parse_float=Decimal)
    return data


def context_for(mapping: Any) -> dict[str, Any]:
    names = {name for name, _kind, _required in mapping.meta["context"]}
    return {k: v for k, v in CONTEXT.items() if k in names}


@pytest.fixture
def bundle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(ROOT)
    out = tmp_path / "bundle"
    build_bundle(list(SPECS.values()), out)
    return out


def manifest_of(bundle: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((bundle / MANIFEST).read_text("utf-8"))
    return data


def write_manifest(bundle: Path, manifest: dict[str, Any]) -> None:
    (bundle / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def flip_one_byte(path: Path, old: bytes, new: bytes) -> None:
    assert len(old) == len(new) == 1
    data = path.read_bytes()
    index = data.index(old)
    path.write_bytes(data[:index] + new + data[index + 1 :])


# --------------------------------------------------------------------------------------------------
# loading needs only the runtime

LOADER = r"""
import json, sys
from datetime import datetime
from decimal import Decimal

from dockyard.runtime.bundle import load_bundle

bundle_dir, orders_dir, context, now = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), sys.argv[4]
bundle = load_bundle(bundle_dir)
clock = datetime.fromisoformat(now)
out = {}
for name in bundle:
    mapping = bundle[name]
    wanted = {n for n, _k, _r in mapping.meta["context"]}
    ctx = {k: v for k, v in context.items() if k in wanted}
    for order_name in sorted(json.loads(sys.argv[5])):
        with open(f"{orders_dir}/{order_name}.json", encoding="utf-8") as f:
            order = json.load(f, parse_float=Decimal)
        out[f"{name}/{order_name}"] = mapping.render(order, ctx, clock, validate=True).decode("utf-8")
loaded = sorted(m for m in sys.modules
                if m.split(".")[0] in ("lark", "jinja2", "yaml")
                or m == "dockyard.compiler" or m.startswith(("dockyard.compiler.", "dockyard.dsl")))
print(json.dumps({"loaded": loaded, "out": out}, ensure_ascii=False))
"""


def test_bundle_loads_and_runs_without_the_compiler(bundle: Path, tmp_path: Path) -> None:
    args = [sys.executable, "-W", "error", "-c", LOADER, str(bundle), str(ROOT / "examples" / "orders"),
            json.dumps(CONTEXT), NOW.isoformat(), json.dumps(ORDERS)]
    result = subprocess.run(args, cwd=tmp_path, capture_output=True, check=False)
    assert result.returncode == 0, result.stderr.decode()
    report = json.loads(result.stdout)
    assert report["loaded"] == [], f"loading a bundle imported {report['loaded']}"
    for name, spec in SPECS.items():
        mapping = compile_file(ROOT / spec)
        for order_name in ORDERS:
            expected = mapping.render(load_order(order_name), context_for(mapping), NOW).decode("utf-8")
            assert report["out"][f"{name}/{order_name}"] == expected, f"{name} on {order_name}"


def test_loading_alone_imports_nothing_it_does_not_use(bundle: Path, tmp_path: Path) -> None:
    """The load path's budget (issue 13: 100 mappings in 50 ms beyond `python -c pass`) has no room
    for typing (~3.5 ms), dataclasses, inspect or jsonschema: none of them is needed to load."""
    probe = ("import sys; from dockyard.runtime.bundle import load_bundle; load_bundle(sys.argv[1]); "
             "print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in "
             "('typing', 'dataclasses', 'inspect', 'ast', 'jsonschema', 'lark', 'jinja2', 'yaml'))))")
    result = subprocess.run([sys.executable, "-c", probe, str(bundle)], cwd=tmp_path, capture_output=True,
                            check=False, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [], f"loading a bundle imported {result.stdout.split()}"


def test_loaded_mappings_equal_compiled_ones(bundle: Path) -> None:
    loaded = load_bundle(bundle)
    assert sorted(loaded) == sorted(SPECS)
    assert len(loaded) == len(SPECS)
    for name, spec in SPECS.items():
        from_bundle = loaded[name]
        compiled = compile_file(spec)
        assert from_bundle.name == compiled.name == name
        assert from_bundle.version == compiled.version
        assert from_bundle.target == compiled.target
        assert from_bundle.source == compiled.source
        assert from_bundle.source_schema == compiled.source_schema
        for order_name in ORDERS:
            order = load_order(order_name)
            ctx = context_for(compiled)
            assert from_bundle.transform(order, ctx, NOW) == compiled.transform(order, ctx, NOW)
            assert from_bundle.render(order, ctx, NOW) == compiled.render(order, ctx, NOW)


def test_unknown_mapping_name_lists_the_known_ones(bundle: Path) -> None:
    loaded = load_bundle(bundle)
    with pytest.raises(KeyError, match=r"reference\.deliveryorder"):
        loaded["no.such.mapping"]


def test_runtime_errors_from_a_bundle_name_the_spec(bundle: Path) -> None:
    loaded = load_bundle(bundle)
    order = load_order("tmall-basic")
    order["receiver"]["name"] = None
    from dockyard.runtime.errors import TransformError

    with pytest.raises(TransformError) as info:
        loaded["reference.deliveryorder"].transform(order)
    assert info.value.location is not None
    assert info.value.location.startswith("mappings/reference/deliveryorder.yaml:")
    assert info.value.field == "deliveryOrder.receiverInfo.name"


# --------------------------------------------------------------------------------------------------
# tampering


def _module_rel(bundle: Path, name: str = "reference.deliveryorder") -> str:
    rel: str = manifest_of(bundle)["mappings"][name]["module"]
    return rel


def _schema_rel(bundle: Path, name: str = "reference.deliveryorder") -> str:
    rel: str = manifest_of(bundle)["mappings"][name]["source_schema"]
    return rel


def test_one_changed_byte_in_a_module_is_refused(bundle: Path) -> None:
    rel = _module_rel(bundle)
    flip_one_byte(bundle / rel, b"K", b"X")  # 'JYCK' → 'JYCX': still valid Python, wrong content
    with pytest.raises(BundleError) as info:
        load_bundle(bundle)
    message = str(info.value)
    assert rel in message
    assert "does not match" in message


def test_one_changed_byte_in_a_schema_is_refused(bundle: Path) -> None:
    rel = _schema_rel(bundle)
    flip_one_byte(bundle / rel, b"1", b"2")
    with pytest.raises(BundleError) as info:
        load_bundle(bundle)
    assert rel in str(info.value)
    assert "does not match" in str(info.value)


def test_a_changed_format_is_refused(bundle: Path) -> None:
    text = (bundle / MANIFEST).read_text("utf-8")
    assert BUNDLE_FORMAT in text
    (bundle / MANIFEST).write_text(text.replace(BUNDLE_FORMAT, BUNDLE_FORMAT[:-1] + "2"), encoding="utf-8")
    with pytest.raises(BundleError) as info:
        load_bundle(bundle)
    assert "format" in str(info.value)
    assert BUNDLE_FORMAT[:-1] + "2" in str(info.value)


def test_one_changed_byte_in_the_manifest_format_is_refused(bundle: Path) -> None:
    flip_one_byte(bundle / MANIFEST, b"/", b"-")  # dockyard-bundle/1 → dockyard-bundle-1
    with pytest.raises(BundleError, match="format"):
        load_bundle(bundle)


@pytest.mark.parametrize("which", ["module", "schema"])
def test_a_removed_file_is_refused_naming_it(bundle: Path, which: str) -> None:
    rel = _module_rel(bundle) if which == "module" else _schema_rel(bundle)
    (bundle / rel).unlink()
    with pytest.raises(BundleError) as info:
        load_bundle(bundle)
    assert rel in str(info.value)
    assert "cannot read" in str(info.value)


def test_a_missing_manifest_is_refused(bundle: Path) -> None:
    (bundle / MANIFEST).unlink()
    with pytest.raises(BundleError, match=re.escape(f"no {MANIFEST}")):
        load_bundle(bundle)


def test_an_unreadable_manifest_is_refused(bundle: Path) -> None:
    (bundle / MANIFEST).write_text("{not json", encoding="utf-8")
    with pytest.raises(BundleError, match=re.escape(MANIFEST)):
        load_bundle(bundle)


def test_a_bundle_for_a_newer_python_is_refused(bundle: Path) -> None:
    manifest = manifest_of(bundle)
    manifest["python"] = "99.0"
    write_manifest(bundle, manifest)
    with pytest.raises(BundleError) as info:
        load_bundle(bundle)
    assert "99.0" in str(info.value)
    assert f"{sys.version_info.major}.{sys.version_info.minor}" in str(info.value)


def test_a_module_path_outside_the_bundle_is_refused(bundle: Path, tmp_path: Path) -> None:
    manifest = manifest_of(bundle)
    entry = manifest["mappings"]["reference.deliveryorder"]
    outside = tmp_path / "evil.py"
    outside.write_bytes((bundle / entry["module"]).read_bytes())
    entry["module"] = "../evil.py"
    write_manifest(bundle, manifest)
    with pytest.raises(BundleError, match="outside the bundle"):
        load_bundle(bundle)


def test_a_module_swapped_for_another_mapping_is_refused(bundle: Path) -> None:
    manifest = manifest_of(bundle)
    a = manifest["mappings"]["reference.deliveryorder"]
    b = manifest["mappings"]["examples.sf.create-order-form"]
    a["module"], a["module_sha256"] = b["module"], b["module_sha256"]
    write_manifest(bundle, manifest)
    with pytest.raises(BundleError, match="holds mapping"):
        load_bundle(bundle)


def test_a_tampered_bundle_loads_nothing(bundle: Path) -> None:
    # A bad file anywhere refuses the whole bundle: no partly loaded bundle is handed out.
    rel = _module_rel(bundle, "examples.sf.create-order-form")
    flip_one_byte(bundle / rel, b"E", b"F")
    with pytest.raises(BundleError, match="does not match"):
        load_bundle(bundle)


def test_the_same_specs_give_the_same_bytes_from_any_working_directory(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Spec locations are relative to the project root, not to where the compiler was started."""
    specs = [ROOT / p for p in SPECS.values()]
    outputs = []
    for i, cwd in enumerate((ROOT, ROOT / "mappings", tmp_path)):
        monkeypatch.chdir(cwd)
        out = tmp_path / f"bundle{i}"
        build_bundle([str(p) if i != 1 else os.path.relpath(p) for p in specs], out)
        outputs.append({p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()})
    assert outputs[0] == outputs[1] == outputs[2]
    manifest = json.loads(outputs[0][MANIFEST])
    assert manifest["mappings"]["reference.deliveryorder"]["spec"] == "mappings/reference/deliveryorder.yaml"
    module = outputs[0][manifest["mappings"]["reference.deliveryorder"]["module"]].decode()
    assert str(ROOT) not in module and "# mappings/reference/deliveryorder.yaml:" in module


def _as_format_1_0(source: str) -> str:
    """A module as the 1.0 compiler wrote it: one `transform` that records explain's lineage
    itself, no trace-free variant, no `transform_entry`, no `json_plain`."""
    tree_lines = source.splitlines(keepends=True)
    text = "".join(tree_lines)
    start = text.index("def transform(_src, _ctx, _clock, _trace=None):")
    end = text.index("\n\n\n", start) + 3
    text = text[:start] + text[end:]  # drop the trace-free transform
    if "def transform_entry(" in text:
        start = text.index("def transform_entry(")
        end = text.index("\n\n\n", start) + 3
        text = text[:start] + text[end:]
    if "def json_plain(" in text:
        start = text.index("def json_plain(")
        end = text.index("\n\n\n", start) + 3
        text = text[:start] + text[end:]
    return text.replace("def transform_traced(_src, _ctx, _clock, _trace):",
                        "def transform(_src, _ctx, _clock, _trace=None):")


def test_a_bundle_of_the_1_0_compiler_still_loads_runs_and_explains(bundle: Path) -> None:
    """The format is unchanged ("dockyard-bundle/1"): modules compiled before the trace-free
    transform and json_plain existed load, transform, render and explain as they did."""
    fresh = load_bundle(bundle)
    manifest = manifest_of(bundle)
    entry = manifest["mappings"]["reference.deliveryorder"]
    module = bundle / entry["module"]
    old = _as_format_1_0(module.read_text("utf-8"))
    assert "transform_traced" not in old and "json_plain" not in old and "transform_entry" not in old
    module.write_text(old, "utf-8")
    entry["module_sha256"] = hashlib.sha256(old.encode("utf-8")).hexdigest()
    write_manifest(bundle, manifest)
    loaded = load_bundle(bundle)["reference.deliveryorder"]
    current = fresh["reference.deliveryorder"]
    for name in ORDERS:
        order = load_order(name)
        assert loaded.transform(order, clock=NOW) == current.transform(order, clock=NOW)
        assert loaded.render(order, clock=NOW) == current.render(order, clock=NOW)
        assert loaded.explain(order, clock=NOW) == current.explain(order, clock=NOW)


def test_another_format_is_refused_with_a_recompile_message(bundle: Path) -> None:
    manifest = manifest_of(bundle)
    manifest["format"] = "dockyard-bundle/0"
    write_manifest(bundle, manifest)
    with pytest.raises(BundleError, match="recompile it with `dockyard compile`"):
        load_bundle(bundle)


@pytest.mark.parametrize("what", ["file", "folder"])
def test_a_symbolic_link_out_of_the_bundle_is_refused(bundle: Path, tmp_path: Path, what: str) -> None:
    """A module (or its folder) replaced by a link to a copy outside the bundle: same bytes, same
    hash, still refused, whether the link is the file or the folder it sits in."""
    entry = manifest_of(bundle)["mappings"]["reference.deliveryorder"]
    module = bundle / entry["module"]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    if what == "file":
        copy = elsewhere / module.name
        copy.write_bytes(module.read_bytes())
        module.unlink()
        module.symlink_to(copy)
    else:
        folder = module.parent
        for item in folder.iterdir():
            (elsewhere / item.name).write_bytes(item.read_bytes())
        for item in folder.iterdir():
            item.unlink()
        folder.rmdir()
        folder.symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(BundleError, match="outside the bundle"):
        load_bundle(bundle)
