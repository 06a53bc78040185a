"""Durable time (issue 11, DESIGN §2): ``step.sleep`` and ``step.sleep_until``
suspend a run without holding a worker, wake it on the server's clock, and are
not slept again on replay; suspended runs survive their workers."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from stackshift import JobContext, Stackshift
from tests.support import ledger
from tests.support.processes import Workers, runs_of, wait_finished, wait_status
from tests.support.processes import workers as workers  # the fixture
from tests.support.waiting import wait_until
from tests.support.workers import running_worker

QUEUE = "naps"
TIMEKEEPING = "tests.apps.timekeeping:app"


def register_quick(app: Stackshift) -> None:
    @app.job("quick", queue=QUEUE)
    async def quick(ctx: JobContext[Any]) -> str:
        return "quick"


async def suspended_count(app: Stackshift) -> int:
    return (await app.store.queue_stats(QUEUE)).suspended


async def test_a_sleeping_run_is_suspended_holds_no_slot_and_wakes_on_time(
    any_app: Stackshift,
) -> None:
    app = any_app
    register_quick(app)

    @app.job("nap", queue=QUEUE)
    async def nap(ctx: JobContext[Any]) -> str:
        await ctx.step.sleep("nap", timedelta(seconds=1.5))
        return "rested"

    async with running_worker(app, [QUEUE], concurrency=1):
        before = datetime.now(UTC)
        handle = await app.queue(QUEUE).enqueue("nap", {})
        run = await wait_status(app, handle.run_id, "suspended", within=10)
        after = datetime.now(UTC)
        (wait,) = run.waiting_for
        assert (wait.step_id, wait.kind) == ("nap", "sleep")
        assert wait.until is not None and run.wakes_at == wait.until
        # 1.5 s from when it suspended, on the server's clock (which may
        # differ from ours by a little).
        skew = timedelta(milliseconds=200)
        nap = timedelta(seconds=1.5)
        assert before + nap - skew <= wait.until <= after + nap + skew
        # Its only slot is free: another run goes through while it sleeps.
        quick = await app.queue(QUEUE).enqueue("quick", {})
        assert await quick.result(timeout=5) == "quick"
        assert (await runs_of(app, [handle.run_id]))[0].status == "suspended"
        assert await handle.result(timeout=10) == "rested"
    run = (await runs_of(app, [handle.run_id]))[0]
    (step,) = run.steps
    assert step.step_id == "nap" and step.recorded_at is not None
    # Woken no earlier than its time, and soon after it (both server times).
    late = (step.recorded_at - wait.until).total_seconds()
    assert 0 <= late < 0.5, late
    assert (run.status, run.attempt, run.waiting_for, run.wakes_at) == (
        "completed",
        1,  # a suspension is not an attempt
        [],
        None,
    )


async def test_a_sleep_is_not_slept_again_when_the_run_is_retried(
    any_app: Stackshift,
) -> None:
    app = any_app
    attempts: list[int] = []

    @app.job("nap-then-fail", queue=QUEUE, backoff=0.05)
    async def nap_then_fail(ctx: JobContext[Any]) -> int:
        await ctx.step.sleep("nap", 1.0)
        attempts.append(ctx.attempt)
        if len(attempts) == 1:
            raise RuntimeError("after the sleep, once")
        return ctx.attempt

    async with running_worker(app, [QUEUE]):
        handle = await app.queue(QUEUE).enqueue("nap-then-fail", {})
        assert await handle.result(timeout=15) == 2
    # 1 slept and failed after waking, 2 replayed the sleep without suspending.
    assert attempts == [1, 2]
    stats = await app.store.queue_stats(QUEUE)
    assert stats.totals["suspended"] == 1
    run = (await runs_of(app, [handle.run_id]))[0]
    assert [(s.step_id, s.attempt) for s in run.steps] == [("nap", 1)]


@pytest.mark.parametrize("kind", ["delay", "backoff", "sleep", "wait-timeout"])
async def test_timers_fire_on_time_one_after_another(
    app: Stackshift, kind: str
) -> None:
    """Five runs in a row, each waiting 0.3 s on a timer of one kind, in one
    worker: each goes on within half a second of its time (not only the first,
    which a fresh worker looks up without knowing the server's clock yet)."""

    @app.job("timed", queue=QUEUE, backoff=0.3)
    async def timed(ctx: JobContext[Any]) -> str:
        if kind == "backoff" and ctx.attempt == 1:
            raise RuntimeError("back off")
        if kind == "sleep":
            await ctx.step.sleep("nap", 0.3)
        if kind == "wait-timeout":
            await ctx.step.wait_for_event("never", event="never.sent", timeout=0.3)
        return "on time"

    async with running_worker(app, [QUEUE]):
        for _ in range(5):
            began = time.monotonic()
            delay = 0.3 if kind == "delay" else None
            handle = await app.queue(QUEUE).enqueue("timed", {}, delay=delay)
            assert await handle.result(timeout=2) == "on time"
            took = time.monotonic() - began
            # A backoff is jittered: 50-100 % of its step.
            least = 0.15 if kind == "backoff" else 0.3
            assert least <= took < 0.8, f"{kind}: {took:.2f} s"


async def test_sleep_until_a_past_time_or_for_nothing_does_not_suspend(
    any_app: Stackshift,
) -> None:
    app = any_app

    @app.job("no-nap", queue=QUEUE)
    async def no_nap(ctx: JobContext[Any]) -> str:
        await ctx.step.sleep_until("past", datetime.now(UTC) - timedelta(hours=1))
        await ctx.step.sleep_until("epoch", 0)
        await ctx.step.sleep("zero", 0)
        return "awake"

    async with running_worker(app, [QUEUE]):
        handle = await app.queue(QUEUE).enqueue("no-nap", {})
        assert await handle.result(timeout=10) == "awake"
    run = (await runs_of(app, [handle.run_id]))[0]
    assert run.attempt == 1
    assert [s.step_id for s in run.steps] == ["past", "epoch", "zero"]
    assert "suspended" not in (await app.store.queue_stats(QUEUE)).totals


async def test_sleep_until_a_naive_datetime_fails_the_run_clearly(
    app: Stackshift,
) -> None:
    @app.job("naive", queue=QUEUE)
    async def naive(ctx: JobContext[Any]) -> None:
        await ctx.step.sleep_until("when", datetime(2030, 1, 1))

    async with running_worker(app, [QUEUE]):
        handle = await app.queue(QUEUE).enqueue("naive", {})
        run = await wait_status(app, handle.run_id, "failed", within=10)
    assert run.error is not None and run.error.type == "PayloadError"
    assert "timezone-aware" in run.error.message and run.attempt == 1


async def test_sleep_until_wakes_at_the_given_time(app: Stackshift) -> None:
    @app.job("alarm", queue=QUEUE)
    async def alarm(ctx: JobContext[dict[str, float]]) -> None:
        await ctx.step.sleep_until("alarm", ctx.payload["at"])

    at = time.time() + 1.0
    async with running_worker(app, [QUEUE]):
        handle = await app.queue(QUEUE).enqueue("alarm", {"at": at})
        run = await wait_status(app, handle.run_id, "suspended", within=10)
        assert run.wakes_at == datetime.fromtimestamp(int(at * 1000) / 1000, UTC)
        await handle.result(timeout=10)
    run = (await runs_of(app, [handle.run_id]))[0]
    assert run.steps[0].recorded_at is not None
    assert 0 <= run.steps[0].recorded_at.timestamp() - at < 0.5


async def test_a_sleep_longer_than_the_retention_keeps_the_run_while_it_sleeps(
    redis_url: str, prefix: str
) -> None:
    """Finished runs are kept for ``result_ttl``; a suspended run is not
    finished, so its record does not expire while it sleeps (here: a day's
    sleep with a one-second retention)."""
    async with Stackshift(redis_url, prefix=prefix, result_ttl=1) as app:

        @app.job("long-nap", queue=QUEUE)
        async def long_nap(ctx: JobContext[Any]) -> None:
            await ctx.step.run("before", lambda: 1)
            await ctx.step.sleep("nap", timedelta(days=1))

        async with running_worker(app, [QUEUE]):
            handle = await app.queue(QUEUE).enqueue("long-nap", {})
            run = await wait_status(app, handle.run_id, "suspended", within=10)
        assert run.wakes_at is not None
        assert run.wakes_at - datetime.now(UTC) > timedelta(hours=23)
        q = app.store.keys.queue(QUEUE)
        client = app.store.client
        assert await client.pttl(q.run(handle.run_id)) == -1  # no expiry
        assert await client.pttl(q.steps(handle.run_id)) == -1


async def test_delay_and_run_at_still_go_through_the_scheduler(
    any_app: Stackshift,
) -> None:
    app = any_app
    register_quick(app)
    async with running_worker(app, [QUEUE]):
        began = time.monotonic()
        delayed = await app.queue(QUEUE).enqueue(
            "quick", {}, delay=timedelta(milliseconds=400)
        )
        at = await app.queue(QUEUE).enqueue("quick", {}, run_at=time.time() + 0.6)
        for handle in (delayed, at):
            run = (await runs_of(app, [handle.run_id]))[0]
            assert run.status == "scheduled" and run.scheduled_for is not None
        # On time is test_timers_fire_on_time_one_after_another's business.
        assert await delayed.result(timeout=15) == "quick"
        assert await at.result(timeout=15) == "quick"
        assert time.monotonic() - began >= 0.6
    for handle, after in ((delayed, 0.4), (at, 0.6)):
        run = (await runs_of(app, [handle.run_id]))[0]
        assert run.started_at is not None and run.created_at is not None
        assert (run.started_at - run.created_at).total_seconds() >= after - 0.05


# --- a step id keeps its kind ------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "then", "recorded_by"),
    [
        ("run", "sleep", "step.run"),
        ("sleep", "wait", "step.sleep"),
        ("run", "invoke", "step.run"),
    ],
)
async def test_a_step_id_reused_for_another_kind_of_step_fails_the_run_clearly(
    any_app: Stackshift, first: str, then: str, recorded_by: str
) -> None:
    """Attempt 1 records step "s" as one kind; the code changes (here: by
    attempt) and attempt 2 uses "s" for another kind: the run fails, once."""
    app = any_app

    async def use(ctx: JobContext[Any], kind: str) -> None:
        if kind == "run":
            await ctx.step.run("s", lambda: 1)
        elif kind == "sleep":
            await ctx.step.sleep("s", 0.05)
        elif kind == "wait":
            await ctx.step.wait_for_event("s", event="never", timeout=0.05)
        else:
            await ctx.step.invoke("s", "anything", {})

    @app.job("changing", queue=QUEUE, backoff=0.01)
    async def changing(ctx: JobContext[Any]) -> None:
        if ctx.attempt == 1 or (first == "sleep" and ctx.attempt == 2):
            await use(ctx, first)
            raise RuntimeError("retry with new code")
        await use(ctx, then)

    async with running_worker(app, [QUEUE]):
        handle = await app.queue(QUEUE).enqueue("changing", {})
        run = await wait_status(app, handle.run_id, "failed", within=10)
    assert run.error is not None and run.error.type == "NonRetriableError"
    assert f"step 's' was recorded by {recorded_by}" in run.error.message
    assert "a step id must keep its kind" in run.error.message


