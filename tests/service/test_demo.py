"""`dockyard demo --exit`, the README's main job, as a user runs it: a real subprocess, the shipped
mappings, simulated warehouses, SQLite; it must end with `lost: 0` and exit 0."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_demo_accounts_for_every_order(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "dockyard.cli", "demo", "--orders", "400", "--exit", "--port", "0",
                           "--mappings", str(ROOT / "mappings"), "--workdir", str(tmp_path / "demo")],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert out.rstrip().endswith("lost: 0"), out
    delivered = {m.group(1): int(m.group(2)) for m in re.finditer(r"^  (\S+)\s+(\d+)\s+\(the warehouse counted", out,
                                                                   re.MULTILINE)}
    assert set(delivered) == {"qimen-std", "sf", "jd", "cainiao"}
    dlq = int(re.search(r"dead-letter queue: (\d+)", out).group(1))  # type: ignore[union-attr]
    assert sum(delivered.values()) + dlq == 400
    assert "received twice)" in out and ", 0 received twice" in out
    events = re.search(r"status events received: (\d+) \(pushed by the warehouses: (\d+)\); forwarded upstream: (\d+)",
                       out)
    assert events is not None and events.group(1) == events.group(2) == events.group(3)
    assert re.search(r"p50 [\d.]+ ms, p99 [\d.]+ ms", out)
    # each dead letter is a line on stderr naming the order and the reason
    dead = [line for line in done.stderr.splitlines() if " WARNING dead-lettered" in line]
    assert len(dead) == dlq > 0, done.stderr[-3000:]
    for line in dead:
        assert re.search(r" order_no=\S+ warehouse=\S+ flow=create job=\d+ reason=\"[^\"]+", line), line


def test_the_demo_stays_up_with_its_dashboard(tmp_path: Path) -> None:
    """Without --exit the demo leaves the service up and prints the dashboard's URL and token; the
    dashboard answers with the run's live figures; Ctrl-C stops it cleanly."""
    import json
    import signal
    import time
    import urllib.request

    proc = subprocess.Popen([sys.executable, "-m", "dockyard.cli", "demo", "--orders", "200", "--port", "0",
                             "--mappings", str(ROOT / "mappings"), "--workdir", str(tmp_path / "demo")],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=tmp_path)
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 240
        line = ""
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if line.startswith("dashboard:") or not line:
                break
        match = re.match(r"dashboard: (\S+)/ui .*token: (\S+)\)", line)
        assert match, line
        base, token = match.groups()
        request = urllib.request.Request(f"{base}/ui/api/overview", headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(request, timeout=10) as answer:
            overview = json.loads(answer.read())
        text = json.dumps(overview)
        for name in ("qimen-std", "sf", "jd", "cainiao"):
            assert name in text
        with urllib.request.urlopen(f"{base}/healthz", timeout=10) as answer:
            assert answer.status == 200
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    assert code == 0
