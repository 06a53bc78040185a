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


async def test_a_run_writing_its_outcome_frees_its_slot_for_the_next() -> None:
    slots = Slots(1)
    slots.take(1)
    slots.handler_done()  # the handler returned; its outcome is being written
    assert await asyncio.wait_for(slots.wait_free(), 1) == 1
    assert slots.busy == 1  # still in the worker until the write is done
    slots.finished()
    assert slots.busy == 0


async def test_a_worker_holds_at_most_twice_its_concurrency_in_runs() -> None:
    slots = Slots(2)
    slots.take(2)
    slots.handler_done()
    slots.handler_done()  # two writes in flight: two more handlers may run
    assert await asyncio.wait_for(slots.wait_free(), 1) == 2
    slots.take(2)
    slots.handler_done()
    slots.handler_done()  # four writes in flight, two free slots
    assert slots.free == 2
    assert slots.available == 0  # a fifth run would exceed twice the concurrency
    waiter = asyncio.ensure_future(slots.wait_free())
    await asyncio.sleep(0)  # sync-ok: let the waiter reach its wait
    assert not waiter.done()
    slots.finished()
    assert await asyncio.wait_for(waiter, 1) == 1
    for _ in range(3):
        slots.finished()
    await asyncio.wait_for(slots.wait_idle(), 1)
