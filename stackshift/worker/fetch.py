"""Fetch loop: batched XREADGROUP over the worker's queues, sized to the free
slots; between reads it lets the reclaimer take over expired leases."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable

import anyio
import structlog

from ..errors import StoreError
from ..store import Entry, StartResult
from .dispatch import MAX_BATCH, Intake
from .reclaim import Reclaimer

log = structlog.get_logger("stackshift.worker")

BLOCK_MS = 2000
# A burst worker checks whether it is done after every empty read: a short
# block lets it exit soon after its last run (not up to BLOCK_MS later).
BURST_BLOCK_MS = 100
MEMORY_POLL_SECONDS = 0.005  # memory:// cannot block on a read: poll instead


class Fetcher:
    """Reads as many entries as there are free slots, so nothing waits in this
    process while its idle clock runs (DESIGN §5)."""

    def __init__(
        self,
        intake: Intake,
        reclaimer: Reclaimer,
        on_empty: Callable[[], Awaitable[bool]],
        redis_run_id: str,
        *,
        block_ms: int = BLOCK_MS,
    ) -> None:
        self._store = intake.store
        self._consumer = intake.consumer
        self._queues = intake.queues
        self._slots = intake.slots
        self._dispatcher = intake.dispatcher
        self._reclaimer = reclaimer
        self._on_empty = on_empty
        self._block_ms = block_ms
        # The server's run_id when the worker started: a new one means a restart.
        self._redis_run_id = redis_run_id

    async def run(self) -> None:
        try:
            await self._run()
        finally:
            self._store.carry_completions(False)

    async def _run(self) -> None:
        failures = 0
        # A full read means more is likely waiting: read and start the next
        # batch in one script call (no blocking needed) until a read comes back
        # short; then block on XREADGROUP again. Meanwhile that call also
        # carries the completions of the runs that finished since the last one.
        backlog = False
        while True:
            free = await self._slots.wait_free()
            if await self._reclaimer.reclaim_if_due():
                continue
            # Block no longer than until the next reclaim is due.
            block_ms = max(
                1,
                min(self._block_ms, int(self._reclaimer.seconds_until_due() * 1000)),
            )
            # XREADGROUP's COUNT applies per stream: share the free slots.
            count = max(1, min(MAX_BATCH, free // len(self._queues)))
            reserved = count * len(self._queues)
            self._slots.take(reserved)
            started: list[tuple[Entry, StartResult]] | None = None
            try:
                if backlog:
                    started = await self._store.fetch_started(
                        self._queues, self._consumer, count
                    )
                else:
                    entries = await self._store.read_many(
                        self._queues, self._consumer, count, block_ms
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
            got = len(started) if started is not None else len(entries)
            backlog = got == reserved
            self._store.carry_completions(backlog)
            self._slots.give(reserved - got)
            if started is not None:
                await self._dispatcher.dispatch_started(started)
                continue
            if entries:
                await self._dispatcher.dispatch(entries, fresh=True)
                continue
            if await self._on_empty():
                return
            if self._store.memory:
                await anyio.sleep(MEMORY_POLL_SECONDS)

    async def _recreate_groups(self) -> None:
        """The group is gone (NOGROUP): say loudly why, then recreate it so new
        runs flow. Runs that were queued are lost and cannot be brought back."""
        info: dict[str, str] = {}
        with contextlib.suppress(StoreError):
            info = await self._store.server_info()
        restarted = (
            bool(self._redis_run_id) and info.get("run_id") != self._redis_run_id
        )
        log.critical(
            "redis_data_lost",
            cause="redis restarted empty"
            if restarted
            else "the queue's keys were deleted",
            queues=self._queues,
            detail="the consumer group of the queue is gone, and with it every run that "
            "was waiting or running there; check Redis persistence (appendonly yes) "
            "and who deletes keys under the stackshift prefix",
        )
        if info.get("run_id"):
            self._redis_run_id = info["run_id"]
        self._store.forget_groups()
        for queue in self._queues:
            try:
                await self._store.ensure_group(queue)
            except StoreError as exc:
                log.warning("group_create_failed", queue=queue, error=str(exc))
