"""The NNCF candidate: without NNCF (not a dependency of the project) it says what to install, exit 1."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from convseg_deploy.exporters import int8_nncf


def test_without_nncf_one_line_and_exit_1(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "nncf", None)  # import nncf raises ImportError, installed or not
    monkeypatch.setattr(sys, "argv", ["int8_nncf", str(tmp_path / "model.fp32.onnx"), "--calib-data", str(tmp_path),
                                      "--out", str(tmp_path / "out.onnx")])
    assert int8_nncf.main() == 1
    err = capsys.readouterr().err
    assert err.startswith("Error: NNCF is not installed") and "pip install nncf" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out.onnx").exists()