# --- many sleepers ------------------------------------------------------------------


async def test_ten_thousand_sleeping_runs_hold_no_worker_concurrency(
    app: Stackshift,
) -> None:
    """10,000 runs sleep; a worker of concurrency 2 serves their queue and
    runs a short job at once; then every sleeper wakes and completes."""
    register_quick(app)

    @app.job("sleeper", queue=QUEUE)
    async def sleeper(ctx: JobContext[dict[str, float]]) -> int:
        await ctx.step.sleep_until("nap", ctx.payload["until"])
        return 1

    n = 10_000
    until = time.time() + 10.0
    async with running_worker(app, [QUEUE], concurrency=2, name="small"):
        # A wide worker puts them to sleep fast; the small one takes part.
        async with running_worker(app, [QUEUE], concurrency=100):
            await app.queue(QUEUE).enqueue_many("sleeper", [{"until": until}] * n)
            await wait_until(
                lambda: _suspended_is(app, n), timeout=9, message="all asleep"
            )
        began = time.monotonic()
        quick = await app.queue(QUEUE).enqueue("quick", {})
        assert await quick.result(timeout=5) == "quick"
        took = time.monotonic() - began
        assert took < 1.0, f"the short job took {took:.2f} s"
        assert await suspended_count(app) == n and time.time() < until
        await wait_until(
            lambda: _completed_is(app, n + 1),
            timeout=60,
            message="every sleeper woken and completed",
        )
    stats = await app.store.queue_stats(QUEUE)
    assert (stats.suspended, stats.waiting, stats.running, stats.dead) == (0, 0, 0, 0)
    assert stats.totals["suspended"] == n


