"""Zombie workers (DESIGN §5, research T2): a worker paused with SIGSTOP past its
lease while holding a run, whose run another worker takes over. Once resumed it
must not ack, checkpoint over, complete or remove what the other worker holds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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


async def pending_entries(app: Stackshift, queue: str) -> list[tuple[str, int]]:
    """(consumer, times delivered) of every pending entry of the queue's group."""
    stream = f"{app.settings.prefix}{{{queue}}}:stream"
    pending: list[dict[str, Any]] = await app.store.client.xpending_range(
        stream, GROUP, min="-", max="+", count=100
    )
    return [(p["consumer"].decode(), p["times_delivered"]) for p in pending]


async def wait_started(workers: Workers, run_id: str, step: str, attempt: int) -> None:
    await wait_until(
        lambda: ledger.select(
            ledger.read(workers.ledger),
            event="start",
            run_id=run_id,
            step=step,
            attempt=attempt,
        ),
        timeout=30,
        message=f"attempt {attempt} of {run_id} to start {step}",
    )


async def test_a_resumed_zombie_cannot_overwrite_a_run_another_worker_completed(
    app: Stackshift, workers: Workers
) -> None:
    zombie = workers.start("zombie", queues=("zq",), concurrency=1)
    await zombie.wait_ready()
    (run_id,) = await enqueue_steps(app, "zq", 1, steps=4, pause=0.5, counter="z")
    await wait_started(workers, run_id, "step-2", attempt=1)
    zombie.pause()  # holding the run, in step 2, past its 1.5 s lease

    owner = workers.start("owner", queues=("zq",), concurrency=1)
    (completed,) = await wait_finished(app, [run_id])
    assert completed.status == "completed" and completed.worker == "owner"

    zombie.resume()
    # Its next write (renewal or checkpoint) finds the lease gone: it drops the run.
    await zombie.wait_logged("run_finished", outcome="lease_lost", run_id=run_id)

    (run,) = await runs_of(app, [run_id])
    assert run == completed  # nothing the zombie did changed the record
    assert run.attempt == 2 and run.result == {"total": 30, "pid": owner.pid}
    assert [(s.step_id, s.attempt) for s in run.steps] == [
        ("step-1", 1),  # recorded by the zombie before it was paused
        ("step-2", 2),
        ("step-3", 2),
        ("step-4", 2),
    ]
    assert all(s.result["pid"] == owner.pid for s in run.steps[1:])
    lines = ledger.read(workers.ledger)
    assert ledger.step_violations(lines, run) == []
    zombie_steps = {line["step"] for line in ledger.select(lines, pid=zombie.pid)}
    assert zombie_steps <= {"step-1", "step-2"}  # it never went further
    assert await app.state.get("z") == 4
    assert await pending_entries(app, "zq") == []

    zombie.terminate()  # and it is still a healthy worker that exits cleanly
    assert await zombie.wait_exit() == 0, zombie.tail()


async def test_a_resumed_zombie_cannot_remove_the_entry_another_worker_holds(
    app: Stackshift, workers: Workers, tmp_path: Path
) -> None:
    """The XACK hazard: after SIGCONT the zombie must leave the new owner's entry
    pending, so that when the owner dies too a third worker still finishes it."""
    gate = tmp_path / "gate"  # step 3 waits for it: the owner holds the run there
    zombie = workers.start("zombie", queues=("zh",), concurrency=1)
    await zombie.wait_ready()
    (run_id,) = await enqueue_steps(
        app, "zh", 1, steps=4, pause=0.3, gate_step=3, gate=str(gate), counter="zh"
    )
    await wait_started(workers, run_id, "step-2", attempt=1)
    zombie.pause()

    owner = workers.start("owner", queues=("zh",), concurrency=1)
    await wait_started(workers, run_id, "step-3", attempt=2)
    zombie.resume()
    await zombie.wait_logged("run_finished", outcome="lease_lost", run_id=run_id)

    assert await pending_entries(app, "zh") == [("owner", 2)]
    held = await wait_status(app, run_id, "running", within=1)
    assert held.worker == "owner" and held.attempt == 2
    # Its shutdown hands back only what it holds itself: nothing.
    zombie.terminate()
    assert await zombie.wait_exit() == 0, zombie.tail()
    assert zombie.logged("entries_handed_back") == []
    assert await pending_entries(app, "zh") == [("owner", 2)]

    owner.kill()  # dies holding the run: it must not be lost
    gate.touch()
    third = workers.start("third", queues=("zh",), concurrency=1)
    (run,) = await wait_finished(app, [run_id])
    assert run.status == "completed" and run.attempt == 3 and run.worker == "third"
    assert run.result == {"total": 30, "pid": third.pid}
    assert [(s.step_id, s.attempt) for s in run.steps] == [
        ("step-1", 1),
        ("step-2", 2),
        ("step-3", 3),
        ("step-4", 3),
    ]
    lines = ledger.read(workers.ledger)
    assert ledger.step_violations(lines, run) == []
    assert ledger.starts_per_step(lines, run_id) == {
        "step-1": 1,
        "step-2": 2,  # zombie (cut by the pause), owner
        "step-3": 2,  # owner (killed at the gate), third
        "step-4": 1,
    }
    assert await app.state.get("zh") == 4
    assert await pending_entries(app, "zh") == []
