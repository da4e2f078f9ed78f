#!/bin/bash
# 1 process vs 2 torchrun processes on the CPU: the same data, options and global batch (8),
# run in the order 1-2-2-1 so that a drift of the machine's load hits both alike.
# Usage: bash benchmarks/ddp_cpu_compare.sh [OUT]   (shared machines: under the heavy-job lock)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
OUT=${1:-runs/ddp-compare}
[ -d "$OUT/data" ] || $PY -m convseg_deploy.cli synth "$OUT/data" --count 160 --size 64 --seed 5
COMMON=(--data "$OUT/data" --encoder resnet18 --decoder-channels 16 --image-size 64 --epochs 3 --lr 2e-3
        --device cpu --seed 0 --no-progress --no-augment)
date -u; nproc; uptime
for tag in 1a 2a 2b 1b; do
  rm -rf "$OUT/run$tag"
  start=$(date +%s.%N)
  if [[ $tag == 1* ]]; then
    $PY -m convseg_deploy.cli train "${COMMON[@]}" --out "$OUT/run$tag" --batch-size 8 > "$OUT/out$tag.txt" 2>&1
  else
    $PY -m convseg_deploy.cli train "${COMMON[@]}" --out "$OUT/run$tag" --batch-size 4 --nproc-per-node 2 \
      > "$OUT/out$tag.txt" 2>&1
  fi
  end=$(date +%s.%N)
  echo "$tag wall $(echo "$end - $start" | bc) s; $(uptime)"
  $PY -c "import json; rows = [json.loads(l) for l in open('$OUT/run$tag/log.jsonl')]; \
print([(r['epoch'], r['seconds'], round(r['val_dice'], 4)) for r in rows])"
done
