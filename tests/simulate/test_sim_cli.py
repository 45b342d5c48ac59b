"""The simulator's YAML config and the `simulate` command."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from click.testing import CliRunner
from simkit import ROOT

from dockyard.simulate.config import SimConfigError, load_sim_config
from dockyard.simulate_cli import simulate

CONFIG = f"""
seed: 5
upstream_secret_env: SIM_UPSTREAM
feedback: {{step_delay: 0.01, max_push_attempts: 2}}
warehouses:
  - name: qimen-std
    kind: qimen
    secret_env: SIM_QIMEN
    callback_base: http://127.0.0.1:1/callbacks/qimen-std
    faults: {{error_rate: 0.1}}
    context_file: {ROOT / "mappings/qimen/warehouses/standard-wms.yaml"}
    context: {{identicalRepeatIsSuccess: true}}
  - {{name: jd, kind: jd, secret_env: SIM_JD}}
"""
ENV = {"SIM_UPSTREAM": "u", "SIM_QIMEN": "q", "SIM_JD": "j"}


def test_the_config_is_read_with_secrets_from_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "sim.yaml"
    path.write_text(CONFIG, encoding="utf-8")
    cfg = load_sim_config(path, ENV)
    assert cfg.seed == 5 and cfg.upstream_secret == "u" and cfg.feedback.step_delay == 0.01
    qimen, jd = cfg.warehouses
    assert qimen.secret == "q" and qimen.faults.error_rate == 0.1
    assert qimen.context["customerId"] == "STD-C-1001" and qimen.context["identicalRepeatIsSuccess"] is True
    assert jd.callback_base is None and jd.secret == "j"
    with pytest.raises(SimConfigError, match="SIM_JD"):
        load_sim_config(path, {k: v for k, v in ENV.items() if k != "SIM_JD"})
    path.write_text(CONFIG.replace("error_rate", "eror_rate"), encoding="utf-8")
    with pytest.raises(SimConfigError, match="unknown fault setting"):
        load_sim_config(path, ENV)


def test_a_bad_config_exits_1_with_the_reason(tmp_path: Path) -> None:
    path = tmp_path / "sim.yaml"
    path.write_text("warehouses: [{name: x, kind: ups, secret_env: HOME}]\n", encoding="utf-8")
    result = CliRunner().invoke(simulate, ["--config", str(path)])
    assert result.exit_code == 1 and "kind must be one of" in result.output


def test_the_command_serves_until_terminated(tmp_path: Path) -> None:
    path = tmp_path / "sim.yaml"
    path.write_text(CONFIG, encoding="utf-8")
    proc = subprocess.Popen(
        [sys.executable, "-c", "from dockyard.simulate_cli import simulate; simulate()",
         "--config", str(path), "--port", "0", "--stats-on-exit"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **ENV})
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert "listening on http://127.0.0.1:" in first, first + (proc.stderr.read() if proc.stderr else "")
        base = first.split("listening on ")[1].strip()
        with urllib.request.urlopen(f"{base}/_sim/stats", timeout=5) as resp:
            stats = json.loads(resp.read())
        assert set(stats["warehouses"]) == {"qimen-std", "jd"}
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert '"warehouses"' in out
