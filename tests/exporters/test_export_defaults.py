"""The export's recommended defaults and the statistics of its accuracy check: which frames it
runs on, the upper bound on the Dice drop, and what it refuses before any work starts."""

from __future__ import annotations

import builtins
import importlib.util
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from click.testing import CliRunner

from convseg_deploy.artifacts.names import DEFAULT_MAX_DICE_DROP
from convseg_deploy.cli import main
from convseg_deploy.errors import ConvSegError
from convseg_deploy.exporters.calibration import CALIB_DATA_NEEDED, verification_indices
from convseg_deploy.exporters.defaults import AUTO_DICE_DROP, DEFAULT_CALIB_METHOD, DEFAULT_VERIFY_COUNT, DROP_CONFIDENCE
from convseg_deploy.exporters.dependencies import check_export_dependencies
from convseg_deploy.exporters.onnx_export import DEFAULT_OPSET, MAX_OPSET, MIN_OPSET
from convseg_deploy.exporters.pipeline import export_artifacts, resolve_dice_drop
from convseg_deploy.exporters.sensitivity import Score, mean_upper_bound


def test_unseen_frames_come_first_then_calibration_frames_fill_up() -> None:
    calibrated = set(range(0, 60, 2))  # 30 of 60 frames
    indices, unseen = verification_indices(60, calibrated, 40)
    assert len(indices) == 40 == len(set(indices)) and unseen == 30
    assert set(range(1, 60, 2)) <= set(indices)  # every unseen frame, then 10 calibration frames
    indices, unseen = verification_indices(60, calibrated, 64)
    assert indices == list(range(60)) and unseen == 30  # a small folder: all its frames, the bench's set
    indices, unseen = verification_indices(60, calibrated, 8)
    assert unseen == 8 and not set(indices) & calibrated


def test_the_bound_is_students_t_and_widens_with_fewer_frames() -> None:
    drops = np.array([0.0, 0.01, -0.005, 0.02, 0.0, 0.003])
    from scipy.stats import t

    expected = drops.mean() + t.ppf(DROP_CONFIDENCE, 5) * drops.std(ddof=1) / np.sqrt(6)
    assert mean_upper_bound(drops, DROP_CONFIDENCE) == pytest.approx(expected)
    assert mean_upper_bound(np.tile(drops, 10), DROP_CONFIDENCE) < mean_upper_bound(drops, DROP_CONFIDENCE)
    assert mean_upper_bound(drops[:1], DROP_CONFIDENCE) == float("inf")


def test_a_fine_looking_mean_with_a_wide_bound_is_refused() -> None:
    # one frame of 16 loses a whole polyp: the mean drop is small, its bound is not
    score = Score(agreement=0.99, dice_drop=0.006, mse=0.0, dice_drop_bound=0.0185, frames=16)
    assert not score.meets(0.97, 0.01)
    assert score.meets(0.97, 0.02) and score.meets(0.97, None)
    assert "upper 95% bound +0.0185 over 16 frames" in score.describe()


def _frames(count: int, masks: bool) -> SimpleNamespace:
    return SimpleNamespace(verify=np.zeros((count, 4, 4, 3), np.uint8), source="DIR (test)",
                           verify_masks=np.zeros((count, 4, 4), bool) if masks else None)


def test_auto_dice_drop_is_the_default_where_masks_exist_and_says_why_not_elsewhere() -> None:
    limit, note = resolve_dice_drop(AUTO_DICE_DROP, _frames(60, True), "DIR")
    assert limit == DEFAULT_MAX_DICE_DROP and "over 60 frames" in note
    assert resolve_dice_drop(AUTO_DICE_DROP, _frames(60, False), "DIR")[0] is None
    assert resolve_dice_drop(AUTO_DICE_DROP, _frames(1, True), "DIR")[0] is None
    assert resolve_dice_drop(None, _frames(60, True), "DIR")[0] is None
    assert resolve_dice_drop(0.02, _frames(60, True), "DIR")[0] == 0.02
    with pytest.raises(ConvSegError, match="needs ground-truth masks"):
        resolve_dice_drop(0.02, _frames(60, False), "DIR")
    with pytest.raises(ConvSegError, match="at least 2 verification frames"):
        resolve_dice_drop(0.02, _frames(1, True), "DIR")


def test_int8_without_calib_data_is_refused_before_the_checkpoint_is_read(tmp_path: Path) -> None:
    with pytest.raises(ConvSegError) as info:
        export_artifacts(tmp_path / "missing.pt", tmp_path / "out", log=lambda _m: None)
    assert str(info.value) == CALIB_DATA_NEEDED and not (tmp_path / "out").exists()


def test_a_missing_modelopt_is_named_before_any_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def no_modelopt(name: str, *args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        if name.startswith("modelopt"):
            raise ImportError("No module named 'modelopt'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_modelopt)
    # None in sys.modules: importlib.import_module raises too, also where an earlier test loaded ModelOpt
    monkeypatch.setitem(__import__("sys").modules, "modelopt.onnx.quantization", None)
    with pytest.raises(ConvSegError, match=r"int8 \(TensorRT\) file .*needs modelopt.*convseg-deploy\[export\]"):
        export_artifacts(tmp_path / "missing.pt", tmp_path / "out", ("fp32", "int8"), calib_data="synth",
                         log=lambda _m: None)
    assert not (tmp_path / "out").exists()  # nothing was started, not even the folder
    check_export_dependencies(("fp32", "int8-cpu"), dice_drop_bound=True)  # the others are here


def test_a_missing_scipy_is_named_only_when_the_bound_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "scipy" else real(name, *a))
    check_export_dependencies(("fp32",), dice_drop_bound=False)
    with pytest.raises(ConvSegError, match=r"Dice-drop bound .*needs scipy.*\[export\]"):
        check_export_dependencies(("fp32",), dice_drop_bound=True)


def test_help_quotes_the_defaults_from_their_constants() -> None:
    text = " ".join(CliRunner().invoke(main, ["export", "--help"], terminal_width=400).output.split())
    assert f"[default: {DEFAULT_CALIB_METHOD}]" in text and DEFAULT_CALIB_METHOD == "auto"
    assert "auto: percentile for int8, minmax for int8-cpu." in text
    assert f"ONNX opset ({MIN_OPSET}-{MAX_OPSET}). [default: {DEFAULT_OPSET}]" in text
    assert f"[{DEFAULT_MAX_DICE_DROP} when the frames have masks]" in text
    assert f"[default: {DEFAULT_VERIFY_COUNT};" in text
    assert "REQUIRED for int8 and int8-cpu, so for the default --precision" in text


def test_the_command_list_says_int8_needs_calib_data() -> None:
    listing = CliRunner().invoke(main, ["--help"]).output
    line = next(row for row in listing.splitlines() if row.strip().startswith("export "))
    assert "--calib-data" in line and "..." not in line


def test_auto_calibrates_each_flavour_with_its_own_method() -> None:
    from convseg_deploy.exporters.defaults import calib_method_for

    assert calib_method_for("int8", "auto") == "percentile" and calib_method_for("int8-cpu", "auto") == "minmax"
    assert calib_method_for("int8", "minmax") == "minmax" and calib_method_for("int8-cpu", "entropy") == "entropy"
