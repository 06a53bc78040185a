"""Cancel (DESIGN §6, issue 11): queued, scheduled and suspended runs end
cancelled at once; a running run's handler gets CancelledError; a cancelled
child's parent is told; idempotent; a cancelled run never starts again; and a
cancel racing a completion leaves one whole outcome."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from typing import Any

import pytest

from stackshift import (
    InvalidNameError,
    JobContext,
    JobFailed,
    RunStatus,
    Stackshift,
    StackshiftError,
)
from tests.support import ledger
from tests.support.processes import Workers, runs_of, wait_status
from tests.support.processes import workers as workers  # the fixture
from tests.support.waiting import wait_until
from tests.support.workers import running_worker

QUEUE = "naps"  # tests.apps.timekeeping's jobs run there
TIMEKEEPING = "tests.apps.timekeeping:app"


def register_counted(app: Stackshift, ran: Counter[str]) -> None:
    @app.job("counted", queue=QUEUE)
    async def counted(ctx: JobContext[Any]) -> str:
        ran[ctx.run_id] += 1
        return "ran"

    @app.job("sleepy", queue=QUEUE)
    async def sleepy(ctx: JobContext[Any]) -> str:
        ran[ctx.run_id] += 1
        await ctx.step.sleep("nap", 60)
        return "woke"

    @app.job("waiting", queue=QUEUE)
    async def waiting(ctx: JobContext[Any]) -> Any:
        ran[ctx.run_id] += 1
        return await ctx.step.wait_for_event(
            "w", event="never.mind", match={"k": 1}, timeout=60
        )


async def assert_cancelled(app: Stackshift, run_id: str) -> None:
    run = (await runs_of(app, [run_id]))[0]
    assert run.status == "cancelled" and run.result is None
    assert run.error is not None and run.error.type == "Cancelled"
    assert run.finished_at is not None and run.waiting_for == []


async def queue_is_idle(app: Stackshift) -> bool:
    stats = await app.store.queue_stats(QUEUE)
    return (stats.waiting, stats.running, stats.scheduled, stats.suspended) == (
        0,
        0,
        0,
        0,
    )


@pytest.mark.parametrize("key", [None, "order-1"], ids=["no-record", "with-record"])
async def test_a_queued_run_is_cancelled_at_once_and_never_runs(
    any_app: Stackshift, key: str | None
) -> None:
    app = any_app
    ran: Counter[str] = Counter()
    register_counted(app, ran)
    await app.store.ensure_group(QUEUE)  # a worker has served the queue before
    handle = await app.queue(QUEUE).enqueue("counted", {"x": 1}, idempotency_key=key)
    assert await app.cancel(handle.run_id, reason="changed my mind") == "cancelled"
    await assert_cancelled(app, handle.run_id)
    run = (await runs_of(app, [handle.run_id]))[0]
    assert run.error is not None and run.error.message == "changed my mind"
    assert await app.cancel(handle.run_id) == "cancelled"  # idempotent
    other = await app.queue(QUEUE).enqueue("counted", {})
    async with running_worker(app, [QUEUE]):
        assert await other.result(timeout=10) == "ran"
        await wait_until(lambda: queue_is_idle(app), message="the queue idle")
    assert ran == {other.run_id: 1}
    totals = (await app.store.queue_stats(QUEUE)).totals
    assert (totals["cancelled"], totals["completed"]) == (1, 1)


@pytest.mark.parametrize(
    "key",
    [
        None,
        "order-1",
    ],
    ids=["no-record", "with-record"],
)
async def test_a_cancelled_queued_run_keeps_its_job_and_payload(
    any_app: Stackshift, key: str | None
) -> None:
    app = any_app
    await app.store.ensure_group(QUEUE)
    handle = await app.queue(QUEUE).enqueue(
        "counted", {"x": 1}, idempotency_key=key, correlation_id="req-1"
    )
    assert await app.cancel(handle.run_id) == "cancelled"
    run = (await runs_of(app, [handle.run_id]))[0]
    assert (run.job, run.payload, run.correlation_id) == ("counted", {"x": 1}, "req-1")


@pytest.mark.parametrize("key", [None, "order-1"], ids=["no-record", "with-record"])
async def test_a_run_queued_before_any_worker_served_its_queue_can_be_cancelled(
    any_app: Stackshift, key: str | None
) -> None:
    app = any_app
    handle = await app.queue("unserved").enqueue("counted", {}, idempotency_key=key)
    assert await app.cancel(handle.run_id) == "cancelled"
    await assert_cancelled(app, handle.run_id)


async def test_the_result_of_a_cancelled_run_raises_job_failed_at_once(
    any_app: Stackshift,
) -> None:
    app = any_app
    await app.store.ensure_group(QUEUE)
    handle = await app.queue(QUEUE).enqueue("counted", {}, delay=60)
    assert await app.cancel(handle.run_id, reason="no longer wanted") == "cancelled"
    with pytest.raises(JobFailed) as failed:
        await handle.result(timeout=2)
    assert failed.value.error_type == "Cancelled"
    assert "no longer wanted" in failed.value.message


async def test_a_scheduled_run_is_cancelled_at_once(any_app: Stackshift) -> None:
    app = any_app
    ran: Counter[str] = Counter()
    register_counted(app, ran)
    await app.store.ensure_group(QUEUE)  # a worker has served the queue before
    handle = await app.queue(QUEUE).enqueue("counted", {}, delay=0.3)
    assert (await runs_of(app, [handle.run_id]))[0].status == "scheduled"
    assert await app.cancel(handle.run_id) == "cancelled"
    await assert_cancelled(app, handle.run_id)
    async with running_worker(app, [QUEUE]):
        probe = await app.queue(QUEUE).enqueue("counted", {}, delay=0.5)
        assert await probe.result(timeout=15) == "ran"  # past the first one's time
    assert ran == {probe.run_id: 1}


@pytest.mark.parametrize("job", ["sleepy", "waiting"])
async def test_a_suspended_run_is_cancelled_at_once_and_never_resumes(
    any_app: Stackshift, job: str
) -> None:
    app = any_app
    ran: Counter[str] = Counter()
    register_counted(app, ran)
    async with running_worker(app, [QUEUE]):
        handle = await app.queue(QUEUE).enqueue(job, {})
        await wait_status(app, handle.run_id, "suspended", within=10)
        assert await app.cancel(handle.run_id) == "cancelled"
        await assert_cancelled(app, handle.run_id)
        # What it waited for comes anyway: nothing happens.
        await app.send_event("never.mind", {"k": 1})
        await wait_until(lambda: queue_is_idle(app), message="the queue idle")
    assert ran == {handle.run_id: 1}
    await assert_cancelled(app, handle.run_id)


async def test_a_cancelled_childs_parent_gets_job_failed_from_its_invoke(
    any_app: Stackshift,
) -> None:
    app = any_app

    @app.job("parent", queue=QUEUE)
    async def parent(ctx: JobContext[Any]) -> dict[str, str]:
        try:
            await ctx.step.invoke("kid", "child", {}, queue="nowhere")
        except StackshiftError as exc:  # JobFailed
            return {"type": type(exc).__name__, "error": str(exc)}
        return {}

    await app.store.ensure_group("nowhere")  # served once, by nobody now
    async with running_worker(app, [QUEUE]):
        handle = await app.queue(QUEUE).enqueue("parent", {})
        run = await wait_status(app, handle.run_id, "suspended", within=10)
        child_id = run.waiting_for[0].child_run_id
        assert child_id is not None
        assert await app.cancel(child_id, reason="not needed") == "cancelled"
        got = await handle.result(timeout=10)
    assert got["type"] == "JobFailed" and "not needed" in got["error"]
    await assert_cancelled(app, child_id)


async def test_a_running_run_is_cancelled_inside_its_worker_process(
    app: Stackshift, workers: Workers
) -> None:
    worker = workers.start("w", queues=(QUEUE,), app=TIMEKEEPING)
    await worker.wait_ready()
    handle = await app.queue(QUEUE).enqueue("cancellable", {})
    await wait_until(
        lambda: ledger.select(ledger.read(workers.ledger), event="running"),
        message="the handler running",
    )
    await wait_status(app, handle.run_id, "running", within=10)  # start confirmed
    assert await app.cancel(handle.run_id) == RunStatus.RUNNING
    await wait_status(app, handle.run_id, "cancelled", within=10)
    await assert_cancelled(app, handle.run_id)
    lines = ledger.read(workers.ledger)
    assert [line["event"] for line in lines] == ["running", "cancelled"]
    assert await app.cancel(handle.run_id) == "cancelled"  # idempotent
    run = (await runs_of(app, [handle.run_id]))[0]
    assert run.error is not None and "cancelled while running" in run.error.message
    assert worker.logged("run_finished", run_id=handle.run_id, outcome="cancelled")
    assert worker.returncode is None  # the worker goes on


async def test_a_run_cancelled_while_its_worker_is_dead_never_starts_again(
    app: Stackshift, workers: Workers
) -> None:
    """Its worker is killed; the cancel can only be recorded; the worker that
    takes its entry over ends it cancelled without running it."""
    first = workers.start("first", queues=(QUEUE,), app=TIMEKEEPING)
    await first.wait_ready()
    handle = await app.queue(QUEUE).enqueue("cancellable", {})
    await wait_until(
        lambda: ledger.select(ledger.read(workers.ledger), event="running"),
        message="the handler running",
    )
    await wait_status(app, handle.run_id, "running", within=10)  # start confirmed
    first.kill()
    assert await app.cancel(handle.run_id) == RunStatus.RUNNING  # requested
    run = (await runs_of(app, [handle.run_id]))[0]
    assert run.status == "running" and run.cancel_requested
    second = workers.start("second", queues=(QUEUE,), app=TIMEKEEPING)
    await wait_status(app, handle.run_id, "cancelled", within=20)
    await assert_cancelled(app, handle.run_id)
    lines = ledger.read(workers.ledger)
    assert [(line["event"], line.get("attempt")) for line in lines] == [("running", 1)]
    assert await queue_is_idle(app)
    assert second.returncode is None


async def test_a_cancelled_runs_entry_delivered_again_does_not_start_it(
    any_app: Stackshift,
) -> None:
    app = any_app
    ran: Counter[str] = Counter()
    register_counted(app, ran)
    await app.store.ensure_group(QUEUE)  # a worker has served the queue before
    handle = await app.queue(QUEUE).enqueue("counted", {})
    assert await app.cancel(handle.run_id) == "cancelled"
    # A stray entry naming it (as a resume or a release would add).
    await app.store.client.xadd(
        app.store.keys.queue(QUEUE).stream, {"r": handle.run_id}
    )
    async with running_worker(app, [QUEUE]):
        await wait_until(lambda: queue_is_idle(app), message="the entry consumed")
    assert ran == {}
    await assert_cancelled(app, handle.run_id)


async def test_a_cancel_racing_completion_leaves_one_whole_outcome(
    app: Stackshift,
) -> None:
    """100 runs, each cancelled at a random moment around its completion: each
    ends completed or cancelled, wholly, and is counted once."""

    @app.job("brief", queue=QUEUE)
    async def brief(ctx: JobContext[dict[str, float]]) -> str:
        await ctx.step.run("work", lambda: "worked")
        await asyncio.sleep(ctx.payload["pause"])  # sync-ok: the job's work
        return "done"

    rng = random.Random(11)
    n = 100
    statuses: Counter[str] = Counter()
    async with running_worker(app, [QUEUE], concurrency=20):

        async def one() -> str:
            handle = await app.queue(QUEUE).enqueue(
                "brief", {"pause": rng.uniform(0, 0.02)}
            )
            await asyncio.sleep(rng.uniform(0, 0.03))  # sync-ok: a random moment
            said = await app.cancel(handle.run_id)
            assert said in ("cancelled", "running", "completed")
            with_outcome = await _ended(app, handle.run_id)
            if said == "completed":
                assert with_outcome.status == "completed"
            return handle.run_id

        run_ids = await asyncio.gather(*(one() for _ in range(n)))
        await wait_until(lambda: queue_is_idle(app), message="the queue idle")
    for run in await runs_of(app, list(run_ids)):
        statuses[run.status] += 1
        assert not run.cancel_requested
        if run.status == "completed":
            assert (run.result, run.error) == ("done", None)
        else:
            assert run.status == "cancelled", run
            assert run.result is None and run.error is not None
            assert run.error.type == "Cancelled"
    print(f"outcomes: {statuses}")
    totals = (await app.store.queue_stats(QUEUE)).totals
    assert totals.get("completed", 0) == statuses["completed"]
    assert totals.get("cancelled", 0) == statuses["cancelled"]
    assert statuses["completed"] + statuses["cancelled"] == n
    q = app.store.keys.queue(QUEUE)
    assert await app.store.client.hlen(q.cancels) == 0  # no request left behind


async def _ended(app: Stackshift, run_id: str) -> Any:
    async def finished() -> Any:
        run = (await runs_of(app, [run_id]))[0]
        return run if run.status.finished else None

    return await wait_until(finished, message=f"{run_id} to end")


async def test_cancelling_a_run_that_does_not_exist_says_so(app: Stackshift) -> None:
    with pytest.raises(StackshiftError, match="does not exist"):
        await app.cancel("01M8NP80JMXDBKYQ6RG9Q7CHXM.nowhere")
    with pytest.raises(InvalidNameError):
        await app.cancel("not a run id")
