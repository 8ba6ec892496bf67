#!/usr/bin/env bash
# Leave-one-source-out: what to expect on a lab allseg never saw. For each real source
# (BCCD, Zheng Dataset 1, TXL-PBC's Raabin, PBC and BCD), train the segmenter by the
# default recipe WITHOUT that source, on a short budget (EPOCHS, default 5, instead of 24),
# and score it on the source's test images (BCCD test, Zheng fold 0, TXL-PBC fold 0) with
# the scale estimated. The same short recipe with every source ("all") is the reference:
# the gap between a source's row and "all" is the price of never having seen that lab.
# Results: bench/loso/<left-out>/{model,eval-*}; table: bench/loso_table.py.
# Arguments: the runs to do (default: all bccd zheng raabin pbc bcd), e.g. to share them
# between two processes.
set -euo pipefail
cd "$(dirname "$0")/.."
ALLSEG=${ALLSEG:-.venv/bin/allseg}
OUT=${OUT:-bench/loso}
EPOCHS=${EPOCHS:-5}
DATA=${DATA:-../shared/data}
TXL="$DATA/txl_pbc/train"
[ -d "$TXL" ] || { echo "TXL-PBC not found at $TXL" >&2; exit 1; }
# [[data]] entries of configs/default.toml: 3 BCCD, 4 Zheng, 5 TXL-PBC.
declare -A LEAVE=(
  [all]=""
  [bccd]='data.3.exclude=["*"]'
  [zheng]='data.4.exclude=["*"]'
  [raabin]='data.5.exclude=["raabin_*"]'
  [pbc]='data.5.exclude=["pbc_*"]'
  [bcd]='data.5.exclude=["bcd_*"]'
)
mkdir -p "$OUT/synthetic-data"
names=("$@")
[ ${#names[@]} -gt 0 ] || names=(all bccd zheng raabin pbc bcd)
for name in "${names[@]}"; do
  run="$OUT/$name"
  if [ ! -f "$run/model/config.json" ]; then
    mkdir -p "$run"
    ln -sfn "$(realpath "$OUT/synthetic-data")" "$run/data"  # generate synthetic data once
    extra=()
    [ -n "${LEAVE[$name]}" ] && extra=(--set "${LEAVE[$name]}")
    $ALLSEG train -c configs/default.toml --stage segmenter --base-model default --out "$run" \
      --set "segmenter.epochs=$EPOCHS" "${extra[@]}" > "$run/train.log" 2>&1
  fi
  ev() {  # set name, then evaluate's own arguments
    local set=$1; shift
    [ -f "$run/eval-$set/metrics.json" ] || $ALLSEG evaluate --model "$run/model" \
      --backend onnx --out "$run/eval-$set" "$@" > /dev/null 2>&1
  }
  # Each left-out model is scored on its own source; the reference on all of them.
  case $name in all|bccd) ev bccd --data "$DATA/bccd/BCCD" --format voc --split test;; esac
  case $name in all|zheng) ev zheng --data "$DATA/zheng_wbc/Dataset 1" --format masks \
    --split fold-0/5;; esac
  case $name in all|raabin|pbc|bcd) ev txl --data "$TXL" --format yolo --split fold-0/5;; esac
  echo "$name done"
done
.venv/bin/python bench/loso_table.py "$OUT"
