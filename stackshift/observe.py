"""Hook points for metrics and traces: what a worker and the enqueue side tell
an observer about runs.

Nothing observes by default, and then the hooks cost one ``is None`` check
where they sit (per attempt, per step, per enqueue). Two observers exist:

- the worker's Prometheus metrics (``Worker(metrics_port=...)``,
  worker/metrics.py), one per worker;
- OpenTelemetry traces (``stackshift.tracing.instrument(app)``, tracing.py),
  one per app: its enqueue side and every worker it runs.

Hook sites (each marked ``observe.py`` in the code): runner.py (an attempt
begins and ends), step.py (a ``step.run`` body), reclaim.py (entries taken
over), queue.py (an enqueue, for the producer's trace context).
"""

from __future__ import annotations

import dataclasses
import weakref
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

import msgspec

if TYPE_CHECKING:
    from .app import Stackshift
    from .store import EnqueueResult

# How an attempt ended, as the runner says it (runner.py ``_finish``) ->
# the outcome of DESIGN §7 (``stackshift_runs_finished_total{outcome}``).
# The runner's other endings are not finishes: ``handed_back`` (a shutdown
# gave the run back to its queue), ``lease_lost`` (another worker took it
# over), ``not_started`` (started early from its entry, then refused by
# start.lua: the run was not this worker's to run, e.g. cancelled meanwhile),
# ``finish_failed`` (the write failed: the entry is reclaimed later).
FINISHED = {
    "completed": "completed",
    "retry_scheduled": "retried",
    "dead_lettered": "failed",
    "cancelled": "cancelled",
    "suspended": "suspended",
}

# Called when a step body ends, with its exception (None: it returned).
StepDone = Callable[[BaseException | None], None]


# Not frozen: one is made per attempt, and a frozen one's __init__ is slower.
@dataclasses.dataclass(slots=True)
class AttemptInfo:
    """One attempt, as an observer sees it when it begins."""

    queue: str
    job: str
    run_id: str
    number: int  # from 1
    correlation_id: str
    consumer: str  # the worker's consumer name


class AttemptObserver(Protocol):
    """Observes one attempt, from its beginning (in the run's own task)."""

    def step_began(self, step: str) -> StepDone | None:
        """A ``step.run`` body begins (not a replayed one); call the result
        when it ends."""

    def ended(self, how: str, error: BaseException | None, seconds: float) -> None:
        """The attempt is over: ``how`` as the runner says it (see FINISHED),
        ``error`` the exception of a failed attempt, ``seconds`` its duration
        (its outcome's write included: the runner's ``run_finished`` line)."""


class WorkerObserver(Protocol):
    """Observes a worker's attempts and the entries it takes over."""

    async def attempt_began(self, info: AttemptInfo) -> AttemptObserver | None:
        """An attempt begins, in the run's own task, before its handler."""

    def runs_reclaimed(self, queue: str, count: int) -> None:
        """``count`` entries of dead or stalled workers were taken over."""


class Sending(Protocol):
    """One enqueue call being sent (one run, or a batch)."""

    # Fields each run's record keeps from its creation (the trace context).
    fields: dict[str, str]

    def ended(
        self, results: Sequence[EnqueueResult] | None, error: BaseException | None
    ) -> None:
        """The runs were made (``results``), or the call failed (``error``)."""


class Producer(Protocol):
    """Observes the enqueue side of an app."""

    def sending(self, queue: str, job: str, count: int) -> Sending:
        """An enqueue of ``count`` runs of ``job`` onto ``queue`` begins."""


class Hooks:
    """The observers of one app, set by ``stackshift.tracing.instrument``;
    None: off. A Queue and a Worker keep a reference to them."""

    __slots__ = ("__weakref__", "producer", "worker")

    def __init__(self) -> None:
        self.producer: Producer | None = None
        self.worker: WorkerObserver | None = None


# Per app, without a field on Stackshift: apps that never observe pay nothing.
_hooks: weakref.WeakKeyDictionary[Stackshift, Hooks] = weakref.WeakKeyDictionary()


def hooks_of(app: Stackshift) -> Hooks:
    """The hooks of ``app`` (made empty on first use)."""
    hooks = _hooks.get(app)
    if hooks is None:
        hooks = _hooks[app] = Hooks()
    return hooks


def combined(*observers: WorkerObserver | None) -> WorkerObserver | None:
    """One observer for several (metrics and traces), or None for none."""
    present = [o for o in observers if o is not None]
    if not present:
        return None
    if len(present) == 1:
        return present[0]
    return _Observers(present)


def with_fields(extra: bytes, fields: dict[str, str]) -> bytes:
    """An enqueue's extra record fields (a JSON object, b"" for none) with
    ``fields`` added."""
    if not fields:
        return extra
    merged: dict[str, object] = msgspec.json.decode(extra) if extra else {}
    merged.update(fields)
    return msgspec.json.encode(merged)


class _Observers:
    """Several worker observers as one."""

    def __init__(self, observers: list[WorkerObserver]) -> None:
        self._observers = observers

    async def attempt_began(self, info: AttemptInfo) -> AttemptObserver | None:
        scopes = [await o.attempt_began(info) for o in self._observers]
        present = [s for s in scopes if s is not None]
        return _Attempts(present) if present else None

    def runs_reclaimed(self, queue: str, count: int) -> None:
        for observer in self._observers:
            observer.runs_reclaimed(queue, count)


class _Attempts:
    """Several attempt observers as one. Steps end in the reverse order they
    began in, so that a trace's context is restored the way it was set."""

    def __init__(self, scopes: list[AttemptObserver]) -> None:
        self._scopes = scopes

    def step_began(self, step: str) -> StepDone | None:
        ends = [e for e in (s.step_began(step) for s in self._scopes) if e is not None]

        def done(error: BaseException | None) -> None:
            for end in reversed(ends):
                end(error)

        return done

    def ended(self, how: str, error: BaseException | None, seconds: float) -> None:
        for scope in reversed(self._scopes):
            scope.ended(how, error, seconds)
