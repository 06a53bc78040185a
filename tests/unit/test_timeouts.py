"""The worker's attempt timeouts: one timer per limit, each run timed out at
its own deadline (worker/timeouts.py)."""

from __future__ import annotations

import asyncio

from stackshift.store import Lease
from stackshift.worker.lease import Inflight
from stackshift.worker.timeouts import Timeouts


async def _running(n: int) -> tuple[Inflight, asyncio.Task[None]]:
    """A run whose handler waits forever, as the runner tracks it."""
    task = asyncio.ensure_future(asyncio.get_running_loop().create_future())
    lease = Lease("q", f"1-{n}", 1, f"run{n}", "w1")
    return Inflight(lease, task), task  # type: ignore[arg-type]


async def _timed_out(task: asyncio.Task[None], within: float = 5.0) -> float:
    """When ``task`` was cancelled by its timeout (loop time)."""
    try:
        await asyncio.wait_for(asyncio.shield(task), within)
    except asyncio.CancelledError:
        pass
    assert task.cancelled()
    return asyncio.get_running_loop().time()


async def test_each_run_times_out_at_its_own_deadline_with_one_timer_per_limit() -> (
    None
):
    loop = asyncio.get_running_loop()
    timeouts = Timeouts()
    first, first_task = await _running(1)
    began = loop.time()
    timeouts.start(0.2, first)
    second, second_task = await _running(2)
    # The second run starts once the first has run a while (marked by a run
    # with a shorter limit timing out): its deadline is later, and the line's
    # timer is armed at the first one's only.
    marker, marker_task = await _running(3)
    timeouts.start(0.1, marker)
    await _timed_out(marker_task)
    second_began = loop.time()
    assert second_began - began >= 0.1 and not first.timed_out
    timeouts.start(0.2, second)

    at = await _timed_out(first_task)
    assert first.timed_out and at - began >= 0.2
    assert not second.timed_out and not second_task.done()  # not yet: its own deadline
    at = await _timed_out(second_task)
    assert second.timed_out and at - second_began >= 0.2


async def test_a_run_that_ends_in_time_is_not_timed_out_and_the_next_one_is() -> None:
    timeouts = Timeouts()
    done, done_task = await _running(1)
    slow, slow_task = await _running(2)
    timeouts.start(0.1, done)
    timeouts.start(0.15, slow)  # another limit: a line of its own
    late, late_task = await _running(3)
    timeouts.start(0.1, late)
    timeouts.end(0.1, done)  # its handler returned
    await _timed_out(late_task)
    await _timed_out(slow_task)
    assert late.timed_out and slow.timed_out
    assert not done.timed_out and not done_task.done()
    done_task.cancel()


async def test_close_leaves_no_timer() -> None:
    timeouts = Timeouts()
    run, task = await _running(1)
    timeouts.start(0.05, run)
    timeouts.close()
    # A run with a later deadline, on timeouts still open, marks the moment
    # the closed one's deadline has passed: nothing timed that one out.
    later, later_task = await _running(2)
    Timeouts().start(0.1, later)
    await _timed_out(later_task)
    assert later.timed_out
    assert not run.timed_out and not task.done()
    task.cancel()
