"""``ctx.step``: recorded steps (``run``), durable sleeps (``sleep``,
``sleep_until``), waits for an event (``wait_for_event``) and child runs
(``invoke``). Each is recorded once in the run's steps hash; a later attempt
gets the record back instead of doing it again."""

from __future__ import annotations

import contextlib
import functools
import inspect
import time
import typing
import weakref
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar, overload

import anyio.to_thread
import msgspec

from .config import Duration, to_ms
from .context import Attempt, LeaseLost, State
from .errors import (
    InvalidNameError,
    JobFailed,
    NonRetriableError,
    PayloadError,
    StoreError,
)
from .logs import get_logger
from .observe import AttemptObserver
from .serialization import (
    ChildValue,
    EventValue,
    ReceivedEvent,
    StepRecord,
    Wait,
    encode,
    step_record_decoder,
)
from .store.keys import check_name, derived_run_id, time_of_run
from .store.records import confirmed
from .suspension import Suspension

R = TypeVar("R")

log = get_logger("stackshift.step")

MAX_STEP_ID = 256
MAX_MATCH_FIELDS = 16

# What each kind of step is called in errors (StepRecord.k).
_KINDS = {"": "step.run", "sleep": "step.sleep", "event": "step.wait_for_event",
          "invoke": "step.invoke"}  # fmt: skip

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
        attempt: Attempt,
        state: State,
        max_bytes: int,
        observer: AttemptObserver | None = None,
    ) -> None:
        self._attempt = attempt
        self._state = state
        self._max_bytes = max_bytes
        self._observer = observer  # metrics, traces (observe.py); None: off
        self._uses: dict[str, int] = {}
        self._suspension: Suspension | None = None

    @property
    def suspension(self) -> Suspension:
        """The attempt's waits (made on first use: most runs never wait)."""
        if self._suspension is None:
            self._suspension = Suspension(self._attempt)
        return self._suspension

    # --- step.run ---------------------------------------------------------------

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
        record = self._replayed(key, "")
        if record is not None:
            log.debug("step_replayed", step=key)
            self._state.skip_increments(record.i)
            return _decode_as(bytes(record.v), type_, key)
        self.suspension.began()
        # observe.py hook: a step body begins (a span, a duration)
        step_done = None if self._observer is None else self._observer.step_began(key)
        try:
            increments_before = self._state.increments
            value = await _call(fn, args, kwargs)
            raw = encode(value)
            if len(raw) > self._max_bytes:
                raise NonRetriableError(
                    f"step {key!r} returned {len(raw)} bytes of JSON; the limit is "
                    f"{self._max_bytes} (store large data elsewhere and return a reference)"
                )
            record = await self._record(
                key, "", raw, increments=self._state.increments - increments_before
            )
        except BaseException as exc:
            if step_done is not None:
                step_done(exc)
            raise
        finally:
            self.suspension.ended()
        if step_done is not None:
            step_done(None)
        log.debug("step_recorded", step=key)
        # Decode the record rather than return `value`, so that code after the
        # step sees exactly what a replay would see (a tuple is a list in both).
        return _decode_as(bytes(record.v), type_, key)

    # --- durable time -------------------------------------------------------------

    async def sleep(self, step_id: str, duration: Duration) -> None:
        """Sleep for ``duration`` without holding a worker: the run suspends,
        and is put back in its queue when the time has come (on the Redis
        server's clock). A sleep that is over is not slept again on replay."""
        key = self._key(step_id)
        ms = to_ms(duration, name="duration")
        if self._replayed(key, "sleep") is not None:
            return
        if ms <= 0:
            await self._record(key, "sleep", b"null")
            return
        await self._wait(Wait(key, "sleep", after=ms))

    async def sleep_until(self, step_id: str, when: datetime | float) -> None:
        """Sleep until ``when`` (a timezone-aware datetime, or epoch seconds),
        as ``sleep`` does."""
        key = self._key(step_id)
        if isinstance(when, datetime):
            if when.tzinfo is None:
                raise PayloadError(
                    f"step {key!r}: sleep_until needs a timezone-aware datetime"
                )
            at = int(when.timestamp() * 1000)
        elif isinstance(when, (int, float)) and not isinstance(when, bool):
            at = int(when * 1000)
        else:
            raise PayloadError(
                f"step {key!r}: sleep_until takes a datetime or epoch seconds"
            )
        if self._replayed(key, "sleep") is not None:
            return
        await self._wait(Wait(key, "sleep", at=at))

    # --- events -------------------------------------------------------------------

    async def wait_for_event(
        self,
        step_id: str,
        event: str | Sequence[str],
        *,
        match: dict[str, Any] | None = None,
        timeout: Duration | None = None,  # noqa: ASYNC109 (the contract's name: a durable wait)
        returns: Any = None,
    ) -> Any:
        """Wait for an event, without holding a worker.

        Matches the first event of that name (or of any of those names) sent
        since this run was made, whose data has every ``match`` field at the
        top level with an equal value (compared as JSON: 1 and 1.0 differ).
        An event sent before the wait is registered is found too, within the
        app's ``event_lookback`` (docs/events-and-time.md).

        Args:
            step_id: stable id of the step.
            event: an event name, or several (the first matching one wins).
            match: top-level fields and values the event's data must have.
            timeout: give up after this long: the step returns None.
            returns: a type to decode the event's data into.

        Returns:
            The event's data (a ``ReceivedEvent`` with its name when ``event``
            names several), or None if the timeout came first.
        """
        key = self._key(step_id)
        names = [event] if isinstance(event, str) else list(event)
        if not names:
            raise InvalidNameError(f"step {key!r}: wait_for_event needs an event name")
        for name in names:
            check_name(name, "event")
        match = _check_match(key, match)
        after = None if timeout is None else to_ms(timeout, name="timeout")
        record = self._replayed(key, "event")
        if record is None:
            record = await self._register_waits(key, names, match, after)
        if record is None:
            record = step_record_decoder.decode(
                await self._wait(
                    Wait(key, "event", after=after, events=names, match=match or None)
                )
            )
            self._check_kind(key, record, "event")
        if record.a == self._attempt.number:  # resolved in this attempt
            await self._forget_waits(key, names, match, record)
        return _event_result(record, single=isinstance(event, str), type_=returns)

    async def _forget_waits(
        self, key: str, names: list[str], match: dict[str, Any], record: StepRecord
    ) -> None:
        """The wait is resolved: its registrations with the names that did not
        resolve it leave their indexes (the event that resolved it took its own
        out; a timeout leaves them all), so waits with no timeout do not pile
        up there. Best effort: what is left is removed by the next matching
        event, or expires."""
        resolved_by = (
            None
            if bytes(record.v) == b"null"
            else msgspec.json.decode(bytes(record.v), type=EventValue).name
        )
        others = [n for n in names if n != resolved_by]
        if not others:
            return
        a = self._attempt
        with contextlib.suppress(StoreError):
            await a.store.unregister_wait(others, a.run_id, key, match, a.created_ms)

    async def _register_waits(
        self, key: str, names: list[str], match: dict[str, Any], after: int | None
    ) -> StepRecord | None:
        """Register the wait with each name; the record at once if a matching
        event was sent already (the lookback)."""
        a = self._attempt
        await self._confirmed()
        # The index forgets a waiter some time after its run's own timeout;
        # the run's timer, not this, is what ends the wait.
        expires = None if after is None else int(time.time() * 1000) + after + 60_000
        self.suspension.began()
        try:
            for name in names:
                found = await a.store.register_wait(
                    name,
                    run_id=a.run_id,
                    step_key=key,
                    match=match,
                    created_ms=a.created_ms,
                    expires_ms=expires,
                )
                if found is not None:
                    value = encode(
                        EventValue(
                            found.name,
                            found.event_id,
                            msgspec.Raw(found.data),
                            found.correlation_id,
                        )
                    )
                    return await self._record(key, "event", value)
            return None
        finally:
            self.suspension.ended()

    # --- child runs -----------------------------------------------------------------

    async def invoke(
        self,
        step_id: str,
        job: str,
        payload: Any = None,
        *,
        queue: str | None = None,
        timeout: Duration | None = None,  # noqa: ASYNC109 (the contract's name: a durable wait)
        returns: Any = None,
    ) -> Any:
        """Run ``job`` as a child run and return its result, without holding a
        worker while it runs: the run suspends until the child ends.

        The child gets this run's correlation id. A child that fails (dead-
        lettered or cancelled) or does not end within ``timeout`` makes this
        step raise ``JobFailed``; the failure is recorded, so a replay raises it
        again. Several invokes awaited together (``asyncio.gather``) run their
        children at the same time.

        Args:
            step_id: stable id of the step.
            job: the child's job name.
            payload: its payload.
            queue: its queue (default: the job's ``queue=``, else "default").
            timeout: how long to wait for it.
            returns: a type to decode its result into (default: the job's
                return annotation, when the job is registered here).
        """
        key = self._key(step_id)
        a = self._attempt
        check_name(job, "job")
        spec = a.registry.find(job)
        child_queue = check_name(
            queue or (spec.queue if spec is not None else None) or "default", "queue"
        )
        after = None if timeout is None else to_ms(timeout, name="timeout")
        type_ = (
            returns
            if returns is not None
            else (spec.return_type if spec is not None else Any)
        )
        record = self._replayed(key, "invoke")
        if record is None:
            # The same child, however often this is replayed: its id is made
            # from this run and step.
            child = derived_run_id(
                child_queue, time_of_run(a.run_id), f"{a.run_id}\x1f{key}"
            )
            extra = encode({"parent": a.run_id, "parent_step": key})
            self.suspension.began()
            try:
                await self._confirmed()
                made = await a.enqueue_child(
                    child_queue, job, payload, child, extra, a.correlation_id
                )
            finally:
                self.suspension.ended()
            child = made.run_id  # on a partitioned queue, it names the partition
            record = step_record_decoder.decode(
                await self._wait(Wait(key, "invoke", after=after, child=child))
            )
            self._check_kind(key, record, "invoke")
        return _child_result(record, key, type_)

    # --- shared -------------------------------------------------------------------

    def _key(self, step_id: str) -> str:
        if not isinstance(step_id, str) or not step_id or len(step_id) > MAX_STEP_ID:
            raise InvalidNameError(
                f"step id must be a non-empty string of at most {MAX_STEP_ID} "
                f"characters, got {step_id!r}"
            )
        n = self._uses[step_id] = self._uses.get(step_id, 0) + 1
        return step_id if n == 1 else f"{step_id}#{n}"

    def _replayed(self, key: str, kind: str) -> StepRecord | None:
        raw = self._attempt.recorded.get(key)
        if raw is None:
            return None
        record = step_record_decoder.decode(raw)
        self._check_kind(key, record, kind)
        return record

    @staticmethod
    def _check_kind(key: str, record: StepRecord, kind: str) -> None:
        if record.k != kind:
            raise NonRetriableError(
                f"step {key!r} was recorded by {_KINDS.get(record.k, record.k)} and is "
                f"now used by {_KINDS[kind]}: a step id must keep its kind (give the "
                "new step an id of its own)"
            )

    async def _record(
        self, key: str, kind: str, value: bytes, *, increments: int = 0
    ) -> StepRecord:
        """Checkpoint a step's record (fenced); the first record wins."""
        a = self._attempt
        record = StepRecord(
            n=len(a.recorded) + 1,
            a=a.number,
            t=time.time_ns() // 1_000_000,
            v=msgspec.Raw(value),
            i=increments,
            k=kind,
        )
        record_json = encode(record)
        outcome, first = await a.store.checkpoint(a.lease, key, record_json)
        if outcome == "lost":
            raise LeaseLost(key)
        if outcome == "exists" and first is not None:
            # A zombie attempt (or a resume) recorded it first: the first wins.
            a.recorded[key] = first
            found = step_record_decoder.decode(first)
            self._check_kind(key, found, kind)
            return found
        a.recorded[key] = record_json
        return record

    async def _confirmed(self) -> None:
        """Before anything outside the run's slot can act on the run (an event
        resuming it, a child telling it it ended), its start must be in Redis:
        a run started early from its entry has no record until start.lua
        confirms it, and resume.lua leaves a run with no record alone."""
        if not await confirmed(self._attempt.lease):
            raise LeaseLost("start")

    async def _wait(self, wait: Wait) -> bytes:
        record = await self.suspension.wait(wait)
        self._attempt.recorded[wait.step] = record
        return record


