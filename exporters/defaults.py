"""The export's recommended settings: the defaults of ``convseg-deploy export``, its help text and
``exporters.pipeline.export_artifacts`` all read them here (no heavy imports: ``--help`` loads it).

Why these values (measurements: docs/export.md):
* calibration ranges per flavour ("auto"): percentile ranges for the TensorRT-flavour (symmetric)
  int8 file, where min/max ranges let one outlier stretch a tensor's scale and lose Dice; min/max
  ranges for int8-cpu (asymmetric UINT8), where percentile ranges clip activations the model needs:
  on the one-cycle demo checkpoint (AMD EPYC Zen 5, 2026-12-02) percentile int8-cpu lost 0.0157
  Dice on the 64 verification frames and min/max 0.0004, while int8 kept 0.0004 with percentile;
* 64 verification frames and an upper confidence bound on the Dice drop: the check must see a
  loss that ``bench`` later measures on a held-out set; the mean over 16 frames could not.
"""

from __future__ import annotations

from pathlib import Path

CALIB_METHODS = ("minmax", "entropy", "percentile")
AUTO_CALIB_METHOD = "auto"  # the range method each INT8 flavour quantizes best with (above)
CALIB_METHOD_BY_FLAVOUR = {"int8": "percentile", "int8-cpu": "minmax"}
DEFAULT_CALIB_METHOD = AUTO_CALIB_METHOD


def calib_method_for(flavour: str, method: str) -> str:
    """The range method ``flavour`` is calibrated with: ``method``, or its own under "auto"."""
    return CALIB_METHOD_BY_FLAVOUR[flavour] if method == AUTO_CALIB_METHOD else method


def range_cache_for(cache: Path, method: str) -> Path:
    """The range cache of one range method beside ``cache`` (calibration-cache.json ->
    calibration-cache.percentile.json): under "auto" the two flavours calibrate with different
    methods, and one file keyed by method would make each export recalibrate the other's."""
    return cache.with_name(f"{cache.stem}.{method}{cache.suffix}")


DEFAULT_CALIB_COUNT = 200
DEFAULT_VERIFY_COUNT = 64

# The Dice-drop check passes when the one-sided upper bound of this confidence on the mean
# per-frame drop (Student's t over the verification frames) is within --max-dice-drop; fewer
# frames give a wider bound, so a small set can refuse a model whose mean drop looks fine.
DROP_CONFIDENCE = 0.95
MIN_BOUND_FRAMES = 2  # a t bound needs a spread, so at least two frames
# max_dice_drop="auto" (the default): DEFAULT_MAX_DICE_DROP (artifacts.names, bench's gate too) when
# the verification frames have ground-truth masks and enough of them for a bound, else not checked,
# with the reason logged and written to the manifest. A number given explicitly is always checked.
AUTO_DICE_DROP = "auto"

# FP32's numeric parity with PyTorch (largest relative logit error) is not a statistical check:
# a few frames show a wrong export, so it runs on at most this many verification frames.
FP32_PARITY_FRAMES = 16
