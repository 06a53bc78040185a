"""The enqueue side: ``Queue.enqueue()``, ``RunHandle``. Imports nothing from worker/."""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

import msgspec
import structlog

from .config import Duration, to_ms
from .context import current_correlation_id
from .errors import ConfigError, PayloadError
from .logs import get_logger
from .registry import Registry
from .serialization import decode, encode
from .store import EnqueueRequest, EnqueueResult, Store
from .store.keys import (
    MAX_PARTITIONS,
    check_name,
    in_stored_queue,
    key_part,
    new_run_id,
    queue_of_run,
)
from .store.notify import wait_for_result

if TYPE_CHECKING:
    from .app import Stackshift
    from .serialization import RunInfo

R = TypeVar("R")

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


class RunHandle(Generic[R]):
    """A run that was enqueued: its id, and a way to wait for its result."""

    __slots__ = ("_app", "_result_type", "deduplicated", "queue", "run_id")

    def __init__(
        self,
        run_id: str,
        deduplicated: bool,
        app: Stackshift,
        queue: str | None = None,
        result_type: Any = Any,
    ) -> None:
        self.run_id = run_id
        self.deduplicated = deduplicated
        self.queue = queue_of_run(run_id) if queue is None else queue
        self._app = app
        self._result_type = result_type

    def __repr__(self) -> str:
        return f"RunHandle(run_id={self.run_id!r}, deduplicated={self.deduplicated})"

    async def result(self, timeout: Duration | None = None) -> R:  # noqa: ASYNC109 (the contract)
        """Wait for the run to finish and return its result, decoded into the
        job's return type when the job is known here (``Job.enqueue``, or a job
        registered in this app).

        Waits on a notification from the worker, not by polling Redis.

        Args:
            timeout: seconds (or a timedelta) to wait; None waits as long as it takes.

        Raises:
            JobFailed: the run was dead-lettered (out of attempts, or
                non-retriable) or cancelled.
            TimeoutError: it did not finish within ``timeout``.
        """
        seconds = math.inf if timeout is None else to_ms(timeout) / 1000
        raw = await wait_for_result(self._app.store, self.run_id, seconds)
        if raw is None:
            return None  # type: ignore[return-value]
        try:
            return cast(R, decode(raw, self._result_type))
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            raise PayloadError(
                f"run {self.run_id}: its result does not decode into "
                f"{self._result_type!r}: {exc}"
            ) from exc

    def result_sync(self, timeout: Duration | None = None) -> R:
        """``result()`` for code without an event loop (Flask, Django, scripts)."""
        return self._app.sync.call("result", self.result, timeout)

    async def info(self) -> RunInfo | None:
        return await self._app.store.get_run(self.run_id)


