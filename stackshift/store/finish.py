"""The worker's writes at the end of an attempt: every way a run leaves a
worker (complete, retry, dead-letter, cancel, suspend, release) is one call,
``finish``, and one Lua library, lua/_finish.lua. Also burying an entry that
names no usable run, and handing back entries at shutdown."""

from __future__ import annotations

import time
from typing import Any

from redis.exceptions import RedisError

from ..config import Settings
from ..serialization import encode
from .base import StoreBase
from .keys import GROUP, QueueKeys
from .records import (
    Cancel,
    Complete,
    DeadLetter,
    Entry,
    Finish,
    Finished,
    Lease,
    Release,
    Retry,
    Suspend,
    as_str,
    mapped_errors,
    may_run,
    pairs,
    store_error,
)

# The KEYS and ARGV every call of lua/_finish.lua begins with (finish.lua,
# start.lua, bury.lua, cancel.lua).
FINISH_KEYS = 10
FINISH_ARGS = 6


def finish_shared(
    q: QueueKeys, consumer: str, settings: Settings, now_ms: int
) -> tuple[list[str], list[Any]]:
    """The shared part of a finish: the same for every finish of a consumer on
    a queue (within a minute), so that concurrent ones merge into one call."""
    keys = [
        q.stream,
        q.stats,
        q.delayed,
        q.dead,
        q.completed,
        q.cancelled,
        q.suspended,
        q.handoffs,
        q.cancels,
        q.minute(now_ms // 60_000),
    ]
    args: list[Any] = [
        GROUP,
        consumer,
        int(settings.result_ttl * 1000),
        int(settings.dead_ttl * 1000),
        q.finished,
        q.wake,
    ]
    return keys, args


def finish_item(
    q: QueueKeys, lease: Lease, how: Finish, counters: bytes = b""
) -> tuple[list[str], list[Any]]:
    """One run to finish: its 3 keys and 7 arguments (lua/_finish.lua)."""
    run_id = lease.run_id
    data: bytes | str = b""
    number = 0
    if isinstance(how, Complete):
        kind, data = "complete", how.result
    elif isinstance(how, Retry):
        kind, data, number = "retry", how.error, how.backoff_ms
    elif isinstance(how, DeadLetter):
        kind, data = "dead", how.error
    elif isinstance(how, Cancel):
        kind, data = "cancel", how.error
    elif isinstance(how, Suspend):
        kind, data = "suspend", how.waiting
    else:
        kind = "release"
    return (
        q.run_keys(run_id),
        [kind, lease.entry_id, lease.deliveries, run_id, data, number, counters],
    )


_OK = Finished("ok")


def finished(reply: Any) -> Finished:
    """Read one run's reply of lua/_finish.lua."""
    if reply[0] == b"ok":  # nearly every one
        return _OK
    outcome = as_str(reply[0])
    if outcome == "resolved":
        return Finished(outcome, pairs(reply[1]))
    return Finished(outcome)


# The shared parts kept (finish_shared: one per queue and consumer, for the
# current minute); past this many, the oldest go.
SHARED_KEPT = 256


class FinishStore(StoreBase):
    def _finish_shared(
        self, q: QueueKeys, consumer: str
    ) -> tuple[list[str], list[Any]]:
        """The shared part of a finish on ``q`` by ``consumer``: the same lists
        for every finish within a minute, made once (callers must not change
        them), so that the batcher merges finishes by identity (batching.py)."""
        now = self.server_now_ms() or int(time.time() * 1000)
        minute = now // 60_000
        kept = self._shared_parts.get((q.name, consumer))
        if kept is None or kept[0] != minute:
            keys, args = finish_shared(q, consumer, self.settings, now)
            kept = (minute, keys, args)
            parts = self._shared_parts
            parts.pop((q.name, consumer), None)
            if len(parts) >= SHARED_KEPT:
                del parts[next(iter(parts))]
            parts[q.name, consumer] = kept
        return kept[1], kept[2]

    async def finish(
        self, lease: Lease, how: Finish, *, counters: list[str] | None = None
    ) -> Finished:
        """Record how the attempt ended, in one fenced script; concurrent
        finishes on a queue are merged into one call (batching.py).
        ``counters``: the keys of the counters the attempt incremented.

        Returns ``lost`` if the lease was lost (nothing is written). A run
        started early (Lease.ready) is written once its start is confirmed:
        the batcher holds the finish until then."""
        if may_run(lease) is False:
            return Finished("lost")
        q = self.keys.queue(lease.queue)
        shared_keys, shared_args = self._finish_shared(q, lease.consumer)
        item_keys, item_args = finish_item(
            q, lease, how, encode(sorted(counters)) if counters else b""
        )
        try:
            reply = await self.link().batcher.call_item(
                self._scripts["finish"],
                shared_keys,
                shared_args,
                item_keys,
                item_args,
                lease,
            )
        except RedisError as exc:
            raise store_error("finish", exc) from exc
        if reply is None:  # started early, and its start was refused
            return Finished("lost")
        return finished(reply)

    async def release_pending(self, queue: str, consumer: str) -> int:
        """Hand back every entry still pending for ``consumer`` (after a cancelled read)."""
        stream = self.keys.queue(queue).stream
        with mapped_errors("XPENDING"):
            pending = await self.client.xpending_range(
                stream, GROUP, min="-", max="+", count=1000, consumername=consumer
            )
            if not pending:
                return 0
            ids = [p["message_id"] for p in pending]
            entries = await self.client.xrange(stream, min=ids[0], max=ids[-1])
        fields = {as_str(eid): f for eid, f in entries}
        released = 0
        for p in pending:
            entry_id = as_str(p["message_id"])
            entry = Entry(queue, entry_id, fields.get(entry_id, {}))
            if entry.run_id is None:
                continue  # undecodable: left for a reclaimer to bury
            lease = Lease(queue, entry_id, -1, entry.run_id, consumer)
            done = await self.finish(lease, Release())
            released += done.outcome == "ok"
        return released

    async def bury(
        self, entry: Entry, consumer: str, run_id: str, error: bytes
    ) -> bool:
        """Dead-letter an entry that names no usable run, keeping its fields."""
        q = self.keys.queue(entry.queue)
        shown = {as_str(k): v.decode(errors="replace") for k, v in entry.fields.items()}
        keys, args = self._finish_shared(q, consumer)
        reply = await self._call(
            "bury",
            [*keys, q.run(run_id), q.steps(run_id)],
            [*args, entry.entry_id, run_id, encode(shown), error],
        )
        return as_str(reply[0]) == "ok"