async def _suspended_is(app: Stackshift, n: int) -> bool:
    return await suspended_count(app) == n


async def _completed_is(app: Stackshift, n: int) -> bool:
    return (await app.store.queue_stats(QUEUE)).totals.get("completed", 0) == n


# --- suspended runs outlive their workers ------------------------------------------


async def test_suspended_runs_survive_kill_9_and_a_restart_of_every_worker(
    app: Stackshift, workers: Workers
) -> None:
    """Runs sleeping and runs waiting for an event, on two worker processes
    killed with SIGKILL; two new workers finish them after their sleep or
    event, and no step recorded before the kill runs again."""
    first = [
        workers.start(f"old{i}", queues=(QUEUE,), app=TIMEKEEPING) for i in range(2)
    ]
    for w in first:
        await w.wait_ready()
    nappers = await app.queue(QUEUE).enqueue_many("nap-between", [{"seconds": 3}] * 5)
    waiters = await app.queue(QUEUE).enqueue_many(
        "await-between", [{"key": f"k{i}"} for i in range(5)]
    )
    run_ids = [h.run_id for h in (*nappers, *waiters)]
    for run_id in run_ids:
        await wait_status(app, run_id, "suspended", within=20)
    for w in first:
        w.kill()
    suspended = await runs_of(app, run_ids)
    assert all(r.status == "suspended" for r in suspended)

    second = [
        workers.start(f"new{i}", queues=(QUEUE,), app=TIMEKEEPING) for i in range(2)
    ]
    for w in second:
        await w.wait_ready()
    for i in range(5):
        await app.send_event("go", {"key": f"k{i}", "n": i})
    runs = await wait_finished(app, run_ids, within=30)
    lines = ledger.read(workers.ledger)
    old_pids = {w.pid for w in first}
    new_pids = {w.pid for w in second}
    for run in runs:
        assert run.status == "completed", (run.run_id, run.error)
        assert run.worker in ("new0", "new1")
        assert run.result["before"] in old_pids and run.result["after"] in new_pids
        starts = ledger.starts_per_step(lines, run.run_id)
        assert starts == {"before": 1, "after": 1}, (run.run_id, starts)
    for i, handle in enumerate(waiters):
        result = (await runs_of(app, [handle.run_id]))[0].result
        assert result["got"] == {"key": f"k{i}", "n": i}


async def test_a_sleep_due_while_no_worker_runs_completes_when_one_starts(
    app: Stackshift,
) -> None:
    @app.job("short-nap", queue=QUEUE)
    async def short_nap(ctx: JobContext[Any]) -> str:
        await ctx.step.sleep("nap", 0.2)
        return "done"

    async with running_worker(app, [QUEUE]):
        handle = await app.queue(QUEUE).enqueue("short-nap", {})
        run = await wait_status(app, handle.run_id, "suspended", within=10)
    assert run.wakes_at is not None
    due = run.wakes_at + timedelta(milliseconds=300)
    # No worker now; the sleep comes due meanwhile.
    await wait_until(lambda: datetime.now(UTC) > due, message="the wake time to pass")
    assert (await runs_of(app, [handle.run_id]))[0].status == "suspended"
    async with running_worker(app, [QUEUE]):
        assert await asyncio.wait_for(handle.result(), 10) == "done"
