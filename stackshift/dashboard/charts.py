"""Charts as SVG geometry: a run's step waterfall, a queue's throughput.

A step record keeps only when it was recorded, so a step's bar runs from the
checkpoint before it in the same attempt (or the attempt's start, when that is
known) to its own. Bars are placed on a 0-1000 axis for an SVG ``viewBox``:
attributes, not inline styles, so the strict Content-Security-Policy holds.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta

from ..serialization import RunInfo, StepInfo
from .data import MinuteCount

AXIS = 1000.0  # width of the SVG's viewBox
MIN_WIDTH = 3.0  # a step shorter than a pixel still shows


@dataclasses.dataclass(frozen=True, slots=True)
class StepBar:
    step_id: str
    attempt: int
    recorded_at: datetime | None
    duration: timedelta | None  # None: where the step began is not known
    x: float
    width: float


@dataclasses.dataclass(frozen=True, slots=True)
class Waterfall:
    start: datetime | None  # the run's creation (or its first known time)
    end: datetime | None
    bars: list[StepBar]
    queued_width: float  # created -> started, on the same axis (0 if unknown)

    @property
    def span(self) -> timedelta | None:
        if self.start is None or self.end is None:
            return None
        return self.end - self.start


def _step_start(
    run: RunInfo, step: StepInfo, previous: StepInfo | None
) -> datetime | None:
    """Where a step began: the previous checkpoint of its attempt, else the
    current attempt's start (the record keeps only the latest start)."""
    if previous is not None and previous.attempt == step.attempt:
        return previous.recorded_at
    if (
        step.attempt == run.attempt
        and run.started_at is not None
        and step.recorded_at is not None
        and run.started_at <= step.recorded_at
    ):
        return run.started_at
    return None


def waterfall(run: RunInfo, now: datetime) -> Waterfall:
    """Place the run's steps on one time axis, first to last."""
    recorded = [s.recorded_at for s in run.steps if s.recorded_at is not None]
    known = [t for t in (run.created_at, run.started_at, *recorded) if t is not None]
    if not known:
        return Waterfall(None, None, [], 0.0)
    start = min(known)
    finish = run.finished_at or (None if run.status.finished else now)
    end = max([*known, *([finish] if finish else [])])
    span = max((end - start).total_seconds(), 0.001)

    def place(moment: datetime) -> float:
        return (moment - start).total_seconds() / span * AXIS

    bars = []
    previous: StepInfo | None = None
    for step in run.steps:
        began = _step_start(run, step, previous)
        if step.recorded_at is None:
            bars.append(StepBar(step.step_id, step.attempt, None, None, 0.0, 0.0))
        else:
            left = place(began if began is not None else step.recorded_at)
            right = place(step.recorded_at)
            width = max(right - left, MIN_WIDTH)
            bars.append(
                StepBar(
                    step.step_id,
                    step.attempt,
                    step.recorded_at,
                    None if began is None else step.recorded_at - began,
                    round(min(left, AXIS - width), 2),
                    round(width, 2),
                )
            )
        previous = step
    queued = (
        place(run.started_at)
        if run.created_at is not None and run.started_at is not None
        else 0.0
    )
    return Waterfall(start, end, bars, queued)


@dataclasses.dataclass(frozen=True, slots=True)
class MinuteBar:
    minute: datetime
    completed: int
    failed: int
    x: float
    completed_height: float  # on a 0-100 axis, stacked: completed, then failed
    failed_height: float


@dataclasses.dataclass(frozen=True, slots=True)
class Throughput:
    """Runs finished per minute over a window, and the window's failure rate."""

    bars: list[MinuteBar]
    bar_width: float
    completed: int
    failed: int
    peak: int  # the busiest minute's finished runs (the chart's top)

    @property
    def per_minute(self) -> float:
        return (self.completed + self.failed) / len(self.bars) if self.bars else 0.0

    @property
    def failure_rate(self) -> float | None:
        finished = self.completed + self.failed
        return self.failed / finished if finished else None


def throughput(minutes: list[MinuteCount]) -> Throughput:
    """Stacked bars, one per minute, oldest on the left."""
    peak = max((m.completed + m.failed for m in minutes), default=0)
    slot = AXIS / max(len(minutes), 1)
    bars = [
        MinuteBar(
            m.minute,
            m.completed,
            m.failed,
            round(i * slot, 2),
            round(m.completed / peak * 100, 2) if peak else 0.0,
            round(m.failed / peak * 100, 2) if peak else 0.0,
        )
        for i, m in enumerate(minutes)
    ]
    return Throughput(
        bars,
        round(slot * 0.8, 2),
        sum(m.completed for m in minutes),
        sum(m.failed for m in minutes),
        peak,
    )
