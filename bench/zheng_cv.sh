#!/usr/bin/env bash
# 5-fold cross-validation on Zheng Dataset 1: train configs/zheng_cv.toml with fold K held
# out, score fold K with the trained model and with the classical baseline, then print the
# per-fold and mean Dice. Results: bench/zheng_cv/fold<K>/{model,eval,classical}.
# Extra arguments go to every `allseg train`, e.g. the reference U-Net of `make bench`:
#   OUT=bench/zheng_cv_reference bash bench/zheng_cv.sh --set segmenter.arch=unet_small \
#     --set 'segmenter.kwargs={base_channels=64, depth=4}'
set -euo pipefail
cd "$(dirname "$0")/.."
ALLSEG=${ALLSEG:-.venv/bin/allseg}
OUT=${OUT:-bench/zheng_cv}
ZHENG=${ZHENG:-../shared/data/zheng_wbc/Dataset 1}
[ -d "$ZHENG" ] || { echo "Zheng Dataset 1 not found at $ZHENG" >&2; exit 1; }
for k in 0 1 2 3 4; do
  run="$OUT/fold$k"
  if [ ! -f "$run/eval/metrics.json" ]; then
    $ALLSEG train -c configs/zheng_cv.toml --stage segmenter --base-model default \
      --set "data.0.path=$ZHENG" --set "data.0.hold_out=[5, $k]" --out "$run" "$@"
    $ALLSEG evaluate --model "$run/model" --backend onnx --data "$ZHENG" --format masks \
      --split "fold-$k/5" --um-per-px 0.17 --out "$run/eval" > /dev/null
    $ALLSEG evaluate --baseline classical --data "$ZHENG" --format masks --split "fold-$k/5" \
      --um-per-px 0.17 --out "$run/classical" > /dev/null
  fi
  echo "fold $k done"
done
.venv/bin/python bench/cv_table.py "$OUT"
