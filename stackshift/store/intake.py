"""The worker's intake, one queue (one hash slot) at a time: reading delivered
entries, starting the runs they name (start.lua, which also carries the
finishes waiting to go out), starting a run early from an entry that carries
it, renewing leases, and the consumer group's upkeep."""

from __future__ import annotations

import asyncio
from collections.abc import Container
from typing import Any

from redis.exceptions import RedisError, ResponseError

from . import scripts as _scripts
from .batching import Pending, fail_items, resolve_items
from .commands import DirectCommands
from .finish import FINISH_ARGS, FINISH_KEYS, FinishStore
from .keys import GROUP
from .records import (
    Entry,
    Gate,
    Lease,
    StartResult,
    as_str,
    mapped_errors,
    pairs,
    settle,
    store_error,
)

assert (FINISH_KEYS, FINISH_ARGS) == (10, 6)  # start.lua's layout depends on it


class IntakeStore(FinishStore):
    async def read(
        self, queue: str, consumer: str, count: int, block_ms: int
    ) -> list[Entry]:
        """XREADGROUP up to ``count`` new entries of one queue, blocking up to
        ``block_ms``. One stream per read: on Redis Cluster queues live in
        different slots, so each is read on its own (a worker lane per queue)."""
        stream = self.keys.queue(queue).stream
        link = self.link()
        if not isinstance(link.commands, DirectCommands):
            # memory:// (fakeredis does not wake a blocked read when an entry is
            # added: poll) and Redis Cluster (its client routes the read).
            block = None if self.memory else block_ms
            with mapped_errors("XREADGROUP"):
                reply = await link.client.xreadgroup(
                    GROUP, consumer, {stream: ">"}, count=count, block=block
                )
            return [
                Entry(queue, as_str(entry_id), fields or {})
                for _stream, entries in reply or ()
                for entry_id, fields in entries
            ]
        # A single server: the read goes straight to a connection, as script
        # calls do (commands.py), past redis-py's client layer (~35 µs of CPU a
        # command; a lane reads once per batch of a few runs). The reply is
        # as parsed by hiredis: {stream: [[id, [field, value, ...]], ...]} in
        # RESP3, [[stream, [...]]] in RESP2.
        with mapped_errors("XREADGROUP"):
            raw = await link.commands.execute(
                "XREADGROUP", "GROUP", GROUP, consumer, "COUNT", count,
                "BLOCK", block_ms, "STREAMS", stream, ">",
            )  # fmt: skip
        if not raw:
            return []
        streams = raw.values() if isinstance(raw, dict) else (e for _, e in raw)
        return [
            Entry(queue, entry_id.decode(), _fields(flat))
            for entries in streams
            for entry_id, flat in entries
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

    async def start_many(
        self, entries: list[Entry], consumer: str, early: Container[int] = ()
    ) -> list[StartResult]:
        """Start a batch of one queue's entries in one start.lua call, which
        also carries this consumer's finishes waiting to go out on that queue.

        ``early``: the indexes of entries whose runs were started early
        (``early_start``): only their outcome is wanted, and the script does
        not send back the job and payload the worker has already.
        Entries without a usable run id come back as ``gone`` (to be buried).
        """
        if not entries:
            return []
        queue = entries[0].queue
        q = self.keys.queue(queue)
        valid = [(i, e) for i, e in enumerate(entries) if e.names_a_run]
        shared = self._finish_shared(q, consumer)
        keys, args = list(shared[0]), list(shared[1])
        args += [self.settings.max_deliveries, len(valid)]
        for i, entry in valid:
            run_id = entry.run_id or ""
            keys += q.run_keys(run_id)
            args += [entry.entry_id, run_id, "1" if i in early else "0"]
        batcher = self._batcher_if_open()
        script = self._scripts["start"]
        carried = (
            batcher.take_items(self._scripts["finish"], *shared)
            if batcher is not None
            else []
        )
        for item in carried:
            keys += item.item_keys or ()
            args += item.item_args
        reply = await self._call_carrying((script, keys, args), carried)
        by_entry = dict(zip((e.entry_id for _, e in valid), reply[1], strict=True))
        return [
            self._start_result(e, consumer, by_entry.get(e.entry_id)) for e in entries
        ]

    def carry_finishes(self, lane: str, on: bool) -> None:
        """While a lane works through a backlog (``on``), finishes are not sent
        at once: the next ``start_many`` carries them, or they go out on their
        own after a couple of milliseconds (batching.HOLD_SECONDS)."""
        if on:
            self._carrying.add(lane)
        else:
            self._carrying.discard(lane)
        hold = bool(self._carrying)
        batcher = self.batcher if hold else self._batcher_if_open()
        if batcher is not None:  # off: never open a connection for it
            batcher.hold_items(hold)

    async def _call_carrying(
        self, call: tuple[_scripts.Script, list[str], list[Any]], carried: list[Pending]
    ) -> Any:
        """Send a start call; settle the finishes it carries from its reply."""
        try:
            (reply,) = await _scripts.call_many(self.commands, self._scripts, [call])
        except asyncio.CancelledError:
            # The lane was cancelled (shutdown) mid-call: whether the finishes
            # were written is unknown. Send them again: a finish recognises one
            # it already wrote ('ok'), and writes nothing twice.
            self.batcher.requeue(carried)
            raise
        except RedisError as exc:
            fail_items(carried, exc)
            raise store_error("start", exc) from exc
        if isinstance(reply, Exception):
            fail_items(carried, reply)
            with mapped_errors("start"):
                raise reply
        resolve_items(carried, reply[0])
        return reply

    @staticmethod
    def early_start(
        entry: Entry, consumer: str, gate: Gate | None = None
    ) -> StartResult | None:
        """Start a run from its entry alone, if the entry carries it: a first
        delivery of a run enqueued to run now (enqueue.lua puts job and payload
        in the entry; no step can be recorded before a first start).

        The lease is provisional: ``start_many`` must still be called for the
        entry, and ``gate`` (shared by the batch; a new one if None) settled
        with its outcome (``settle``); until then the run's writes wait
        (``Lease.ready``). Returns None for any other entry.
        """
        fields = entry.fields
        job, payload = fields.get(b"j"), fields.get(b"p")
        if job is None or payload is None or not entry.names_a_run:
            return None
        run_id = entry.run_id or ""
        if gate is None:
            gate = asyncio.get_running_loop().create_future()
        lease = Lease(entry.queue, entry.entry_id, 1, run_id, consumer, gate)
        run = {
            "job": job,
            "payload": payload,
            "attempt": b"1",
            "created_at": entry.entry_id.partition("-")[0].encode(),
        }
        if b"c" in fields:
            run["correlation_id"] = fields[b"c"]
        return StartResult("ok", lease, run, {})

    @staticmethod
    def settle(gate: Gate, refused: frozenset[str] | None) -> None:
        """Settle a batch's early starts: the runs of the entries in
        ``refused`` must stop and write nothing (None: all of them)."""
        settle(gate, refused)

    def _start_result(self, entry: Entry, consumer: str, reply: Any) -> StartResult:
        if reply is None:
            return StartResult("gone")
        outcome = as_str(reply[0])
        if outcome != "ok":
            return StartResult(outcome)
        if len(reply) == 2:  # started early: the worker has its lease and fields
            return _STARTED_EARLY
        lease = Lease(
            entry.queue, entry.entry_id, int(reply[1]), entry.run_id or "", consumer
        )
        return StartResult("ok", lease, pairs(reply[2]), pairs(reply[3]))

    async def renew(
        self, queue: str, consumer: str, leases: list[Lease]
    ) -> tuple[set[str], set[str]]:
        """Reset the idle clock of our entries; return the entry ids we lost,
        and those whose runs were asked to cancel."""
        if not leases:
            return set(), set()
        q = self.keys.queue(queue)
        args: list[Any] = [GROUP, consumer]
        for lease in leases:
            args += [lease.entry_id, lease.deliveries]
        lost, cancel = await self._call("renew", [q.stream, q.cancels], args)
        return {as_str(e) for e in lost}, {as_str(e) for e in cancel}

    # --- the consumer group -------------------------------------------------

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


_STARTED_EARLY = StartResult("ok")


def _fields(flat: list[bytes] | None) -> dict[bytes, bytes]:
    """An entry's fields from RESP's flat list (None: the entry was deleted)."""
    if not flat:
        return {}
    it = iter(flat)
    return dict(zip(it, it, strict=True))
