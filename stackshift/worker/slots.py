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
    """``concurrency`` slots, one per running handler; fetching waits for free
    ones and takes as many entries as there are free slots, so nothing is
    fetched ahead to age.

    A run gives its slot back when its handler returns (``handler_done``), not
    when its outcome is written: the write (one batched round trip) overlaps
    with the next run instead of idling the slot. A worker holds at most twice
    ``concurrency`` runs (handlers running, outcomes being written); past that,
    fetching waits for writes to finish (``finished``).
    """

    def __init__(self, concurrency: int) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.total = concurrency
        self.free = concurrency
        self.finishing = 0  # handlers returned, outcomes being written
        self.reading = 0  # taken for reads in flight (a lane's blocking read)
        # Futures of those waiting for a change (made only when someone waits:
        # a change comes twice per run, a waiter about once per batch).
        self._waiters: list[asyncio.Future[None]] = []

    @property
    def available(self) -> int:
        """Slots that may be filled now."""
        return max(0, min(self.free, 2 * self.total - self.busy))

    async def wait_free(self) -> int:
        """Wait for a free slot; while runs are in flight, for a batch's worth."""
        while self.available <= 0:
            await self._changed()
        batch = max(1, int(self.total * FILL_FRACTION))
        if self.free < batch:  # runs are in flight: let a few more finish
            try:
                async with asyncio.timeout(FILL_WAIT_SECONDS):
                    while self.free < batch:
                        await self._changed()
            except TimeoutError:
                pass
        return self.available

    def take(self, n: int) -> None:
        self.free -= n

    def reserve(self, n: int) -> None:
        """Take ``n`` slots for a read: whatever it brings has a slot to run in."""
        self.free -= n
        self.reading += n

    def read_done(self, reserved: int, got: int) -> None:
        """A read that reserved ``reserved`` slots brought ``got`` entries: their
        runs keep a slot each, the rest are free again."""
        self.reading -= reserved
        self.give(reserved - got)

    def give(self, n: int = 1) -> None:
        self.free += n
        if n > 0:
            self._notify()

    def handler_done(self) -> None:
        """A run's handler returned: its slot is free while its outcome is written."""
        self.finishing += 1
        self.free += 1
        self._notify()

    def finished(self) -> None:
        """The outcome of a run that called ``handler_done`` is written."""
        self.finishing -= 1
        self._notify()

    def _notify(self) -> None:
        waiters = self._waiters
        if waiters:
            self._waiters = []
            for waiter in waiters:
                if not waiter.done():  # not cancelled (a timeout)
                    waiter.set_result(None)

    async def _changed(self) -> None:
        """Until the slots change (a slot given back, a write finished)."""
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        await waiter

    @property
    def busy(self) -> int:
        """Runs in this worker: running handlers and outcomes being written
        (not the slots a read holds while it waits for entries)."""
        return self.total - self.free - self.reading + self.finishing

    async def wait_idle(self) -> None:
        while self.busy:
            await self._changed()