class Queue:
    """Enqueue runs onto one queue: ``app.queue("emails")``.

    A queue with ``partitions=N`` is N queues in N hash slots (``emails:0`` ..
    ``emails:N-1``), so one logical queue can spread over the masters of a
    Redis Cluster. A run goes to one of them: by its idempotency key when it
    has one (so the key dedupes), else in turn. Workers serving the queue
    serve every partition; stats and listings see the queue as one.
    """

    def __init__(
        self, name: str, app: Stackshift, partitions: int | None = None
    ) -> None:
        self.name = check_name(name, "queue")
        if partitions is not None and not 1 <= partitions <= MAX_PARTITIONS:
            raise ConfigError(
                f"partitions must be from 1 to {MAX_PARTITIONS}, got {partitions!r}"
            )
        self._app = app
        self._store: Store = app.store
        self._registry: Registry = app.registry
        self._declared = partitions
        self._count = 0  # partitions, once read from the registry (first enqueue)

    def __repr__(self) -> str:
        return f"Queue({self.name!r})"

    @property
    def declared(self) -> int | None:
        """The partitions declared for it here (None: as the registry says)."""
        return self._declared

    async def _partitions(self) -> int:
        """How many partitions the queue has: read (and checked against what was
        declared here) on the first enqueue; a lookup from then on."""
        if not self._count:
            self._count = await self._store.partitions(self.name, self._declared)
        return self._count

    def _handle(self, run_id: str, deduplicated: bool, job: str) -> RunHandle[Any]:
        # The queue's own name, also for a run in one of its partitions.
        spec = self._registry.find(job)
        return RunHandle(
            run_id,
            deduplicated,
            self._app,
            self.name,
            spec.return_type if spec is not None else Any,
        )

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
    ) -> RunHandle[Any]:
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
        req = self._request(  # bad input is refused before any I/O
            job,
            payload,
            idempotency_key=idempotency_key,
            correlation_id=correlation_id,
            delay=delay,
            run_at=run_at,
        )
        stored = self.name
        count = self._count or await self._partitions()
        if count > 1:
            stored = self._store.placed(self.name, count, by=idempotency_key)
            req = dataclasses.replace(req, run_id=in_stored_queue(req.run_id, stored))
        # No log line here: this is the web app's hot path, and an app that has
        # not configured structlog would print every enqueue.
        res = await self._store.enqueue(stored, req)
        return self._handle(res.run_id, res.deduplicated, job)

    def enqueue_sync(
        self,
        job: str,
        payload: Any = None,
        *,
        idempotency_key: str | None = None,
        correlation_id: str | None = None,
        delay: Duration | None = None,
        run_at: datetime | float | None = None,
    ) -> RunHandle[Any]:
        """``enqueue()`` for code without an event loop (Flask, Django, scripts).

        Raises:
            StackshiftError: called from a thread that runs an event loop.
        """
        return self._app.sync.call(
            "enqueue",
            functools.partial(
                self.enqueue,
                job,
                payload,
                idempotency_key=idempotency_key,
                correlation_id=correlation_id,
                delay=delay,
                run_at=run_at,
            ),
        )

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
        of step.invoke): a second call with that id finds the first run. On a
        partitioned queue, the id picks the partition (the same every time),
        and the run's id names it: use the id this returns."""
        stored = self._store.placed(self.name, await self._partitions(), by=run_id)
        req = self._request(
            job,
            payload,
            idempotency_key=None,
            correlation_id=correlation_id,
            delay=None,
            run_at=None,
            run_id=in_stored_queue(run_id, stored),
            extra=extra,
        )
        return await self._store.enqueue(stored, req)

    async def enqueue_many(
        self,
        job: str,
        payloads: Iterable[Any],
        *,
        delay: Duration | None = None,
        batch_size: int = 1000,
    ) -> list[RunHandle[Any]]:
        """Enqueue one run per payload, ``batch_size`` per pipelined round trip.

        Every payload is validated before anything is sent.
        """
        reqs = [  # every payload is checked before anything is sent
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
        count = self._count or await self._partitions()
        stored = [self._store.placed(self.name, count) for _ in range(count)]
        if count > 1:
            reqs = [
                dataclasses.replace(
                    r, run_id=in_stored_queue(r.run_id, stored[i % count])
                )
                for i, r in enumerate(reqs)
            ]
        handles: list[RunHandle[Any]] = []
        for start in range(0, len(reqs), batch_size):
            batch = reqs[start : start + batch_size]
            for n, queue in enumerate(stored):  # one call per partition
                part = batch[n::count] if count > 1 else batch
                results = await self._store.enqueue_many(queue, part) if part else []
                handles.extend(
                    self._handle(r.run_id, r.deduplicated, job) for r in results
                )
        if count > 1:  # back in the order the payloads were given
            order = {req.run_id: i for i, req in enumerate(reqs)}
            handles.sort(key=lambda h: order[h.run_id])
        return handles

    def enqueue_many_sync(
        self,
        job: str,
        payloads: Iterable[Any],
        *,
        delay: Duration | None = None,
        batch_size: int = 1000,
    ) -> list[RunHandle[Any]]:
        """``enqueue_many()`` for code without an event loop."""
        return self._app.sync.call(
            "enqueue_many",
            functools.partial(
                self.enqueue_many, job, payloads, delay=delay, batch_size=batch_size
            ),
        )
