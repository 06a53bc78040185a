"""SIGTERM to a worker subprocess (DESIGN §3 shutdown, research T3): it stops
fetching, finishes in-flight runs within --grace-period or hands them back, and
exits 0; nothing is lost and a handed-back run resumes after its recorded steps."""

from __future__ import annotations

import time

from stackshift import Stackshift
from stackshift.store.keys import GROUP
from tests.support import ledger
from tests.support.processes import (
    Workers,
    enqueue_steps,
    runs_of,
    wait_finished,
    wait_status,
)
from tests.support.processes import workers as workers  # the fixture
from tests.support.waiting import wait_until


async def consumers_of(app: Stackshift, queue: str) -> list[str]:
    stream = f"{app.settings.prefix}{{{queue}}}:stream"
    infos = await app.store.client.xinfo_consumers(stream, GROUP)
    return [info["name"].decode() for info in infos]


async def wait_started(workers: Workers, run_id: str, step: str) -> None:
    await wait_until(
        lambda: ledger.select(
            ledger.read(workers.ledger), event="start", run_id=run_id, step=step
        ),
        timeout=30,
        message=f"{run_id} to start {step}",
    )


async def test_sigterm_lets_the_run_in_flight_finish_and_fetches_nothing_more(
    app: Stackshift, workers: Workers
) -> None:
    drain = workers.start("drain", queues=("term",), concurrency=1, grace_period=20)
    await drain.wait_ready()
    (busy,) = await enqueue_steps(app, "term", 1, steps=3, pause=0.5, counter="t")
    await wait_started(workers, busy, "step-1")
    (waiting,) = await enqueue_steps(app, "term", 1, steps=1, counter="t")

    signalled = time.monotonic()
    drain.terminate()
    assert await drain.wait_exit(within=30) == 0, drain.tail()
    assert time.monotonic() - signalled < 20  # within the grace period

    run, queued = await runs_of(app, [busy, waiting])
    assert run.status == "completed" and run.attempt == 1 and run.worker == "drain"
    assert run.result == {"total": 1 + 4 + 9, "pid": drain.pid}
    lines = ledger.read(workers.ledger)
    assert ledger.starts_per_step(lines, busy) == {
        "step-1": 1,
        "step-2": 1,
        "step-3": 1,
    }
    # The worker stopped fetching: the run waiting behind the busy one (one slot)
    # was left queued for another worker, untouched.
    assert queued.status == "queued" and queued.attempt == 0
    assert ledger.select(lines, run_id=waiting) == []
    assert drain.logged("run_finished", outcome="completed", run_id=busy)
    assert drain.logged("run_finished", outcome="handed_back") == []
    # It left nothing pending, so its consumer was deleted (DESIGN §5).
    assert "drain" not in await consumers_of(app, "term")

    after = workers.start("after", queues=("term",), burst=True)
    assert await after.wait_exit(within=30) == 0, after.tail()
    (done,) = await runs_of(app, [waiting])
    assert done.status == "completed" and done.worker == "after"
    assert await app.state.get("t") == 3 + 1


async def test_a_run_outlasting_the_grace_period_is_handed_back_and_resumed(
    app: Stackshift, workers: Workers
) -> None:
    short = workers.start("short", queues=("grace",), concurrency=1, grace_period=1)
    await short.wait_ready()
    # Step 2 takes a minute on attempt 1 only: far past the grace period.
    (run_id,) = await enqueue_steps(
        app, "grace", 1, steps=3, pause=0.1, slow_step=2, slow_pause=60, counter="g"
    )
    await wait_started(workers, run_id, "step-2")

    signalled = time.monotonic()
    short.terminate()
    assert await short.wait_exit(within=30) == 0, short.tail()
    assert time.monotonic() - signalled < 1 + 10

    handed_back = await wait_status(app, run_id, "queued", within=5)
    assert [(s.step_id, s.attempt) for s in handed_back.steps] == [("step-1", 1)]
    assert short.logged("run_finished", outcome="handed_back", run_id=run_id)
    assert "short" not in await consumers_of(app, "grace")
    stats = await app.store.queue_stats("grace")
    assert (stats.waiting, stats.running) == (1, 0)

    second = workers.start("second", queues=("grace",))
    (run,) = await wait_finished(app, [run_id])
    assert run.status == "completed" and run.attempt == 2 and run.worker == "second"
    assert run.result == {"total": 1 + 4 + 9, "pid": second.pid}
    assert [(s.step_id, s.attempt) for s in run.steps] == [
        ("step-1", 1),
        ("step-2", 2),
        ("step-3", 2),
    ]
    lines = ledger.read(workers.ledger)
    assert ledger.starts_per_step(lines, run_id) == {
        "step-1": 1,  # recorded before the hand-back: not run again
        "step-2": 2,  # cut by the hand-back, then run by the second worker
        "step-3": 1,
    }
    assert ledger.step_violations(lines, run) == []
    assert await app.state.get("g") == 3


async def test_a_sync_step_outlasting_the_grace_period_does_not_hold_up_shutdown(
    app: Stackshift, workers: Workers
) -> None:
    short = workers.start("short", queues=("gsync",), concurrency=1, grace_period=1)
    await short.wait_ready()
    # Step 1 is a sync function blocking its thread for 8 s on attempt 1.
    (run_id,) = await enqueue_steps(
        app, "gsync", 1, steps=2, sync_step=1, slow_step=1, slow_pause=8, counter="s"
    )
    await wait_started(workers, run_id, "step-1")

    signalled = time.monotonic()
    short.terminate()
    # Handed back at the end of the grace period, not when the thread returns...
    handed_back = await wait_status(app, run_id, "queued", within=1 + 3)
    assert handed_back.steps == []
    # ...and the worker exits then too (an orchestrator would SIGKILL it later).
    assert await short.wait_exit(within=30) == 0, short.tail()
    took = time.monotonic() - signalled
    assert took < 1 + 3, f"exited {took:.1f} s after SIGTERM; grace period 1 s"

    second = workers.start("second", queues=("gsync",))
    (run,) = await wait_finished(app, [run_id])
    assert run.status == "completed" and run.worker == "second"
    assert run.result == {"total": 1 + 4, "pid": second.pid}
    assert ledger.step_violations(ledger.read(workers.ledger), run) == []
    assert await app.state.get("s") == 2


async def test_a_second_sigterm_hands_back_at_once_without_waiting_out_the_grace(
    app: Stackshift, workers: Workers
) -> None:
    patient = workers.start("patient", queues=("twice",), grace_period=60)
    await patient.wait_ready()
    (run_id,) = await enqueue_steps(
        app, "twice", 1, steps=2, slow_step=2, slow_pause=60, counter="tw"
    )
    await wait_started(workers, run_id, "step-2")

    signalled = time.monotonic()
    patient.terminate()
    await patient.wait_logged("worker_draining")
    patient.terminate()  # the second signal: hand back now
    assert await patient.wait_exit(within=30) == 0, patient.tail()
    assert time.monotonic() - signalled < 15  # far less than the 60 s grace

    handed_back = await wait_status(app, run_id, "queued", within=5)
    assert [(s.step_id, s.attempt) for s in handed_back.steps] == [("step-1", 1)]
    second = workers.start("second", queues=("twice",))
    (run,) = await wait_finished(app, [run_id])
    assert run.status == "completed" and run.attempt == 2
    assert run.result == {"total": 1 + 4, "pid": second.pid}
    assert ledger.starts_per_step(ledger.read(workers.ledger), run_id) == {
        "step-1": 1,
        "step-2": 2,
    }
    assert await app.state.get("tw") == 2
