"""Everything stackshift stores, as msgspec Structs, and JSON codecs made once.

Stored records outlive deploys: new fields get defaults, existing ones are never
reordered or retyped. Nothing here, or anywhere in stackshift, uses pickle.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

import msgspec

from .errors import PayloadError
from .store.keys import split_partition

json_encoder = msgspec.json.Encoder()
_any_decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder()


def encode(value: Any) -> bytes:
    """JSON-encode a payload or result; raise ``PayloadError`` when it can't be."""
    try:
        return json_encoder.encode(value)
    except (TypeError, msgspec.EncodeError, OverflowError) as exc:
        raise PayloadError(f"value is not JSON-serialisable: {exc}") from exc


# A decoder per type, made on first use: msgspec.json.decode(data, type=...)
# looks the type up again at each call (a job's payload type, once per run).
_decoders: dict[Any, msgspec.json.Decoder[Any]] = {}
DECODERS_KEPT = 1024  # types are a program's own: this bounds a pathological one


def decode(data: bytes | str, type_: Any = Any) -> Any:
    """Decode JSON, validating into ``type_`` when one is given."""
    if type_ is Any:
        return _any_decoder.decode(data)
    try:
        decoder = _decoders.get(type_)
    except TypeError:  # an unhashable type (a type msgspec accepts, rarely)
        return msgspec.json.decode(data, type=type_)
    if decoder is None:
        decoder = msgspec.json.Decoder(type_)
        if len(_decoders) < DECODERS_KEPT:
            _decoders[type_] = decoder
    return decoder.decode(data)


def ms_to_datetime(ms: int | None) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, tz=UTC)


class RunStatus(enum.StrEnum):
    """Where a run is in its life."""

    QUEUED = "queued"  # in the stream, waiting for a worker
    SCHEDULED = "scheduled"  # in the delayed set: a delay, or a retry's backoff
    RUNNING = "running"  # a worker holds its entry
    SUSPENDED = "suspended"  # sleeping, waiting for an event or a child run
    COMPLETED = "completed"  # finished; result kept for the retention TTL
    FAILED = "failed"  # out of attempts or non-retriable: dead-lettered
    CANCELLED = "cancelled"  # cancelled; kept for the retention TTL

    @property
    def finished(self) -> bool:
        return self in (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED)


class ErrorInfo(msgspec.Struct, frozen=True):
    """The error of a run's last failed attempt."""

    type: str
    message: str
    traceback: str = ""
    attempt: int = 0


class StepRecord(msgspec.Struct, frozen=True, omit_defaults=True):
    """One recorded step, as stored in the run's steps hash (``v`` kept raw)."""

    n: int  # order of first use in the run
    a: int  # attempt that recorded it
    t: int  # recorded at, ms since the epoch (server clock)
    v: msgspec.Raw = msgspec.Raw(b"null")
    # Counter increments its function made: a replay, which skips the function,
    # advances the run's increment numbering by this much, so that increments
    # after the step keep their numbers.
    i: int = 0
    # What kind of step recorded it: "" for step.run, else "sleep", "event" or
    # "invoke" (a step id reused for another kind fails the run, clearly).
    k: str = ""
    # The error a step resolved to: an invoked child run that failed or timed out.
    e: ErrorInfo | None = None


step_record_decoder = msgspec.json.Decoder(StepRecord)


class Wait(msgspec.Struct, frozen=True, omit_defaults=True):
    """One thing a suspended run waits for, as its record keeps it. Stored
    with one-letter names: a record whose values are all short (under 64
    bytes) is kept by Redis in its compact encoding, about a quarter of the
    memory (a sleeping run's ``waiting`` fits)."""

    step: str = msgspec.field(name="s")  # the step key it resolves
    kind: str = msgspec.field(name="k")  # "sleep", "event" or "invoke"
    # When it resolves anyway (ms): its wake time, or its timeout.
    at: int | None = msgspec.field(default=None, name="a")
    # The same, from when it suspends (ms): finish.lua turns it into `at`.
    after: int | None = msgspec.field(default=None, name="d")
    events: list[str] | None = msgspec.field(default=None, name="e")  # kind "event"
    match: dict[str, Any] | None = msgspec.field(default=None, name="m")
    child: str | None = msgspec.field(default=None, name="c")  # kind "invoke"


