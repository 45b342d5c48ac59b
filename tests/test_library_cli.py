"""The commands of an installed Dockyard, run in process from a directory that is not the
repository: `dockyard library`, specs and orders named without a path, `dockyard orders generate`,
`dockyard init` (and that test, dry-run and check work in the project it makes), dry-run's
`--warehouse` (with `--config` a deprecated spelling) and `check --warehouse`. The same, from a
wheel in a fresh venv, is tests/test_installed.py."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner, Result
from hypothesis import given, settings
from hypothesis import strategies as st

from dockyard.cli import main
from dockyard.library import (
    LibraryError,
    examples_root,
    integrations,
    library_root,
    resolve_order,
    resolve_path,
    resolve_spec,
)
from dockyard.sample_orders import generate

ROOT = Path(__file__).resolve().parents[1]
NOW = "2023-11-11T00:30:00+08:00"


@pytest.fixture(autouse=True)
def elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test runs from an empty directory, as a user with an installed Dockyard would."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_the_library_lists_every_integration_with_versions_flows_and_signing() -> None:
    result = run("library", "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    # From a clone the library is the repository's mappings/; installed (CI installs the wheel), the
    # package's copy of it: the same files either way.
    assert Path(data["path"]) == library_root()
    assert (library_root() / "qimen" / "deliveryorder.create.yaml").read_bytes() == (
        ROOT / "mappings" / "qimen" / "deliveryorder.create.yaml").read_bytes()
    by_name = {i["name"]: i for i in data["integrations"]}
    assert set(by_name) == {"qimen", "sf", "jd", "cainiao", "reference"}
    # Every spec of the library folders is listed, none twice.
    on_disk = {f"{p.parent.name}/{p.stem}" for p in (ROOT / "mappings").glob("*/*.yaml")
               if not p.name.endswith(".test.yaml")}
    listed = [s["ref"] for i in data["integrations"] for s in i["specs"]]
    assert sorted(listed) == sorted(on_disk)
    qimen = {s["ref"]: s for s in by_name["qimen"]["specs"]}
    create = qimen["qimen/deliveryorder.create"]
    assert (create["name"], create["version"], create["kind"], create["sign"], create["target"]) == (
        "qimen.deliveryorder.create", "1.0.0", "request", "qimen-md5", "xml")
    assert "deliveryOrder.receiverInfo.mobile" in create["encryptable"]
    assert {qimen[r]["kind"] for r in ("qimen/response", "qimen/deliveryorder.confirm", "qimen/ack")} == {
        "response", "callback", "ack"}
    assert by_name["jd"]["signing"] == ["jd-lop-md5-salt"]
    assert {s["configurable"][0] for s in by_name["jd"]["specs"] if s["kind"] == "request"} == {"case"}
    assert by_name["sf"]["signing"] == ["sf-msgdigest"]
    rules = {s["ref"]: s["duplicate_rule"] for i in data["integrations"] for s in i["specs"]
             if s["ref"].endswith(("create-order", "deliveryorder.create", "consign-order-notify"))}
    # A create whose outcome is unknown is queried wherever the warehouse can be asked; Cainiao
    # offers no query (tests/multinode/resolution.py).
    assert rules == {"sf/create-order": "query", "qimen/deliveryorder.create": "query",
                     "jd/create-order": "query", "cainiao/consign-order-notify": "skip"}
    assert "tmall-basic" in data["example_orders"]

    text = run("library")
    assert text.exit_code == 0
    assert "qimen/deliveryorder.create" in text.stdout and "signed qimen-md5" in text.stdout
    assert "a warehouse's config may set: sign case" in text.stdout
    assert run("library", "--path").stdout.strip() == str(library_root())


def test_names_resolve_to_the_library_and_mistakes_get_the_closest_names() -> None:
    path = library_root() / "qimen" / "deliveryorder.create.yaml"  # the clone's or the installed copy
    assert path.read_bytes() == (ROOT / "mappings" / "qimen" / "deliveryorder.create.yaml").read_bytes()
    assert resolve_spec("qimen/deliveryorder.create") == path
    assert resolve_spec("qimen/deliveryorder.create.yaml") == path
    assert resolve_spec("qimen.deliveryorder.create") == path  # the mapping name
    assert resolve_path("sf") == library_root() / "sf"
    assert resolve_order("tmall-basic") == examples_root() / "orders" / "tmall-basic.json"
    with pytest.raises(LibraryError, match=r"did you mean 'qimen/deliveryorder.create'"):
        resolve_spec("qimen/deliveryorder.crate")
    with pytest.raises(LibraryError, match=r"the examples: all-lines-zero"):
        resolve_order("no-such-order")
    # A file of the same name wins over the library.
    Path("tmall-basic").write_text("{}", encoding="utf-8")
    assert resolve_order("tmall-basic") == Path("tmall-basic")
    assert [i.name for i in integrations()] == ["cainiao", "jd", "qimen", "reference", "sf"]


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300) | st.sampled_from(["x" * 5000, "a\x00b", "", "/", "..", "qimen/", "qimen/../sf"]))
def test_any_typed_name_resolves_or_is_refused_with_a_reason(text: str) -> None:
    for resolve in (resolve_spec, resolve_path, resolve_order):
        try:
            found = resolve(text)
        except LibraryError as exc:
            assert "neither" in str(exc) and len(str(exc)) < 1000
        else:
            assert isinstance(found, Path)


@pytest.mark.parametrize("spec", ["check", "show-code", "dry-run"])
def test_an_unknown_name_is_a_usage_error_naming_the_closest(spec: str) -> None:
    args = {"check": ["check", "jd/create-ordr"], "show-code": ["show-code", "jd/create-ordr"],
            "dry-run": ["dry-run", "jd/create-ordr", "tmall-basic"]}[spec]
    result = run(*args)
    assert result.exit_code == 2
    assert "did you mean 'jd/create-order'" in result.stderr and result.stdout == ""


def test_dry_run_of_a_library_spec_on_an_example_order_from_anywhere() -> None:
    result = run("dry-run", "jd/create-order", "tmall-basic", "--test-secrets", "--now", NOW)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith("POST https://test-api.jdl.com/ecap/v1/orders/create?")
    assert "signature: " in result.stdout and "(jd-lop-md5-salt)" in result.stdout


def test_dry_run_warehouse_applies_its_wire_settings_and_config_is_a_deprecated_spelling() -> None:
    acme = str(ROOT / "mappings/qimen/warehouses/acme-3pl.yaml")
    new = run("dry-run", "qimen/deliveryorder.create", "tmall-basic", "--warehouse", acme, "--test-secrets",
              "--now", NOW, "--request-id", "r-1")
    assert new.exit_code == 0, new.stderr
    assert "wire: encrypt deliveryOrder.receiverInfo.mobile with sm4-ecb (key QIMEN_SM4_KEY" in new.stdout
    assert "<mobile>139****0366</mobile>" not in new.stdout and "warning" not in new.stderr
    old = run("dry-run", "qimen/deliveryorder.create", "tmall-basic", "--config", acme, "--test-secrets",
              "--now", NOW, "--request-id", "r-1")
    assert old.exit_code == 0
    assert old.stdout == new.stdout
    assert "warning: dry-run --config is deprecated" in old.stderr and "--warehouse FILE" in old.stderr
    both = run("dry-run", "qimen/deliveryorder.create", "tmall-basic", "--config", acme, "--warehouse", acme)
    assert both.exit_code == 2 and "give --warehouse FILE once" in both.stderr
    as_json = json.loads(run("dry-run", "qimen/deliveryorder.create", "tmall-basic", "--warehouse", acme,
                             "--test-secrets", "--json").stdout)
    assert as_json["wire"] == ["encrypt deliveryOrder.receiverInfo.mobile with sm4-ecb (key QIMEN_SM4_KEY; "
                               "from the warehouse config)"]


def test_dry_run_refuses_wire_settings_a_spec_does_not_allow() -> None:
    Path("wh.yaml").write_text("host: h\nwire: {sign: {case: upper}}\n", encoding="utf-8")
    result = run("dry-run", "qimen/order.cancel", "tmall-basic", "--warehouse", "wh.yaml", "--test-secrets")
    assert result.exit_code == 1
    assert ("qimen.order.cancel: wire.sign.case: the spec does not let a warehouse set this option of qimen-md5"
            in result.stderr)
    Path("bad.yaml").write_text("wire: {encrypt: {path: x}}\n", encoding="utf-8")
    bad = run("dry-run", "qimen/order.cancel", "tmall-basic", "--warehouse", "bad.yaml")
    assert bad.exit_code == 1 and "bad.yaml: wire.encrypt: must be a list" in bad.stderr


def test_check_warehouse_holds_a_config_to_the_specs() -> None:
    acme = str(ROOT / "mappings/qimen/warehouses/acme-3pl.yaml")
    good = run("check", "--warehouse", acme, "qimen")
    assert good.exit_code == 0, good.stderr
    assert f"{acme}: 0 problem(s) against 8 spec(s)" in good.stderr
    Path("wh.yaml").write_text(
        "host: h\nwire:\n  sign: {case: upper}\n  encrypt:\n"
        "    - {path: deliveryOrder.receiverInfo.mobil, scheme: sm4-ecb, key: K}\n", encoding="utf-8")
    bad = run("check", "--warehouse", "wh.yaml", "qimen/deliveryorder.create", "qimen/order.cancel")
    assert bad.exit_code == 1
    lines = [line for line in bad.stderr.splitlines() if line.startswith("wh.yaml: ")]
    assert lines == [
        "wh.yaml: qimen.deliveryorder.create: mapping qimen.deliveryorder.create needs the context value 'version'",
        "wh.yaml: qimen.deliveryorder.create: wire.sign.case: the spec does not let a warehouse set this option of "
        "qimen-md5 (it allows: none)",
        "wh.yaml: qimen.order.cancel: mapping qimen.order.cancel needs the context value 'version'",
        "wh.yaml: qimen.order.cancel: wire.sign.case: the spec does not let a warehouse set this option of "
        "qimen-md5 (it allows: none)",
        "wh.yaml: wire.encrypt deliveryOrder.receiverInfo.mobil: none of these specs lets a warehouse encrypt this "
        "field",
        "wh.yaml: 5 problem(s) against 2 spec(s)",
    ]


def test_compile_takes_folders_and_integrations_by_name(elsewhere: Path) -> None:
    result = run("compile", "-o", "out.dybundle", "jd", str(ROOT / "mappings" / "sf"))
    assert result.exit_code == 0, result.stderr
    manifest = json.loads((elsewhere / "out.dybundle" / "manifest.json").read_text(encoding="utf-8"))
    assert set(manifest["mappings"]) == {"jd.create-order", "jd.cancel-order", "jd.query-order", "jd.response",
                                         "jd.query-response", "sf.create-order",
                                         "sf.cancel-order", "sf.search-order", "sf.response", "sf.search-response",
                                         "sf.route-push", "sf.route-push.ack"}
    Path("empty").mkdir()
    assert run("compile", "-o", "x", "empty").exit_code == 2


def test_orders_generate_is_seeded_and_valid(elsewhere: Path) -> None:
    from dockyard.dsl.spec_parser import load_builtin_schema
    from dockyard.runtime.mapping import schema_problems

    first = run("orders", "generate", "-n", "5", "--seed", "7")
    assert first.exit_code == 0
    orders = json.loads(first.stdout)
    assert orders == json.loads(json.dumps(generate(5, 7)))
    assert first.stdout == run("orders", "generate", "-n", "5", "--seed", "7").stdout
    assert first.stdout != run("orders", "generate", "-n", "5", "--seed", "8").stdout
    schema = load_builtin_schema("order")
    assert all(not schema_problems(schema, o) for o in orders)
    lines = run("orders", "generate", "-n", "3", "--format", "lines").stdout.splitlines()
    assert [json.loads(line)["order_no"] for line in lines] == [o["order_no"] for o in generate(3)]
    Path("out").mkdir()
    assert run("orders", "generate", "-n", "2", "-o", "out").exit_code == 0
    files = sorted(p.name for p in (elsewhere / "out").iterdir())
    assert files == sorted(f"{o['order_no']}.json" for o in generate(2))
    one = elsewhere / "out" / files[0]
    assert run("dry-run", "reference/deliveryorder", str(one)).exit_code == 0  # a generated order dry-runs
    assert run("orders", "generate", "-n", "0").exit_code == 2


@pytest.mark.parametrize("source", ["qimen", "sf"])
def test_init_makes_a_project_where_test_dry_run_and_check_work(elsewhere: Path, source: str) -> None:
    result = run("init", "proj", "--from", source)
    assert result.exit_code == 0, result.stderr
    project = elsewhere / "proj"
    os.chdir(project)
    names = {p.relative_to(project).as_posix() for p in project.rglob("*") if p.is_file()}
    assert {"README.md", "dockyard.yaml", ".gitignore", "examples/orders/tmall-basic.json",
            "build/warehouses.dybundle/manifest.json"} <= names
    assert {n for n in names if n.startswith("warehouses/")} == {
        f"warehouses/{w}.yaml" for w in ("qimen-std", "sf", "jd", "cainiao")
        if w != {"qimen": "qimen-std"}.get(source, source)}
    example_test = next(n for n in names if n.endswith(".example.test.yaml"))
    assert example_test.startswith(f"mappings/{source}/")
    # Secrets: marked TEST-ONLY, readable by the owner only.
    secrets = sorted((project / "secrets").iterdir())
    assert [p.name for p in secrets] == sorted(["QIMEN_APP_SECRET", "SF_CHECK_WORD", "JD_LOP_APP_SECRET",
                                                "CAINIAO_SECRET_KEY"])
    assert all(p.read_text().startswith("TEST-ONLY-") and stat.S_IMODE(p.stat().st_mode) == 0o600 for p in secrets)
    config = yaml.safe_load((project / "dockyard.yaml").read_text(encoding="utf-8"))
    assert config["bundles"] == ["build/warehouses.dybundle"] and config["secrets"] == {"dir": "secrets"}
    assert config["routing"][-1] == {"warehouse": "qimen-std", "default": True}
    assert all((project / w["config_file"]).is_file() for w in config["warehouses"].values())

    tested = run("test", "mappings/", "--min-coverage", "90")
    assert tested.exit_code == 0, tested.stdout
    assert "0 failed" in tested.stdout and example_test in tested.stdout

    create = {"qimen": "mappings/qimen/deliveryorder.create.yaml", "sf": "mappings/sf/create-order.yaml"}[source]
    config_file = config["warehouses"][{"qimen": "qimen-std"}.get(source, source)]["config_file"]
    dry = run("dry-run", create, "examples/orders/tmall-basic.json", "--warehouse", config_file,
              "--secrets-dir", "secrets")
    assert dry.exit_code == 0, dry.stderr
    assert "signature: " in dry.stdout and "TEST-ONLY" not in dry.stdout  # the secret is never shown

    checked = run("check", "--warehouse", config_file, f"mappings/{source}")
    assert checked.exit_code == 0, checked.stderr

    # Editing the copy shows in its mapping test; the README says how to rebuild the bundle.
    readme = (project / "README.md").read_text(encoding="utf-8")
    assert f"dockyard compile -o build/warehouses.dybundle mappings/{source}" in readme
    command = readme.split("       dockyard compile ", 1)[1].split("\n", 1)[0].split()
    rebuilt = run("compile", *command)
    assert rebuilt.exit_code == 0, rebuilt.stderr


def test_init_never_overwrites_a_file(elsewhere: Path) -> None:
    Path("dockyard.yaml").write_text("mine\n", encoding="utf-8")
    result = run("init")
    assert result.exit_code == 1
    assert "already holds dockyard.yaml" in result.stderr and "never overwrites" in result.stderr
    assert Path("dockyard.yaml").read_text(encoding="utf-8") == "mine\n"
    assert not Path("mappings").exists() and not Path("build").exists()
    assert run("init", "x", "--from", "nope").exit_code == 2
