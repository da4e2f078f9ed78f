#!/usr/bin/env bash
# The GPU part of the bench, short enough for a borrowed GPU machine: PyTorch CUDA (fp32 and
# fp16 autocast), ONNX Runtime CUDA/TensorRT providers and TensorRT engines, whichever load
# there, on a small synthetic set at 256x256 with batch sizes 1 and 8. A backend that is absent
# shows up as a skipped row with its reason; the table is printed and the report kept.
#
#   benchmarks/gpu_check.sh [--checkpoint CKPT] [--artifacts DIR_OR_FILES] [--work DIR] [-- BENCH_OPTIONS...]
#
# Without --checkpoint it trains nothing: it saves a random-init resnet50 ConvSegNet (speed does
# not depend on the weights, and the parity gates are relaxed for it). Without --artifacts it
# exports fp32/fp16/int8 ONNX (and TensorRT engines where TensorRT loads) with
# 'convseg-deploy export', if that command exists. Environment: PYTHON (python3), SIZE (256),
# COUNT (16 frames), ITERS (20), ENCODER (resnet50).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
SIZE="${SIZE:-256}"
COUNT="${COUNT:-16}"
ITERS="${ITERS:-20}"
ENCODER="${ENCODER:-resnet50}"
checkpoint="" artifacts="" work="" extra=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --checkpoint) checkpoint="$2"; shift 2 ;;
    --artifacts) artifacts="$2"; shift 2 ;;
    --work) work="$2"; shift 2 ;;
    --) shift; extra=("$@"); break ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
work="${work:-$(mktemp -d -t convseg-gpu-check.XXXXXX)}"
mkdir -p "$work"

# The installed command if there is one, else the package straight from this checkout.
if command -v convseg-deploy >/dev/null 2>&1; then
  cli=(convseg-deploy)
else
  export PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}"
  cli=("$PYTHON" -m convseg_deploy.cli)
fi
echo "== gpu_check: work folder $work"
command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || echo "(no nvidia-smi)"

data="$work/data"
[[ -d "$data/images" ]] || "${cli[@]}" synth "$data" --count "$COUNT" --size "$SIZE" --seed 0

relaxed=()
if [[ -z "$checkpoint" ]]; then
  checkpoint="$work/random-$ENCODER.pt"
  echo "== saving a random-init $ENCODER ConvSegNet at ${SIZE}x${SIZE} (speed only)"
  PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}" "$PYTHON" - "$checkpoint" "$ENCODER" "$SIZE" <<'EOF'
import sys
import torch
from convseg_deploy.checkpoint import save_checkpoint
from convseg_deploy.config import ModelConfig, PreprocessSpec
from convseg_deploy.model import ConvSegNet
torch.manual_seed(0)
path, encoder, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
save_checkpoint(path, ConvSegNet(ModelConfig(encoder=encoder), preprocess=PreprocessSpec(size=(size, size))))
EOF
  # Random weights put many logits near the threshold: parity numbers mean nothing for them.
  relaxed=(--max-dice-drop 1 --min-agreement 0)
fi

if [[ -z "$artifacts" ]]; then
  if "${cli[@]}" export --help >/dev/null 2>&1; then
    artifacts="$work/artifacts"
    echo "== exporting fp32/fp16/int8 ONNX (and engines where TensorRT loads) to $artifacts"
    "${cli[@]}" export --checkpoint "$checkpoint" --out "$artifacts" --precision fp32,fp16,int8 \
      --calib-data "$data" --calib-count 8 --min-agreement 0 --engine \
      || echo "export did not finish; benching whatever it wrote"
    [[ -n "$(ls "$artifacts"/*.onnx "$artifacts"/*.engine 2>/dev/null)" ]] || artifacts=""
  else
    echo "(no 'export' command in this version: PyTorch rows only)"
  fi
fi

echo "== bench"
args=(bench --checkpoint "$checkpoint" --data "$data" --providers cuda,tensorrt --batch-sizes 1,8
      --warmup 5 --iters "$ITERS" --out "$work/report" --no-progress)
[[ -n "$artifacts" ]] && args+=(--artifacts "$artifacts")
status=0
"${cli[@]}" "${args[@]}" ${relaxed[@]+"${relaxed[@]}"} ${extra[@]+"${extra[@]}"} || status=$?
echo "== report in $work/report (bench exit status $status)"
exit "$status"
