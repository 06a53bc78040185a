"""What a job handler receives: ``JobContext[T]`` with its ``Step`` and ``State``."""

from __future__ import annotations

import contextlib
import contextvars
import functools
import inspect
import time
import typing
import weakref
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar, overload

import anyio.to_thread
import msgspec
import structlog

from .errors import InvalidNameError, NonRetriableError, PayloadError
from .serialization import StepRecord, encode, step_record_decoder

if TYPE_CHECKING:
    from .store import Lease, Store

T = TypeVar("T")
R = TypeVar("R")

MAX_STEP_ID = 256

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


# Weak keys: step functions are often lambdas made per call, and a strong cache
# would keep them (and whatever data they captured) alive.
_return_types: weakref.WeakKeyDictionary[Callable[..., Any], Any] = (
    weakref.WeakKeyDictionary()
)


def _return_type(fn: Callable[..., Any]) -> Any:
    """The return annotation of ``fn`` (the awaited type for async functions)."""
    try:
        return _return_types[fn]
    except (KeyError, TypeError):
        pass
    try:
        found = typing.get_type_hints(fn).get("return", Any)
    except Exception:  # lambdas, builtins, unresolvable forward references
        found = Any
    with contextlib.suppress(TypeError):  # not weakly referenceable: not cached
        _return_types[fn] = found
    return found


def _decode_as(raw: bytes, type_: Any, step_key: str) -> Any:
    if type_ is Any:
        return msgspec.json.decode(raw)
    if type_ is None or type_ is type(None):
        return None
    try:
        return msgspec.json.decode(raw, type=type_)
    except TypeError:  # a type msgspec does not support: plain JSON then
        return msgspec.json.decode(raw)
    except msgspec.ValidationError as exc:
        raise NonRetriableError(
            f"step {step_key!r}: the recorded result does not match the type "
            f"{type_!r} (did the step's code change?): {exc}"
        ) from exc


class Step:
    """Memoized steps of one attempt: ``ctx.step``."""

    def __init__(
        self,
        store: Store,
        lease: Lease,
        attempt: int,
        recorded: dict[str, bytes],
        log: Any,
        max_bytes: int,
        state: State,
    ) -> None:
        self._store = store
        self._state = state
        self._lease = lease
        self._attempt = attempt
        self._recorded = recorded
        self._uses: dict[str, int] = {}
        self._log = log
        self._max_bytes = max_bytes

    def _key(self, step_id: str) -> str:
        if not isinstance(step_id, str) or not step_id or len(step_id) > MAX_STEP_ID:
            raise InvalidNameError(
                f"step id must be a non-empty string of at most {MAX_STEP_ID} "
                f"characters, got {step_id!r}"
            )
        n = self._uses[step_id] = self._uses.get(step_id, 0) + 1
        return step_id if n == 1 else f"{step_id}#{n}"

    @overload
    async def run(
        self,
        step_id: str,
        fn: Callable[..., Awaitable[R]],
        /,
        *args: Any,
        returns: Any = None,
        **kwargs: Any,
    ) -> R: ...

    @overload
    async def run(
        self,
        step_id: str,
        fn: Callable[..., R],
        /,
        *args: Any,
        returns: Any = None,
        **kwargs: Any,
    ) -> R: ...

    async def run(
        self,
        step_id: str,
        fn: Callable[..., Any],
        /,
        *args: Any,
        returns: Any = None,
        **kwargs: Any,
    ) -> Any:
        """Run ``fn(*args, **kwargs)`` once per run and record its result.

        On a later attempt of the same run the recorded result is returned and
        ``fn`` is not called. Its type comes from ``returns=`` or ``fn``'s return
        annotation; without either, only JSON values round-trip. A sync ``fn``
        runs in a worker thread, so it cannot block lease renewals.

        Args:
            step_id: stable id of the step in this job (kebab-case by convention);
                used again in one run (a loop), the n-th use is ``"<id>#<n>"``.
            fn: the function to run, sync or async.
            returns: the result type, when ``fn`` has no return annotation.

        Returns:
            The result, decoded from its record: equal on first run and replay.
        """
        key = self._key(step_id)
        type_ = returns if returns is not None else _return_type(fn)
        recorded = self._recorded.get(key)
        if recorded is not None:
            self._log.debug("step_replayed", step=key)
            record = step_record_decoder.decode(recorded)
            self._state.skip_increments(record.i)
            return _decode_as(bytes(record.v), type_, key)
        increments_before = self._state.increments
        value = await _call(fn, args, kwargs)
        raw = encode(value)
        if len(raw) > self._max_bytes:
            raise NonRetriableError(
                f"step {key!r} returned {len(raw)} bytes of JSON; the limit is "
                f"{self._max_bytes} (store large data elsewhere and return a reference)"
            )
        record = StepRecord(
            n=len(self._recorded) + 1,
            a=self._attempt,
            t=time.time_ns() // 1_000_000,
            v=msgspec.Raw(raw),
            i=self._state.increments - increments_before,
        )
        record_json = encode(record)
        outcome, first = await self._store.checkpoint(self._lease, key, record_json)
        if outcome == "lost":
            raise LeaseLost(key)
        if outcome == "exists" and first is not None:
            # A zombie attempt recorded it first: the first record wins, always.
            self._recorded[key] = first
            return _decode_as(bytes(step_record_decoder.decode(first).v), type_, key)
        self._recorded[key] = record_json
        self._log.debug("step_recorded", step=key)
        # Decode the record rather than return `value`, so that code after the
        # step sees exactly what a replay would see (a tuple is a list in both).
        return _decode_as(raw, type_, key)


async def _call(
    fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    if inspect.iscoroutinefunction(fn):
        return await fn(*args, **kwargs)
    # abandon_on_cancel: on shutdown or a lost lease the attempt stops at once;
    # the thread finishes on its own and its result is dropped (not recorded).
    result = await anyio.to_thread.run_sync(
        functools.partial(fn, *args, **kwargs), abandon_on_cancel=True
    )
    if inspect.isawaitable(result):  # a lambda returning a coroutine
        result = await result
    return result


class State:
    """Durable integer counters: ``ctx.state`` (and ``app.state``)."""

    def __init__(self, store: Store, run_id: str | None = None) -> None:
        self._store = store
        self._run_id = run_id
        self._seq = 0

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
        _applied, value = await self._store.increment(key, by, self._seq, self._run_id)
        return value

    async def get(self, key: str) -> int:
        """The counter's current value (0 if it was never incremented)."""
        return await self._store.counter_value(key)


class JobContext(Generic[T]):
    """What a job handler receives.

    Attributes:
        payload: the payload, decoded into ``T`` (a dict without a type).
        step: memoized steps (``await ctx.step.run(id, fn, *args)``).
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
