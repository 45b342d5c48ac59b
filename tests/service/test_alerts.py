"""The shipped Prometheus alert rules (deploy/prometheus/alerts.yml): promtool accepts them and
their unit tests pass (each alert fires on its trouble and not on the healthy series beside it);
they query only metrics the service exports; each has a runbook note and a runbook section.

promtool comes with Debian's `prometheus` package (.ci/run installs it). Without it the promtool
tests skip with the reason, unless CI is set: then its absence is a failure."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from dockyard.service.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus"
RUNBOOKS = ROOT / "docs" / "runbooks.md"


def _promtool() -> str:
    found = shutil.which("promtool") or ("/usr/bin/promtool" if Path("/usr/bin/promtool").exists() else None)
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is missing (apt-get install prometheus); CI must run the alert rule tests")
        pytest.skip("promtool is not installed (Debian package `prometheus`)")
    return found


def _alerts() -> list[dict[str, Any]]:
    doc = yaml.safe_load((RULES / "alerts.yml").read_text(encoding="utf-8"))
    return [rule for group in doc["groups"] for rule in group["rules"] if "alert" in rule]


def test_promtool_accepts_the_rules_and_their_unit_tests_pass() -> None:
    promtool = _promtool()
    check = subprocess.run([promtool, "check", "rules", "alerts.yml"], cwd=RULES, capture_output=True, text=True,
                           timeout=120)
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"SUCCESS: {len(_alerts())} rules found" in check.stdout
    run = subprocess.run([promtool, "test", "rules", "alerts.test.yml"], cwd=RULES, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr


def test_the_unit_tests_fail_when_a_rule_goes_wrong(tmp_path: Path) -> None:
    """The promtool tests can fail: a threshold moved or a `for` shortened is caught."""
    promtool = _promtool()
    text = (RULES / "alerts.yml").read_text(encoding="utf-8")
    shutil.copy(RULES / "alerts.test.yml", tmp_path / "alerts.test.yml")
    mutations = ((") > 0.10", ") > 0.25"), ("age_seconds) > 300", "age_seconds) > 3000"), ("for: 15m", "for: 1m"),
                 ("[10m])) >= 5", "[10m])) >= 50"))
    for before, after in mutations:
        assert before in text, before
        (tmp_path / "alerts.yml").write_text(text.replace(before, after), encoding="utf-8")
        run = subprocess.run([promtool, "test", "rules", "alerts.test.yml"], cwd=tmp_path, capture_output=True,
                             text=True, timeout=120)
        assert run.returncode != 0, f"a rule changed ({before!r} → {after!r}) and its test still passed"


def test_every_alert_is_tested_uses_exported_metrics_and_has_a_runbook() -> None:
    exported: set[str] = set()
    for family in text_string_to_metric_families(Metrics().render().decode()):
        exported.update({family.name, *(s.name for s in family.samples), f"{family.name}_total",
                         f"{family.name}_bucket", f"{family.name}_count", f"{family.name}_sum"})
    tests = yaml.safe_load((RULES / "alerts.test.yml").read_text(encoding="utf-8"))
    firing = {case["alertname"] for test in tests["tests"] for case in test["alert_rule_test"] if case["exp_alerts"]}
    quiet = {case["alertname"] for test in tests["tests"] for case in test["alert_rule_test"] if not case["exp_alerts"]}
    anchors = {_anchor(m) for m in re.findall(r"^## (.+)$", RUNBOOKS.read_text(encoding="utf-8"), re.MULTILINE)}
    alerts = _alerts()
    assert len(alerts) >= 7
    for rule in alerts:
        name = rule["alert"]
        used = set(re.findall(r"\b(dockyard_[a-z_]+)", rule["expr"]))
        assert used and used <= exported, (name, used - exported)
        assert name in firing and name in quiet, f"{name}: promtool tests must show it firing and quiet"
        notes = rule["annotations"]
        assert notes["summary"] and notes["description"] and notes["runbook"]
        page, _, anchor = notes["runbook_url"].partition("#")
        assert page == "docs/runbooks.md" and anchor in anchors, (name, notes["runbook_url"])
        assert rule["labels"]["severity"] in ("warning", "critical")


def _anchor(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    return re.sub(r"[^a-z0-9 -]", "", heading.strip().lower()).replace(" ", "-")


def test_the_grafana_dashboards_queries_are_valid_promql(tmp_path: Path) -> None:
    """Each panel's query, its template variables filled in, parses (promtool checks it as a rule)."""
    import json

    promtool = _promtool()
    board = json.loads((ROOT / "docs" / "grafana" / "dockyard-dashboard.json").read_text(encoding="utf-8"))
    rules = [{"record": f"dockyard:panel{panel['id']}:{target['refId'].lower()}",
              "expr": target["expr"].replace("$warehouse", ".*").replace("$job", ".*")}
             for panel in board["panels"] for target in panel.get("targets", [])]
    assert len(rules) >= 20
    (tmp_path / "panels.yml").write_text(yaml.safe_dump({"groups": [{"name": "panels", "rules": rules}]}),
                                         encoding="utf-8")
    check = subprocess.run([promtool, "check", "rules", "panels.yml"], cwd=tmp_path, capture_output=True, text=True,
                           timeout=120)
    assert check.returncode == 0, check.stdout + check.stderr
