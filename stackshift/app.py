"""The ``Stackshift`` facade: settings, store, registry; queue(), job(), get_run()."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from .config import Duration, Settings, prefix_from_env, to_seconds, url_from_env
from .context import JobContext, State
from .cron import CronSchedule
from .errors import ConfigError, PayloadError, StackshiftError
from .job import Job
from .queue import (
    Queue,
    RunHandle,
    checked_correlation_id,
    inherited_correlation_id,
)
from .registry import Registry, build_spec
from .serialization import EventReceipt, RunInfo, RunStatus, encode
from .store import Store
from .store.keys import check_name, key_part, new_event_id
from .sync import SyncPortal

if TYPE_CHECKING:
    from .worker import Worker

P = TypeVar("P")
R = TypeVar("R")

_DEFAULT = object()  # "not given": the app-wide default applies


class AppState:
    """``app.state``: read durable counters from anywhere."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def get(self, key: str) -> int:
        """The counter's current value (0 if it was never incremented)."""
        return await State(self._store).get(key)


class Stackshift:
    """A stackshift app: enqueue runs, define jobs, inspect runs.

    Args:
        url: ``redis://``, ``rediss://`` (TLS), ``unix://``,
            ``redis+cluster://host:port`` or ``rediss+cluster://`` (Redis
            Cluster), ``redis+sentinel://host:26379/service-name`` (a
            Sentinel-managed primary), or ``memory://`` (embedded, one
            process). Default: ``$STACKSHIFT_REDIS_URL``, else
            ``redis://localhost:6379/0``.
        prefix: prefix of every key (default ``$STACKSHIFT_PREFIX`` or ``stackshift:``).
        idempotency_ttl: how long an idempotency key holds (default 24 h).
        result_ttl: how long finished runs are kept (default 7 days).
        dead_ttl: how long dead-lettered runs are kept (default 30 days).
        max_payload_bytes: largest payload, step result or job result (512 KiB).
        max_deliveries: deliveries of one entry without finishing (crashes,
            stalls) after which the run is poison and dead-lettered (default 5).
        default_retries: retries of a job that does not set its own (default 3).
        default_timeout: per-attempt timeout of a job that does not set its own
            (default 30 min; None: no limit).
        event_lookback: how far back a wait for an event looks for one sent
            before it was registered, since its run was made (default 10 min).
        event_dedupe_ttl: how long an event id, sent again, is a no-op
            (default 24 h).
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        prefix: str | None = None,
        idempotency_ttl: Duration = timedelta(hours=24),
        result_ttl: Duration = timedelta(days=7),
        dead_ttl: Duration = timedelta(days=30),
        max_payload_bytes: int = 512 * 1024,
        max_deliveries: int = 5,
        default_retries: int = 3,
        default_timeout: Duration | None = timedelta(minutes=30),
        event_lookback: Duration = timedelta(minutes=10),
        event_dedupe_ttl: Duration = timedelta(hours=24),
    ) -> None:
        self.settings = Settings(
            url=url_from_env(url),
            prefix=prefix_from_env(prefix),
            idempotency_ttl=to_seconds(idempotency_ttl, name="idempotency_ttl"),
            result_ttl=to_seconds(result_ttl, name="result_ttl"),
            dead_ttl=to_seconds(dead_ttl, name="dead_ttl"),
            max_payload_bytes=max_payload_bytes,
            max_deliveries=max_deliveries,
            default_retries=default_retries,
            default_timeout=None
            if default_timeout is None
            else to_seconds(default_timeout, name="default_timeout"),
            event_lookback=to_seconds(event_lookback, name="event_lookback"),
            event_dedupe_ttl=to_seconds(event_dedupe_ttl, name="event_dedupe_ttl"),
        )
        self.store = Store(self.settings)
        self.registry = Registry()
        self.state = AppState(self.store)
        self.sync = SyncPortal()  # the private loop of the *_sync methods
        self._queues: dict[str, Queue] = {}

    def __repr__(self) -> str:
        return f"Stackshift({self.settings.url!r}, jobs={self.registry.names()})"

    # --- enqueue and inspect ------------------------------------------------

    def queue(self, name: str = "default", *, partitions: int | None = None) -> Queue:
        """The queue called ``name`` (``[A-Za-z0-9_.-]{1,64}``).

        Args:
            partitions: spread the queue over this many hash slots (``{name:0}``
                .. ``{name:N-1}``), for a queue busier than one Redis Cluster
                master: a run goes to one of them (by its idempotency key, if
                it has one), workers serving ``name`` serve them all. Fixed once
                the queue is used (recorded in Redis; a different count is
                refused); other processes read it from there.
        """
        queue = self._queues.get(name)
        if queue is None or (partitions is not None and partitions != queue.declared):
            if queue is not None and queue.declared is not None:
                raise ConfigError(
                    f"queue {name!r} was declared with {queue.declared} partitions"
                )
            queue = self._queues[name] = Queue(name, self, partitions)
        return queue

    def declared_partitions(self, queue: str) -> int | None:
        """The partitions ``app.queue(queue, partitions=N)`` declared here, if any."""
        known = self._queues.get(queue)
        return None if known is None else known.declared

    async def get_run(self, run_id: str) -> RunInfo | None:
        """The run's record (job, queue, status, attempt, steps, result, error,
        timestamps), or None if it does not exist or has expired."""
        return await self.store.get_run(run_id)

    def get_run_sync(self, run_id: str) -> RunInfo | None:
        """``get_run()`` for code without an event loop (Flask, Django, scripts)."""
        return self.sync.call("get_run", self.get_run, run_id)

    def handle(self, run_id: str) -> RunHandle[Any]:
        """A handle on an existing run, to wait for its result."""
        return RunHandle(run_id, False, self)

    async def retry(self, run_id: str) -> RunHandle[Any]:
        """Re-drive a dead-lettered run: it is queued again and resumes after its
        last recorded step.

        Raises:
            StackshiftError: the run does not exist or is not dead-lettered.
        """
        outcome, status = await self.store.redrive(run_id)
        if outcome == "missing":
            raise StackshiftError(
                f"run {run_id} does not exist (or its record expired)"
            )
        if outcome == "not_failed":
            raise StackshiftError(
                f"run {run_id} is {status}, not failed: nothing to retry"
            )
        return RunHandle(run_id, False, self)

    async def cancel(self, run_id: str, *, reason: str = "") -> RunStatus:
        """Cancel a run.

        A queued, scheduled or suspended run is cancelled at once. A running
        run's handler is cancelled (``CancelledError`` inside the job) by the
        worker that runs it, and the run ends ``cancelled``; if that worker is
        gone, the run ends cancelled when its entry is taken over. A cancelled
        run never starts again. Idempotent: cancelling an ended run changes
        nothing.

        Returns:
            The run's status after the call: ``CANCELLED``; ``RUNNING`` when a
            running run was asked to stop (it ends cancelled shortly, unless it
            completes first); or the status it had already ended with.

        Raises:
            StackshiftError: the run does not exist (or its record expired).
        """
        outcome, detail = await self.store.cancel(run_id, reason)
        if outcome == "missing":
            raise StackshiftError(
                f"run {run_id} does not exist (or its record expired)"
            )
        if outcome == "ended":
            return RunStatus(detail)
        if outcome == "requested":
            return RunStatus.RUNNING
        if detail == "1":  # a child run: its parent is told now
            await self.store.hand_off(run_id)
        return RunStatus.CANCELLED

    async def send_event(
        self,
        name: str,
        data: Any = None,
        *,
        id: str | None = None,
        correlation_id: str | None = None,
    ) -> EventReceipt:
        """Send an event: each job subscribed to ``name`` (``on_event``) gets a
        run of it, and each run waiting for it (``step.wait_for_event``) with a
        matching ``match`` resumes. Delivery is at least once, and idempotent
        per event id: one run per subscribed job, one resume per waiter.

        Args:
            name: the event name (``[A-Za-z0-9_.-]{1,64}``); no subscriber or
                waiter is fine.
            data: JSON data (a dict, or a msgspec Struct), size-limited like
                payloads.
            id: the event's id: sending the same (name, id) again within
                ``event_dedupe_ttl`` is a no-op. Default: a new unique id.
            correlation_id: given to the runs it makes; default: inherited from
                the calling job or request context.

        Returns:
            An ``EventReceipt``: the id, and ``duplicate`` if it was seen already.
        """
        check_name(name, "event")
        event_id = new_event_id() if id is None else id
        key_part(event_id, "event id")  # validated before any I/O
        raw = encode(data)
        limit = self.settings.max_payload_bytes
        if len(raw) > limit:
            raise PayloadError(
                f"event {name!r} data is {len(raw)} bytes of JSON; the limit is "
                f"{limit} (max_payload_bytes)"
            )
        correlation = (
            checked_correlation_id(correlation_id) or inherited_correlation_id()
        )
        sent, _entry = await self.store.send_event(name, event_id, raw, correlation)
        return EventReceipt(event_id, duplicate=not sent)

    async def runs(
        self,
        queue: str = "default",
        *,
        status: RunStatus | str | None = None,
        job: str | None = None,
        limit: int | None = 100,
    ) -> AsyncIterator[RunInfo]:
        """A queue's runs, read page by page through the structures that hold
        each status (never a scan of keys): running and queued runs newest
        first, suspended and scheduled ones soonest due first, then ended ones
        (completed, failed, cancelled) newest first. ``status`` and ``job``
        filter; ``limit`` caps how many (None: all).

        Usage: ``async for run in app.runs("uploads", status="failed"): ...``
        """
        check_name(queue, "queue")
        wanted = None if status is None else RunStatus(status)
        cursor: str | None = None
        given = 0
        while limit is None or given < limit:
            page_size = 100 if limit is None else min(100, limit - given)
            page, cursor = await self.store.list_runs(
                queue, status=wanted, job=job, limit=page_size, cursor=cursor
            )
            for run in page:
                yield run
            given += len(page)
            if cursor is None:
                return

    async def retry_dead(self, queue: str = "default") -> int:
        """Re-drive every dead-lettered run of a queue (each resumes after its
        last recorded step). Returns how many were re-driven."""
        return await self.store.redrive_all(check_name(queue, "queue"))

    async def release_idempotency_key(self, queue: str, key: str) -> bool:
        """Forget an idempotency key, so that the next enqueue with it makes a
        new run (after its run was dead-lettered, say). Returns whether the key
        was held."""
        return await self.store.release_idempotency_key(check_name(queue, "queue"), key)

    async def dead_letters(
        self, queue: str = "default", limit: int = 100
    ) -> list[RunInfo]:
        """Dead-lettered runs of a queue, newest first."""
        runs = [
            await self.store.get_run(r)
            for r in await self.store.dead_runs(queue, limit)
        ]
        return [r for r in runs if r is not None]

    # --- define jobs ---------------------------------------------------------

    def job(
        self,
        name: str,
        *,
        retries: int | None = None,
        backoff: Duration | Callable[[int], Duration] | None = None,
        timeout: Duration | None | Any = _DEFAULT,
        payload: Any = None,
        queue: str | None = None,
        on_event: str | Sequence[str] = (),
    ) -> Callable[[Callable[[JobContext[P]], Awaitable[R]]], Job[P, R]]:
        """Register an async handler as the job ``name``.

        Returns a ``Job``: still callable as the handler, and
        ``await job.enqueue(payload)`` makes a run of it (typed).

        Args:
            name: the job name runs are enqueued under (``[A-Za-z0-9_.-]{1,64}``).
            retries: retries after the first attempt fails (default 3).
            backoff: first retry delay (doubling, capped at 5 min, jittered), or a
                function of the failure count returning the delay. Default 1 s.
            timeout: per-attempt limit (default: the app's, 30 min); None: no limit.
            payload: the payload type, when the handler is not annotated
                ``ctx: JobContext[T]``.
            queue: where its runs go unless told otherwise: ``Job.enqueue``,
                runs made by events (``on_event``), child runs (``step.invoke``)
                and cron ticks. Default "default". Enqueueing by name
                (``app.queue(q).enqueue(name, ...)``) still picks its queue.
            on_event: an event name (or several): each event sent with it makes
                one run of this job, with the event's data as payload.
        """
        if timeout is _DEFAULT:
            seconds = self.settings.default_timeout
        else:
            seconds = None if timeout is None else to_seconds(timeout, name="timeout")
        events = (on_event,) if isinstance(on_event, str) else tuple(on_event)

        def register(handler: Callable[[JobContext[P]], Awaitable[R]]) -> Job[P, R]:
            if isinstance(handler, Job):  # a job of another app: its function
                handler = handler.handler
            self.registry.add(
                build_spec(
                    name,
                    handler,
                    payload=payload,
                    retries=self.settings.default_retries
                    if retries is None
                    else retries,
                    backoff=backoff,
                    timeout=seconds,
                    queue=queue,
                    on_event=events,
                )
            )
            return Job(self, name, handler)

        return register

    def cron(
        self,
        name: str,
        schedule: str,
        *,
        queue: str | None = None,
        tz: str = "UTC",
        retries: int | None = None,
        backoff: Duration | Callable[[int], Duration] | None = None,
        timeout: Duration | None | Any = _DEFAULT,
    ) -> Callable[[Callable[[JobContext[P]], Awaitable[R]]], Job[P, R]]:
        """Register an async handler as the job ``name``, run once per tick of
        ``schedule``, however many workers serve ``queue``.

        Each tick's run has an id made from the name and the tick, so any
        number of workers make one run per tick; the next tick never waits for
        this one's run. After downtime, one run is made for the latest missed
        tick, and the missed ones are counted (``stackshift show``, dashboard).
        The payload is ``{"cron": name, "tick": <epoch ms>, "missed": <n>}``.

        Args:
            name: the job's (and the schedule's) name.
            schedule: five-field cron (``"0 3 * * *"``), or six fields whose
                first is seconds (``"*/5 * * * * *"``).
            queue: the queue its runs go to (default "default"); the workers
                serving it make the ticks.
            tz: the IANA time zone the schedule is read in.
        """
        cron = CronSchedule.parse(schedule, tz)
        register = self.job(
            name, retries=retries, backoff=backoff, timeout=timeout, queue=queue
        )

        def with_schedule(
            handler: Callable[[JobContext[P]], Awaitable[R]],
        ) -> Job[P, R]:
            job = register(handler)
            spec = self.registry.get(name)
            self.registry.replace(dataclasses.replace(spec, cron=cron))
            return job

        return with_schedule

    # --- run a worker in this process -----------------------------------------

    def worker(self, queues: Sequence[str] = ("default",), **options: Any) -> Worker:
        """A worker for ``queues`` in this process (``await worker.run()``);
        options as ``stackshift worker`` takes them."""
        from .worker import Worker

        return Worker(self, list(queues), **options)

    async def run_until_idle(
        self,
        queues: Sequence[str] = ("default",),
        *,
        skip_time: bool = True,
        skip_waits: bool = False,
        concurrency: int = 10,
    ) -> None:
        """Run every due run of ``queues`` in this process until nothing is
        left: for tests, on memory:// or a real Redis, with no worker process.

        Retries, child runs, resumed and event-made runs are run too. Returns
        when nothing waits, runs or is scheduled; runs waiting for an event (or
        a child on another queue) are left waiting.

        Args:
            skip_time: delays, retry backoffs and sleeps are due at once.
            skip_waits: waits for an event or a child with a timeout time out
                at once, too.
        """
        mode = "real"
        if skip_time:
            mode = "skip_all" if skip_waits else "skip"
        worker = self.worker(
            queues, burst=True, concurrency=concurrency, grace_period=0, timers=mode
        )
        await worker.run()

    # --- lifecycle -------------------------------------------------------------

    async def close(self) -> None:
        """Release this event loop's connections (each loop the app is used
        from has its own; a loop that ends closes its own as it shuts down)."""
        await self.store.close()

    def close_sync(self) -> None:
        """Release the connections of the sync API's private loop, and stop it."""
        self.sync.close(before=self.store.close)

    async def __aenter__(self) -> Stackshift:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
