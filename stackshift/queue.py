"""The enqueue side: ``Queue.enqueue()``, ``RunHandle``. Imports nothing from worker/."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any

import anyio
import msgspec
import structlog

from .config import Duration, to_ms
from .context import current_correlation_id
from .errors import JobFailed, PayloadError, StackshiftError
from .registry import Registry
from .serialization import RunStatus, decode, encode, error_decoder
from .store import EnqueueRequest, Store
from .store.keys import check_name, key_part, new_run_id, queue_of_run

if TYPE_CHECKING:
    from .serialization import RunInfo

log = structlog.get_logger("stackshift")

# A backstop for a pub/sub message lost in a reconnect: re-read the run this
# often while waiting. Waiting is otherwise pure notification, not polling.
RESULT_RECHECK_SECONDS = 5.0
MAX_CORRELATION_ID = 256


def _inherited_correlation_id() -> str:
    """The running job's correlation id, else one bound by the caller (a web
    request's structlog context), else '' (the run's own id is used)."""
    value = current_correlation_id.get()
    if value:
        return value
    bound = structlog.contextvars.get_contextvars()
    for name in ("correlation_id", "request_id"):
        if isinstance(bound.get(name), str) and bound[name]:
            return str(bound[name])[:MAX_CORRELATION_ID]
    return ""


class RunHandle:
    """A run that was enqueued: its id, and a way to wait for its result."""

    __slots__ = ("_waiter", "deduplicated", "queue", "run_id")

    def __init__(self, run_id: str, deduplicated: bool, waiter: ResultWaiter) -> None:
        self.run_id = run_id
        self.deduplicated = deduplicated
        self.queue = queue_of_run(run_id)
        self._waiter = waiter

    def __repr__(self) -> str:
        return f"RunHandle(run_id={self.run_id!r}, deduplicated={self.deduplicated})"

    async def result(self, timeout: Duration | None = None) -> Any:  # noqa: ASYNC109 (the contract)
        """Wait for the run to finish and return its result.

        Waits on a notification from the worker, not by polling Redis.

        Args:
            timeout: seconds (or a timedelta) to wait; None waits as long as it takes.

        Raises:
            JobFailed: the run was dead-lettered (out of attempts, or non-retriable).
            TimeoutError: it did not finish within ``timeout``.
        """
        seconds = math.inf if timeout is None else to_ms(timeout) / 1000
        return await self._waiter.wait(self.run_id, seconds)

    async def info(self) -> RunInfo | None:
        return await self._waiter.store.get_run(self.run_id)


class ResultWaiter:
    """One pub/sub subscription per app, shared by every ``RunHandle.result()``."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._events: dict[str, set[asyncio.Event]] = {}
        self._pubsub: Any = None
        self._listener: asyncio.Task[None] | None = None
        self._channels: dict[str, asyncio.Event] = {}  # channel -> subscribed

    async def wait(self, run_id: str, timeout: float) -> Any:  # noqa: ASYNC109
        event = asyncio.Event()
        self._events.setdefault(run_id, set()).add(event)
        deadline = time.monotonic() + timeout
        try:
            with contextlib.suppress(StackshiftError):
                await self._subscribe(
                    queue_of_run(run_id)
                )  # else: the recheck carries on
            while True:
                status, result, error = await self.store.run_outcome(run_id)
                if status == RunStatus.COMPLETED:
                    return decode(result) if result else None
                if status == RunStatus.FAILED:
                    info = error_decoder.decode(error) if error else None
                    raise JobFailed(
                        run_id,
                        info.type if info else "Error",
                        info.message if info else "",
                    )
                if not status:
                    raise StackshiftError(
                        f"run {run_id} does not exist (never enqueued, or its record expired)"
                    )
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(
                        f"run {run_id} did not finish within {timeout} s"
                    )
                with anyio.move_on_after(min(remaining, RESULT_RECHECK_SECONDS)):
                    await event.wait()
                event.clear()
        finally:
            waiters = self._events.get(run_id)
            if waiters is not None:
                waiters.discard(event)
                if not waiters:
                    del self._events[run_id]

    async def _subscribe(self, queue: str) -> None:
        channel = self.store.keys.queue(queue).finished
        ready = self._channels.get(channel)
        if ready is None:
            ready = self._channels[channel] = asyncio.Event()
            if self._pubsub is None:
                self._pubsub = self.store.client.pubsub()
            await self._pubsub.subscribe(channel)
            if self._listener is None or self._listener.done():
                self._listener = asyncio.create_task(self._listen())
        # Wait for the server's confirmation, so no publish can slip past us.
        with anyio.move_on_after(2.0):
            await ready.wait()

    async def _listen(self) -> None:
        while self._pubsub is not None:
            try:
                message = await self._pubsub.get_message(timeout=RESULT_RECHECK_SECONDS)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # connection lost: the recheck covers the gap
                log.warning("result_listener_error", error=str(exc))
                await asyncio.sleep(1.0)
                with contextlib.suppress(Exception):
                    await self._pubsub.subscribe(*self._channels)
                continue
            if not message:
                continue
            kind = message.get("type")
            if kind in (b"subscribe", "subscribe"):
                channel = message["channel"]
                name = channel.decode() if isinstance(channel, bytes) else channel
                if name in self._channels:
                    self._channels[name].set()
            elif kind in (b"message", "message"):
                data = message["data"]
                run_id = data.decode() if isinstance(data, bytes) else str(data)
                for event in self._events.get(run_id, ()):
                    event.set()

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(BaseException):
                await self._listener
            self._listener = None
        if self._pubsub is not None:
            pubsub, self._pubsub = self._pubsub, None
            with contextlib.suppress(Exception):
                await pubsub.aclose()
        self._channels.clear()


