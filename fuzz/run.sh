#!/usr/bin/env bash
# Fuzz every input surface for SECONDS in total (default 300), split evenly across targets.
#   bash fuzz/run.sh [SECONDS] [--engine atheris|random]
# Crashing inputs land in fuzz/findings/; the exit status is 1 when any target found one.
set -u
cd "$(dirname "$0")/.."
TOTAL="${1:-300}"
shift || true
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python3
TARGETS=(image xyc voc yolo toml modelconfig http)
PER=$(( TOTAL / ${#TARGETS[@]} ))
[ "$PER" -ge 5 ] || PER=5
mkdir -p fuzz/findings
status=0
for t in "${TARGETS[@]}"; do
  before=$(ls fuzz/findings | grep -c "^$t-" || true)
  echo "=== $t: ${PER}s"
  OMP_NUM_THREADS=1 "$PY" fuzz/fuzz_targets.py "$t" "$PER" "$@" 2>&1 \
    | grep -E "^\[|Done [0-9]+ runs|stat::number_of_executed_units|ERROR|Exception|Error:|Test unit written" \
    || true
  after=$(ls fuzz/findings | grep -c "^$t-" || true)
  echo "=== $t: $(( after - before )) new finding(s)"
  [ "$after" -gt "$before" ] && status=1
done
echo "findings in fuzz/findings/: $(ls fuzz/findings | wc -l) file(s)"
exit $status
