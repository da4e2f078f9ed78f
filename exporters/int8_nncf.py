"""A candidate INT8 file made by OpenVINO's own quantizer, NNCF, beside ``int8-cpu``.

    python -m exporters.int8_nncf EXPORT/model.fp32.onnx --calib-data DIR --out model.int8-nncf.onnx [--calib-count 48]

``nncf.quantize`` on the FP32 ONNX file (NNCF's ONNX backend, CPU target, its default
placement) writes a Q/DQ ONNX file that ONNX Runtime and OpenVINO both run, so ``bench`` measures
it side by side with our ``int8-cpu`` file (issue 23: keep it if it is faster at the same
agreement). It carries the FP32 file's metadata with ``precision`` int8-cpu (a CPU INT8 file;
NNCF chooses its own placement and signedness) and ``quantizer`` nncf. NNCF is not a dependency of the
project: without it this exits 1 naming the package to install.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from convseg_deploy.errors import ConvSegError, MissingDependencyError


def quantize_nncf(fp32: Path, calib_data: Path, out: Path, calib_count: int = 48) -> Path:
    """Write ``out``: ``fp32`` quantized by NNCF on ``calib_count`` frames of ``calib_data``."""
    try:
        import nncf
    except ImportError as exc:
        raise MissingDependencyError(f"NNCF is not installed ({exc}): pip install nncf") from None
    import onnx

    from convseg_deploy.artifacts.onnx_meta import get_metadata, load_onnx, preprocess_from_metadata, set_metadata
    from convseg_deploy.fsutil import atomic_path
    from convseg_deploy.exporters.calibration import calibration_batches, load_frames

    model = load_onnx(fp32)
    meta = get_metadata(model, str(fp32))
    spec, _ = preprocess_from_metadata(meta, str(fp32))
    frames = load_frames(calib_data, spec.size, calib_count=calib_count, calib_batch=1, verify_count=1,
                         need_calibration=True)
    batches = calibration_batches(frames.calib, spec, 1)
    name = model.graph.input[0].name
    dataset = nncf.Dataset(batches, lambda batch: {name: batch})
    quantized = nncf.quantize(model, dataset, target_device=nncf.TargetDevice.CPU, subset_size=len(batches))
    set_metadata(quantized, {**meta, "precision": "int8-cpu", "quantizer": f"nncf {nncf.__version__}"})
    with atomic_path(out) as tmp:
        onnx.save(quantized, str(tmp))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("fp32", type=Path)
    parser.add_argument("--calib-data", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--calib-count", type=int, default=48)
    args = parser.parse_args()
    try:
        print(f"wrote {quantize_nncf(args.fp32, args.calib_data, args.out, args.calib_count)}")
    except ConvSegError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
