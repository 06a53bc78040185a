"""How ``stackshift worker`` exits when a sync step still holds its thread."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from stackshift import Stackshift
from tests.support import ledger
from tests.support.processes import Workers, enqueue_steps, wait_status
from tests.support.processes import workers as workers  # the fixture
from tests.support.waiting import wait_until

# The durable test app, plus an atexit handler that leaves a mark.
EXITING_APP = """\
import atexit
import os
import pathlib

from tests.apps.durable import app

atexit.register(pathlib.Path(os.environ["ATEXIT_MARK"]).write_text, "ran")
"""


async def test_a_forced_stop_past_a_blocked_thread_logs_in_format_and_runs_atexit(
    app: Stackshift, workers: Workers, tmp_path: Path
) -> None:
    (tmp_path / "exiting_app.py").write_text(EXITING_APP)
    mark = tmp_path / "atexit-mark"
    path = os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))
    worker = workers.start_module(
        "blocked", "stackshift", "worker", "exiting_app:app", "--queue", "blocked",
        "--name", "blocked", "--grace-period", "60", "--log-format", "console",
        env={"PYTHONPATH": path, "ATEXIT_MARK": str(mark)},
    )  # fmt: skip

    def output() -> str:
        return worker.log.read_text(errors="replace")

    await wait_until(lambda: "worker_started" in output(), timeout=30,
                     message=f"the worker to start\n{worker.tail()}")  # fmt: skip
    # Step 1 is a sync function: its thread sleeps 60 s and cannot be cancelled.
    (run_id,) = await enqueue_steps(
        app, "blocked", 1, steps=2, sync_step=1, slow_step=1, slow_pause=60
    )
    await wait_until(
        lambda: ledger.select(
            ledger.read(workers.ledger), run_id=run_id, event="start"
        ),
        timeout=30,
        message="step-1 to start",
    )
    worker.send(signal.SIGTERM)
    await wait_until(lambda: "worker_draining" in output(), message="draining")
    worker.send(signal.SIGTERM)  # the second signal: hand back now
    assert await worker.wait_exit(within=30) == 0, worker.tail()
    await wait_status(app, run_id, "queued", within=5)  # handed back

    (line,) = [
        x for x in output().splitlines() if "worker_exit_abandoning_threads" in x
    ]
    assert not line.lstrip().startswith("{"), line  # console, like the other lines
    assert "worker_stopped" in output() and '"event"' not in output()
    assert "[warning" in line and "threads=1" in line, line
    assert mark.read_text() == "ran", "the app's atexit handler did not run"
