"""Every read and write the dashboard makes, behind one class.

``DashboardData`` is the only thing the pages call. Its methods use today's
``Stackshift`` API where it exists; the others state, in their docstrings, what
they must return and raise ``NotImplementedError`` until the store has them (the
pages then show "not available yet"). None of them may do work that grows with
the number of runs in a queue: no SCAN, no reading every run.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from ..app import Stackshift
from ..cron import CronSchedule
from ..errors import InvalidNameError, StackshiftError
from ..serialization import RunInfo, RunStatus
from ..store.events import subscriber_run_id
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
        """The queues to show, in display order: the ``queues=`` given, else
        every queue used so far (the registry written by workers and enqueues),
        sorted by name."""
        if self._queues is None:
            return await self.app.store.known_queues()
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
                RunStatus.SUSPENDED.value: stats.suspended,
                RunStatus.FAILED.value: stats.dead,
            },
            consumers=stats.consumers,
            totals=dict(stats.totals),
        )

    async def throughput(self, queue: str, *, minutes: int = 15) -> list[MinuteCount]:
        """Per-minute counts of the last ``minutes`` minutes, oldest first:
        exactly ``minutes`` items, zeros included, from the per-minute counts
        the finishing scripts keep (a key per minute, not the runs)."""
        return [
            MinuteCount(
                minute=datetime.fromtimestamp(minute * 60, tz=UTC),
                completed=counts.get("completed", 0),
                failed=counts.get("failed", 0),
                retried=counts.get("retried", 0),
            )
            for minute, counts in await self.app.store.minute_counts(queue, minutes)
        ]

    async def oldest_queued_age(self, queue: str) -> timedelta | None:
        """How long the oldest run still waiting for a worker has waited (the
        first undelivered stream entry), or None when nothing waits."""
        queued = await self.app.store.oldest_queued_ms(queue)
        if queued is None:
            return None
        now = self.app.store.server_now_ms() or int(time.time() * 1000)
        return timedelta(milliseconds=max(0, now - queued))

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
        """A page of a queue's runs, filtered by status and job, through the
        structures that hold each status (store.list_runs); ``next_cursor`` is
        None on the last page. Cost bounded by ``limit``, whatever the queue
        holds."""
        runs, next_cursor = await self.app.store.list_runs(
            queue,
            status=RunStatus(status) if status else None,
            job=job or None,
            limit=limit,
            cursor=cursor or None,
        )
        return RunPage(runs, next_cursor)

    async def get_run(self, run_id: str) -> RunInfo | None:
        """The run, or None if the id is malformed, unknown or expired."""
        try:
            queue_of_run(run_id)
        except InvalidNameError:
            return None
        return await self.app.get_run(run_id)

    async def find_by_idempotency_key(self, queue: str, key: str) -> RunInfo | None:
        """The run an idempotency key made on ``queue`` (within the key's TTL),
        or None when the key is unknown or expired."""
        run_id = await self.app.store.run_of_idempotency_key(queue, key)
        return await self.get_run(run_id) if run_id else None

    async def find_by_correlation_id(
        self, correlation_id: str, *, limit: int = 50
    ) -> list[RunInfo]:
        """Runs sharing a correlation id, newest first, at most ``limit``:
        through the index written when runs are made (per queue), not by
        scanning. A run with no correlation id of its own is found by its id."""
        store = self.app.store
        ids: list[str] = []
        for queue in await self.queues():
            ids += await store.runs_of_correlation_id(queue, correlation_id, limit)
        ids.sort(reverse=True)  # run ids sort by creation time
        runs = await store.get_runs(ids[:limit])
        found = [run for run in runs if run is not None]
        if not found:
            run = await self.get_run(correlation_id)
            found = [run] if run is not None else []
        return found

    async def attempts(self, run: RunInfo) -> list[Attempt]:
        """Every attempt of the run, first to last (the last may be running):
        the attempts that failed and were retried (the run's attempt log), then
        the latest, from the record itself."""
        earlier = [
            Attempt(
                number=a.attempt,
                started_at=a.started_at,
                finished_at=None,
                outcome="retried",
                worker=a.worker,
                error_type=a.error_type,
                error_message=a.message,
            )
            for a in run.attempts
        ]
        if not run.attempt:
            return earlier
        error = (
            run.error if run.status in (RunStatus.FAILED, RunStatus.CANCELLED) else None
        )
        latest = Attempt(
            number=run.attempt,
            started_at=run.started_at,
            finished_at=run.finished_at,
            outcome=run.status.value,
            worker=run.worker,
            error_type=error.type if error else None,
            error_message=error.message if error else None,
        )
        return [*earlier, latest]

    async def suspension(self, run: RunInfo) -> Suspension | None:
        """What the run waits for when it is suspended (the first of its
        waits, with the earliest deadline), else None."""
        if run.status != RunStatus.SUSPENDED or not run.waiting_for:
            return None
        wait = run.waiting_for[0]
        return Suspension(
            kind="child" if wait.kind == "invoke" else wait.kind,
            step_id=wait.step_id,
            until=run.wakes_at or wait.until,
            event=" or ".join(wait.events) if wait.events else None,
            match=wait.match,
            child_run_id=wait.child_run_id,
        )

    async def child_runs(self, run: RunInfo) -> list[RunInfo]:
        """Runs this run invoked with ``ctx.step.invoke``, in invocation order:
        recorded invoke steps name their child, and a suspended run names the
        children it waits for."""
        ids = [
            str(step.result["run_id"])
            for step in run.steps
            if isinstance(step.result, dict) and _looks_like_child(step.result)
        ]
        ids += [w.child_run_id for w in run.waiting_for if w.child_run_id]
        runs = await self.app.store.get_runs(list(dict.fromkeys(ids)))
        return [child for child in runs if child is not None]

    async def run_counters(self, run: RunInfo) -> list[CounterValue]:
        """Counters the run incremented, with their current values (the keys
        kept on the run's record when an attempt ends)."""
        return [
            CounterValue(key, await self.app.state.get(key)) for key in run.counters
        ]

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
        """Re-drive every dead-lettered run of a queue; returns how many."""
        return await self.app.retry_dead(queue)

    async def cancel(self, run_id: str) -> None:
        """Cancel a queued, scheduled, suspended or running run (idempotent);
        ``StackshiftError`` when the run does not exist or has ended otherwise."""
        status = await self.app.cancel(run_id)
        if status not in (RunStatus.CANCELLED, RunStatus.RUNNING):
            raise StackshiftError(
                f"run {run_id} has ended ({status}): nothing to cancel"
            )

    # --- counters, events, crons -------------------------------------------

    async def counter(self, key: str) -> int:
        """A counter's value (0 if never incremented); ``InvalidNameError`` for
        an empty or over-long key."""
        return await self.app.state.get(key)

    async def counters(self, *, limit: int = 100) -> list[CounterValue]:
        """Known counters, by key, at most ``limit`` (the registry of counter
        keys written at each key's first increment in a process)."""
        keys = (await self.app.store.registered("counters"))[:limit]
        return [CounterValue(key, await self.app.state.get(key)) for key in keys]

    async def recent_events(self, *, limit: int = 50) -> list[EventInfo]:
        """The newest ``limit`` events still in their names' logs (the look-back
        window), newest first, with the runs each made (one per subscribed job)
        and the waiting runs it resumed."""
        store = self.app.store
        events = []
        for name in await store.registered("events"):
            events += await store.recent_events(name, limit)
        events.sort(key=lambda e: e.sent_ms, reverse=True)
        subs = await store.subscriptions()
        out = []
        for event in events[:limit]:
            made = [
                subscriber_run_id(event, job, queue)
                for job, queue in subs.get(event.name, ())
            ]
            resumed = [
                w.run_id for w in await store.claims_of(event.name, event.event_id)
            ]
            out.append(
                EventInfo(
                    event_id=event.event_id,
                    name=event.name,
                    sent_at=datetime.fromtimestamp(event.sent_ms / 1000, tz=UTC),
                    data=_json_or_text(event.data),
                    run_ids=made + resumed,
                )
            )
        return out

    async def crons(self) -> list[CronInfo]:
        """Every cron schedule, by name, with its next tick and missed ticks:
        the crons registry (written by the workers that serve them) and each
        schedule's state."""
        store = self.app.store
        out = []
        for entry in await store.registered("crons"):
            queue, _, name = entry.partition("\x1f")
            state = await store.cron_state(queue, name)
            spec = self.app.registry.find(name)
            expression = state.get("schedule") or (
                spec.cron.expression if spec and spec.cron else ""
            )
            tz = state.get("tz") or (spec.cron.tz if spec and spec.cron else "UTC")
            last = int(state["last"]) if state.get("last") else None
            next_tick = None
            if expression:
                schedule = CronSchedule.parse(expression, tz)
                now = store.server_now_ms() or int(time.time() * 1000)
                next_tick = schedule.next_after(max(last or 0, now))
            out.append(
                CronInfo(
                    name=name,
                    schedule=expression,
                    queue=queue,
                    job=state.get("job", name),
                    next_tick=_at(next_tick),
                    last_tick=_at(last),
                    last_run_id=state.get("run") or None,
                    missed_ticks=int(state.get("missed", "0")),
                )
            )
        return sorted(out, key=lambda c: c.name)


def _at(ms: int | None) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, tz=UTC)


def _looks_like_child(value: dict[str, Any]) -> bool:
    """An invoke step's record value names its child run."""
    run_id = value.get("run_id")
    if not isinstance(run_id, str):
        return False
    try:
        queue_of_run(run_id)
    except InvalidNameError:
        return False
    return True


def _json_or_text(raw: bytes) -> Any:
    try:
        return msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return raw.decode(errors="replace")
