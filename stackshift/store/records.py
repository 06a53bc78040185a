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


@dataclasses.dataclass(slots=True, frozen=True)
class QueueStats:
    queue: str
    waiting: int  # entries not yet delivered to any worker
    running: int  # entries delivered, not yet acknowledged
    scheduled: int  # in the delayed set (delays and retry backoffs)
    dead: int  # dead-lettered runs kept for inspection
    consumers: int
    totals: dict[str, int]  # enqueued / completed / retried / failed since creation


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
