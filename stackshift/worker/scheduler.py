"""Scheduler: moves due runs (delays, retry backoffs) from the delayed set to the stream.

Every worker runs one; the promote script is atomic, so they never double-move.
"""

from __future__ import annotations

import asyncio

import anyio
import structlog

from ..errors import StoreError
from ..store import Store

log = structlog.get_logger("stackshift.worker")

POLL_SECONDS = 1.0  # runs delayed by other processes are seen within this


class Scheduler:
    def __init__(self, store: Store, queues: list[str]) -> None:
        self._store = store
        self._queues = queues
        self._poke = asyncio.Event()

    def poke(self) -> None:
        """Look again now (this worker just scheduled a retry)."""
        self._poke.set()

    async def run(self) -> None:
        while True:
            wait = POLL_SECONDS
            for queue in self._queues:
                try:
                    due_in = await self._store.promote_due(queue)
                except StoreError as exc:
                    log.warning("promote_failed", queue=queue, error=str(exc))
                    continue
                if due_in is not None:
                    wait = min(wait, due_in)
            with anyio.move_on_after(wait):
                await self._poke.wait()
            self._poke = asyncio.Event()