class Waiting(msgspec.Struct, frozen=True, omit_defaults=True):
    """A suspended run's ``waiting`` field: what it waits for."""

    waits: list[Wait] = msgspec.field(name="w")

    @property
    def until(self) -> int | None:
        """When it wakes anyway: its earliest deadline (None: none)."""
        return min((w.at for w in self.waits if w.at is not None), default=None)


waiting_decoder = msgspec.json.Decoder(Waiting)


class EventValue(msgspec.Struct, frozen=True):
    """The record value of a wait_for_event step an event resolved (written by
    the router, or by the waiting run itself when it found the event by
    looking back)."""

    name: str
    id: str
    data: msgspec.Raw
    correlation_id: str = ""


class ChildValue(msgspec.Struct, frozen=True):
    """The record value of an invoke step: its child, and the child's result
    (its error, if it failed, is the record's ``e``)."""

    run_id: str
    result: msgspec.Raw = msgspec.Raw(b"null")


class EventReceipt(msgspec.Struct, frozen=True):
    """What ``send_event`` returns: the event's id, and whether that id had
    been sent already (then nothing was done)."""

    id: str
    duplicate: bool = False


class ReceivedEvent(msgspec.Struct, frozen=True):
    """What ``step.wait_for_event`` returns when it waits for several names:
    which event came, and its data."""

    name: str
    data: Any
    id: str
    correlation_id: str | None = None


class WaitInfo(msgspec.Struct, frozen=True):
    """What a suspended run waits for (``RunInfo.waiting_for``)."""

    step_id: str
    kind: str  # "sleep", "event" or "invoke"
    until: datetime | None = None  # its wake time, or its timeout
    events: list[str] | None = None
    match: dict[str, Any] | None = None
    child_run_id: str | None = None


error_decoder = msgspec.json.Decoder(ErrorInfo)


class AttemptInfo(msgspec.Struct, frozen=True):
    """An earlier attempt of a run that failed and was retried
    (``RunInfo.attempts``; the latest attempt is the run record itself)."""

    attempt: int
    started_at: datetime | None
    worker: str | None
    error_type: str
    message: str


class _LoggedAttempt(msgspec.Struct, frozen=True):
    """An entry of a run's ``attempts`` field, as _finish.lua writes it."""

    attempt: int | float = 0
    started_at: int | float | None = None
    worker: str | None = None
    type: str = ""
    message: str = ""


class StepInfo(msgspec.Struct, frozen=True):
    """A recorded step, as ``RunInfo.steps`` shows it."""

    step_id: str
    result: Any
    attempt: int
    recorded_at: datetime | None


class RunInfo(msgspec.Struct, frozen=True, kw_only=True):
    """A run as stored: what ``Stackshift.get_run`` returns."""

    run_id: str
    job: str
    queue: str  # the queue's name (also for a run in one of its partitions)
    status: RunStatus
    attempt: int
    payload: Any
    steps: list[StepInfo]
    result: Any = None
    error: ErrorInfo | None = None
    correlation_id: str | None = None
    idempotency_key: str | None = None
    created_at: datetime | None = None
    scheduled_for: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    worker: str | None = None
    # A suspended run: what it waits for, and when it wakes anyway.
    waiting_for: list[WaitInfo] = msgspec.field(default_factory=list)
    wakes_at: datetime | None = None
    parent_run_id: str | None = None  # a child run made by step.invoke
    cancel_requested: bool = False
    attempts: list[AttemptInfo] = msgspec.field(default_factory=list)  # retried ones
    counters: list[str] = msgspec.field(default_factory=list)  # keys it incremented
    partition: int | None = None  # of a partitioned queue: the one it is in


