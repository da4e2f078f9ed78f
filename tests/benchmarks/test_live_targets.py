"""The verdicts of benchmarks.live_targets, on made-up runs whose answers are known."""

from __future__ import annotations

from typing import Any

import pytest

from convseg_deploy.benchmarks.live_targets import around, judge_file, judge_stream, thread_counts


def _records(latencies: list[float | None]) -> list[dict[str, Any]]:
    return [{"index": i, "inferred": value is not None, "latency_ms": value} for i, value in enumerate(latencies)]


def _summary(frames: int, inferred: int, fps_in: float = 30.0, fps_out: float = 30.0, p99: float = 300.0,
             out: int | None = None) -> dict[str, Any]:
    return {"frames_in": frames, "frames_inferred": inferred, "frames_skipped": frames - inferred,
            "frames_out": frames if out is None else out, "fps_in": fps_in, "fps_out": fps_out,
            "fps_inferred": inferred / (frames / fps_in), "latency_ms": {"p50": 250.0, "p99": p99, "max": p99},
            "mask_age_ms": {}, "ended_by": "duration", "outputs": {"record": {"frames": frames if out is None else out}}}


SLOW_MODEL = {"fps": 4.0, "latency_ms": {"p99": 260.0, "max": 270.0}}


def test_a_steady_run_meets_every_target() -> None:
    records = _records([250.0 if i % 8 == 0 else None for i in range(400)])
    verdict = judge_stream(_summary(400, 50, p99=300.0), records, SLOW_MODEL)
    assert verdict["passed"] == {"latency_does_not_grow": True, "latency_p99_within_model_p99_plus_two_intervals": True,
                                 "video_never_waits": True, "pipeline_costs_the_model_nothing": True}
    assert verdict["numbers"]["latency_p99_bound"] == round(260.0 + 2000 / 30, 2)
    assert verdict["numbers"]["fps_inferred_vs_bench"] == round(3.75 / 4.0, 3)  # 50 of 400 at 30 fps


def test_growing_latency_a_waiting_video_and_a_slow_pipeline_miss() -> None:
    growing = _records([100.0 + i if i % 8 == 0 else None for i in range(400)])  # 100 ms -> about 490 ms
    verdict = judge_stream(_summary(400, 40, fps_out=29.0, p99=500.0), growing, SLOW_MODEL)
    assert verdict["numbers"]["latency_growth"] > 1.2 and verdict["numbers"]["fps_inferred_vs_bench"] == 0.75
    assert not any(verdict["passed"].values())
    dropped = judge_stream(_summary(400, 50, out=390), _records([250.0] * 400), SLOW_MODEL)
    assert dropped["passed"]["video_never_waits"] is False


def test_a_model_faster_than_the_source_is_judged_on_a_file() -> None:
    fast = {"fps": 300.0, "latency_ms": {"p99": 5.0, "max": 6.0}}
    stream = judge_stream(_summary(400, 400, p99=8.0), _records([3.0] * 400), fast)
    assert "pipeline_costs_the_model_nothing" not in stream["passed"] and not stream["numbers"]["model_slower_than_source"]
    run = {"frames_in": 3000, "frames_inferred": 3000, "fps_inferred": 280.0}
    assert judge_file([(run, 300.0, 300.0)])["passed"] == {"pipeline_costs_the_model_nothing": True,
                                                           "reference_held": True}
    slow = {**run, "fps_inferred": 260.0}
    assert judge_file([(slow, 300.0, 300.0)])["passed"]["pipeline_costs_the_model_nothing"] is False


