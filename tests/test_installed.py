"""Dockyard installed, not cloned: the wheel is built from a copy of this tree, installed into a
fresh venv, and every command a new user runs is run from an empty directory with that venv's
`dockyard`, never with this checkout on the path:

- the README's quickstart (`dockyard demo --orders 2000 --exit`), which must account for every order;
- `dockyard init` and, in the project it makes, `dockyard test`, `dockyard dry-run` and `dockyard serve`;
- a dry-run of every flow of the installed library, each on an input its own mapping tests use;
- `dockyard library` and `dockyard orders generate`.

Building and installing take a minute (the dependencies come from the configured package index);
the module builds once and every test uses the same venv.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# What the copy leaves out: environments, caches and build leftovers (a stale build/lib would
# carry deleted files into the wheel).
IGNORED = shutil.ignore_patterns(".venv", "venv", "build", "dist", ".git", "__pycache__", "*.egg-info",
                                 ".mypy_cache", ".ruff_cache", ".pytest_cache", ".hypothesis", "test-artifacts",
                                 ".dockyard-demo", "*.db", "*.db-*")


@dataclass(frozen=True)
class Installed:
    wheel: Path
    bin: Path  # the venv's bin/

    def dockyard(self, *args: str, cwd: Path, timeout: float = 300, check: bool = True,
                 env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([str(self.bin / "dockyard"), *args], cwd=cwd, capture_output=True, text=True,
                              timeout=timeout, env=env or _clean_env())
        if check:
            assert done.returncode == 0, f"dockyard {' '.join(args)} → {done.returncode}\n{done.stdout}\n{done.stderr}"
        return done


def _clean_env() -> dict[str, str]:
    """The environment without anything that would put this checkout on the import path."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    base = tmp_path_factory.mktemp("installed")
    source = base / "src"
    shutil.copytree(ROOT, source, ignore=IGNORED)
    dist = base / "dist"
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(source)],
                           capture_output=True, text=True, timeout=600, env=_clean_env())
    assert built.returncode == 0, built.stdout + built.stderr
    wheel = next(dist.glob("dockyard-*.whl"))
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300, env=_clean_env())
    pip = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-compile", str(wheel)],
                         capture_output=True, text=True, timeout=900, env=_clean_env())
    assert pip.returncode == 0, pip.stdout + pip.stderr
    yield Installed(wheel, venv / "bin")


@pytest.fixture
def empty(tmp_path: Path) -> Path:
    folder = tmp_path / "empty"
    folder.mkdir()
    return folder


def test_the_wheel_carries_the_library_and_the_examples(installed: Installed, empty: Path) -> None:
    names = set(zipfile.ZipFile(installed.wheel).namelist())
    library = {p.relative_to(ROOT).as_posix() for p in (ROOT / "mappings").rglob("*")
               if p.is_file() and "__pycache__" not in p.parts}
    examples = {p.relative_to(ROOT).as_posix() for p in (ROOT / "examples").rglob("*")
                if p.is_file() and "__pycache__" not in p.parts}
    assert {f"dockyard/{n}" for n in library | examples} <= names
    assert "dockyard/examples/service/dockyard.yaml" in names
    # The package imported is the venv's, not this checkout.
    where = subprocess.run([str(installed.bin / "python"), "-c", "import dockyard; print(dockyard.__file__)"],
                           cwd=empty, capture_output=True, text=True, env=_clean_env(), check=True).stdout
    assert where.startswith(str(installed.bin.parent)) and str(ROOT) not in where


def test_the_quickstart_demo_from_an_empty_directory(installed: Installed, empty: Path) -> None:
    done = installed.dockyard("demo", "--orders", "2000", "--exit", "--port", "0", cwd=empty, timeout=600)
    assert done.stdout.rstrip().endswith("lost: 0"), done.stdout
    state = empty / ".dockyard-demo"
    assert f"demo state (bundle, config, secrets, SQLite store): {state}" in done.stderr
    assert (state / "state.db").is_file() and (state / "bundle" / "manifest.json").is_file()
    delivered = {m.group(1): int(m.group(2)) for m in re.finditer(r"^  (\S+)\s+(\d+)\s+\(the warehouse counted",
                                                                   done.stdout, re.MULTILINE)}
    dlq = int(re.search(r"dead-letter queue: (\d+)", done.stdout).group(1))  # type: ignore[union-attr]
    assert set(delivered) == {"qimen-std", "sf", "jd", "cainiao"} and sum(delivered.values()) + dlq == 2000
    # A second run wipes its own state; a directory it did not make is refused, untouched.
    other = empty / "mine"
    other.mkdir()
    (other / "keep.txt").write_text("mine", encoding="utf-8")
    refused = installed.dockyard("demo", "--orders", "1", "--exit", "--workdir", "mine", cwd=empty, check=False)
    assert refused.returncode == 2 and "not empty and was not made by `dockyard demo`" in refused.stderr
    assert (other / "keep.txt").read_text(encoding="utf-8") == "mine"


