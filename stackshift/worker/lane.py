"""Lane: one queue's intake (one hash slot on Redis Cluster). It reads the
queue's stream on its own (a read never spans queues: on a cluster they live in
different slots), starts what it read (one start.lua call per batch, which also
carries the finishes waiting to go out), and takes over entries whose lease
expired. Lanes share the worker's slots: a lane reads only as many entries as
there are free slots, so nothing read waits in this process while its idle
clock runs (DESIGN §5)."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable

import anyio

from ..errors import StoreError
from ..logs import get_logger
from ..observe import WorkerObserver
from ..store import Entry, Store
from .dispatch import MAX_BATCH, Dispatcher
from .reclaim import Reclaimer
from .slots import Slots

log = get_logger("stackshift.worker")

BLOCK_MS = 2000
# A burst worker checks whether it is done after every empty read: a short
# block lets it exit soon after its last run (not up to BLOCK_MS later).
BURST_BLOCK_MS = 100
MEMORY_POLL_SECONDS = 0.005  # memory:// cannot block on a read: poll instead


class Lane:
    """The fetch loop of one queue."""

    def __init__(
        self,
        store: Store,
        consumer: str,
        queue: str,
        slots: Slots,
        dispatcher: Dispatcher,
        lease_timeout: float,
        on_empty: Callable[[], Awaitable[bool]],
        redis_run_id: str,
        *,
        block_ms: int = BLOCK_MS,
        observer: WorkerObserver | None = None,
    ) -> None:
        self.queue = queue
        self._store = store
        self._consumer = consumer
        self._slots = slots
        self._dispatcher = dispatcher
        self._reclaimer = Reclaimer(
            store, consumer, queue, slots, dispatcher, lease_timeout, observer
        )
        self._on_empty = on_empty
        self._block_ms = block_ms
        # The server's run_id when the worker started: a new one means a restart.
        self._redis_run_id = redis_run_id

    async def run(self) -> None:
        try:
            await self._run()
        finally:
            self._store.carry_finishes(self.queue, False)

    async def _run(self) -> None:
        failures = 0
        # A full read means more is likely waiting: read a full batch next
        # (and hold finishes back for the next start call to carry them). An
        # empty or short one: block for one entry, holding one slot, so that an
        # idle lane keeps the worker's other slots free for busy lanes.
        backlog = True
        while True:
            free = await self._slots.wait_free()
            if await self._reclaimer.reclaim_if_due():
                continue
            # Block no longer than until the next reclaim is due.
            block_ms = max(
                1,
                min(self._block_ms, int(self._reclaimer.seconds_until_due() * 1000)),
            )
            count = max(1, min(MAX_BATCH, free)) if backlog else 1
            self._slots.reserve(count)
            entries: list[Entry] = []
            try:
                entries = await self._store.read(
                    self.queue, self._consumer, count, block_ms
                )
            except BaseException as exc:
                self._slots.read_done(count, 0)  # cancelled (shutdown) or failed
                if not isinstance(exc, StoreError):
                    raise
                failures += 1
                delay = min(5.0, 0.1 * 2**failures)
                log.warning(
                    "fetch_failed", queue=self.queue, error=str(exc), retry_in=delay
                )
                if "NOGROUP" in str(exc):
                    await self._recreate_group()
                await anyio.sleep(delay)
                continue
            failures = 0
            backlog = len(entries) == count
            self._store.carry_finishes(self.queue, backlog)
            self._slots.read_done(count, len(entries))
            if entries:
                await self._dispatcher.dispatch(entries, fresh=True)
                continue
            if await self._on_empty():
                return
            if self._store.memory:
                await anyio.sleep(MEMORY_POLL_SECONDS)

    async def _recreate_group(self) -> None:
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
            queue=self.queue,
            detail="the consumer group of the queue is gone, and with it every run that "
            "was waiting or running there; check Redis persistence (appendonly yes) "
            "and who deletes keys under the stackshift prefix",
        )
        if info.get("run_id"):
            self._redis_run_id = info["run_id"]
        self._store.forget_groups()
        try:
            await self._store.ensure_group(self.queue)
        except StoreError as exc:
            log.warning("group_create_failed", queue=self.queue, error=str(exc))
