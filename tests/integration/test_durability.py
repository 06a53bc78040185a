"""Process-level durability (issue #2): worker subprocesses on the real Redis,
killed with SIGKILL mid-run, and long steps kept alive by the lease keeper.

What ran is read from an effects ledger outside Redis (tests/support/ledger.py),
not from what stackshift says about itself.
"""

from __future__ import annotations

import pytest

from stackshift import Stackshift
from tests.support import ledger
from tests.support.processes import (
    Workers,
    enqueue_steps,
    runs_of,
    wait_finished,
)
from tests.support.processes import workers as workers  # the fixture
from tests.support.waiting import wait_until

STEP_TOTAL = 1 + 4 + 9 + 16  # the "steps" job returns the sum of step**2


async def test_a_worker_killed_mid_run_is_resumed_after_its_recorded_steps(
    app: Stackshift, workers: Workers
) -> None:
    """kill -9 while 10 runs are in step 2; a second worker finishes them: every
    step recorded before the kill ran exactly once, results and counter exact."""
    first = workers.start("first", queues=("kill9",), concurrency=10)
    await first.wait_ready()
    run_ids = await enqueue_steps(app, "kill9", 10, steps=4, pause=0.4, counter="k9")

    def all_in_step_2() -> bool:
        lines = ledger.read(workers.ledger)
        started = {
            line["run_id"]
            for line in ledger.select(lines, event="start", step="step-2", attempt=1)
        }
        return started == set(run_ids)

    await wait_until(all_in_step_2, timeout=30, message="every run to start step 2")
    first.kill()

    before_kill = {run.run_id: run for run in await runs_of(app, run_ids)}
    assert all(run.status == "running" for run in before_kill.values())
    assert all(run.steps for run in before_kill.values())  # step 1 at least

    second = workers.start("second", queues=("kill9",), concurrency=10)
    runs = await wait_finished(app, run_ids)
    lines = ledger.read(workers.ledger)

    for run in runs:
        assert run.status == "completed", (run.run_id, run.error)
        assert run.result == {"total": STEP_TOTAL, "pid": second.pid}
        assert run.attempt == 2 and run.worker == "second"
        assert [s.step_id for s in run.steps] == [f"step-{i}" for i in range(1, 5)]
        # Records committed before the kill were kept, not overwritten.
        kept = before_kill[run.run_id].steps
        assert run.steps[: len(kept)] == kept
        assert all(s.attempt == 1 and s.result["pid"] == first.pid for s in kept)
        assert all(s.attempt == 2 for s in run.steps[len(kept) :])
        # Each step committed before the kill started once; at most the one
        # in flight at the kill ran twice.
        starts = ledger.starts_per_step(lines, run.run_id)
        assert all(starts[s.step_id] == 1 for s in kept), starts
        assert sum(n - 1 for n in starts.values()) <= 1, starts
        assert ledger.step_violations(lines, run) == []

    assert await app.state.get("k9") == 10 * 4
    stats = await app.store.queue_stats("kill9")
    assert (stats.waiting, stats.running, stats.dead) == (0, 0, 0)


@pytest.mark.slow
async def test_a_step_three_times_longer_than_the_lease_is_never_taken_over(
    app: Stackshift, workers: Workers
) -> None:
    """The lease keeper renews during a long async step and a long sync step
    (in a thread), while a second worker on the queue looks for stalled runs."""
    one = workers.start("one", queues=("long",), concurrency=2, lease_timeout=1.0)
    two = workers.start("two", queues=("long",), concurrency=2, lease_timeout=1.0)
    await one.wait_ready()
    await two.wait_ready()
    (run_id,) = await enqueue_steps(
        app, "long", 1, steps=2, pause=3.2, sync_step=2, counter="long"
    )
    (run,) = await wait_finished(app, [run_id])

    lines = ledger.read(workers.ledger)
    assert run.status == "completed" and run.attempt == 1
    assert ledger.starts_per_step(lines, run_id) == {"step-1": 1, "step-2": 1}
    assert len({line["pid"] for line in lines}) == 1
    assert run.result["pid"] == lines[0]["pid"]
    assert ledger.step_violations(lines, run) == []
    for worker in (one, two):
        assert worker.logged("runs_reclaimed") == []
        assert worker.logged("lease_lost") == []
    assert await app.state.get("long") == 2
