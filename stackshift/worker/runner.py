"""Runner: one attempt of a run: handler + JobContext, timeout, then finish it."""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import logging
import time
import traceback
from typing import TYPE_CHECKING, Any

import msgspec
import structlog

from ..context import (
    Attempt,
    JobContext,
    LeaseLost,
    RunSuspended,
    State,
    current_correlation_id,
)
from ..errors import JobTimeoutError, NonRetriableError, PayloadError, StoreError
from ..logs import get_logger
from ..observe import AttemptInfo, AttemptObserver, WorkerObserver
from ..registry import JobSpec
from ..serialization import ErrorInfo, decode, encode
from ..step import Step
from ..store import (
    Cancel,
    Complete,
    DeadLetter,
    EnqueueResult,
    Finish,
    Lease,
    Release,
    Retry,
    StartResult,
    Store,
    may_run,
)
from ..store.keys import time_of_run
from .lease import Inflight, LeaseKeeper
from .slots import Slots
from .timeouts import Timeouts

if TYPE_CHECKING:
    from ..app import Stackshift

log = get_logger("stackshift.worker")

MAX_TRACEBACK = 16 * 1024


@dataclasses.dataclass(slots=True, frozen=True)
class Failed:
    """The attempt raised: ``error``, and whether retrying can help."""

    error: ErrorInfo
    retryable: bool
    exc: BaseException


@dataclasses.dataclass(slots=True, frozen=True)
class Stopped:
    """The attempt ended without a finish of its own to write: its lease was
    lost (write nothing), or it suspended (written already)."""

    why: str  # "lease_lost" or "suspended"


# How an attempt ended: a finish to write (Complete, Cancel, Release), a
# failure (Retry or DeadLetter, decided by the job's retries), or nothing more.
Outcome = Complete | Cancel | Release | Failed | Stopped


def _run_vars() -> tuple[contextvars.ContextVar[Any], ...]:
    """The structlog contextvars a run's fields are bound to (run_id, job,
    queue, attempt, correlation_id), as bind_contextvars makes them: bound in
    a throwaway context, and taken from the tokens. Setting them directly
    spares each run bind_contextvars' name building and lookups."""
    tokens = contextvars.Context().run(
        structlog.contextvars.bind_contextvars,
        run_id=None,
        job=None,
        queue=None,
        attempt=None,
        correlation_id=None,
    )
    return tuple(token.var for token in tokens.values())


_RUN_VARS = _run_vars()


def _consume_cancel() -> None:
    """Mark a cancellation we requested (Inflight.stop) as handled."""
    task = asyncio.current_task()
    if task is not None:
        task.uncancel()


def _stopped(inflight: Inflight, attempt: int) -> Outcome:
    """How an attempt we stopped ends: lease lost, cancelled, or handed back."""
    _consume_cancel()
    if inflight.lost:
        return Stopped("lease_lost")
    if inflight.cancelled:
        return Cancel(
            encode(ErrorInfo("Cancelled", "cancelled while running", "", attempt))
        )
    return Release()


def _error(exc: BaseException, attempt: int) -> ErrorInfo:
    text = "".join(traceback.format_exception(exc))
    return ErrorInfo(type(exc).__name__, str(exc), text[-MAX_TRACEBACK:], attempt)


