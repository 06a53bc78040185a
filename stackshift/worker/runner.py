"""Runner: one attempt of a run: handler + JobContext, timeout, then finish it."""

from __future__ import annotations

import asyncio
import dataclasses
import time
import traceback
from typing import TYPE_CHECKING, Any

import msgspec
import structlog

from ..context import JobContext, LeaseLost, State, Step, current_correlation_id
from ..errors import (
    JobTimeoutError,
    NonRetriableError,
    PayloadError,
    StackshiftError,
    StoreError,
)
from ..registry import JobSpec
from ..serialization import ErrorInfo, decode, encode
from ..store import Lease, StartResult, Store
from .lease import Inflight, LeaseKeeper
from .slots import Slots

if TYPE_CHECKING:
    from ..app import Stackshift

log = structlog.get_logger("stackshift.worker")

MAX_TRACEBACK = 16 * 1024


@dataclasses.dataclass(slots=True, frozen=True)
class Completed:
    result: bytes


@dataclasses.dataclass(slots=True, frozen=True)
class Failed:
    error: ErrorInfo
    retryable: bool


@dataclasses.dataclass(slots=True, frozen=True)
class Stopped:
    """The attempt was cancelled: lease lost (write nothing) or shutdown (hand back)."""

    lost: bool


Outcome = Completed | Failed | Stopped


