"""The start-up rule: `dockyard serve` refuses to start with an unsigned callback flow that has no
guard, or with ingest that has none, unless each is allowed explicitly; then it warns. The
shipped example config and the demo's config start without any flag."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import yaml
from seckit import MAPPINGS

from dockyard.demo import DemoPlan, free_port
from dockyard.service.config import load_config
from dockyard.service.guards import unguarded

ROOT = Path(__file__).resolve().parents[2]


def _config(tmp_path: Path, bundle_dir: Path, *, sf_guard: bool, ingest: bool) -> Path:
    plan = DemoPlan(tmp_path / "work", MAPPINGS, warehouses=("qimen-std", "sf"))
    plan.sim_base = "http://127.0.0.1:9"  # nothing is delivered in these tests
    plan.workdir.mkdir(parents=True)
    (plan.workdir / "bundle").symlink_to(bundle_dir)
    path = plan.write(free_port())
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not sf_guard:
        del doc["warehouses"]["sf"]["callbacks"]["route-push"]["guard"]
    if not ingest:
        del doc["ingest"]
    path.write_text(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def _serve(config: Path, *flags: str, wait: float = 30.0) -> tuple[int | None, str]:
    """(exit code, or None when it started and was stopped; everything it wrote)."""
    log = config.parent / "serve.log"
    with open(log, "wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "dockyard.cli", "serve", "--config", str(config), *flags],
                                   stdout=out, stderr=subprocess.STDOUT, cwd=config.parent,
                                   env={**os.environ, "DOCKYARD_NO_UVLOOP": "1"})
    deadline = time.monotonic() + wait
    try:
        while time.monotonic() < deadline:
            code = process.poll()
            text = log.read_text(encoding="utf-8", errors="replace")
            if code is not None:
                return code, text
            if "serving on" in text:
                return None, text
            time.sleep(0.1)
        raise AssertionError(f"serve neither started nor stopped in {wait}s:\n{log.read_text()}")
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(15)


def test_serve_refuses_an_unguarded_unsigned_flow_and_open_ingest(tmp_path: Path, bundle_dir: Path) -> None:
    config = _config(tmp_path, bundle_dir, sf_guard=False, ingest=False)
    assert unguarded(load_config(config)) == (["sf/route-push"], ["POST /orders, /orders/batch"])
    code, text = _serve(config)
    assert code == 1 and "the service will not start" in text
    assert "sf/route-push" in text and "--allow-unsigned-callbacks" in text and "--allow-open-ingest" in text
    code, text = _serve(config, "--allow-unsigned-callbacks")
    assert code == 1 and "--allow-open-ingest" in text and "sf/route-push have" in text  # one allowed, one not
    code, text = _serve(config, "--allow-unsigned-callbacks", "--allow-open-ingest")
    assert code is None, text
    assert "warning: callback(s) sf/route-push" in text and "warning: POST /orders has no `ingest` guard" in text


def test_guarded_configs_start_without_flags(tmp_path: Path, bundle_dir: Path) -> None:
    config = _config(tmp_path, bundle_dir, sf_guard=True, ingest=True)
    code, text = _serve(config)
    assert code is None and "warning" not in text, text
    example = load_config(ROOT / "examples" / "service" / "dockyard.yaml",
                          {"bundles": [str(bundle_dir)], "dashboard": None})
    assert unguarded(example) == ([], [])
