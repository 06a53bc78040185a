"""Worker slots: an idle worker reads at once; a busy one reads in batches."""

from __future__ import annotations

import asyncio
import time

from stackshift.worker.slots import FILL_WAIT_SECONDS, Slots


async def test_an_idle_worker_reads_at_once() -> None:
    slots = Slots(10)
    assert await asyncio.wait_for(slots.wait_free(), 1) == 10


async def test_a_busy_worker_waits_for_a_third_of_its_slots() -> None:
    slots = Slots(10)
    slots.take(10)
    waiter = asyncio.ensure_future(slots.wait_free())
    slots.give(1)
    slots.give(1)
    slots.give(1)  # 3 of 10 free: a batch's worth
    assert await asyncio.wait_for(waiter, 1) == 3


async def test_a_lone_free_slot_is_read_for_after_the_fill_wait() -> None:
    # Runs hold 9 of 10 slots (long jobs): the free one is not kept idle.
    slots = Slots(10)
    slots.take(10)
    slots.give(1)
    began = time.monotonic()
    assert await asyncio.wait_for(slots.wait_free(), 1) == 1
    assert time.monotonic() - began >= FILL_WAIT_SECONDS * 0.9


async def test_one_slot_reads_as_soon_as_it_is_free() -> None:
    slots = Slots(1)
    slots.take(1)
    waiter = asyncio.ensure_future(slots.wait_free())
    slots.give(1)
    assert await asyncio.wait_for(waiter, 1) == 1
