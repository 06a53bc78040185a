"""A run as text for a person: its fields, a step timeline drawn as a
waterfall, what it waits for, its child runs, and its error with the
traceback as lines of its own."""

from __future__ import annotations

from datetime import datetime

from ..serialization import ErrorInfo, RunInfo, RunStatus, StepInfo, WaitInfo
from .output import json_text, plural, span, when
from .reads import StepKind

JSON_FIELDS = frozenset({"payload", "result"})
TIME_FIELDS = frozenset(
    {"created_at", "scheduled_for", "started_at", "finished_at", "wakes_at"}
)
# Shown in sections of their own, not as fields.
SECTIONS = frozenset({"steps", "error", "waiting_for", "attempts", "counters"})
BAR_WIDTH = 24  # characters of the waterfall
VALUE_WIDTH = 120  # a step value longer than this is cut (--json has it all)


def run_lines(
    run: RunInfo,
    kinds: dict[str, StepKind] | None = None,
    children: list[RunInfo] | None = None,
) -> list[str]:
    """A run, field by field, then its timeline and error."""
    fields = {
        name: getattr(run, name)
        for name in run.__struct_fields__
        if name not in SECTIONS and getattr(run, name) not in (None, False)
    }
    width = max(len(key) for key in [*fields, "child runs", "steps"])
    lines = [
        f"{key.ljust(width)}  {_field(key, value)}" for key, value in fields.items()
    ]
    if run.counters:
        lines.append(f"{'counters'.ljust(width)}  {', '.join(run.counters)}")
    lines.extend(
        f"{'failed'.ljust(width)}  attempt {a.attempt}"
        f"{'  ' + when(a.started_at) if a.started_at else ''}"
        f"{'  ' + a.worker if a.worker else ''}  {a.error_type}: {a.message}"
        for a in run.attempts
    )
    lines.extend(
        f"{'waits for'.ljust(width)}  {wait_text(wait)}" for wait in run.waiting_for
    )
    lines.extend(
        f"{'child run'.ljust(width)}  {child.run_id}  {child.job}  {child.status}"
        for child in children or []
    )
    lines.append(f"{'steps'.ljust(width)}  {len(run.steps)}")
    lines.extend(timeline(run, kinds or {}))
    if run.error:
        lines += ["error", *error_lines(run.error, "  ")]
    return lines


def _field(key: str, value: object) -> str:
    if key in JSON_FIELDS:
        return json_text(value)
    if key in TIME_FIELDS and isinstance(value, datetime):
        return when(value)
    return str(value)


def timeline(run: RunInfo, kinds: dict[str, StepKind]) -> list[str]:
    """What the run did, in time order, as a waterfall: each record's offset
    from the run's start, the time since the record before it, and a bar
    spanning that time on the scale of the whole run.

    Records: the last start (attempts and resumes each restart it), each step,
    and the end (or, for a run that waits, when it wakes or is due). The run's
    start is its earliest record: a run started early may record a step
    before its start is."""
    steps = [
        (step.recorded_at, _step_label(step, kinds.get(step.step_id)))
        for step in run.steps
        if step.recorded_at
    ]
    marks: list[tuple[datetime, str]] = []
    if run.started_at:
        # Records before the last start: it resumed, or it is a later attempt.
        again = any(at < run.started_at for at, _label in steps)
        word = "(re)started" if again else "started"
        marks.append((run.started_at, f"{word}  attempt {run.attempt}"))
    marks += steps
    if not marks:
        return []  # it has not started
    if run.finished_at:
        marks.append((run.finished_at, f"finished  {run.status}"))
    elif run.status == RunStatus.SUSPENDED and run.wakes_at:
        marks.append((run.wakes_at, "wakes, unless what it waits for comes first"))
    elif run.status == RunStatus.SCHEDULED and run.scheduled_for:
        marks.append((run.scheduled_for, "due"))
    marks.sort(key=lambda mark: mark[0])  # stable: ties keep the order above
    origin = marks[0][0]
    total = (marks[-1][0] - origin).total_seconds()
    lines = []
    if run.created_at:
        waited = (origin - run.created_at).total_seconds()
        lines.append(f"  from the run's start, {span(waited)} after it was made")
    lines.append(f"  {'offset':>9}  {'took':>7}  {'':{BAR_WIDTH + 2}}  record")
    previous = 0.0
    for i, (at, label) in enumerate(marks):
        offset = (at - origin).total_seconds()
        took = span(offset - previous) if i else ""
        lines.append(
            f"  {'+' + span(offset):>9}  {took:>7}  "
            f"{_bar(previous, offset, total)}  {label}"
        )
        previous = offset
    return lines


def _step_label(step: StepInfo, kind: StepKind | None) -> str:
    label = f"{step.step_id}  attempt {step.attempt}"
    if kind and kind.kind:
        label += f"  ({kind.kind})"
    value = json_text(step.result)
    if len(value) > VALUE_WIDTH:
        value = value[: VALUE_WIDTH - 3] + "..."
    return f"{label}  -> {value}"


def _bar(start: float, end: float, total: float) -> str:
    """``|  ###   |``: the span from ``start`` to ``end`` on a ``total`` scale
    (at least one character, so that an instant shows)."""
    if total <= 0:
        left, right = 0, 1
    else:
        left = min(BAR_WIDTH - 1, int(start / total * BAR_WIDTH))
        right = max(left + 1, min(BAR_WIDTH, round(end / total * BAR_WIDTH)))
    return f"|{' ' * left}{'#' * (right - left)}{' ' * (BAR_WIDTH - right)}|"


def wait_text(wait: WaitInfo) -> str:
    """What a suspended run waits for, in a line: ``await-refund: event
    refund.issued where {...}, until ...``."""
    text = f"{wait.step_id}: "
    if wait.kind == "sleep":
        text += "sleep"
    elif wait.kind == "event":
        text += "event " + " or ".join(wait.events or [])
        if wait.match:
            text += f" where {json_text(wait.match)}"
    else:
        text += f"child run {wait.child_run_id}"
    if wait.until:
        text += f", until {when(wait.until)}"
    return text


def error_lines(error: ErrorInfo | None, indent: str) -> list[str]:
    """``Type: message``, then the traceback as lines of its own."""
    if not error:
        return [f"{indent}(no error recorded)"]
    message = error.message.splitlines() or [""]
    lines = [f"{indent}{error.type}: {message[0]}"]
    lines += [f"{indent}  {more}" for more in message[1:]]
    lines += [f"{indent}  | {line}" for line in error.traceback.rstrip().splitlines()]
    return lines


def dead_lines(queue: str, runs: list[RunInfo]) -> list[str]:
    """Dead-lettered runs of a queue, each with its error and traceback."""
    if not runs:
        return [f"queue {queue}: no dead runs"]
    lines = [f"queue {queue}: {plural(len(runs), 'dead run')}"]
    for run in runs:
        head = f"{run.run_id}  {run.job}  attempt {run.attempt}"
        if run.finished_at:
            head += f"  failed {when(run.finished_at)}"
        lines += ["", head, *error_lines(run.error, "  ")]
    return lines
