"""Concurrency slots shared by the fetch loop and the reclaimer."""

from __future__ import annotations

import asyncio

# While runs are in flight, the fetch loop waits until a third of the slots are
# free (or FILL_WAIT_SECONDS have passed) before it reads: a read and its start
# script cost about the same for 1 entry as for 30, and reading after every
# finished run took most of a busy worker's CPU (at concurrency 10: 235 -> 175
# µs of worker CPU per no-op run). An idle worker reads at once; a slot held by
# a long run delays the others' refill by FILL_WAIT_SECONDS at most.
FILL_FRACTION = 1 / 3
FILL_WAIT_SECONDS = 0.002


class Slots:
    """``concurrency`` slots; fetching waits for free ones and takes as many
    entries as there are free slots, so nothing is fetched ahead to age."""

    def __init__(self, concurrency: int) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.total = concurrency
        self.free = concurrency
        self._freed = asyncio.Event()

    async def wait_free(self) -> int:
        """Wait for a free slot; while runs are in flight, for a batch's worth."""
        while self.free <= 0:
            await self._freed.wait()
        batch = max(1, int(self.total * FILL_FRACTION))
        if self.free < batch:  # runs are in flight: let a few more finish
            try:
                async with asyncio.timeout(FILL_WAIT_SECONDS):
                    while self.free < batch:
                        await self._freed.wait()
            except TimeoutError:
                pass
        return self.free

    def take(self, n: int) -> None:
        self.free -= n

    def give(self, n: int = 1) -> None:
        self.free += n
        if n > 0:
            self._freed.set()
            self._freed = asyncio.Event()

    @property
    def busy(self) -> int:
        return self.total - self.free

    async def wait_idle(self) -> None:
        while self.free < self.total:
            await self._freed.wait()
