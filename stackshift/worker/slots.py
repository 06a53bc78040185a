"""Concurrency slots shared by the fetch loop and the reclaimer."""

from __future__ import annotations

import asyncio


class Slots:
    """``concurrency`` slots; fetching waits for a free one and takes as many
    entries as there are free slots, so nothing is fetched ahead to age."""

    def __init__(self, concurrency: int) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.total = concurrency
        self.free = concurrency
        self._freed = asyncio.Event()

    async def wait_free(self) -> int:
        while self.free <= 0:
            await self._freed.wait()
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
