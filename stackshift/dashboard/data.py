"""Every read and write the dashboard makes, behind one class.

``DashboardData`` is the only thing the pages call. Its methods use today's
``Stackshift`` API where it exists; the others state, in their docstrings, what
they must return and raise ``NotImplementedError`` until the store has them (the
pages then show "not available yet"). None of them may do work that grows with
the number of runs in a queue: no SCAN, no reading every run.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from ..app import Stackshift
from ..errors import InvalidNameError
from ..serialization import RunInfo, RunStatus
from ..store.keys import check_name, queue_of_run

# Statuses a run can have, in the order the pages show them.
STATUSES: tuple[str, ...] = tuple(status.value for status in RunStatus)
# How a run can be looked up on the runs page.
FIND_KINDS = ("run_id", "idempotency_key", "correlation_id")


@dataclasses.dataclass(frozen=True, slots=True)
class QueueSummary:
    """One queue at a glance."""

    queue: str
    by_status: dict[str, int]  # runs now in each state (queued, running, ...)
    consumers: int  # worker consumers known to the queue's group
    totals: dict[str, int]  # enqueued / completed / retried / failed, all time

    @property
    def failure_rate(self) -> float | None:
        """Failed share of finished runs, all time (None: none finished yet)."""
        failed = self.totals.get("failed", 0)
        finished = failed + self.totals.get("completed", 0)
        return failed / finished if finished else None


@dataclasses.dataclass(frozen=True, slots=True)
class MinuteCount:
    """What happened on a queue in one minute."""

    minute: datetime  # start of the minute, UTC
    enqueued: int = 0
    completed: int = 0
    failed: int = 0  # dead-lettered (out of attempts or non-retriable)
    retried: int = 0  # attempts that failed and were scheduled again


@dataclasses.dataclass(frozen=True, slots=True)
class RunPage:
    """One page of a run listing, newest first."""

    runs: list[RunInfo]
    next_cursor: str | None  # opaque; None on the last page


@dataclasses.dataclass(frozen=True, slots=True)
class Attempt:
    """One try of a run."""

    number: int  # from 1
    started_at: datetime | None
    finished_at: datetime | None
    outcome: str  # "running", "completed", "retried", "failed", "cancelled", ...
    worker: str | None = None
    error_type: str | None = None
    error_message: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Suspension:
    """What a suspended run waits for."""

    kind: str  # "sleep", "event" or "child"
    step_id: str
    until: datetime | None  # wake-up time or the wait's timeout
    event: str | None = None  # kind "event": the event name
    match: dict[str, Any] | None = None  # kind "event": the fields it must carry
    child_run_id: str | None = None  # kind "child": the invoked run


@dataclasses.dataclass(frozen=True, slots=True)
class CounterValue:
    key: str
    value: int


@dataclasses.dataclass(frozen=True, slots=True)
class EventInfo:
    """An event sent with ``app.send_event``."""

    event_id: str
    name: str
    sent_at: datetime | None
    data: Any
    run_ids: list[str]  # runs it started or resumed


@dataclasses.dataclass(frozen=True, slots=True)
class CronInfo:
    """A schedule registered with ``@app.cron``."""

    name: str
    schedule: str  # the cron expression
    queue: str
    job: str
    next_tick: datetime | None
    last_tick: datetime | None = None
    last_run_id: str | None = None
    missed_ticks: int = 0


class DashboardData:
    """Reads and writes of the dashboard, over one ``Stackshift`` app.

    Args:
        app: the app whose Redis and prefix are shown.
        queues: the queues to show, until a registry of queues exists.
    """

    def __init__(self, app: Stackshift, *, queues: Sequence[str] | None = None) -> None:
        self.app = app
        self._queues = (
            None if queues is None else [check_name(q, "queue") for q in queues]
        )

    # --- queues -------------------------------------------------------------

    async def queues(self) -> list[str]:
        """The queues to show, in display order.

        To implement: every queue a run was ever enqueued on (a registry set
        written by enqueue), sorted by name. Until then: the ``queues=`` given.
        """
        if self._queues is None:
            raise NotImplementedError("list of known queues")
        return list(self._queues)

    async def check_queue(self, queue: str) -> str:
        """``queue`` if it is a valid name and one the dashboard shows, else raise
        ``InvalidNameError`` (so a typed URL does not create streams)."""
        check_name(queue, "queue")
        try:
            known = await self.queues()
        except NotImplementedError:
            return queue
        if queue not in known:
            raise InvalidNameError(f"queue {queue!r} is not one the dashboard shows")
        return queue

    async def queue_summary(self, queue: str) -> QueueSummary:
        """Runs by status, consumers and all-time totals of a queue."""
        stats = await self.app.store.queue_stats(queue)
        return QueueSummary(
            queue=queue,
            by_status={
                RunStatus.QUEUED.value: stats.waiting,
                RunStatus.RUNNING.value: stats.running,
                RunStatus.SCHEDULED.value: stats.scheduled,
                RunStatus.FAILED.value: stats.dead,
            },
            consumers=stats.consumers,
            totals=dict(stats.totals),
        )

    async def throughput(self, queue: str, *, minutes: int = 15) -> list[MinuteCount]:
        """Per-minute counts of the last ``minutes`` minutes, oldest first.

        To implement: exactly ``minutes`` items, one per wall-clock minute ending
        with the current one, zeros included; read from per-minute counters that
        the state-change scripts increment (a few keys, not the runs).
        """
        raise NotImplementedError("per-minute throughput")

    async def oldest_queued_age(self, queue: str) -> timedelta | None:
        """How long the oldest run still waiting for a worker has waited.

        To implement: now minus the enqueue time of the first undelivered stream
        entry (one read), or None when nothing waits.
        """
        raise NotImplementedError("oldest queued age")

    # --- runs -----------------------------------------------------------------

    async def list_runs(
        self,
        queue: str,
        *,
        status: str | None = None,
        job: str | None = None,
        cursor: str | None = None,
        limit: int = 50,
    ) -> RunPage:
        """A page of a queue's runs, newest first, filtered by status and job.

        To implement: at most ``limit`` runs, read through an index kept per
        (queue, status) and per (queue, job) when runs change state, starting
        after ``cursor`` (the ``next_cursor`` of the previous page; None: the
        first page). ``next_cursor`` is None on the last page. Cost bounded by
        ``limit``, whatever the queue holds (100,000 runs).
        """
        raise NotImplementedError("run listing")

    async def get_run(self, run_id: str) -> RunInfo | None:
        """The run, or None if the id is malformed, unknown or expired."""
        try:
            queue_of_run(run_id)
        except InvalidNameError:
            return None
        return await self.app.get_run(run_id)

    async def find_by_idempotency_key(self, queue: str, key: str) -> RunInfo | None:
        """The run an idempotency key made on ``queue`` (within the key's TTL).

        To implement: read the run id stored under the queue's idempotency key
        (one read), then ``get_run``; None when the key is unknown or expired.
        """
        raise NotImplementedError("find by idempotency key")

    async def find_by_correlation_id(
        self, correlation_id: str, *, limit: int = 50
    ) -> list[RunInfo]:
        """Runs sharing a correlation id, newest first, at most ``limit``.

        To implement: through an index written when runs are made (correlation
        id -> run ids, on every queue), not by scanning.
        """
        raise NotImplementedError("find by correlation id")

    async def attempts(self, run: RunInfo) -> list[Attempt]:
        """Every attempt of the run, first to last (the last may be running).

        To implement: from a per-run attempt log appended by the start, fail,
        complete and cancel scripts.
        """
        raise NotImplementedError("attempt history")

    async def suspension(self, run: RunInfo) -> Suspension | None:
        """What the run waits for when it is suspended, else None.

        To implement: from the suspended run's record (sleep, event wait or child).
        """
        raise NotImplementedError("suspended runs")

    async def child_runs(self, run: RunInfo) -> list[RunInfo]:
        """Runs this run invoked with ``ctx.step.invoke``, in invocation order.

        To implement: from the child run ids kept on the parent's record.
        """
        raise NotImplementedError("child runs")

    async def run_counters(self, run: RunInfo) -> list[CounterValue]:
        """Counters the run incremented, with their current values.

        To implement: from the counter keys kept on the run's record.
        """
        raise NotImplementedError("counters of a run")

    # --- dead letters and mutations -----------------------------------------

    async def dead_letters(self, queue: str, *, limit: int = 50) -> list[RunInfo]:
        """The newest ``limit`` dead-lettered runs of a queue."""
        return await self.app.dead_letters(queue, limit)

    async def dead_count(self, queue: str) -> int:
        """How many runs of the queue are dead-lettered."""
        return (await self.app.store.queue_stats(queue)).dead

    async def retry(self, run_id: str) -> None:
        """Re-drive a dead-lettered run; ``StackshiftError`` if it is not one."""
        await self.app.retry(run_id)

    async def retry_all_dead(self, queue: str) -> int:
        """Re-drive every dead-lettered run of a queue; returns how many.

        To implement: ``app.retry_dead(queue)`` (DESIGN.md section 6), in batches.
        """
        raise NotImplementedError("retry all")

    async def cancel(self, run_id: str) -> None:
        """Cancel a queued, scheduled, suspended or running run (idempotent).

        To implement: ``app.cancel(run_id)`` (DESIGN.md section 6); raise
        ``StackshiftError`` when the run does not exist or has finished.
        """
        raise NotImplementedError("cancel")

    # --- counters, events, crons -------------------------------------------

    async def counter(self, key: str) -> int:
        """A counter's value (0 if never incremented); ``InvalidNameError`` for
        an empty or over-long key."""
        return await self.app.state.get(key)

    async def counters(self, *, limit: int = 100) -> list[CounterValue]:
        """Known counters, by key, at most ``limit``.

        To implement: from a registry of counter keys written by the first
        increment of each, not by scanning.
        """
        raise NotImplementedError("list of counters")

    async def recent_events(self, *, limit: int = 50) -> list[EventInfo]:
        """The newest ``limit`` events sent, newest first, with the runs each made.

        To implement: from the events stream (XREVRANGE with COUNT) and the
        per-event fan-out record.
        """
        raise NotImplementedError("events")

    async def crons(self) -> list[CronInfo]:
        """Every cron schedule, by name, with its next tick and missed ticks.

        To implement: from the app's registry and each schedule's state key.
        """
        raise NotImplementedError("crons")
