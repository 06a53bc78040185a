"""Typed values the Store hands out, and the one place redis-py errors are mapped."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Iterator
from typing import Any, TypeAlias

from redis.exceptions import OutOfMemoryError, RedisError

from ..errors import InvalidNameError, StoreError
from .keys import queue_of_run


# Not frozen (eq=False: compared and hashed by identity), unlike the other
# records here: a frozen dataclass sets each field through object.__setattr__,
# about four times the cost of a plain one, and these are made for every
# delivered entry or run. Nothing changes them once made.
@dataclasses.dataclass(slots=True, eq=False)
class Entry:
    """A stream entry delivered to this worker.

    ``run_id``: the run it names (None: none, or not text); ``names_a_run``:
    that run id is well formed and belongs to the entry's queue (else the
    entry is buried). Both read once, when the entry is made."""

    queue: str
    entry_id: str
    fields: dict[bytes, bytes]
    run_id: str | None = dataclasses.field(init=False)
    names_a_run: bool = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        raw = self.fields.get(b"r")
        run_id: str | None = None
        if raw is not None:
            try:
                run_id = raw.decode()
            except UnicodeDecodeError:
                pass  # names no run: buried
        self.run_id = run_id
        self.names_a_run = _of_queue(run_id, self.queue)


def _of_queue(run_id: str | None, queue: str) -> bool:
    if run_id is None:
        return False
    try:
        return queue_of_run(run_id) == queue
    except InvalidNameError:
        return False


# The start call that confirms a batch of runs started early: it resolves to
# the entry ids of the batch that may not run, or None if none may (the call
# failed). One future per batch, not per run.
Gate: TypeAlias = asyncio.Future[frozenset[str] | None]


@dataclasses.dataclass(slots=True, eq=False)  # not frozen: see Entry
class Lease:
    """A worker's hold on an entry: the fencing token of every write it makes."""

    queue: str
    entry_id: str
    deliveries: int
    run_id: str
    consumer: str
    # A run started from its entry alone (Store.early_start) before start.lua
    # has confirmed it: the start call of its batch (one future for the
    # batch), which resolves to the entry ids that may not run (None: none of
    # the batch may). Store writes wait for it, so none lands before the run
    # is marked started.
    ready: Gate | None = None


@dataclasses.dataclass(slots=True, eq=False)  # not frozen: see Entry
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


@dataclasses.dataclass(slots=True, eq=False)  # not frozen: see Entry
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


def settle(gate: Gate, refused: frozenset[str] | None) -> None:
    """Settle a batch's early starts (intake.py): the entries in ``refused``
    must stop and write nothing (None: every one of them); the others may go on."""
    if not gate.done():
        gate.set_result(refused)


def may_run(lease: Lease) -> bool | None:
    """Whether a run may write: True or False, or None while its start (an
    early start's batch) is not settled yet."""
    gate = lease.ready
    if gate is None:
        return True
    if not gate.done():
        return None
    refused = None if gate.cancelled() else gate.result()
    return refused is not None and lease.entry_id not in refused


async def confirmed(lease: Lease) -> bool:
    """Whether the run may write: at once, unless it was started early and
    start.lua has not answered yet (then wait for it)."""
    ok = may_run(lease)
    if ok is None:
        assert lease.ready is not None
        # Shielded: the gate is the whole batch's; a cancelled waiter must
        # not cancel it for the others.
        await asyncio.shield(lease.ready)
        ok = may_run(lease)
    return bool(ok)


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
