"""Poison and bad input (DESIGN §4.5, research T7): each bad run or entry ends
dead-lettered with a clear error, while healthy runs enqueued alongside complete;
and a dead-lettered run is re-driven with ``app.retry`` and resumes."""

from __future__ import annotations

from pathlib import Path

import pytest

from stackshift import JobFailed, RunInfo, Stackshift
from tests.support import ledger
from tests.support.processes import (
    Workers,
    enqueue_steps,
    runs_of,
    wait_finished,
    wait_for,
    wait_status,
)
from tests.support.processes import workers as workers  # the fixture
from tests.support.waiting import wait_until

GHOST_RUN_ID = "01" + "0" * 24 + ".poison"  # well-formed, but no record exists


def stream_key(app: Stackshift, queue: str) -> str:
    return f"{app.settings.prefix}{{{queue}}}:stream"


async def wait_dead_letters(app: Stackshift, queue: str, count: int) -> list[RunInfo]:
    async def enough() -> list[RunInfo] | None:
        dead = await app.dead_letters(queue)
        return dead if len(dead) >= count else None

    return await wait_for(enough, within=30, message=f"{count} dead letters on {queue}")


async def test_bad_entries_and_runs_are_dead_lettered_and_harm_no_other_run(
    app: Stackshift, workers: Workers
) -> None:
    queue = app.queue("poison")
    healthy = [await queue.enqueue("echo", {"n": n}) for n in range(5)]
    # (a) an entry that is not stackshift's, written with a raw XADD
    await app.store.client.xadd(stream_key(app, "poison"), {b"garbage": b"\xff\x00"})
    # (c) a job no worker has registered
    unknown = await queue.enqueue("noSuchJob", {"n": 1})
    # (b) an entry naming a run whose record does not exist
    await app.store.client.xadd(stream_key(app, "poison"), {b"r": GHOST_RUN_ID})
    # (d) a payload the typed job rejects; this app does not know the job, so
    # nothing validated it at enqueue
    invalid = await queue.enqueue("typed", {"userId": 7})
    healthy += [await queue.enqueue("echo", {"n": n}) for n in range(5, 10)]

    workers.start("w", queues=("poison",), concurrency=4)
    done = await wait_finished(app, [h.run_id for h in healthy])
    assert [r.status for r in done] == ["completed"] * 10
    assert [r.result for r in done] == [{"n": n} for n in range(10)]

    dead = await wait_dead_letters(app, "poison", 4)
    by_id = {run.run_id: run for run in dead}
    assert len(by_id) == 4

    missing_job = by_id.pop(unknown.run_id)
    assert missing_job.status == "failed" and missing_job.attempt == 1  # no retries
    assert missing_job.error is not None
    assert missing_job.error.type == "UnknownJobError"
    assert "noSuchJob" in missing_job.error.message
    with pytest.raises(JobFailed, match="noSuchJob") as failed:
        await unknown.result(timeout=5)
    assert failed.value.error_type == "UnknownJobError"

    bad_payload = by_id.pop(invalid.run_id)
    assert bad_payload.status == "failed" and bad_payload.attempt == 1
    assert bad_payload.error is not None
    assert bad_payload.error.type == "PayloadError"
    assert "invalid payload" in bad_payload.error.message
    assert "userId" in bad_payload.error.message  # names the bad field

    # The two foreign entries were buried as records of their own.
    buried = sorted(by_id.values(), key=lambda run: sorted(run.payload))
    assert [run.payload for run in buried] == [
        {"garbage": "\ufffd\x00"},  # the fields as they were, for inspection
        {"r": GHOST_RUN_ID},
    ]
    assert all(run.status == "failed" and run.job == "" for run in buried)
    errors = [run.error for run in buried if run.error is not None]
    assert [e.type for e in errors] == ["UndecodableEntryError"] * 2
    assert "no valid run id" in errors[0].message
    assert GHOST_RUN_ID in errors[1].message
    assert "does not exist" in errors[1].message

    stats = await app.store.queue_stats("poison")
    assert (stats.waiting, stats.running, stats.dead) == (0, 0, 4)
    assert await app.store.client.xlen(stream_key(app, "poison")) == 0