class Runner:
    def __init__(
        self,
        app: Stackshift,
        leases: LeaseKeeper,
        slots: Slots,
        on_retry_scheduled: Any,
    ) -> None:
        self._app = app
        self._store: Store = app.store
        self._leases = leases
        self._slots = slots
        self._on_retry_scheduled = on_retry_scheduled
        # Metrics and traces (observe.py); None: off, and no work per run.
        self.observer: WorkerObserver | None = None
        # ctx.log: one lazy proxy for every run (it follows the structlog
        # configuration of the moment; a run's fields come from contextvars).
        self._job_log = structlog.get_logger("stackshift.job")
        self._timeouts = Timeouts()

    def close(self) -> None:
        """The worker stops: cancel the timers of the jobs' timeouts."""
        self._timeouts.close()

    async def run(self, started: StartResult) -> None:
        """Run one attempt and record how it ended: the body of a run's task.
        Gives the run's slot back when the handler returns (the next run
        overlaps this one's write), or at the end if it never got that far.

        One coroutine from the task to the handler's call (with ``_attempt``):
        every time the handler's awaits resume, each coroutine in between is
        resumed too."""
        lease = started.lease
        assert lease is not None
        inflight = self._leases.track(lease)
        try:
            if may_run(lease) is False:
                # Started early, and start.lua said no before this task began:
                # nothing ran, nothing is written. (If it says no later, the
                # dispatcher stops the run: LeaseKeeper.stop_refused.)
                return
            fields = started.run
            job = fields.get("job", b"").decode()
            number = int(fields.get("attempt", b"1"))
            correlation_id = fields.get("correlation_id", b"").decode() or lease.run_id
            began = time.monotonic()
            # Each run is a task of its own, with its own copy of the context:
            # what is bound here needs no unbinding, and reaches no other run.
            current_correlation_id.set(correlation_id)
            run_id_var, job_var, queue_var, attempt_var, correlation_var = _RUN_VARS
            run_id_var.set(lease.run_id)
            job_var.set(job)
            queue_var.set(lease.queue)
            attempt_var.set(number)
            correlation_var.set(correlation_id)
            created = fields.get("created_at")
            attempt = Attempt(
                store=self._store,
                lease=lease,
                number=number,
                job=job,
                correlation_id=correlation_id,
                created_ms=int(created) if created else time_of_run(lease.run_id),
                recorded=dict(started.steps),
                registry=self._app.registry,
                enqueue_child=self._enqueue_child,
                log=self._job_log,
            )
            outcome = await self._attempt(attempt, started, inflight)
            # From here on, stops (lease lost, shutdown) no longer cancel this
            # run (Inflight.finishing): the write is not cut short. The
            # handler's slot is free from here on.
            inflight.finishing = True
            self._slots.handler_done()
            ended = "runner_failed"
            try:
                ended = await self._finish(lease, outcome, attempt, fields)
            finally:
                seconds = time.monotonic() - began
                if inflight.observer is not None:  # observe.py: the attempt is over
                    self._observe_end(inflight.observer, outcome, ended, lease, seconds)
            if log.is_enabled_for(logging.INFO):  # a line per run: skip building it
                log.info(
                    "run_finished", outcome=ended, duration_ms=round(seconds * 1000, 1)
                )
        except Exception:  # a bug of ours: the entry is reclaimed after its lease
            log.exception("runner_failed", run_id=lease.run_id)
        finally:
            self._leases.untrack(inflight)
            if inflight.finishing:
                self._slots.finished()
            else:
                self._slots.give(1)

    async def _attempt(
        self, attempt: Attempt, started: StartResult, inflight: Inflight
    ) -> Outcome:
        # Plain asyncio, not anyio scopes: this runs once per run, and redis-py
        # ties stackshift to asyncio anyway.
        try:
            if self.observer is not None:  # observe.py hook: an attempt begins
                # Inside this try: a stop while it reads (traces) ends the
                # attempt as a stop during the handler would.
                inflight.observer = await self.observer.attempt_began(
                    AttemptInfo(
                        attempt.queue,
                        attempt.job,
                        attempt.run_id,
                        attempt.number,
                        attempt.correlation_id,
                        attempt.lease.consumer,
                    )
                )
            spec = self._app.registry.get(attempt.job)
            ctx = self._context(spec, attempt, started, inflight.observer)
            limit = spec.timeout
            if limit is None:
                value = await spec.handler(ctx)
            else:
                # The job's timeout (timeouts.py: the worker's timer cancels the
                # run's task, Inflight.time_out), not asyncio.timeout: a fraction
                # of the cost per run, with the same semantics (a handler that
                # swallows the cancellation keeps its outcome; the job's own
                # TimeoutError is an ordinary failure).
                self._timeouts.start(limit, inflight)
                try:
                    value = await spec.handler(ctx)
                except asyncio.CancelledError:
                    if not inflight.timed_out or inflight.stopping:
                        raise  # a stop (lease lost, shutdown, cancel), or not ours
                    raise JobTimeoutError(
                        f"attempt {attempt.number} ran longer than the job's "
                        f"timeout ({limit:g} s)"
                    ) from None
                finally:
                    self._timeouts.end(limit, inflight)
                    if inflight.timed_out:
                        _consume_cancel()  # the timer's cancel request, whatever came of it
            return Complete(self._encode_result(value))
        except LeaseLost:
            return Stopped("lease_lost")
        except RunSuspended:
            return Stopped("suspended")
        except asyncio.CancelledError:
            if not inflight.stopping:
                raise  # not ours to handle
            return _stopped(inflight, attempt.number)
        except (NonRetriableError, PayloadError) as exc:
            # Non-retriable by the job's say, or an invalid payload or result:
            # another attempt cannot help.
            return Failed(_error(exc, attempt.number), False, exc)
        except Exception as exc:
            return Failed(_error(exc, attempt.number), True, exc)

    @staticmethod
    def _observe_end(
        observer: AttemptObserver,
        outcome: Outcome,
        ended: str,
        lease: Lease,
        seconds: float,
    ) -> None:
        if ended == "lease_lost" and may_run(lease) is False:
            ended = "not_started"  # started early, then refused by start.lua
        failed = outcome.exc if isinstance(outcome, Failed) else None
        observer.ended(ended, failed, seconds)

    def _context(
        self,
        spec: JobSpec,
        attempt: Attempt,
        started: StartResult,
        observer: AttemptObserver | None = None,
    ) -> JobContext[Any]:
        try:
            payload = decode(started.run.get("payload", b"null"), spec.payload_type)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            raise PayloadError(f"invalid payload for job {spec.name!r}: {exc}") from exc
        max_bytes = self._store.settings.max_payload_bytes
        state = State(self._store, attempt.run_id, attempt.counters)
        return JobContext(
            payload=payload,
            step=Step(attempt, state, max_bytes, observer),
            state=state,
            run_id=attempt.run_id,
            attempt=attempt.number,
            # The queue's name, as the run was enqueued on it (RunInfo.queue,
            # RunHandle.queue): a partition ("emails:3") is not a queue name.
            queue=attempt.queue.partition(":")[0],
            job=spec.name,
            correlation_id=attempt.correlation_id,
            log=attempt.log,
        )

    async def _enqueue_child(
        self,
        queue: str,
        job: str,
        payload: Any,
        run_id: str,
        extra: bytes,
        correlation_id: str,
    ) -> EnqueueResult:
        return await self._app.queue(queue).enqueue_made(
            job, payload, run_id=run_id, extra=extra, correlation_id=correlation_id
        )

    def _encode_result(self, value: Any) -> bytes:
        data = encode(value)
        limit = self._store.settings.max_payload_bytes
        if len(data) > limit:
            raise NonRetriableError(
                f"the job returned {len(data)} bytes of JSON; the limit is {limit}"
            )
        return data

    async def _finish(
        self,
        lease: Lease,
        outcome: Outcome,
        attempt: Attempt,
        fields: dict[str, bytes],
    ) -> str:
        """Record the outcome with one fenced finish; returns what happened."""
        if isinstance(outcome, Stopped):
            return outcome.why
        how: Finish = (
            self._failure(outcome, attempt.job, fields)
            if isinstance(outcome, Failed)
            else outcome
        )
        try:
            done = await self._store.finish(
                lease, how, counters=list(attempt.counters) or None
            )
        except StoreError as exc:
            # The entry stays pending: it is reclaimed once its lease expires.
            log.error("finish_failed", error=str(exc))
            return "finish_failed"
        if done.outcome == "lost":
            return "lease_lost"
        if done.outcome == "handoff":
            await self._hand_off(lease.run_id)
        return self._ended(how)

    def _failure(self, outcome: Failed, job: str, fields: dict[str, bytes]) -> Finish:
        spec = self._app.registry.find(job)
        failures = int(fields.get("failures", b"0")) + 1
        retry = outcome.retryable and spec is not None and failures <= spec.retries
        backoff_ms = int(spec.backoff(failures) * 1000) if retry and spec else 0
        log.warning(
            "attempt_failed",
            error_type=outcome.error.type,
            error=outcome.error.message,
            retrying=retry,
            backoff_ms=backoff_ms,
            exc_info=outcome.exc,
        )
        error = encode(outcome.error)
        if retry:
            self._on_retry_scheduled()
            return Retry(error, backoff_ms)
        return DeadLetter(error)

    async def _hand_off(self, run_id: str) -> None:
        """Tell the parent of this (child) run how it ended. If this fails, a
        scheduler does it later (the hand-off is recorded with the finish)."""
        try:
            await self._store.hand_off(run_id)
        except StoreError as exc:
            log.warning("hand_off_failed", error=str(exc))

    @staticmethod
    def _ended(how: Finish) -> str:
        if isinstance(how, Complete):
            return "completed"
        if isinstance(how, Retry):
            return "retry_scheduled"
        if isinstance(how, DeadLetter):
            return "dead_lettered"
        if isinstance(how, Cancel):
            return "cancelled"
        return "handed_back"
