"""Benchmark: whole-process CPU of `dockyard check one.yaml` and of `load_bundle` of 100 mappings,
each beyond `python -c pass`, measured in the same run.

    python bench/startup.py [--rounds 7]

A process's CPU (user + system, from `getrusage(RUSAGE_CHILDREN)`) is what the issue's goals are
stated in; wall time on a shared machine says little. Candidates run interleaved round by round and
the best of the rounds counts. Each is run once first, so Python's bytecode caches are written and
the bundle's code cache is filled (PYTHONDONTWRITEBYTECODE is removed from the children's
environment: a user's install has its .pyc files).
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SPEC = REPO / "mappings" / "reference" / "deliveryorder.yaml"


def _cpu(cmd: list[str], env: dict[str, str]) -> float:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def _bundle_of_100(folder: Path) -> Path:
    """100 mappings: the reference spec under 100 names, compiled into one bundle."""
    from dockyard.compiler.bundle import build_bundle

    text = SPEC.read_text(encoding="utf-8")
    specs = []
    for i in range(100):
        path = folder / "specs" / f"m{i:03}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text.replace("name: reference.deliveryorder", f"name: bench.m{i:03}"), encoding="utf-8")
        specs.append(str(path))
    out = folder / "bundle"
    build_bundle(specs, out)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args(argv)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    py = sys.executable
    dockyard = str(Path(py).with_name("dockyard"))
    with tempfile.TemporaryDirectory() as tmp:
        bundle = _bundle_of_100(Path(tmp))
        candidates = {
            "python -c pass": [py, "-c", "pass"],
            "dockyard check one.yaml": [dockyard, "check", str(SPEC)],
            "load_bundle (100 mappings)": [py, "-c", f"import dockyard; dockyard.load_bundle({str(bundle)!r})"],
            "check imports": [py, "-c", "import dockyard.cli, sys; from dockyard.compiler.api import check_file; "
                              "bad = [m for m in ('aiohttp', 'dockyard.service', 'dockyard.simulate', 'jsonschema', "
                              "'lark', 'jinja2') if m in sys.modules]; sys.exit(1 if bad else 0)"],
        }
        for cmd in candidates.values():
            _cpu(cmd, env)  # warm-up: bytecode caches, the bundle's code cache
        best = {name: float("inf") for name in candidates}
        for _ in range(args.rounds):
            for name, cmd in candidates.items():
                best[name] = min(best[name], _cpu(cmd, env))
    base = best["python -c pass"]
    print(f"best of {args.rounds} rounds, whole-process CPU (user + system)")
    print(f"{'':30} {'CPU ms':>8} {'beyond pass':>12}")
    for name, seconds in best.items():
        if name == "check imports":
            continue
        print(f"{name:30} {seconds * 1000:8.0f} {(seconds - base) * 1000:11.0f}")
    print("goals: `dockyard check` ≤ 200 ms whole process; load_bundle of 100 ≤ 50 ms beyond pass")
    return 0


if __name__ == "__main__":
    sys.exit(main())
