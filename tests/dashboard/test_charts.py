"""The step waterfall and the throughput chart, computed from records."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from stackshift import RunInfo, RunStatus, StepInfo
from stackshift.dashboard.charts import AXIS, throughput, waterfall
from stackshift.dashboard.data import MinuteCount

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def at(ms: int) -> datetime:
    return T0 + timedelta(milliseconds=ms)


def run_with(steps: list[tuple[str, int, int]], **fields: object) -> RunInfo:
    values: dict[str, object] = {
        "run_id": "01" + "A" * 24 + ".q",
        "job": "j",
        "queue": "q",
        "status": RunStatus.COMPLETED,
        "attempt": 1,
        "payload": {},
        "steps": [StepInfo(s, None, a, at(ms)) for s, a, ms in steps],
        "created_at": at(0),
        "started_at": at(100),
        "finished_at": at(1000),
    }
    values.update(fields)
    return RunInfo(**values)  # type: ignore[arg-type]


def test_each_step_runs_from_the_checkpoint_before_it() -> None:
    fall = waterfall(run_with([("a", 1, 300), ("b", 1, 700), ("c", 1, 1000)]), at(5000))
    assert [b.duration for b in fall.bars] == [
        timedelta(milliseconds=200),  # from the attempt's start
        timedelta(milliseconds=400),
        timedelta(milliseconds=300),
    ]
    assert [b.x for b in fall.bars] == [100.0, 300.0, 700.0]  # 1 s over 1000 units
    assert [b.width for b in fall.bars] == [200.0, 400.0, 300.0]
    assert fall.span == timedelta(seconds=1) and fall.queued_width == 100.0


def test_a_retried_run_knows_only_its_current_attempts_start() -> None:
    run = run_with(
        [("a", 1, 300), ("b", 2, 2500), ("c", 2, 2600)],
        attempt=2, started_at=at(2000), finished_at=at(2600),
    )  # fmt: skip
    bars = waterfall(run, at(9000)).bars
    assert bars[0].duration is None  # attempt 1's start is not kept on the record
    assert bars[1].duration == timedelta(milliseconds=500)  # from attempt 2's start
    assert bars[2].duration == timedelta(milliseconds=100)


def test_a_step_recorded_before_the_start_was_written_has_no_duration() -> None:
    # A worker may run a step before Redis records the start (early start).
    bars = waterfall(run_with([("a", 1, 50)], started_at=at(80)), at(5000)).bars
    assert bars[0].duration is None and bars[0].width > 0


def test_bars_stay_inside_the_axis_and_a_running_run_ends_now() -> None:
    run = run_with([("a", 1, 10), ("b", 1, 11)], status=RunStatus.RUNNING,
                   finished_at=None, started_at=at(0))  # fmt: skip
    fall = waterfall(run, at(2000))
    assert fall.end == at(2000)
    for bar in fall.bars:
        assert 0 <= bar.x and bar.x + bar.width <= AXIS and bar.width >= 3


def test_a_run_without_times_draws_nothing() -> None:
    run = run_with([], created_at=None, started_at=None, finished_at=None)
    assert waterfall(run, at(0)).bars == [] and waterfall(run, at(0)).span is None


def test_throughput_sums_the_window_and_scales_to_the_busiest_minute() -> None:
    minutes = [MinuteCount(at(i * 60_000), completed=c, failed=f)
               for i, (c, f) in enumerate([(0, 0), (8, 2), (3, 1)])]  # fmt: skip
    chart = throughput(minutes)
    assert (chart.completed, chart.failed, chart.peak) == (11, 3, 10)
    assert chart.failure_rate == 3 / 14 and chart.per_minute == 14 / 3
    assert [(b.completed_height, b.failed_height) for b in chart.bars] == [
        (0.0, 0.0), (80.0, 20.0), (30.0, 10.0),
    ]  # fmt: skip
    assert throughput([]).failure_rate is None and throughput([]).per_minute == 0.0