def _int(fields: dict[str, str], name: str) -> int | None:
    value = fields.get(name)
    return int(value) if value else None


def run_info_from_hash(
    run_id: str, queue: str, fields: dict[str, str], steps: dict[str, str]
) -> RunInfo:
    """Build a ``RunInfo`` from a run hash and its steps hash (both decoded).

    The hash holds only what its key does not say: the run id and queue come
    from the key, a missing correlation id is the run's own id.
    """
    records = sorted(
        ((step_id, step_record_decoder.decode(raw)) for step_id, raw in steps.items()),
        key=lambda item: item[1].n,
    )
    error = fields.get("error")
    result = fields.get("result")
    waiting = _waiting(fields.get("waiting"))
    name, partition = split_partition(queue)
    return RunInfo(
        run_id=run_id,
        job=fields.get("job", ""),
        queue=name,
        partition=partition,
        status=RunStatus(fields.get("status", RunStatus.QUEUED)),
        attempt=int(fields.get("attempt") or 0),
        payload=_decode_lenient(fields.get("payload")),
        steps=[
            StepInfo(
                step_id=step_id,
                result=_decode_lenient(bytes(rec.v)),
                attempt=rec.a,
                recorded_at=ms_to_datetime(rec.t),
            )
            for step_id, rec in records
        ],
        result=_decode_lenient(result) if result else None,
        error=error_decoder.decode(error) if error else None,
        correlation_id=fields.get("correlation_id") or run_id,
        idempotency_key=fields.get("idempotency_key") or None,
        created_at=ms_to_datetime(_int(fields, "created_at")),
        scheduled_for=ms_to_datetime(_int(fields, "scheduled_for")),
        started_at=ms_to_datetime(_int(fields, "started_at")),
        finished_at=ms_to_datetime(_int(fields, "finished_at")),
        worker=fields.get("worker") or None,
        waiting_for=[
            WaitInfo(
                step_id=w.step,
                kind=w.kind,
                until=ms_to_datetime(w.at),
                events=w.events,
                match=w.match,
                child_run_id=w.child,
            )
            for w in waiting.waits
        ]
        if waiting
        else [],
        wakes_at=ms_to_datetime(waiting.until) if waiting else None,
        parent_run_id=fields.get("parent") or None,
        cancel_requested=bool(fields.get("cancel")),
        attempts=[
            AttemptInfo(
                attempt=int(a.attempt),
                started_at=ms_to_datetime(int(a.started_at) if a.started_at else None),
                worker=a.worker,
                error_type=a.type,
                message=a.message,
            )
            for a in _logged(fields.get("attempts"))
        ],
        counters=_strings(fields.get("counters")),
    )


def _logged(raw: str | None) -> list[_LoggedAttempt]:
    if not raw:
        return []
    try:
        return msgspec.json.decode(raw, type=list[_LoggedAttempt])
    except (msgspec.DecodeError, msgspec.ValidationError):
        return []


def _strings(raw: str | None) -> list[str]:
    if not raw:
        return []
    try:
        return msgspec.json.decode(raw, type=list[str])
    except (msgspec.DecodeError, msgspec.ValidationError):
        return []


def _waiting(raw: str | None) -> Waiting | None:
    if not raw:
        return None
    try:
        return waiting_decoder.decode(raw)
    except msgspec.DecodeError:  # written by Lua: numbers may come back as floats
        plain = _any_decoder.decode(raw)
        return msgspec.convert(plain, Waiting, strict=False)


def _decode_lenient(raw: str | bytes | None) -> Any:
    """Decode stored JSON; keep the raw text when it is not JSON (a buried entry)."""
    if raw is None:
        return None
    try:
        return _any_decoder.decode(raw)
    except msgspec.DecodeError:
        return raw.decode(errors="replace") if isinstance(raw, bytes) else raw
