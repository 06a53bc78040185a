"""The enqueue side: making runs (enqueue.lua), one or a batch per round trip."""

from __future__ import annotations

import zlib
from typing import Any

from ..errors import ConfigError
from . import scripts as _scripts
from .base import StoreBase
from .keys import QueueKeys, in_stored_queue, partition_name
from .records import EnqueueRequest, EnqueueResult, as_str, mapped_errors

# Runs per enqueue.lua call in a bulk enqueue (bounds the script's run time).
ENQUEUE_ITEMS = 200


def _shared(req: EnqueueRequest) -> tuple[str, str, int, int, bytes]:
    """What the runs of one enqueue.lua call must have in common."""
    return req.job, req.correlation_id, req.delay_ms, req.run_at_ms, req.extra


class EnqueueStore(StoreBase):
    def _enqueue_call(
        self, q: QueueKeys, reqs: list[EnqueueRequest]
    ) -> tuple[_scripts.Script, list[str], list[Any]]:
        """One enqueue.lua call for runs that share job, correlation id,
        idempotency key (then there is one run), delay and extra fields."""
        first = reqs[0]
        idem = q.idem(first.idempotency_key) if first.idempotency_key else q.stats
        correlated = (
            q.correlated(first.correlation_id) if first.correlation_id else q.stats
        )
        keys = [q.stream, q.delayed, q.stats, idem, correlated]
        args: list[Any] = [
            first.job,
            first.correlation_id,
            first.idempotency_key or "",
            int(self.settings.idempotency_ttl * 1000),
            first.delay_ms,
            first.run_at_ms,
            q.wake,
            first.extra,
            self._retention_ms,
        ]
        for req in reqs:
            keys += [q.run(req.run_id), q.bucket(req.run_id)]
            args += [req.run_id, req.payload]
        return self._scripts["enqueue"], keys, args

    async def enqueue(self, queue: str, req: EnqueueRequest) -> EnqueueResult:
        """Create a run (one round trip), or find the one its key already made."""
        _script, keys, args = self._enqueue_call(self.keys.queue(queue), [req])
        (reply,) = await self._call("enqueue", keys, args)
        return EnqueueResult(as_str(reply[0]), bool(int(reply[1])))

    async def enqueue_many(
        self, queue: str, reqs: list[EnqueueRequest]
    ) -> list[EnqueueResult]:
        """Create many runs in one pipelined round trip: runs that share job,
        correlation id and delay go ENQUEUE_ITEMS to a script call (a call's
        fixed cost, in Python and in Redis, outweighs a run's)."""
        q = self.keys.queue(queue)
        calls = []
        batch: list[EnqueueRequest] = []
        for req in reqs:
            if batch and (
                len(batch) == ENQUEUE_ITEMS
                or req.idempotency_key is not None
                or batch[0].idempotency_key is not None
                or _shared(req) != _shared(batch[0])
            ):
                calls.append(self._enqueue_call(q, batch))
                batch = []
            batch.append(req)
        if batch:
            calls.append(self._enqueue_call(q, batch))
        with mapped_errors("enqueue_many"):
            replies = await _scripts.call_many(self.commands, self._scripts, calls)
        out = []
        for reply in replies:
            if isinstance(reply, Exception):
                with mapped_errors("enqueue_many"):
                    raise reply
            out += [EnqueueResult(as_str(r[0]), bool(int(r[1]))) for r in reply]
        return out

    @property
    def _retention_ms(self) -> int:
        """How long any run's record may be kept once it ended."""
        return int(max(self.settings.result_ttl, self.settings.dead_ttl) * 1000)

    @property
    def registered_queues(self) -> set[str]:
        """Queues this process has added to the registry."""
        return self._registered

    async def partitions(
        self, queue: str, declared: int | None = None, *, register: bool = True
    ) -> int:
        """How many partitions ``queue`` has (1: it is not partitioned), as the
        registry says; ``declared``: what this process declared
        (``app.queue(name, partitions=N)``), recorded if first, refused if it
        differs. Read once per queue and process (the count never changes),
        and registers the queue's name."""
        known = self._partition_counts.get(queue)
        if known is None:
            key = self.keys.registry("partitions")
            with mapped_errors("partitions"):
                pipe = self.client.pipeline(transaction=False)
                if register:  # (not by inspection, which never writes)
                    pipe.sadd(self.keys.queue_registry, queue)
                    if declared and declared > 1:
                        pipe.hsetnx(key, queue, declared)
                pipe.hget(key, queue)
                replies = await pipe.execute()
            known = int(replies[-1] or 1)
            self._partition_counts[queue] = known
            if register:
                self._registered.add(queue)
        if declared is not None and declared != known:
            raise ConfigError(
                f"queue {queue!r} has {known} partition(s), not {declared}: the "
                "count is fixed once a queue is used (idempotency keys map to "
                "partitions by it)"
            )
        return known

    def placed(self, queue: str, count: int, *, by: str | None = None) -> str:
        """The queue as stored that a run goes to: ``queue`` itself, or one of
        its ``count`` partitions, the same for the same ``by`` (an idempotency
        key, a derived run id: dedupe holds), else in turn."""
        if count <= 1:
            return queue
        if by is not None:
            n = zlib.crc32(by.encode()) % count
        else:
            n = next(self._rotation) % count
        return partition_name(queue, n)

    async def place_derived(self, queue: str, run_id: str) -> tuple[str, str]:
        """(the queue as stored, the run id) of a run whose id is derived from
        what it stands for: on a partitioned queue, the id picks the partition."""
        stored = self.placed(queue, await self.partitions(queue), by=run_id)
        return stored, in_stored_queue(run_id, stored)

    def partitions_known(self, queue: str) -> int:
        """``partitions(queue)`` as read already (1 if not read)."""
        return self._partition_counts.get(queue, 1)

    def stored(self, queue: str) -> list[str]:
        """The queues as stored that ``queue`` is (its partitions), once
        ``partitions(queue)`` has been read."""
        count = self._partition_counts.get(queue, 1)
        return (
            [queue] if count <= 1 else [partition_name(queue, n) for n in range(count)]
        )

    async def register_queue(self, queue: str) -> None:
        """Add ``queue`` to the registry of queues (what the dashboard and
        ``stackshift queues`` list); the enqueue side does it once per queue
        and process, after its first enqueue there."""
        await self.register("queues", queue)
        self._registered.add(queue)

    async def register(self, kind: str, *names: str) -> None:
        """Add names to a registry (queues, counters, events, crons): what
        listings read instead of scanning keys."""
        if names:
            with mapped_errors(f"register {kind}"):
                await self.client.sadd(self.keys.registry(kind), *names)