def _consume_cancel() -> None:
    """Mark a cancellation we requested (Inflight.stop) as handled."""
    task = asyncio.current_task()
    if task is not None:
        task.uncancel()


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

    async def run(self, started: StartResult) -> None:
        """Run one attempt and record how it ended. Gives the run's slot back
        when the handler returns (the next run overlaps this one's write), or
        at the end if it never got that far."""
        lease = started.lease
        assert lease is not None
        inflight = self._leases.track(lease)
        try:
            await self._run(started, lease, inflight)
        finally:
            self._leases.untrack(inflight)
            if inflight.finishing:
                self._slots.finished()
            else:
                self._slots.give(1)

    async def _run(
        self, started: StartResult, lease: Lease, inflight: Inflight
    ) -> None:
        fields = started.run
        job = fields.get("job", b"").decode()
        attempt = int(fields.get("attempt", b"1"))
        correlation_id = fields.get("correlation_id", b"").decode() or lease.run_id
        if lease.ready is not None:  # started early: stop if start.lua says no
            lease.ready.add_done_callback(
                lambda ready: (
                    None
                    if not ready.cancelled() and ready.result()
                    else inflight.stop(lost=True)
                )
            )
        began = time.monotonic()
        # Each run is a task of its own, with its own copy of the context: what
        # is bound here needs no unbinding, and reaches no other run.
        current_correlation_id.set(correlation_id)
        structlog.contextvars.bind_contextvars(
            run_id=lease.run_id,
            job=job,
            queue=lease.queue,
            attempt=attempt,
            correlation_id=correlation_id,
        )
        outcome = await self._attempt(job, attempt, correlation_id, started, inflight)
        ended = await self._finish_uncancellable(inflight, outcome, job, fields)
        log.info(
            "run_finished",
            outcome=ended,
            duration_ms=round((time.monotonic() - began) * 1000, 1),
        )

    async def _attempt(
        self,
        job: str,
        attempt: int,
        correlation_id: str,
        started: StartResult,
        inflight: Inflight,
    ) -> Outcome:
        # Plain asyncio, not anyio scopes: this runs once per run, and redis-py
        # ties stackshift to asyncio anyway.
        try:
            spec = self._app.registry.get(job)
            ctx = self._context(spec, inflight.lease, attempt, correlation_id, started)
            value = await self._call_handler(spec, ctx, inflight, attempt)
            return Completed(self._encode_result(value))
        except LeaseLost:
            return Stopped(lost=True)
        except asyncio.CancelledError:
            if not inflight.stopping:
                raise  # not ours to handle
            _consume_cancel()
            return Stopped(lost=inflight.lost)
        except (NonRetriableError, StackshiftError) as exc:
            # Unknown job, invalid payload, oversized result: retrying cannot help.
            retryable = isinstance(exc, (JobTimeoutError, StoreError))
            return Failed(_error(exc, attempt), retryable=retryable)
        except Exception as exc:
            return Failed(_error(exc, attempt), retryable=True)

    @staticmethod
    async def _call_handler(
        spec: JobSpec, ctx: JobContext[Any], inflight: Inflight, attempt: int
    ) -> Any:
        """Await the handler within the job's timeout. A timer that cancels the
        run's task (Inflight.time_out), not asyncio.timeout: half the cost per
        run, with the same semantics (a handler that swallows the cancellation
        keeps its outcome; the job's own TimeoutError is an ordinary failure)."""
        if spec.timeout is None:
            return await spec.handler(ctx)
        loop = asyncio.get_running_loop()
        timer = loop.call_at(loop.time() + spec.timeout, inflight.time_out)
        try:
            return await spec.handler(ctx)
        except asyncio.CancelledError:
            if not inflight.timed_out or inflight.stopping:
                raise  # a stop (lease lost, shutdown), or not ours at all
            raise JobTimeoutError(
                f"attempt {attempt} ran longer than the job's timeout ({spec.timeout:g} s)"
            ) from None
        finally:
            timer.cancel()
            if inflight.timed_out:
                _consume_cancel()  # the timer's cancel request, whatever came of it

    async def _finish_uncancellable(
        self, inflight: Inflight, outcome: Outcome, job: str, fields: dict[str, bytes]
    ) -> str:
        """Write the outcome. From here on, stops (lease lost, shutdown) no longer
        cancel this run (``Inflight.finishing``): the write is not cut short.
        (No task of its own for it: that cost a task and a shield per run.)
        The handler's slot is free from here on."""
        inflight.finishing = True
        self._slots.handler_done()
        return await self._finish(inflight.lease, outcome, job, fields)

    def _context(
        self,
        spec: JobSpec,
        lease: Lease,
        attempt: int,
        correlation_id: str,
        started: StartResult,
    ) -> JobContext[Any]:
        try:
            payload = decode(started.run.get("payload", b"null"), spec.payload_type)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            raise PayloadError(f"invalid payload for job {spec.name!r}: {exc}") from exc
        bound = structlog.get_logger("stackshift.job")
        max_bytes = self._store.settings.max_payload_bytes
        state = State(self._store, lease.run_id)
        recorded = dict(started.steps)
        return JobContext(
            payload=payload,
            step=Step(self._store, lease, attempt, recorded, bound, max_bytes, state),
            state=state,
            run_id=lease.run_id,
            attempt=attempt,
            queue=lease.queue,
            job=spec.name,
            correlation_id=correlation_id,
            log=bound,
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
        self, lease: Lease, outcome: Outcome, job: str, fields: dict[str, bytes]
    ) -> str:
        """Record the outcome with one fenced script; returns what happened."""
        try:
            if isinstance(outcome, Completed):
                ok = await self._store.complete(lease, outcome.result)
                return "completed" if ok else "lease_lost"
            if isinstance(outcome, Failed):
                return await self._fail(lease, outcome, job, fields)
            if outcome.lost:
                return "lease_lost"
            return "handed_back" if await self._store.release(lease) else "lease_lost"
        except StoreError as exc:
            # The entry stays pending: it is reclaimed once its lease expires.
            log.error("finish_failed", error=str(exc))
            return "finish_failed"

    async def _fail(
        self, lease: Lease, outcome: Failed, job: str, fields: dict[str, bytes]
    ) -> str:
        spec = self._app.registry.find(job)
        failures = int(fields.get("failures", b"0")) + 1
        retry = outcome.retryable and spec is not None and failures <= spec.retries
        backoff_ms = int(spec.backoff(failures) * 1000) if retry and spec else 0
        result = await self._store.fail(
            lease, encode(outcome.error), retry=retry, backoff_ms=backoff_ms
        )
        log.warning(
            "attempt_failed",
            error_type=outcome.error.type,
            error=outcome.error.message,
            retrying=result == "retry",
            backoff_ms=backoff_ms,
        )
        if result == "retry":
            self._on_retry_scheduled()
            return "retry_scheduled"
        return "dead_lettered" if result == "dead" else "lease_lost"
