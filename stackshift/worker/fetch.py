"""Fetch loop: batched XREADGROUP over the worker's queues, and the dispatch of
delivered entries (shared with the reclaimer) to runners."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import structlog

from ..errors import StoreError
from ..serialization import ErrorInfo, encode
from ..store import Entry, StartResult, Store
from ..store.keys import new_run_id
from .slots import Slots

log = structlog.get_logger("stackshift.worker")

MAX_BATCH = 100
BLOCK_MS = 2000
MEMORY_POLL_SECONDS = 0.005  # memory:// cannot block on a read: poll instead


class Dispatcher:
    """Starts delivered entries (one pipelined round trip per batch) and hands
    each started run to a runner; buries entries that name no usable run."""

    def __init__(
        self,
        store: Store,
        consumer: str,
        slots: Slots,
        spawn: Callable[[StartResult], Any],
    ) -> None:
        self._store = store
        self._consumer = consumer
        self._slots = slots
        self._spawn = spawn

    async def dispatch(self, entries: list[Entry]) -> None:
        """Slots for ``entries`` are already taken; each is given back when its
        run ends (or now, for entries that do not run)."""
        try:
            results = await self._store.start_many(entries, self._consumer)
        except StoreError as exc:
            # They stay pending under this consumer: a reclaimer takes them later.
            log.warning("start_failed", error=str(exc), entries=len(entries))
            self._slots.give(len(entries))
            return
        for entry, result in zip(entries, results, strict=True):
            if result.outcome == "ok":
                self._spawn(result)
                continue
            self._slots.give(1)
            if result.outcome == "gone":
                await self._bury(entry)
            elif result.outcome == "dead":
                log.error(
                    "run_dead_lettered",
                    run_id=entry.run_id,
                    queue=entry.queue,
                    reason="delivered too many times (poison)",
                )

    async def _bury(self, entry: Entry) -> None:
        run_id = new_run_id(entry.queue)
        reason = (
            "the stream entry has no valid run id (written by something other than stackshift?)"
            if entry.run_id is None or not entry.run_id.endswith("." + entry.queue)
            else f"the entry names run {entry.run_id}, whose record does not exist (expired or deleted)"
        )
        error = ErrorInfo("UndecodableEntryError", reason)
        try:
            await self._store.bury(entry, self._consumer, run_id, encode(error))
            log.error(
                "entry_dead_lettered",
                entry_id=entry.entry_id,
                queue=entry.queue,
                run_id=run_id,
                reason=reason,
            )
        except StoreError as exc:
            log.warning("bury_failed", entry_id=entry.entry_id, error=str(exc))


class Fetcher:
    """Reads as many entries as there are free slots, so nothing waits in this
    process while its idle clock runs (DESIGN §5)."""

    def __init__(
        self,
        store: Store,
        consumer: str,
        queues: list[str],
        slots: Slots,
        dispatcher: Dispatcher,
        on_empty: Callable[[], Awaitable[bool]],
    ) -> None:
        self._store = store
        self._consumer = consumer
        self._queues = queues
        self._slots = slots
        self._dispatcher = dispatcher
        self._on_empty = on_empty

    async def run(self) -> None:
        failures = 0
        while True:
            free = await self._slots.wait_free()
            # XREADGROUP's COUNT applies per stream: share the free slots.
            count = max(1, min(MAX_BATCH, free // len(self._queues)))
            reserved = count * len(self._queues)
            self._slots.take(reserved)
            try:
                entries = await self._store.read_many(
                    self._queues, self._consumer, count, BLOCK_MS
                )
            except BaseException as exc:
                self._slots.give(reserved)  # cancelled (shutdown) or failed
                if not isinstance(exc, StoreError):
                    raise
                failures += 1
                delay = min(5.0, 0.1 * 2**failures)
                log.warning("fetch_failed", error=str(exc), retry_in=delay)
                if "NOGROUP" in str(exc):
                    await self._recreate_groups()
                await anyio.sleep(delay)
                continue
            failures = 0
            self._slots.give(reserved - len(entries))
            if entries:
                await self._dispatcher.dispatch(entries)
                continue
            if await self._on_empty():
                return
            if self._store.memory:
                await anyio.sleep(MEMORY_POLL_SECONDS)

    async def _recreate_groups(self) -> None:
        log.error(
            "consumer_group_missing",
            detail="the queue's consumer group is gone: Redis restarted empty or the "
            "keys were deleted; runs that were queued there are lost",
        )
        self._store.forget_groups()
        for queue in self._queues:
            try:
                await self._store.ensure_group(queue)
            except StoreError as exc:
                log.warning("group_create_failed", queue=queue, error=str(exc))
