#!/usr/bin/env bash
# `make demo`: the whole flow on embedded synthetic data, on a 2-core CPU in about 10 minutes.
#   synthesise -> train -> evaluate (runs/demo/metrics.json, Dice >= 0.85 checked)
#   -> export FP32/FP16/INT8/INT8-CPU with their checks -> bench -> bundle -> verify -> predict
#   -> live (the held-out frames as a 30 fps UDP stream on 127.0.0.1, about 10 s).
# Small on purpose: 64x64 frames, a resnet18 encoder and 16 decoder channels (the paper's
# ConvSegNet has 64: same architecture, 16x fewer FLOPs in the CFR blocks that dominate).
set -euo pipefail
OUT=${1:-runs/demo}
BIN=${BIN:-.venv/bin}
CLI="$BIN/convseg-deploy"
SIZE=64
TRAIN_FRAMES=${TRAIN_FRAMES:-1200}
EPOCHS=${EPOCHS:-12}
MIN_DICE=0.85

start=$(date +%s)
rm -rf "$OUT"
mkdir -p "$OUT"
step() { printf '\n== %s (%ds)\n' "$1" "$(( $(date +%s) - start ))"; }

step "synthesise a training set and a held-out set"
"$CLI" synth "$OUT/data/train" --count "$TRAIN_FRAMES" --size "$SIZE" --seed 1
"$CLI" synth "$OUT/data/heldout" --count 60 --size "$SIZE" --seed 2

step "train (resnet18 encoder, 16 decoder channels, ${SIZE}x${SIZE}, $EPOCHS epochs)"
# More distinct synthetic frames rather than more epochs (frames are free, epochs are not). The
# LR follows one cycle over the run (warm-up over the first 10% of the steps to 2e-3, cosine decay
# to 2e-5 by the last step) instead of ReduceLROnPlateau: with the plateau schedule validation
# Dice sat at 0.79-0.82 until one late LR drop lifted the last two epochs over the gate
# (AMD EPYC Zen 2, issue 19), so the demo's result hung on the last epoch and on the CPU's floats.
# Decaying through the run converges before the end and the last epochs move little.
cat > "$OUT/train.yaml" <<YAML
encoder: resnet18
decoder_channels: 16
image_size: $SIZE
batch_size: 8
lr: 0.002
schedule: onecycle
warmup_fraction: 0.1
final_div: 100
augment: false
YAML
"$CLI" train --data "$OUT/data/train" --out "$OUT/train" --config "$OUT/train.yaml" --epochs "$EPOCHS" \
  --device cpu --no-progress

step "evaluate on the held-out frames"
"$CLI" evaluate --checkpoint "$OUT/train/best.pt" --data "$OUT/data/heldout" --split all --json "$OUT/metrics.json"
"$BIN/python" - "$OUT/metrics.json" "$MIN_DICE" "$OUT/train/log.jsonl" <<'PY'
import json, sys
dice = json.load(open(sys.argv[1]))["dice"]
ok = dice >= float(sys.argv[2])
rows = [json.loads(line) for line in open(sys.argv[3]) if line.strip()]
# Whether the result hung on one epoch: the validation Dice of the last three epochs.
print("validation Dice of the last epochs: " + ", ".join(f"{r['epoch']}: {r['val_dice']:.4f}" for r in rows[-3:]))
print(f"held-out Dice {dice:.4f} {'meets' if ok else 'MISSES'} the demo target {sys.argv[2]}")
sys.exit(0 if ok else 1)
PY

step "export FP32, FP16, INT8 (TensorRT) and INT8 (CPU), each verified"
# The recommended settings are the defaults (`convseg-deploy export --help`, docs/export.md):
# percentile ranges, the default verification frames, mask agreement with FP32 and an upper
# confidence bound on the Dice drop. An INT8 model that misses them keeps its most sensitive
# layers in float until it meets them (the export log and manifest.json list them).
"$CLI" export --checkpoint "$OUT/train/best.pt" --out "$OUT/export" --calib-data "$OUT/data/train" --calib-count 200

# bench's default gates (`convseg-deploy bench --help`) on the 60 held-out frames, which the
# export never saw.
step "bench PyTorch and ONNX Runtime on the held-out frames"
"$CLI" bench --checkpoint "$OUT/train/best.pt" --artifacts "$OUT/export" --data "$OUT/data/heldout" \
  --backends torch,onnxruntime --providers cpu --batch-sizes 1,8 --warmup 3 --iters 20 --out "$OUT/bench"

# OpenVINO (the [openvino] extra), against the same PyTorch FP32 reference: f32 inference of each
# file, a throughput row per file, bf16 where the CPU has AMX/AVX512-BF16. Not the TensorRT-flavour
# int8 file, which OpenVINO computes far from FP32 (docs/export.md; predict never gives it to OpenVINO).
step "bench OpenVINO next to PyTorch on the held-out frames"
"$CLI" bench --checkpoint "$OUT/train/best.pt" --data "$OUT/data/heldout" \
  --artifacts "$OUT/export/model.fp32.onnx,$OUT/export/model.fp16.onnx,$OUT/export/model.int8-cpu.onnx" \
  --backends torch,openvino --providers cpu --batch-sizes 1,8 --warmup 3 --iters 20 --out "$OUT/bench-openvino"

step "bundle, verify, predict with the int8-cpu model"
"$CLI" bundle --artifacts "$OUT/export" --out "$OUT/bundle" --report "$OUT/bench/report.json"
"$CLI" verify "$OUT/bundle"
"$CLI" predict --model "$OUT/export/model.int8-cpu.onnx" "$OUT/data/heldout/images" --out "$OUT/predict" \
  --overlay --heatmap --backend onnxruntime

step "live: the held-out frames as a 30 fps MPEG-TS stream over loopback UDP, for about 10 s"
# ffmpeg makes a video of the 60 held-out frames; benchmarks.senders loops it as a camera encoder
# sends (ffmpeg -re, 30 fps); live reads it for 10 s, records the overlay and writes the summary.
ffmpeg -hide_banner -loglevel error -nostdin -y -framerate 30 -pattern_type glob -i "$OUT/data/heldout/images/*.jpg" \
  -c:v mpeg4 -q:v 2 "$OUT/data/heldout.mp4"
PORT=$("$BIN/python" -c "from benchmarks.senders import free_udp_port; print(free_udp_port())")
"$BIN/python" -m benchmarks.senders "$OUT/data/heldout.mp4" "udp://127.0.0.1:$PORT?pkt_size=1316" --seconds 20 &
SENDER=$!
trap 'kill $SENDER 2>/dev/null || true' EXIT
"$CLI" live --model "$OUT/export/model.int8-cpu.onnx" --backend onnxruntime --source "udp://127.0.0.1:$PORT" \
  --duration 10 --out "$OUT/live" --record "$OUT/live/live.mp4"
kill $SENDER 2>/dev/null || true
wait $SENDER 2>/dev/null || true
"$BIN/python" - "$OUT/live/summary.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
keys = ("frames_in", "frames_inferred", "frames_skipped", "frames_out", "fps_in", "fps_inferred", "fps_out", "ended_by")
print("live summary: " + ", ".join(f"{k} {s[k]}" for k in keys))
print(f"latency_ms {s['latency_ms']}, mask_age_ms {s['mask_age_ms']}")
sys.exit(0 if s["frames_out"] == s["frames_in"] > 0 and s["ended_by"] == "duration" else 1)
PY

step "done: metrics.json, export/, bench/, bundle/, predict/, live/ under $OUT"