async def wait_attempt_started(workers: Workers, run_id: str, attempt: int) -> None:
    await wait_until(
        lambda: ledger.select(
            ledger.read(workers.ledger), event="start", run_id=run_id, attempt=attempt
        ),
        timeout=30,
        message=f"attempt {attempt} of {run_id} to start",
    )


async def test_a_run_whose_worker_keeps_dying_is_dead_lettered_after_max_deliveries(
    app: Stackshift, workers: Workers, tmp_path: Path
) -> None:
    """max_deliveries=2: killed twice while running it, the third worker
    dead-letters it as WorkerLostError instead of delivering it again."""
    poison_env = {"DURABILITY_MAX_DELIVERIES": "2"}
    never = str(tmp_path / "never-created")  # its only step blocks for good
    (run_id,) = await enqueue_steps(
        app, "crash", 1, steps=1, gate_step=1, gate=never, counter="c"
    )
    before = await app.queue("crash").enqueue_many("echo", [{"ok": 1}] * 3)
    healthy = [h.run_id for h in before]

    doomed = workers.start("doomed-1", queues=("crash",), env=poison_env)
    await wait_attempt_started(workers, run_id, 1)
    await wait_finished(app, healthy)  # so that it dies holding the poison run only
    doomed.kill()
    doomed = workers.start("doomed-2", queues=("crash",), env=poison_env)
    await wait_attempt_started(workers, run_id, 2)
    doomed.kill()

    after = await app.queue("crash").enqueue_many("echo", [{"ok": 2}] * 3)
    healthy += [h.run_id for h in after]
    last = workers.start("last", queues=("crash",), env=poison_env)
    run = await wait_status(app, run_id, "failed")
    assert run.error is not None and run.error.type == "WorkerLostError"
    assert "delivered 3 times" in run.error.message
    assert run.attempt == 2  # never started a third time
    assert [r.run_id for r in await app.dead_letters("crash")] == [run_id]
    starts = ledger.select(ledger.read(workers.ledger), event="start", run_id=run_id)
    assert [line["attempt"] for line in starts] == [1, 2]

    runs = await wait_finished(app, healthy)
    assert [r.status for r in runs] == ["completed"] * 6
    assert last.logged("run_dead_lettered", run_id=run_id)
    stats = await app.store.queue_stats("crash")
    assert (stats.waiting, stats.running, stats.dead) == (0, 0, 1)


async def test_retry_redrives_a_dead_lettered_run_after_its_recorded_steps(
    app: Stackshift, workers: Workers, tmp_path: Path
) -> None:
    flag = tmp_path / "fail-step-3"  # while it exists, step 3 is non-retriable
    flag.touch()
    worker = workers.start("w", queues=("redrive",))
    (run_id,) = await enqueue_steps(
        app, "redrive", 1, steps=4, fail_step=3, fail_flag=str(flag), counter="r"
    )
    failed = await wait_status(app, run_id, "failed")
    assert failed.error is not None and failed.error.type == "NonRetriableError"
    assert failed.attempt == 1  # NonRetriableError: no retry
    assert [s.step_id for s in failed.steps] == ["step-1", "step-2"]
    assert [r.run_id for r in await app.dead_letters("redrive")] == [run_id]

    flag.unlink()
    handle = await app.retry(run_id)
    assert await handle.result(timeout=30) == {"total": 30, "pid": worker.pid}
    (run,) = await runs_of(app, [run_id])
    assert run.status == "completed" and run.attempt == 2 and run.error is None
    assert [(s.step_id, s.attempt) for s in run.steps] == [
        ("step-1", 1),
        ("step-2", 1),
        ("step-3", 2),
        ("step-4", 2),
    ]
    lines = ledger.read(workers.ledger)
    assert ledger.starts_per_step(lines, run_id) == {
        "step-1": 1,
        "step-2": 1,
        "step-3": 2,  # failed once, then ran after the retry
        "step-4": 1,
    }
    assert ledger.step_violations(lines, run) == []
    assert await app.dead_letters("redrive") == []
    assert await app.state.get("r") == 4