def _check_match(key: str, match: dict[str, Any] | None) -> dict[str, Any]:
    if match is None:
        return {}
    if not isinstance(match, dict) or len(match) > MAX_MATCH_FIELDS:
        raise PayloadError(
            f"step {key!r}: match must be a dict of at most {MAX_MATCH_FIELDS} fields"
        )
    for name, value in match.items():
        if not isinstance(name, str) or not name or len(name) > 128:
            raise PayloadError(f"step {key!r}: match field {name!r} is not a name")
        if not (isinstance(value, (str, int, float, bool)) or value is None):
            raise PayloadError(
                f"step {key!r}: match on {name!r} must be a str, number, bool or "
                f"None (equality on top-level fields), got {type(value).__name__}"
            )
    return match


def _event_result(record: StepRecord, *, single: bool, type_: Any) -> Any:
    if bytes(record.v) == b"null":
        return None  # timed out
    value = msgspec.json.decode(bytes(record.v), type=EventValue)
    data = _decode_as(bytes(value.data), Any if type_ is None else type_, value.id)
    if single:
        return data
    return ReceivedEvent(value.name, data, value.id, value.correlation_id or None)


def _child_result(record: StepRecord, key: str, type_: Any) -> Any:
    if record.e is not None:
        child = ""
        with contextlib.suppress(msgspec.DecodeError, msgspec.ValidationError):
            child = msgspec.json.decode(bytes(record.v), type=ChildValue).run_id
        raise JobFailed(child or key, record.e.type, record.e.message)
    value = msgspec.json.decode(bytes(record.v), type=ChildValue)
    return _decode_as(bytes(value.result), type_, key)


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
