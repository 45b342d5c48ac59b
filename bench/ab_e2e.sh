#!/bin/bash
# Run bench/e2e.py in a baseline checkout and in this tree alternately, ROUNDS times each, and
# print each run's headline figures (the whole output of each run stays in $OUT/ab_<who>_<round>.txt).
#
#   bench/ab_e2e.sh BASE_CHECKOUT BASE_PYTHON ROUNDS [e2e.py args...]
#   bench/ab_e2e.sh /tmp/wtbase /tmp/basevenv/bin/python 2 -n 5000
#
# The baseline is another commit in a worktree of its own with its own venv:
#   git worktree add --detach /tmp/wtbase <commit> && python3 -m venv /tmp/basevenv
#   /tmp/basevenv/bin/pip install -e '/tmp/wtbase[postgres]'
set -euo pipefail
base_dir=$1 base_python=$2 rounds=$3
shift 3
here=$(cd "$(dirname "$0")/.." && pwd)
out=${OUT:-$(mktemp -d)}
for r in $(seq 1 "$rounds"); do
  for who in base this; do
    if [ "$who" = base ]; then
      (cd "$base_dir" && timeout 900 "$base_python" bench/e2e.py "$@" > "$out/ab_${who}_$r.txt" 2>&1) || true
    else
      (cd "$here" && timeout 900 "${PYTHON:-python}" bench/e2e.py "$@" > "$out/ab_${who}_$r.txt" 2>&1) || true
    fi
    echo "== $who, round $r"
    grep -E "delivered \(warehouse|^  service  |service main|service writer|^  postgres|^  simulator|latency POST|latency ingest → ack|feedback:" \
      "$out/ab_${who}_$r.txt" || echo "   (no figures: see $out/ab_${who}_$r.txt)"
  done
done