class Queue:
    """Enqueue runs onto one queue: ``app.queue("emails")``."""

    def __init__(
        self, name: str, store: Store, registry: Registry, waiter: ResultWaiter
    ) -> None:
        self.name = check_name(name, "queue")
        self._store = store
        self._registry = registry
        self._waiter = waiter

    def __repr__(self) -> str:
        return f"Queue({self.name!r})"

    def _request(
        self,
        job: str,
        payload: Any,
        *,
        idempotency_key: str | None,
        correlation_id: str | None,
        delay: Duration | None,
        run_at: datetime | float | None,
    ) -> EnqueueRequest:
        check_name(job, "job")
        if idempotency_key is not None:
            key_part(idempotency_key, "idempotency key")  # validates before any I/O
        if correlation_id is not None and (
            not isinstance(correlation_id, str)
            or len(correlation_id) > MAX_CORRELATION_ID
        ):
            raise PayloadError(
                f"correlation_id must be a str of at most {MAX_CORRELATION_ID} characters"
            )
        if delay is not None and run_at is not None:
            raise PayloadError("give delay= or run_at=, not both")
        data = self._encode_payload(job, payload)
        run_at_ms = -1
        if run_at is not None:
            ts = run_at.timestamp() if isinstance(run_at, datetime) else float(run_at)
            run_at_ms = int(ts * 1000)
        return EnqueueRequest(
            run_id=new_run_id(self.name),
            job=job,
            payload=data,
            correlation_id=correlation_id or _inherited_correlation_id(),
            idempotency_key=idempotency_key,
            delay_ms=to_ms(delay, name="delay") if delay is not None else -1,
            run_at_ms=run_at_ms,
        )

    def _encode_payload(self, job: str, payload: Any) -> bytes:
        spec = self._registry.find(job)
        if spec is not None and spec.payload_type is not Any:
            # Validate here too, when the job's type is known in this process.
            cls = spec.payload_type
            if not (isinstance(cls, type) and isinstance(payload, cls)):
                try:
                    payload = msgspec.convert(
                        payload, spec.payload_type, from_attributes=True
                    )
                except (msgspec.ValidationError, TypeError) as exc:
                    raise PayloadError(
                        f"invalid payload for job {job!r}: {exc}"
                    ) from exc
        data = encode(payload)
        limit = self._store.settings.max_payload_bytes
        if len(data) > limit:
            raise PayloadError(
                f"payload for job {job!r} is {len(data)} bytes of JSON; the limit is "
                f"{limit} (max_payload_bytes). Store large data elsewhere, pass a reference."
            )
        return data

    async def enqueue(
        self,
        job: str,
        payload: Any = None,
        *,
        idempotency_key: str | None = None,
        correlation_id: str | None = None,
        delay: Duration | None = None,
        run_at: datetime | float | None = None,
    ) -> RunHandle:
        """Enqueue a run of ``job`` (one round trip).

        Args:
            job: the registered job name (the enqueuing process needs no handler).
            payload: JSON-serialisable data (a dict, or a msgspec Struct).
            idempotency_key: within its TTL (24 h by default) a second enqueue with
                this key makes no new run and returns the first run's id.
            correlation_id: carried by the run and its logs; default: inherited
                from the calling job or request context, else the run id.
            delay: run no earlier than this long from now.
            run_at: run no earlier than this time (datetime or epoch seconds).

        Returns:
            A ``RunHandle`` (``run_id``, ``deduplicated``, ``await result()``).

        Raises:
            InvalidNameError: a bad job name or idempotency key.
            PayloadError: a payload that is invalid, not JSON, or too large.
            StoreError: Redis refused or could not be reached.
        """
        req = self._request(
            job,
            payload,
            idempotency_key=idempotency_key,
            correlation_id=correlation_id,
            delay=delay,
            run_at=run_at,
        )
        # No log line here: this is the web app's hot path, and an app that has
        # not configured structlog would print every enqueue.
        res = await self._store.enqueue(self.name, req)
        return RunHandle(res.run_id, res.deduplicated, self._waiter)

    async def enqueue_many(
        self,
        job: str,
        payloads: Iterable[Any],
        *,
        delay: Duration | None = None,
        batch_size: int = 1000,
    ) -> list[RunHandle]:
        """Enqueue one run per payload, ``batch_size`` per pipelined round trip.

        Every payload is validated before anything is sent.
        """
        reqs = [
            self._request(
                job,
                p,
                idempotency_key=None,
                correlation_id=None,
                delay=delay,
                run_at=None,
            )
            for p in payloads
        ]
        handles: list[RunHandle] = []
        for start in range(0, len(reqs), batch_size):
            results = await self._store.enqueue_many(
                self.name, reqs[start : start + batch_size]
            )
            handles.extend(
                RunHandle(r.run_id, r.deduplicated, self._waiter) for r in results
            )
        return handles
