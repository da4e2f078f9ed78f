"""The verdicts of benchmarks.export_defaults_target, on made-up runs whose answers are known."""

from __future__ import annotations

from convseg_deploy.benchmarks.export_defaults_target import judge


def _numbers(drop: float | None, default_exit: int = 0, minmax_exit: int = 1, minmax_drop: float | None = None) -> dict:
    return {"default_export_exit": default_exit, "default_int8_check": {"dice_drop": 0.0} if default_exit == 0 else None,
            "default_int8_bench": {"dice_drop": drop} if drop is not None else None, "minmax_export_exit": minmax_exit,
            "minmax_int8_bench": {"dice_drop": minmax_drop} if minmax_drop is not None else None}


def test_the_target_met() -> None:
    assert all(judge(_numbers(0.004), minmax_refused=True).values())
    # minmax passed by the check and bench agrees: no false alarm demanded
    assert all(judge(_numbers(0.004, minmax_exit=0, minmax_drop=-0.0006), minmax_refused=False).values())


def test_each_miss_is_named() -> None:
    assert list(judge(_numbers(0.0256), minmax_refused=True).values()) == [True, False, True]
    # the check passed a minmax file that bench finds 2.6 points worse (the finding)
    assert list(judge(_numbers(0.004, minmax_exit=0, minmax_drop=0.0256), minmax_refused=False).values()) == [True, True, False]
    assert list(judge(_numbers(0.004, minmax_exit=0), minmax_refused=False).values()) == [True, True, False]  # not benched
    assert list(judge(_numbers(0.004, minmax_exit=0), minmax_refused=True).values()) == [True, True, False]  # exit 0 yet no file
    assert list(judge(_numbers(None, default_exit=1), minmax_refused=True).values()) == [False, False, True]
