"""`make test` fails, rather than skips, where a part it installs is missing."""

from __future__ import annotations

import pytest

from tests import required


def test_a_missing_part_is_named_with_why(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(required.shutil, "which", lambda name: None)
    assert required.missing_parts("ffmpeg, gstreamer") == ["ffmpeg: the ffmpeg program is not on PATH",
                                                           "gstreamer: gst-launch-1.0 is not on PATH"]
    assert required.missing_parts("") == []


def test_an_unknown_part_is_an_error_not_a_pass() -> None:
    assert required.missing_parts("tritonserverr") == ["tritonserverr: unknown part (known: tritonserver, openvino, ffmpeg, gstreamer)"]


def test_a_module_part_checks_the_module() -> None:
    assert required.CHECKS["openvino"]() in (None, "Python module openvino is not installed")
    assert required._module("surely_no_such_module_here")() == "Python module surely_no_such_module_here is not installed"


def test_the_session_stops_when_make_test_names_a_missing_part(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.conftest import pytest_sessionstart

    monkeypatch.setenv(required.ENV, "ffmpeg")
    monkeypatch.setattr(required.shutil, "which", lambda name: None)
    with pytest.raises(pytest.UsageError, match="ffmpeg: the ffmpeg program is not on PATH.*run `make test`"):
        pytest_sessionstart(None)  # type: ignore[arg-type]
    monkeypatch.delenv(required.ENV)
    pytest_sessionstart(None)  # type: ignore[arg-type]  # nothing named, nothing required
