"""What a job handler receives: ``JobContext[T]`` with its ``Step`` and ``State``."""

from __future__ import annotations

import contextvars
import dataclasses
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import structlog

from .errors import PayloadError

if TYPE_CHECKING:
    from .registry import Registry
    from .step import Step
    from .store import EnqueueResult, Lease, Store

T = TypeVar("T")

# The run being executed in this task, so that enqueues made from job code (and
# its log lines) carry its correlation id without being told.
current_correlation_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "stackshift_correlation_id", default=None
)


class LeaseLost(BaseException):
    """This worker no longer owns the run (another worker took it over).

    A BaseException so that ``except Exception`` in job code does not swallow
    it: the attempt must stop, and it writes nothing more.
    """


class RunSuspended(BaseException):
    """The run is suspended (it sleeps, or waits for an event or a child run):
    its handler stops here and runs again, replaying its steps, once what it
    waits for has come. A BaseException, like ``LeaseLost``, so that job code's
    ``except Exception`` does not swallow it."""


# (queue, job, payload, run id, extra record fields, correlation id) -> the
# result of enqueueing that run: how step.invoke makes its child runs.
EnqueueChild = Callable[[str, str, Any, str, bytes, str], Awaitable["EnqueueResult"]]


@dataclasses.dataclass(slots=True, eq=False)
class Attempt:
    """One attempt of a run, as the things a handler calls need it."""

    store: Store
    lease: Lease
    number: int  # from 1
    job: str
    correlation_id: str
    created_ms: int  # when the run was made (server clock)
    recorded: dict[str, bytes]  # step key -> record, from the run's steps hash
    registry: Registry
    enqueue_child: EnqueueChild
    log: Any
    counters: set[str] = dataclasses.field(default_factory=set)  # keys incremented

    @property
    def run_id(self) -> str:
        return self.lease.run_id

    @property
    def queue(self) -> str:
        return self.lease.queue


class State:
    """Durable integer counters: ``ctx.state`` (and ``app.state``)."""

    def __init__(
        self, store: Store, run_id: str | None = None, touched: set[str] | None = None
    ) -> None:
        self._store = store
        self._run_id = run_id
        self._seq = 0
        self._touched = touched  # counter keys this attempt incremented

    @property
    def increments(self) -> int:
        """Increments issued so far in this attempt (replayed steps included)."""
        return self._seq

    def skip_increments(self, n: int) -> None:
        """Count the increments a replayed step made when it ran."""
        self._seq += n

    async def increment(self, key: str, by: int = 1) -> int:
        """Add ``by`` to counter ``key``, exactly once for this run.

        Increments are matched by their order in the run: on a replayed attempt,
        the n-th increment is skipped if an earlier attempt applied it. Issue
        them in a deterministic order (not from racing concurrent tasks).

        Returns:
            The counter's value after this increment.
        """
        if not isinstance(by, int) or isinstance(by, bool):
            raise PayloadError(f"increment amount must be an int, got {by!r}")
        if self._run_id is None:
            raise RuntimeError(
                "app.state.increment is only exact inside a job: use ctx.state.increment"
            )
        self._seq += 1
        if self._touched is not None:
            self._touched.add(key)
        _applied, value = await self._store.increment(key, by, self._seq, self._run_id)
        return value

    async def get(self, key: str) -> int:
        """The counter's current value (0 if it was never incremented)."""
        return await self._store.counter_value(key)


class JobContext(Generic[T]):
    """What a job handler receives.

    Attributes:
        payload: the payload, decoded into ``T`` (a dict without a type).
        step: memoized steps (``await ctx.step.run(id, fn, *args)``), durable
            sleeps, waits for events and child runs.
        state: durable counters (``await ctx.state.increment(key, by)``).
        run_id, attempt (from 1), queue, job, correlation_id: about this run.
        log: a structlog logger bound to this run.
    """

    __slots__ = (
        "attempt",
        "correlation_id",
        "job",
        "log",
        "payload",
        "queue",
        "run_id",
        "state",
        "step",
    )

    def __init__(
        self,
        *,
        payload: T,
        step: Step,
        state: State,
        run_id: str,
        attempt: int,
        queue: str,
        job: str,
        correlation_id: str,
        log: Any = None,
    ) -> None:
        self.payload = payload
        self.step = step
        self.state = state
        self.run_id = run_id
        self.attempt = attempt
        self.queue = queue
        self.job = job
        self.correlation_id = correlation_id
        self.log = log if log is not None else structlog.get_logger("stackshift.job")

    def __repr__(self) -> str:
        return f"JobContext(job={self.job!r}, run_id={self.run_id!r}, attempt={self.attempt})"
