"""Store: the only package that speaks Redis.

One typed method per state change of a run; each is one Lua script (see lua/),
fenced where a worker acts on an entry it holds. redis-py results are converted
here, so no ``Any`` leaves this package.
"""

from __future__ import annotations

from typing import Any

from redis.exceptions import ResponseError

from ..errors import StoreError
from ..serialization import RunInfo, encode, run_info_from_hash
from . import scripts as _scripts
from .keys import GROUP, QueueKeys, key_part, queue_of_run
from .records import (
    EnqueueRequest,
    EnqueueResult,
    Entry,
    Lease,
    QueueStats,
    StartResult,
    as_str,
    mapped_errors,
)
from .starting import StartingStore

__all__ = [
    "EnqueueRequest",
    "EnqueueResult",
    "Entry",
    "Lease",
    "QueueStats",
    "StartResult",
    "Store",
    "StoreError",
]


# Runs per enqueue.lua call in a bulk enqueue (bounds the script's run time).
ENQUEUE_ITEMS = 200


def _shared(req: EnqueueRequest) -> tuple[str, str, int, int]:
    """What the runs of one enqueue.lua call must have in common."""
    return req.job, req.correlation_id, req.delay_ms, req.run_at_ms


class Store(StartingStore):
    """Typed access to one Redis (or memory://) for one prefix: every state
    change of a run, and what the app and the CLI read."""

    # --- enqueue side -----------------------------------------------------

    def _enqueue_call(
        self, q: QueueKeys, reqs: list[EnqueueRequest]
    ) -> tuple[_scripts.Script, list[str], list[Any]]:
        """One enqueue.lua call for runs that share job, correlation id,
        idempotency key (then there is one run) and delay."""
        first = reqs[0]
        keys = [q.stream, q.delayed, q.stats]
        if first.idempotency_key is not None:
            keys.append(q.idem(first.idempotency_key))
        args: list[Any] = [
            first.job,
            first.correlation_id,
            first.idempotency_key or "",
            int(self.settings.idempotency_ttl * 1000),
            first.delay_ms,
            first.run_at_ms,
            q.base,
        ]
        for req in reqs:
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

    async def get_run(self, run_id: str) -> RunInfo | None:
        queue = queue_of_run(run_id)
        q = self.keys.queue(queue)
        with mapped_errors("get_run"):
            pipe = self.client.pipeline(transaction=False)
            pipe.hgetall(q.run(run_id))
            pipe.hgetall(q.steps(run_id))
            pipe.hget(*q.queued_index(run_id))
            run, steps, indexed = await pipe.execute()
        if not run and indexed:  # queued, no record until it starts
            run = {b"status": b"queued", b"entry": indexed}
        if not run:
            return None
        fields = {as_str(k): as_str(v) for k, v in run.items()}
        if "job" not in fields and "entry" in fields:
            # Not started yet: job and payload are still in its entry.
            with mapped_errors("get_run"):
                found = await self.client.xrange(
                    q.stream, fields["entry"], fields["entry"]
                )
            carried = (
                {as_str(k): as_str(v) for k, v in found[0][1].items()} if found else {}
            )
            fields["job"] = carried.get("j", "")
            fields["payload"] = carried.get("p", "null")
            if "c" in carried:
                fields.setdefault("correlation_id", carried["c"])
            fields["created_at"] = fields["entry"].partition("-")[0]
        return run_info_from_hash(
            run_id, queue, fields, {as_str(k): as_str(v) for k, v in steps.items()}
        )

    async def run_outcome(self, run_id: str) -> tuple[str, bytes | None, bytes | None]:
        """(status, result JSON, error JSON) of a run; status '' if unknown."""
        q = self.keys.queue(queue_of_run(run_id))
        with mapped_errors("run_outcome"):
            pipe = self.client.pipeline(transaction=False)
            pipe.hmget(q.run(run_id), "status", "result", "error")
            pipe.hexists(*q.queued_index(run_id))
            (status, result, error), indexed = await pipe.execute()
        if not status and indexed:
            return "queued", None, None
        return (as_str(status) if status else ""), result, error

    async def redrive(self, run_id: str) -> tuple[str, str]:
        """Put a dead-lettered run back in its queue: ('ok'|'missing'|'not_failed', status)."""
        q = self.keys.queue(queue_of_run(run_id))
        reply = await self._call(
            "redrive", [q.run(run_id), q.steps(run_id), q.stream, q.dead], [run_id]
        )
        return as_str(reply[0]), (as_str(reply[1]) if len(reply) > 1 else "")

    async def dead_runs(self, queue: str, limit: int = 100) -> list[str]:
        """Run ids in the dead letter set of a queue, newest first."""
        with mapped_errors("dead_runs"):
            ids = await self.client.zrevrange(self.keys.queue(queue).dead, 0, limit - 1)
        return [as_str(i) for i in ids]

    # --- counters ---------------------------------------------------------

    async def increment(
        self, key: str, by: int, seq: int, run_id: str
    ) -> tuple[bool, int]:
        """Apply increment number ``seq`` of ``run_id`` once; (applied, value)."""
        part = key_part(key, "counter key")
        original = key if part != key else ""
        mark_ttl = int(max(self.settings.dead_ttl, self.settings.result_ttl) * 1000)
        reply = await self._call(
            "increment",
            [self.keys.counter(key), self.keys.counter_seen(key, run_id)],
            [by, seq, mark_ttl, original],
        )
        return bool(int(reply[0])), int(reply[1])

    async def counter_value(self, key: str) -> int:
        with mapped_errors("state.get"):
            value = await self.client.hget(self.keys.counter(key), "value")
        return int(value) if value is not None else 0

    # --- worker side ------------------------------------------------------

    async def ensure_group(self, queue: str) -> None:
        """Create the queue's stream and consumer group if missing.

        The group starts at 0, not $: entries written before it existed are read.
        """
        if queue in self._groups_made:
            return
        with mapped_errors("XGROUP CREATE"):
            try:
                await self.client.xgroup_create(
                    self.keys.queue(queue).stream, GROUP, id="0", mkstream=True
                )
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
        self._groups_made.add(queue)

    def forget_groups(self) -> None:
        """Check the groups again on next use (after NOGROUP: Redis lost them)."""
        self._groups_made.clear()

    async def checkpoint(
        self, lease: Lease, step_key: str, record: bytes
    ) -> tuple[str, bytes | None]:
        """Record a step: ('ok', None), ('exists', first record) or ('lost', None)."""
        if not await self._confirmed(lease):
            return "lost", None
        q = self.keys.queue(lease.queue)
        reply = await self._call(
            "checkpoint",
            [q.stream, q.steps(lease.run_id)],
            [GROUP, lease.consumer, lease.entry_id, lease.deliveries, step_key, record],
        )
        return as_str(reply[0]), (reply[1] if len(reply) > 1 else None)

    async def renew(self, queue: str, consumer: str, leases: list[Lease]) -> set[str]:
        """Reset the idle clock of our entries; return the entry ids we lost."""
        if not leases:
            return set()
        args: list[Any] = [GROUP, consumer]
        for lease in leases:
            args += [lease.entry_id, lease.deliveries]
        lost = await self._call("renew", [self.keys.queue(queue).stream], args)
        return {as_str(e) for e in lost}

    async def complete(self, lease: Lease, result: bytes) -> bool:
        """Finish a run with its result; False if the lease was lost.

        Concurrent completions on a queue are merged into one script call.
        """
        if not await self._confirmed(lease):
            return False
        q = self.keys.queue(lease.queue)
        with mapped_errors("complete"):
            reply = await self.batcher.call_item(
                self._scripts["complete"],
                *self._complete_shared(q, lease.consumer),
                [q.run(lease.run_id), q.steps(lease.run_id)],
                [lease.entry_id, lease.deliveries, lease.run_id, result],
            )
        return as_str(reply) == "ok"

    async def fail(
        self, lease: Lease, error: bytes, *, retry: bool, backoff_ms: int
    ) -> str:
        """Fail an attempt: 'retry', 'dead', or 'lost'."""
        if not await self._confirmed(lease):
            return "lost"
        q = self.keys.queue(lease.queue)
        reply = await self._call(
            "fail",
            [
                q.stream,
                q.run(lease.run_id),
                q.steps(lease.run_id),
                q.delayed,
                q.dead,
                q.stats,
            ],
            [
                GROUP,
                lease.consumer,
                lease.entry_id,
                lease.deliveries,
                error,
                "1" if retry else "0",
                backoff_ms,
                int(self.settings.dead_ttl * 1000),
                q.finished,
                lease.run_id,
            ],
        )
        return as_str(reply[0])

    async def release(self, lease: Lease) -> bool:
        """Hand a run back to the queue (shutdown); False if the lease was lost."""
        if not await self._confirmed(lease):
            return False
        q = self.keys.queue(lease.queue)
        reply = await self._call(
            "release",
            [q.stream, q.run(lease.run_id)],
            [
                GROUP,
                lease.consumer,
                lease.entry_id,
                lease.deliveries,
                lease.run_id,
                q.base,
            ],
        )
        return as_str(reply[0]) == "ok"

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
            released += await self.release(lease)
        return released

    async def bury(
        self, entry: Entry, consumer: str, run_id: str, error: bytes
    ) -> bool:
        """Dead-letter an entry that names no usable run, keeping its fields."""
        q = self.keys.queue(entry.queue)
        shown = {as_str(k): v.decode(errors="replace") for k, v in entry.fields.items()}
        reply = await self._call(
            "bury",
            [q.stream, q.run(run_id), q.dead, q.stats],
            [
                GROUP,
                consumer,
                entry.entry_id,
                run_id,
                encode(shown),
                error,
                int(self.settings.dead_ttl * 1000),
                q.finished,
            ],
        )
        return as_str(reply[0]) == "ok"

    async def promote_due(self, queue: str, batch: int = 100) -> float | None:
        """Move due runs from the delayed set to the stream.

        Returns seconds until the next one is due (None: nothing scheduled).
        """
        q = self.keys.queue(queue)
        while True:
            with mapped_errors("ZRANGE"):
                head = await self.client.zrange(q.delayed, 0, batch - 1)
            if not head:
                return None
            ids = [as_str(i) for i in head]
            reply = await self._call(
                "promote", [q.delayed, q.stream, *(q.run(i) for i in ids)], ids
            )
            moved, now, next_due = int(reply[0]), int(reply[1]), int(reply[2])
            if moved < len(ids) or next_due < 0:
                return None if next_due < 0 else max(0.0, (next_due - now) / 1000)

    async def prune_consumers(self, queue: str, min_idle_ms: int, keep: str) -> int:
        """Delete consumers idle longer than ``min_idle_ms`` that hold nothing."""
        stream = self.keys.queue(queue).stream
        with mapped_errors("XINFO CONSUMERS"):
            consumers = await self.client.xinfo_consumers(stream, GROUP)
        pruned = 0
        for info in consumers:
            name = as_str(info["name"])
            if name == keep or int(info["pending"]) or int(info["idle"]) < min_idle_ms:
                continue
            pruned += int(await self._call("prune", [stream], [GROUP, name]))
        return pruned

    async def delete_consumer(self, queue: str, consumer: str) -> bool:
        """Delete ``consumer`` from the queue's group if it holds nothing."""
        stream = self.keys.queue(queue).stream
        return bool(int(await self._call("prune", [stream], [GROUP, consumer])))

    async def queue_stats(self, queue: str) -> QueueStats:
        q = self.keys.queue(queue)
        await self.ensure_group(queue)
        with mapped_errors("queue stats"):
            pipe = self.client.pipeline(transaction=False)
            pipe.xinfo_groups(q.stream)
            pipe.zcard(q.delayed)
            pipe.zcard(q.dead)
            pipe.hgetall(q.stats)
            pipe.xlen(q.stream)
            groups, scheduled, dead, totals, length = await pipe.execute()
        group = next((g for g in groups if as_str(g["name"]) == GROUP), None)
        running = int(group["pending"]) if group else 0
        consumers = int(group["consumers"]) if group else 0
        return QueueStats(
            queue=queue,
            waiting=max(0, int(length) - running),  # acked entries are deleted
            running=running,
            scheduled=int(scheduled),
            dead=int(dead),
            consumers=consumers,
            totals={as_str(k): int(v) for k, v in totals.items()},
        )
