"""`stackshift worker --processes N`: N worker processes under one supervisor,
which restarts a crashed one and drains them all on SIGTERM."""

from __future__ import annotations

import os
import signal

from stackshift import Stackshift
from tests.support.processes import Workers, enqueue_steps, wait_finished
from tests.support.processes import workers as workers  # the fixture
from tests.support.waiting import wait_until


async def test_a_supervisor_runs_restarts_and_drains_its_workers(
    app: Stackshift, workers: Workers
) -> None:
    supervisor = workers.start_module(
        "sup", "stackshift", "worker", "tests.apps.durable:app", "--queue", "sup",
        "--processes", "2", "--name", "sup", "--concurrency", "4",
        "--lease-timeout", "2", "--grace-period", "5", "--log-format", "json",
    )  # fmt: skip
    await wait_until(
        lambda: (
            {line["consumer"] for line in supervisor.logged("worker_started")}
            == {"sup-0", "sup-1"}
        ),
        timeout=30,
        message=f"both workers to start\n{supervisor.tail()}",
    )
    run_ids = await enqueue_steps(app, "sup", 20, steps=2, pause=0.05)
    runs = await wait_finished(app, run_ids)
    assert {run.worker for run in runs} <= {"sup-0", "sup-1"}
    assert all(run.status == "completed" for run in runs)

    # A worker process killed with -9 is started again.
    (first,) = supervisor.logged("worker_process_started", index=0)
    os.kill(first["pid"], signal.SIGKILL)
    await wait_until(
        lambda: len(supervisor.logged("worker_started", consumer="sup-0")) == 2,
        timeout=30,
        message=f"worker 0 to be restarted\n{supervisor.tail()}",
    )
    assert supervisor.logged("worker_process_died", index=0)
    more = await enqueue_steps(app, "sup", 10, steps=1)
    assert all(r.status == "completed" for r in await wait_finished(app, more))

    # SIGTERM: every worker drains and stops, and so does the supervisor.
    supervisor.terminate()
    assert await supervisor.wait_exit(within=30) == 0
    pids = [line["pid"] for line in supervisor.logged("worker_process_started")]
    assert not any(_alive(pid) for pid in pids)
    assert len(supervisor.logged("worker_stopped")) == 2


async def test_a_supervisor_in_burst_mode_exits_once_its_workers_have(
    app: Stackshift, workers: Workers
) -> None:
    """DESIGN §1 and §8 together: ``--burst`` exits once the queues are empty,
    also under ``--processes N``: a child that exits 0 is done, not restarted
    as if it had crashed."""
    run_ids = await enqueue_steps(app, "supb", 6, steps=1)
    supervisor = workers.start_module(
        "supb", "stackshift", "worker", "tests.apps.durable:app", "--queue", "supb",
        "--processes", "2", "--name", "supb", "--burst", "--log-format", "json",
    )  # fmt: skip
    assert await supervisor.wait_exit(within=60) == 0, supervisor.tail()
    assert all(r.status == "completed" for r in await wait_finished(app, run_ids))
    assert not supervisor.logged("worker_process_died")
    assert len(supervisor.logged("worker_process_started")) == 2
    assert {line["index"] for line in supervisor.logged("worker_process_done")} == {
        0,
        1,
    }


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
