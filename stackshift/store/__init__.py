"""Store: the only package that speaks Redis.

One typed method per state change of a run; each is one Lua script (see lua/),
fenced where a worker acts on an entry it holds. redis-py results are converted
here, so no ``Any`` leaves this package.
"""

from __future__ import annotations

import asyncio
from typing import Any

from redis.exceptions import RedisError, ResponseError

from ..config import Settings
from ..errors import StoreError
from ..serialization import RunInfo, encode, run_info_from_hash
from . import scripts as _scripts
from .batching import ScriptBatcher
from .connection import is_memory_url, open_client
from .keys import GROUP, Keys, QueueKeys, key_part, queue_of_run
from .records import (
    EnqueueRequest,
    EnqueueResult,
    Entry,
    Lease,
    QueueStats,
    StartResult,
    as_str,
    mapped_errors,
    pairs,
)

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


class Store:
    """Typed access to one Redis (or memory://) for one prefix."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.keys = Keys(settings.prefix)
        self.memory = is_memory_url(settings.url)
        self._client: Any = None
        self._batcher: ScriptBatcher | None = None
        self._scripts = _scripts.load_scripts(with_flags=not self.memory)
        self._groups_made: set[str] = set()

    # --- connection -------------------------------------------------------

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = open_client(self.settings.url)
        return self._client

    @property
    def batcher(self) -> ScriptBatcher:
        if self._batcher is None:
            self._batcher = ScriptBatcher(self.client, self._scripts)
        return self._batcher

    async def close(self) -> None:
        self._batcher = None
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    async def ping(self) -> None:
        with mapped_errors("ping"):
            await self.client.ping()

    async def server_info(self) -> dict[str, str]:
        """``INFO server``, ``memory`` and ``persistence`` fields (empty if ACL-denied)."""
        info: dict[str, str] = {}
        for section in ("server", "memory", "persistence"):
            try:
                raw = await self.client.info(section)
            except ResponseError:
                continue
            except RedisError as exc:
                raise StoreError(f"INFO: {exc}") from exc
            info.update({str(k): as_str(v) for k, v in raw.items()})
        return info

    async def _call(self, name: str, keys: list[str], args: list[Any]) -> Any:
        """One script call, group-committed with concurrent ones (batching.py)."""
        with mapped_errors(name):
            return await self.batcher.call(self._scripts[name], keys, args)

    # --- enqueue side -----------------------------------------------------

    def _enqueue_call(
        self, q: QueueKeys, req: EnqueueRequest
    ) -> tuple[_scripts.Script, list[str], list[Any]]:
        keys = [q.run(req.run_id), q.stream, q.delayed, q.stats]
        if req.idempotency_key is not None:
            keys.append(q.idem(req.idempotency_key))
        ttl_ms = int(self.settings.idempotency_ttl * 1000)
        args = [
            req.run_id,
            req.job,
            req.payload,
            req.correlation_id,
            req.idempotency_key or "",
            ttl_ms,
            req.delay_ms,
            req.run_at_ms,
        ]
        return self._scripts["enqueue"], keys, args

    async def enqueue(self, queue: str, req: EnqueueRequest) -> EnqueueResult:
        """Create a run (one round trip), or find the one its key already made."""
        script, keys, args = self._enqueue_call(self.keys.queue(queue), req)
        reply = await self._call("enqueue", keys, args)
        return EnqueueResult(as_str(reply[0]), bool(int(reply[1])))

    async def enqueue_many(
        self, queue: str, reqs: list[EnqueueRequest]
    ) -> list[EnqueueResult]:
        """Create many runs in one pipelined round trip."""
        q = self.keys.queue(queue)
        with mapped_errors("enqueue_many"):
            replies = await _scripts.call_many(
                self.client, self._scripts, [self._enqueue_call(q, r) for r in reqs]
            )
        out = []
        for reply in replies:
            if isinstance(reply, Exception):
                with mapped_errors("enqueue_many"):
                    raise reply
            out.append(EnqueueResult(as_str(reply[0]), bool(int(reply[1]))))
        return out

    async def get_run(self, run_id: str) -> RunInfo | None:
        queue = queue_of_run(run_id)
        q = self.keys.queue(queue)
        with mapped_errors("get_run"):
            pipe = self.client.pipeline(transaction=False)
            pipe.hgetall(q.run(run_id))
            pipe.hgetall(q.steps(run_id))
            run, steps = await pipe.execute()
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
            fields["created_at"] = fields["entry"].partition("-")[0]
        return run_info_from_hash(
            run_id, queue, fields, {as_str(k): as_str(v) for k, v in steps.items()}
        )

    async def run_outcome(self, run_id: str) -> tuple[str, bytes | None, bytes | None]:
        """(status, result JSON, error JSON) of a run; status '' if unknown."""
        q = self.keys.queue(queue_of_run(run_id))
        with mapped_errors("run_outcome"):
            status, result, error = await self.client.hmget(
                q.run(run_id), "status", "result", "error"
            )
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

    async def read_many(
        self, queues: list[str], consumer: str, count: int, block_ms: int
    ) -> list[Entry]:
        """XREADGROUP up to ``count`` new entries per queue, blocking up to ``block_ms``.

        One call for all queues (they are on one server; on a cluster each queue
        would need its own read, as their slots differ).
        """
        streams = {self.keys.queue(q).stream: q for q in queues}
        # fakeredis does not wake a blocked read when an entry is added: poll.
        block = None if self.memory else block_ms
        with mapped_errors("XREADGROUP"):
            reply = await self.client.xreadgroup(
                GROUP, consumer, dict.fromkeys(streams, ">"), count=count, block=block
            )
        return [
            Entry(streams[as_str(stream)], as_str(entry_id), fields or {})
            for stream, entries in reply or ()
            for entry_id, fields in entries
        ]

    async def autoclaim(
        self, queue: str, consumer: str, min_idle_ms: int, count: int
    ) -> list[Entry]:
        """Take over up to ``count`` entries idle longer than ``min_idle_ms``."""
        stream = self.keys.queue(queue).stream
        out: list[Entry] = []
        cursor: Any = "0-0"
        with mapped_errors("XAUTOCLAIM"):
            while len(out) < count:
                reply = await self.client.xautoclaim(
                    stream, GROUP, consumer, min_idle_ms, cursor, count=count - len(out)
                )
                cursor, claimed = reply[0], reply[1]
                out.extend(
                    Entry(queue, as_str(eid), fields or {})
                    for eid, fields in claimed
                    if eid
                )
                if as_str(cursor) == "0-0":
                    break
        return out

    def _start_call(
        self, queue: str, entries: list[Entry], consumer: str
    ) -> tuple[_scripts.Script, list[str], list[Any]]:
        q = self.keys.queue(queue)
        s = self.settings
        keys = [q.stream, q.dead, q.stats]
        args: list[Any] = [
            GROUP,
            consumer,
            s.max_deliveries,
            int(s.dead_ttl * 1000),
            q.finished,
        ]
        for entry in entries:
            run_id = entry.run_id or ""
            keys += [q.run(run_id), q.steps(run_id)]
            args += [entry.entry_id, run_id]
        return self._scripts["start"], keys, args

    async def start_many(
        self, entries: list[Entry], consumer: str
    ) -> list[StartResult]:
        """Start a fetched batch: one start.lua call per queue, one round trip.

        Entries without a usable run id come back as ``gone`` (to be buried).
        """
        by_queue: dict[str, list[Entry]] = {}
        for entry in entries:
            if _valid_run_entry(entry):
                by_queue.setdefault(entry.queue, []).append(entry)
        calls = [
            self._start_call(queue, batch, consumer)
            for queue, batch in by_queue.items()
        ]
        with mapped_errors("start"):
            replies = await _scripts.call_many(self.client, self._scripts, calls)
        # Keyed by (queue, id): two streams can mint the same entry id.
        by_entry: dict[tuple[str, str], Any] = {}
        for batch, reply in zip(by_queue.values(), replies, strict=True):
            if isinstance(reply, Exception):
                with mapped_errors("start"):
                    raise reply
            for entry, result in zip(batch, reply, strict=True):
                by_entry[entry.queue, entry.entry_id] = result
        return [
            self._start_result(e, consumer, by_entry.get((e.queue, e.entry_id)))
            for e in entries
        ]

    async def fetch_started(
        self, queues: list[str], consumer: str, count: int
    ) -> list[tuple[Entry, StartResult]]:
        """Read up to ``count`` new entries per queue and start their runs, in
        one round trip (fetch.lua; never blocks). For a queue with a backlog."""
        s = self.settings
        calls = []
        for queue in queues:
            q = self.keys.queue(queue)
            args = [GROUP, consumer, s.max_deliveries, int(s.dead_ttl * 1000)]
            args += [q.finished, count, queue, q.base]
            calls.append((self._scripts["fetch"], [q.stream, q.dead, q.stats], args))
        with mapped_errors("fetch"):
            replies = await _scripts.call_many(self.client, self._scripts, calls)
        out: list[tuple[Entry, StartResult]] = []
        for queue, reply in zip(queues, replies, strict=True):
            if isinstance(reply, Exception):
                with mapped_errors("fetch"):
                    raise reply
            for entry_id, flat, started in reply:
                fields = dict(zip(flat[::2], flat[1::2], strict=True))
                entry = Entry(queue, as_str(entry_id), fields)
                out.append((entry, self._start_result(entry, consumer, started)))
        return out

    @staticmethod
    def early_start(entry: Entry, consumer: str) -> StartResult | None:
        """Start a run from its entry alone, if the entry carries it: a first
        delivery of a run enqueued to run now (enqueue.lua puts job and payload
        in the entry; no step can be recorded before a first start).

        The lease is provisional: ``start_many`` must still be called for the
        entry, and ``confirm`` with its outcome; until then the run's writes
        wait (``Lease.ready``). Returns None for any other entry.
        """
        fields = entry.fields
        job, payload = fields.get(b"j"), fields.get(b"p")
        if job is None or payload is None or not _valid_run_entry(entry):
            return None
        run_id = entry.run_id or ""
        ready = asyncio.get_running_loop().create_future()
        lease = Lease(entry.queue, entry.entry_id, 1, run_id, consumer, ready)
        run = {"job": job, "payload": payload, "attempt": b"1"}
        if b"c" in fields:
            run["correlation_id"] = fields[b"c"]
        return StartResult("ok", lease, run, {})

    @staticmethod
    def confirm(lease: Lease, ok: bool) -> None:
        """Settle an early start: its run may write (True) or must stop (False)."""
        if lease.ready is not None and not lease.ready.done():
            lease.ready.set_result(ok)

    @staticmethod
    async def _confirmed(lease: Lease) -> bool:
        if lease.ready is None:
            return True
        if lease.ready.done():
            return lease.ready.result()
        return await asyncio.shield(lease.ready)

    def _start_result(self, entry: Entry, consumer: str, reply: Any) -> StartResult:
        if reply is None:
            return StartResult("gone")
        if isinstance(reply, Exception):
            with mapped_errors("start"):
                raise reply
        outcome = as_str(reply[0])
        if outcome != "ok":
            return StartResult(outcome)
        lease = Lease(
            entry.queue, entry.entry_id, int(reply[1]), entry.run_id or "", consumer
        )
        return StartResult("ok", lease, pairs(reply[2]), pairs(reply[3]))

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
        ttl_ms = int(self.settings.result_ttl * 1000)
        with mapped_errors("complete"):
            reply = await self.batcher.call_item(
                self._scripts["complete"],
                [q.stream, q.stats],
                [GROUP, lease.consumer, ttl_ms, q.finished],
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
            [GROUP, lease.consumer, lease.entry_id, lease.deliveries, lease.run_id],
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


def _valid_run_entry(entry: Entry) -> bool:
    run_id = entry.run_id
    if run_id is None:
        return False
    try:
        return queue_of_run(run_id) == entry.queue
    except ValueError:
        return False
