"""ModelOpt's version range is one fact: the code that patches its internals and setup.cfg agree."""

from __future__ import annotations

import pytest

from convseg_deploy.errors import ConvSegError
from convseg_deploy.exporters.int8_modelopt import MODELOPT_RANGE, check_modelopt_version
from tests.test_install import setup_cfg


def test_setup_cfg_pins_the_range_the_code_was_tested_with() -> None:
    lines = [line.split("#")[0].strip() for line in setup_cfg()["options.extras_require"]["export"].splitlines()]
    assert f"nvidia-modelopt{MODELOPT_RANGE}" in lines


@pytest.mark.parametrize("version", ["0.47.0", "0.47.3rc1"])
def test_a_tested_version_passes(version: str) -> None:
    check_modelopt_version(version)


@pytest.mark.parametrize("version", ["0.46.2", "0.48.0", "1.0", "dev"])
def test_another_version_is_one_line_naming_the_range(version: str) -> None:
    with pytest.raises(ConvSegError, match=rf"nvidia-modelopt {version} is installed; .*tested with >=0.47,<0.48"):
        check_modelopt_version(version)
