#!/usr/bin/env bash
# A prepared check of the GPU path, at most 5 minutes on one GPU:
#   1. bench/gpu_throughput.py: for configs/multi-ffdi.yaml's model and resnet18 at 256 px,
#      model-only training images/s (bf16, channels_last), the full loop from a cache
#      (ratio= against model-only), the public baseline's loop, and peak GPU memory;
#   2. one tiny demo workflow run with train.device: cuda, end to end to a checked submission.
# Without an NVIDIA GPU that torch can use it prints one line and exits 0.
#
#   bash bench/gpu_check.sh            # from the repository root, in the project's environment
#   PYTHON=.venv/bin/python bash bench/gpu_check.sh
#
# GPU_CHECK_DEVICE=cpu runs the same steps on the CPU at tiny sizes (a check of the script itself).
set -euo pipefail

cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
BIN=$(dirname "$(command -v "$PYTHON")")
DEVICE=${GPU_CHECK_DEVICE:-cuda}

if [[ "$DEVICE" == cuda ]]; then
    if ! "$PYTHON" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
        echo "gpu_check: no NVIDIA GPU usable by torch on this machine; nothing checked"
        exit 0
    fi
    QUICK=()
else
    QUICK=(--quick)
fi

started=$(date +%s)
echo "== throughput ($DEVICE)"
timeout 200 "$PYTHON" bench/gpu_throughput.py --device "$DEVICE" "${QUICK[@]}"

echo "== tiny workflow, train.device: $DEVICE"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
ln -s "$PWD/scripts" "$work/scripts"  # the rules run python scripts/<stage>.py from the working dir
cat > "$work/config.yaml" <<YAML
seed: 3
data: {source: demo, demo: {n_train: 60, n_val: 40, n_test: 30, min_size: 96, max_size: 160}}
cache: {size: 32}
folds: {k: 2}
model: {name: test_efficientnet, pretrained: false}
train: {epochs: 2, batch_size: 16, lr: 3.0e-3, device: $DEVICE}
report: {gallery_size: 4}
YAML
PATH="$BIN:$PATH" timeout 120 "$BIN/snakemake" -s "$PWD/Snakefile" -d "$work" --configfile "$work/config.yaml" \
    --cores 4 --resources gpu=1 --workflow-profile none > "$work/snakemake.log" 2>&1 \
    || { tail -n 40 "$work/snakemake.log"; echo "gpu_check: the tiny workflow failed"; exit 1; }
"$PYTHON" - "$work/results" "$DEVICE" <<'PY'
import json, sys
from pathlib import Path

import pandas as pd

res, device = Path(sys.argv[1]), sys.argv[2]
sub = pd.read_csv(res / "submission.csv")
assert len(sub) == 30 and sub["y_pred"].between(0, 1).all() and not sub["y_pred"].isna().any(), "bad submission"
folds = [json.loads((res / f"models/fold{k}/metrics.json").read_text()) for k in (0, 1)]
assert all(m["device"] == device for m in folds), [m["device"] for m in folds]
auc = json.loads((res / "reports/metrics.json").read_text())["val"]["auc"]
print(f"tiny workflow: submission of {len(sub)} rows checked; folds trained on {device} "
      f"({folds[0]['precision']}, {folds[0]['images_per_s']:.0f} images/s); val auc={auc:.3f}")
PY
echo "gpu_check: done in $(($(date +%s) - started)) s"
