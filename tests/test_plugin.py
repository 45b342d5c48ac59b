"""A plugin package installed from tests/plugins adds a signing scheme that a spec then uses,
with no change to Dockyard: the entry-point group `dockyard.crypto` is the whole contract."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = ROOT / "tests" / "plugins" / "dockyard-example-plugin"
SPEC = ROOT / "tests" / "plugins" / "plugin-signed.yaml"
ORDER = ROOT / "examples" / "orders" / "tmall-basic.json"


@pytest.fixture(scope="module")
def plugin_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("plugin-site")
    base = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target), str(PLUGIN)]
    # Without build isolation the installed setuptools builds it offline; fall back to an isolated build.
    done = subprocess.run([*base, "--no-build-isolation"], capture_output=True, text=True)
    if done.returncode != 0:
        done = subprocess.run(base, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return target


def run_dockyard(plugin_dir: Path | None, *args: str,
                 secret: str = "plugin-secret-value") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PLUGIN_SECRET": secret}
    if plugin_dir is not None:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(plugin_dir), env.get("PYTHONPATH", "")) if p)
    code = "import sys; from dockyard.cli import main; sys.exit(main())"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, cwd=ROOT)


def test_a_spec_uses_the_plugin_scheme(plugin_dir: Path) -> None:
    done = run_dockyard(plugin_dir, "dry-run", "--json", "--now", "2023-11-11T00:00:00+08:00",
                        "--request-id", "r-1", str(SPEC), str(ORDER))
    assert done.returncode == 0, done.stderr
    request = json.loads(done.stdout)
    assert request["sign_scheme"] == "example-sha1-upper"
    # The expected signature, computed here from the plugin's documented algorithm.
    params = {"app": "dockyard", "ts": "1699632000"}
    text = "plugin-secret-value" + "".join(k + v for k, v in sorted(params.items())) + request["body"]
    expected = hashlib.sha1(text.encode()).hexdigest().upper()
    assert request["headers"]["X-Example-Sign"] == expected == request["signature"]
    assert "plugin-secret-value" not in done.stdout + done.stderr


def test_the_sign_command_knows_the_plugin(plugin_dir: Path) -> None:
    done = run_dockyard(plugin_dir, "sign", "example-sha1-upper", "--param", "b=2", "--param", "a=1",
                        "--body", "x", "--secret-env", "PLUGIN_SECRET")
    assert done.returncode == 0, done.stderr
    expected = hashlib.sha1(b"plugin-secret-valuea1b2x").hexdigest().upper()
    assert done.stdout.strip().splitlines()[-1] == expected


def test_without_the_plugin_the_spec_names_an_unknown_scheme() -> None:
    done = run_dockyard(None, "check", str(SPEC))
    assert done.returncode == 1
    assert "example-sha1-upper" in done.stderr and "qimen-md5" in done.stderr  # lists the known schemes
