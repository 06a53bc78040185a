"""Typed values the Store hands out, and the one place redis-py errors are mapped."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Iterator
from typing import Any

from redis.exceptions import OutOfMemoryError, RedisError

from ..errors import StoreError


@dataclasses.dataclass(slots=True, frozen=True)
class Entry:
    """A stream entry delivered to this worker."""

    queue: str
    entry_id: str
    fields: dict[bytes, bytes]

    @property
    def run_id(self) -> str | None:
        raw = self.fields.get(b"r")
        try:
            return raw.decode() if raw is not None else None
        except UnicodeDecodeError:
            return None


@dataclasses.dataclass(slots=True, frozen=True)
class Lease:
    """A worker's hold on an entry: the fencing token of every write it makes."""

    queue: str
    entry_id: str
    deliveries: int
    run_id: str
    consumer: str
    # A run started from its entry alone (Store.early_start) before start.lua
    # has confirmed it: resolves True once confirmed, False if it may not run.
    # Store writes wait for it, so none lands before the run is marked started.
    ready: asyncio.Future[bool] | None = dataclasses.field(default=None, compare=False)


@dataclasses.dataclass(slots=True, frozen=True)
class StartResult:
    """What start.lua said about an entry.

    ``outcome``: ``ok`` (run it), ``lost`` (not ours), ``gone`` (no run record:
    bury it), ``done`` (already finished), ``dead`` (poison, dead-lettered).
    """

    outcome: str
    lease: Lease | None = None
    run: dict[str, bytes] = dataclasses.field(default_factory=dict)
    steps: dict[str, bytes] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(slots=True, frozen=True)
class EnqueueResult:
    run_id: str
    deduplicated: bool


@dataclasses.dataclass(slots=True, frozen=True)
class EnqueueRequest:
    run_id: str
    job: str
    payload: bytes
    correlation_id: str = ""
    idempotency_key: str | None = None
    delay_ms: int = -1
    run_at_ms: int = -1
    # Fields the run's record must hold from the start (JSON object; b"" for
    # none): the parent of an invoked child run, the event a run was made for.
    extra: bytes = b""


@dataclasses.dataclass(slots=True, frozen=True)
class QueueStats:
    queue: str
    waiting: int  # entries not yet delivered to any worker
    running: int  # entries delivered, not yet acknowledged
    scheduled: int  # in the delayed set (delays and retry backoffs)
    dead: int  # dead-lettered runs kept for inspection
    consumers: int
    # enqueued / completed / retried / failed / cancelled / suspended since creation
    totals: dict[str, int]
    suspended: int = 0  # sleeping, waiting for an event or for a child run


# --- how a run leaves a worker (store/finish.py, lua/_finish.lua) -----------


@dataclasses.dataclass(slots=True, frozen=True)
class Complete:
    result: bytes  # the job's return value, JSON


@dataclasses.dataclass(slots=True, frozen=True)
class Retry:
    error: bytes  # ErrorInfo, JSON
    backoff_ms: int


@dataclasses.dataclass(slots=True, frozen=True)
class DeadLetter:
    error: bytes  # ErrorInfo, JSON


@dataclasses.dataclass(slots=True, frozen=True)
class Cancel:
    error: bytes  # ErrorInfo, JSON: why (type "Cancelled")


@dataclasses.dataclass(slots=True, frozen=True)
class Suspend:
    waiting: bytes  # {"waits": [...]}, JSON (context.py Suspension)


@dataclasses.dataclass(slots=True, frozen=True)
class Release:
    """A hand-back at shutdown: the run goes back to its queue."""


Finish = Complete | Retry | DeadLetter | Cancel | Suspend | Release


@dataclasses.dataclass(slots=True, frozen=True)
class Finished:
    """What a finish did: ``ok``; ``lost`` (not ours any more, nothing
    written); ``handoff`` (ok, and the run's parent must be told); ``resolved``
    (a suspend found a waited step recorded already: the run goes on, with
    ``steps``)."""

    outcome: str
    steps: dict[str, bytes] = dataclasses.field(default_factory=dict)


def as_str(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def pairs(flat: list[Any]) -> dict[str, bytes]:
    """A flat HGETALL-style reply as a dict."""
    return {as_str(flat[i]): flat[i + 1] for i in range(0, len(flat), 2)}


@contextlib.contextmanager
def mapped_errors(what: str) -> Iterator[None]:
    """Map redis-py errors once, to ``StoreError`` with a clear message."""
    try:
        yield
    except RedisError as exc:
        raise store_error(what, exc) from exc


def store_error(what: str, exc: RedisError) -> StoreError:
    """The ``StoreError`` a redis-py error is reported as."""
    text = str(exc)
    # redis-py 8 strips the "OOM" prefix from the message: test the class.
    if isinstance(exc, OutOfMemoryError) or text.startswith("OOM"):
        return StoreError(
            f"{what}: Redis is out of memory (maxmemory reached); "
            "nothing was written. Free memory or raise maxmemory."
        )
    if "NOPERM" in text:
        return StoreError(f"{what}: Redis ACL denied it: {text}")
    return StoreError(f"{what}: {type(exc).__name__}: {text}")


def confirm(lease: Lease, ok: bool) -> None:
    """Settle an early start (intake.py): its run may write (True) or must
    stop (False)."""
    if lease.ready is not None and not lease.ready.done():
        lease.ready.set_result(ok)


async def confirmed(lease: Lease) -> bool:
    """Whether the run may write: at once, unless it was started early and
    start.lua has not answered yet (then wait for it)."""
    if lease.ready is None:
        return True
    if lease.ready.done():
        return lease.ready.result()
    return await asyncio.shield(lease.ready)


# The record fields that keep the trace context of the enqueue that made a run
# (W3C Trace Context), written through an enqueue's extra fields when tracing
# is on (stackshift.tracing).
TRACE_FIELDS = ("traceparent", "tracestate")


@dataclasses.dataclass(slots=True, frozen=True)
class QueueGauges:
    """A queue at one moment, for /metrics and /readyz (worker/metrics.py)."""

    group: bool  # its consumer group exists
    queued: int  # entries not yet delivered to any worker
    running: int  # entries delivered, not yet acknowledged
    scheduled: int
    suspended: int
    dead: int
    # The entry time (server clock, ms) of the oldest run not yet delivered.
    oldest_queued_ms: int | None
