"""The enqueue side: ``Queue.enqueue()``, ``RunHandle``. Imports nothing from worker/."""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any

import msgspec
import structlog

from .config import Duration, to_ms
from .context import current_correlation_id
from .errors import PayloadError
from .logs import get_logger
from .registry import Registry
from .serialization import encode
from .store import EnqueueRequest, EnqueueResult, Store
from .store.keys import check_name, key_part, new_run_id, queue_of_run
from .store.notify import ResultWaiter

if TYPE_CHECKING:
    from .serialization import RunInfo

log = get_logger("stackshift")

MAX_CORRELATION_ID = 256


def inherited_correlation_id() -> str:
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


def checked_correlation_id(correlation_id: object) -> str:
    """A correlation id given by the caller, checked ('' if none)."""
    if correlation_id is None:
        return ""
    if not isinstance(correlation_id, str) or len(correlation_id) > MAX_CORRELATION_ID:
        raise PayloadError(
            f"correlation_id must be a str of at most {MAX_CORRELATION_ID} characters"
        )
    return correlation_id


class RunHandle:
    """A run that was enqueued: its id, and a way to wait for its result."""

    __slots__ = ("_waiter", "deduplicated", "queue", "run_id")

    def __init__(
        self,
        run_id: str,
        deduplicated: bool,
        waiter: ResultWaiter,
        queue: str | None = None,
    ) -> None:
        self.run_id = run_id
        self.deduplicated = deduplicated
        self.queue = queue_of_run(run_id) if queue is None else queue
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
        run_id: str | None = None,
        extra: bytes = b"",
    ) -> EnqueueRequest:
        check_name(job, "job")
        if idempotency_key is not None:
            key_part(idempotency_key, "idempotency key")  # validates before any I/O
        checked_correlation_id(correlation_id)
        if delay is not None and run_at is not None:
            raise PayloadError("give delay= or run_at=, not both")
        data = self._encode_payload(job, payload)
        run_at_ms = -1
        if run_at is not None:
            ts = run_at.timestamp() if isinstance(run_at, datetime) else float(run_at)
            run_at_ms = int(ts * 1000)
        return EnqueueRequest(
            run_id=run_id or new_run_id(self.name),
            job=job,
            payload=data,
            correlation_id=correlation_id or inherited_correlation_id(),
            idempotency_key=idempotency_key,
            delay_ms=to_ms(delay, name="delay") if delay is not None else -1,
            run_at_ms=run_at_ms,
            extra=extra,
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
        return RunHandle(res.run_id, res.deduplicated, self._waiter, self.name)

    async def enqueue_made(
        self,
        job: str,
        payload: Any,
        *,
        run_id: str,
        extra: bytes,
        correlation_id: str,
    ) -> EnqueueResult:
        """Enqueue a run whose id is made from what it stands for (a child run
        of step.invoke): a second call with that id finds the first run."""
        req = self._request(
            job,
            payload,
            idempotency_key=None,
            correlation_id=correlation_id,
            delay=None,
            run_at=None,
            run_id=run_id,
            extra=extra,
        )
        return await self._store.enqueue(self.name, req)

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
                RunHandle(r.run_id, r.deduplicated, self._waiter, self.name)
                for r in results
            )
        return handles
