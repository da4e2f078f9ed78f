#!/usr/bin/env bash
# The GPU part of the bench, short enough for a borrowed GPU machine: PyTorch CUDA (fp32 and
# fp16 autocast), ONNX Runtime CUDA/TensorRT providers and TensorRT engines, on a small synthetic
# set at 256x256 with batch sizes 1 and 8. It stops at the first step that fails (export, engine
# build, bench) with a non-zero exit, and the bench must produce TensorRT rows (--require): a GPU
# machine where TensorRT does not run fails the check instead of passing with skipped rows.
#
#   benchmarks/gpu_check.sh [--checkpoint CKPT] [--artifacts DIR_OR_FILES] [--work DIR] [-- BENCH_OPTIONS...]
#
# Without --checkpoint it trains nothing: it saves a random-init resnet50 ConvSegNet (speed does
# not depend on the weights, and the parity gates are relaxed for it). Without --artifacts it
# exports fp32/fp16/int8 ONNX and builds fp16 and int8 TensorRT engines. Environment: PYTHON
# (python3), SIZE (256), COUNT (16 frames), ITERS (200: p99 needs 100 or more), WARMUP_TIME (2 s),
# DEVICE (0), ENCODER (resnet50), REQUIRE (tensorrt: comma list for bench --require).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
SIZE="${SIZE:-256}"
COUNT="${COUNT:-16}"
ITERS="${ITERS:-200}"
WARMUP_TIME="${WARMUP_TIME:-2}"
DEVICE="${DEVICE:-0}"
ENCODER="${ENCODER:-resnet50}"
REQUIRE="${REQUIRE:-tensorrt}"
checkpoint="" artifacts="" work="" extra=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --checkpoint) checkpoint="$2"; shift 2 ;;
    --artifacts) artifacts="$2"; shift 2 ;;
    --work) work="$2"; shift 2 ;;
    --) shift; extra=("$@"); break ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
work="${work:-$(mktemp -d -t convseg-gpu-check.XXXXXX)}"
mkdir -p "$work"
trap 'echo "== gpu_check FAILED (line $LINENO, exit $?): work folder $work" >&2' ERR

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
  artifacts="$work/artifacts"
  echo "== exporting fp32/fp16/int8 ONNX to $artifacts"
  "${cli[@]}" export --checkpoint "$checkpoint" --out "$artifacts" --precision fp32,fp16,int8 \
    --calib-data "$data" --calib-count 8 --min-agreement 0 --max-dice-drop 1
  for precision in fp16 int8; do
    echo "== building the $precision TensorRT engine on GPU $DEVICE"
    "${cli[@]}" build-engine "$artifacts/model.$precision.onnx" --max-batch 8 --device "$DEVICE"
  done
fi

echo "== bench"
args=(bench --checkpoint "$checkpoint" --data "$data" --artifacts "$artifacts" --providers cuda,tensorrt
      --batch-sizes 1,8 --warmup 5 --warmup-time "$WARMUP_TIME" --iters "$ITERS" --device "$DEVICE"
      --require "$REQUIRE" --out "$work/report" --no-progress)
"${cli[@]}" "${args[@]}" ${relaxed[@]+"${relaxed[@]}"} ${extra[@]+"${extra[@]}"}
echo "== gpu_check passed; report in $work/report"