def test_init_makes_a_project_where_test_dry_run_and_serve_work(installed: Installed, empty: Path) -> None:
    installed.dockyard("init", "shop", cwd=empty)
    project = empty / "shop"
    tested = installed.dockyard("test", "mappings/", "--min-coverage", "90", cwd=project)
    assert tested.stdout.rstrip().endswith("passed, 0 failed")
    dry = installed.dockyard("dry-run", "mappings/qimen/deliveryorder.create.yaml", "examples/orders/tmall-basic.json",
                             "--warehouse", "mappings/qimen/warehouses/standard-wms.yaml", "--secrets-dir", "secrets",
                             cwd=project)
    assert dry.stdout.startswith("POST https://qimen.standard-wms.example.com/router/qimen/service?")
    assert "signature: " in dry.stdout
    # A library spec, named without a path, with the project's SF config.
    installed.dockyard("dry-run", "sf/create-order", "examples/orders/tmall-basic.json", "--warehouse",
                       "warehouses/sf.yaml", "--secrets-dir", "secrets", cwd=project)
    installed.dockyard("check", "--warehouse", "mappings/qimen/warehouses/acme-3pl.yaml", "mappings/qimen",
                       cwd=project)

    serve = subprocess.Popen([str(installed.bin / "dockyard"), "serve", "--port", "0", "--log-format", "text"],
                             cwd=project, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                             env=_clean_env())
    try:
        assert serve.stderr is not None
        deadline = time.monotonic() + 60
        url = None
        while url is None and time.monotonic() < deadline:
            line = serve.stderr.readline()
            if not line:
                break
            found = re.search(r"dockyard serving on (http://\S+)", line)
            url = found.group(1) if found else None
        assert url, "dockyard serve did not start"
        order = (project / "examples" / "orders" / "tmall-basic.json").read_bytes()
        request = urllib.request.Request(f"{url}/orders", data=order, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as answer:
            accepted = json.loads(answer.read())
        assert (accepted["status"], accepted["warehouse"]) == ("accepted", "qimen-std")
        with urllib.request.urlopen(f"{url}/orders/{accepted['order_no']}", timeout=10) as answer:
            assert json.loads(answer.read())["order_no"] == "TM20231111000123"
    finally:
        serve.send_signal(signal.SIGTERM)
        try:
            serve.wait(30)
        except subprocess.TimeoutExpired:
            serve.kill()
            serve.wait()
        if serve.stderr is not None:
            serve.stderr.close()


# Run inside the installed venv: a dry-run of every spec of the installed library, through the
# `dockyard` command's own entry point, on the first input its mapping tests use without
# expecting an error (request specs: an example order by name).
DRIVER = r'''
import json, sys, pathlib, tempfile, yaml
from click.testing import CliRunner
from dockyard.cli import main
from dockyard.library import integrations

out = {}
work = pathlib.Path(tempfile.mkdtemp())
for integration in integrations():
    for spec in integration.specs:
        args = ["dry-run", spec.ref]
        if spec.kind in ("request", "document"):
            args.append("tmall-basic")
        else:
            test = spec.path.with_name(spec.path.stem + ".test.yaml")
            data = yaml.safe_load(test.read_text(encoding="utf-8"))
            case = next(c for c in data["cases"] if "error" not in c["expect"]
                        and any(k in c for k in ("input", "input_file", "input_text")))
            if "input_file" in case:
                source = (test.parent / case["input_file"]).resolve()
            else:
                source = work / (spec.ref.replace("/", "_") + ".in")
                text = case["input_text"] if "input_text" in case else json.dumps(case["input"], ensure_ascii=False)
                source.write_text(text, encoding="utf-8")
            args.append(str(source))
            for name, value in {**(data.get("context") or {}), **(case.get("context") or {})}.items():
                if value is not None:
                    args += ["--ctx", f"{name}={str(value).lower() if isinstance(value, bool) else value}"]
        args += ["--test-secrets", "--now", "2023-11-11T00:30:00+08:00"]
        result = CliRunner().invoke(main, args)
        out[spec.ref] = [spec.kind, result.exit_code, result.stdout[:200], result.stderr[-300:]]
print(json.dumps(out, ensure_ascii=False))
'''


def test_every_library_flow_dry_runs_from_an_empty_directory(installed: Installed, empty: Path) -> None:
    done = subprocess.run([str(installed.bin / "python"), "-c", DRIVER], cwd=empty, capture_output=True, text=True,
                          timeout=600, env=_clean_env())
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)
    on_disk = {f"{p.parent.name}/{p.stem}" for p in (ROOT / "mappings").glob("*/*.yaml")
               if not p.name.endswith(".test.yaml")}
    assert set(results) == on_disk
    failed = {ref: r for ref, r in results.items() if r[1] != 0 or not r[2].strip()}
    assert not failed, failed
    for ref, (kind, _code, stdout, _err) in results.items():
        if kind == "request":
            assert stdout.startswith("POST https://"), (ref, stdout)


def test_library_and_sample_orders_from_an_empty_directory(installed: Installed, empty: Path) -> None:
    listed = json.loads(installed.dockyard("library", "--json", cwd=empty).stdout)
    assert Path(listed["path"]).is_relative_to(installed.bin.parent)
    assert {i["name"] for i in listed["integrations"]} >= {"qimen", "sf", "jd", "cainiao"}
    generated = installed.dockyard("orders", "generate", "-n", "3", "--seed", "5", cwd=empty).stdout
    assert len(json.loads(generated)) == 3
    assert generated == installed.dockyard("orders", "generate", "-n", "3", "--seed", "5", cwd=empty).stdout
