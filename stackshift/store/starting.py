"""Starting runs: reading delivered entries and starting the runs they name
(start.lua, fetch.lua), and a run started early from an entry that carries it."""

from __future__ import annotations

import asyncio
from typing import Any

from . import scripts as _scripts
from .base import StoreBase
from .batching import Pending, fail_items, resolve_items
from .keys import GROUP, QueueKeys, queue_of_run
from .records import Entry, Lease, StartResult, as_str, mapped_errors, pairs


class StartingStore(StoreBase):
    """The worker's intake: entries in, started runs out."""

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

    def _start_shared(self, q: QueueKeys, consumer: str) -> tuple[list[str], list[Any]]:
        """The keys and arguments start.lua and fetch.lua share (_start.lua)."""
        s = self.settings
        keys = [q.stream, q.dead, q.stats]
        args: list[Any] = [
            GROUP,
            consumer,
            s.max_deliveries,
            int(s.dead_ttl * 1000),
            q.finished,
            q.base,
        ]
        return keys, args

    def _complete_shared(
        self, q: QueueKeys, consumer: str
    ) -> tuple[list[str], list[Any]]:
        """The shared part of a complete.lua call: every completion of a
        consumer on a queue has the same, so concurrent ones merge."""
        return [q.stream, q.stats], [GROUP, consumer, self._retention_ms, q.finished]

    @property
    def _retention_ms(self) -> int:
        """How long a completed run is kept (complete.lua, fetch.lua)."""
        return int(self.settings.result_ttl * 1000)

    def _start_call(
        self, queue: str, entries: list[Entry], consumer: str
    ) -> tuple[_scripts.Script, list[str], list[Any]]:
        q = self.keys.queue(queue)
        keys, args = self._start_shared(q, consumer)
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
            replies = await _scripts.call_many(self.commands, self._scripts, calls)
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
        one round trip (fetch.lua; never blocks). For a queue with a backlog.

        The call also carries the completions of this consumer that are waiting
        to go out (runs that just finished here): one round trip, not two.
        """
        calls = []
        carried: list[list[Pending]] = []
        complete = self._scripts["complete"]
        for queue in queues:
            q = self.keys.queue(queue)
            keys, args = self._start_shared(q, consumer)
            args += [count, queue, self._retention_ms]
            items = (
                self._batcher.take_items(complete, *self._complete_shared(q, consumer))
                if self._batcher is not None
                else []
            )
            for item in items:
                keys += item.item_keys or ()
                args += item.item_args
            calls.append((self._scripts["fetch"], keys, args))
            carried.append(items)
        with mapped_errors("fetch"):
            replies = await self._call_carrying(calls, carried)
        out: list[tuple[Entry, StartResult]] = []
        for queue, reply in zip(queues, replies, strict=True):
            if isinstance(reply, Exception):
                with mapped_errors("fetch"):
                    raise reply
            for entry_id, flat, started in reply[1]:
                fields = dict(zip(flat[::2], flat[1::2], strict=True))
                entry = Entry(queue, as_str(entry_id), fields)
                out.append((entry, self._start_result(entry, consumer, started)))
        return out

    def carry_completions(self, on: bool) -> None:
        """While on (a fetch loop working through a backlog), completions are
        not sent at once: the next ``fetch_started`` carries them, or they go
        out on their own after a couple of milliseconds (batching.HOLD_SECONDS)."""
        if on or self._batcher is not None:  # off: never open a client for it
            self.batcher.hold_items(on)

    async def _call_carrying(
        self,
        calls: list[tuple[_scripts.Script, list[str], list[Any]]],
        carried: list[list[Pending]],
    ) -> list[Any]:
        """Send fetch calls; settle the completions they carry from the replies."""
        items = [item for group in carried for item in group]
        try:
            replies = await _scripts.call_many(self.commands, self._scripts, calls)
        except asyncio.CancelledError:
            # The fetch loop was cancelled (shutdown) mid-call: whether the
            # completions were written is unknown. Send them again: complete.lua
            # recognises a completion it already wrote ('ok'), and writes
            # nothing twice.
            self.batcher.requeue(items)
            raise
        except Exception as exc:
            fail_items(items, exc)
            raise
        for group, reply in zip(carried, replies, strict=True):
            if isinstance(reply, Exception):
                fail_items(group, reply)
            elif group:
                resolve_items(group, reply[0])
        return replies

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


def _valid_run_entry(entry: Entry) -> bool:
    run_id = entry.run_id
    if run_id is None:
        return False
    try:
        return queue_of_run(run_id) == entry.queue
    except ValueError:
        return False