def test_file_rounds_are_judged_against_their_own_bench_rows_and_by_the_median() -> None:
    run = {"frames_in": 3000, "frames_inferred": 3000}
    # the machine sped up by 8% between the rows: each round against the mean of its two rows
    verdict = judge_file([({**run, "fps_inferred": 280.0}, 290.0, 313.2)])
    assert verdict["numbers"]["fps_inferred_vs_bench"] == round(280.0 / 301.6, 3)
    # one round whose rows moved by 25% is left out; the median of the two that held decides
    rounds = [({**run, "fps_inferred": 280.0}, 300.0, 300.0), ({**run, "fps_inferred": 150.0}, 300.0, 375.0),
              ({**run, "fps_inferred": 250.0}, 300.0, 300.0)]
    verdict = judge_file(rounds)
    assert verdict["numbers"]["rounds_held"] == 2 and verdict["passed"]["reference_held"] is True
    assert verdict["numbers"]["fps_inferred_vs_bench"] == round((280.0 / 300 + 250.0 / 300) / 2, 3)
    assert verdict["passed"]["pipeline_costs_the_model_nothing"] is False  # median 0.883 < 0.9
    # most rounds' rows moved: no verdict on the pipeline
    moved = judge_file([({**run, "fps_inferred": 280.0}, 300.0, 375.0), ({**run, "fps_inferred": 280.0}, 300.0, 375.0),
                        ({**run, "fps_inferred": 280.0}, 300.0, 300.0)])
    assert moved["passed"] == {"pipeline_costs_the_model_nothing": True, "reference_held": False}
    # a frame left uninferred fails the every-frame file run
    lost = judge_file([({**run, "frames_inferred": 2999, "fps_inferred": 290.0}, 300.0, 300.0)])
    assert lost["passed"]["pipeline_costs_the_model_nothing"] is False


def test_steal_share_reads_the_hypervisors_share_from_proc_stat(tmp_path) -> None:
    from convseg_deploy.benchmarks.machine import cpu_times, steal_share

    stat = tmp_path / "stat"
    stat.write_text("cpu  100 0 20 800 0 0 0 5 0 0\ncpu0 50 0 10 400 0 0 0 2 0 0\n")
    before = cpu_times(stat)
    stat.write_text("cpu  190 0 30 850 0 0 0 55 0 0\ncpu0 95 0 15 425 0 0 0 27 0 0\n")
    assert before == [100, 0, 20, 800, 0, 0, 0, 5]
    assert steal_share(before, cpu_times(stat)) == 0.25  # 50 of 200 ticks went to other guests
    assert cpu_times(tmp_path / "missing") is None and steal_share(None, before) is None
    assert steal_share(before, before) is None  # no time passed: no share


def test_a_stream_is_judged_against_the_mean_of_the_bench_rows_around_it() -> None:
    before = {"fps": 1.5, "latency_ms": {"p99": 740.0, "max": 750.0}}
    after = {"fps": 1.3, "latency_ms": {"p99": None, "max": 800.0}}  # too few iterations: its maximum
    reference = around(before, after)
    assert reference["fps"] == pytest.approx(1.4) and reference["latency_ms"]["p99"] == pytest.approx(770.0)
    records = _records([700.0 if i % 20 == 0 else None for i in range(400)])
    verdict = judge_stream(_summary(400, 20, p99=830.0), records, reference)
    assert verdict["numbers"]["latency_p99_bound"] == round(770.0 + 2000 / 30, 2)
    assert verdict["passed"]["latency_p99_within_model_p99_plus_two_intervals"] is True  # 830 <= 836.7
    assert judge_stream(_summary(400, 20, p99=830.0), records, before)["passed"][
        "latency_p99_within_model_p99_plus_two_intervals"] is False  # against the first row alone: 806.7


def test_thread_counts_are_one_for_all_models_or_one_per_model() -> None:
    assert thread_counts("2", ["demo", "full"]) == {"demo": 2, "full": 2}
    assert thread_counts("full=2, demo=1", ["demo", "full"]) == {"demo": 1, "full": 2}
    for bad, says in (("demo=1", "no count for full"), ("demo=1,full=2,big=4", "big not among --models demo,full"),
                      ("0", "'0' is not a thread count"), ("demo=two,full=2", "'two' is not a thread count"),
                      ("demo:1", "'demo:1' is not a thread count")):
        with pytest.raises(ValueError, match=says):
            thread_counts(bad, ["demo", "full"])
