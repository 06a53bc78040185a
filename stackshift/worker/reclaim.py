"""Reclaimer: takes over a queue's entries of dead or stalled workers
(XAUTOCLAIM) once their lease has expired, and prunes consumers that left
nothing behind.

The queue's lane calls it between reads (every half lease timeout), so a
blocked read never starves reclaiming.
"""

from __future__ import annotations

import random
import time

from ..errors import StoreError
from ..logs import get_logger
from ..observe import WorkerObserver
from ..store import Store
from .dispatch import MAX_BATCH, Dispatcher
from .slots import Slots

log = get_logger("stackshift.worker")

PRUNE_EVERY = 20  # reclaim ticks between consumer prunes


class Reclaimer:
    def __init__(
        self,
        store: Store,
        consumer: str,
        queue: str,
        slots: Slots,
        dispatcher: Dispatcher,
        lease_timeout: float,
        observer: WorkerObserver | None = None,
    ) -> None:
        self._store = store
        self._observer = observer  # metrics (observe.py); None: off
        self._consumer = consumer
        self._queue = queue
        self._slots = slots
        self._dispatcher = dispatcher
        self._lease_ms = int(lease_timeout * 1000)
        self._interval = lease_timeout / 2
        # A live worker's consumer is seen at every read (every few seconds);
        # one silent for this long has gone away.
        self._prune_idle_ms = max(self._lease_ms * 10, 60_000)
        self._next = time.monotonic() + self._interval
        self._tick = 0

    def seconds_until_due(self) -> float:
        return max(0.0, self._next - time.monotonic())

    async def reclaim_if_due(self) -> int:
        """Reclaim if the interval has passed; entries claimed."""
        if time.monotonic() < self._next:
            return 0
        # Jitter, so that workers started together do not scan together.
        self._next = time.monotonic() + self._interval * (0.75 + random.random() / 2)
        self._tick += 1
        claimed = await self.reclaim(self._queue)
        if self._tick % PRUNE_EVERY == 0:
            await self._prune(self._queue)
        return claimed

    async def reclaim(self, queue: str) -> int:
        free = self._slots.available
        if free <= 0:
            return 0
        count = min(free, MAX_BATCH)
        self._slots.take(count)
        try:
            entries = await self._store.autoclaim(
                queue, self._consumer, self._lease_ms, count
            )
        except StoreError as exc:
            self._slots.give(count)
            log.warning("reclaim_failed", queue=queue, error=str(exc))
            return 0
        self._slots.give(count - len(entries))
        if entries:
            log.warning(
                "runs_reclaimed",
                queue=queue,
                count=len(entries),
                detail="their worker stopped renewing its lease (crashed or stalled)",
            )
            if self._observer is not None:  # observe.py hook: entries taken over
                self._observer.runs_reclaimed(queue, len(entries))
            await self._dispatcher.dispatch(entries)
        return len(entries)

    async def _prune(self, queue: str) -> None:
        try:
            pruned = await self._store.prune_consumers(
                queue, self._prune_idle_ms, self._consumer
            )
        except StoreError as exc:
            log.warning("prune_failed", queue=queue, error=str(exc))
            return
        if pruned:
            log.info("consumers_pruned", queue=queue, count=pruned)
