"""Child runs (issue 11, DESIGN §2): ``step.invoke`` suspends the parent until
its child ends, returns the child's result or raises its failure (recorded, so
replay raises it again), runs gathered children at once, passes the
correlation id on, and hands the child's end to the parent exactly once."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import msgspec
import pytest
import structlog

from stackshift import JobContext, JobFailed, Stackshift
from stackshift.store import Complete
from tests.support.processes import runs_of, wait_status
from tests.support.store_ops import read_and_start
from tests.support.workers import running_worker

QUEUE = "family"


class Sum(msgspec.Struct, frozen=True):
    total: int


def register_children(app: Stackshift, ran: Counter[str]) -> None:
    @app.job("add", queue=QUEUE)
    async def add(ctx: JobContext[dict[str, int]]) -> Sum:
        ran["add"] += 1
        return Sum(ctx.payload["a"] + ctx.payload["b"])

    @app.job("broken", queue=QUEUE, retries=0)
    async def broken(ctx: JobContext[dict[str, Any]]) -> None:
        ran["broken"] += 1
        raise ValueError(f"bad input {ctx.payload['n']}")


async def test_invoke_returns_the_childs_result_typed(any_app: Stackshift) -> None:
    app = any_app
    ran: Counter[str] = Counter()
    register_children(app, ran)

    @app.job("parent", queue=QUEUE)
    async def parent(ctx: JobContext[Any]) -> dict[str, Any]:
        got = await ctx.step.invoke("sum", "add", {"a": 2, "b": 3})
        assert type(got) is Sum  # the child job's return annotation
        return {"total": got.total, "attempt": ctx.attempt}

    async with running_worker(app, [QUEUE]):
        handle = await app.queue(QUEUE).enqueue("parent", {})
        assert await handle.result(timeout=10) == {"total": 5, "attempt": 1}
    assert ran == {"add": 1}
    run = (await runs_of(app, [handle.run_id]))[0]
    (step,) = run.steps
    child_id = step.result["run_id"]
    assert step.step_id == "sum" and step.result["result"] == {"total": 5}
    child = (await runs_of(app, [child_id]))[0]
    assert (child.job, child.status, child.parent_run_id) == (
        "add",
        "completed",
        handle.run_id,
    )


async def test_a_suspended_parent_says_which_child_it_awaits(app: Stackshift) -> None:
    @app.job("parent", queue=QUEUE)
    async def parent(ctx: JobContext[Any]) -> Any:
        return await ctx.step.invoke("far", "remote", {"x": 1}, queue="nowhere")

    async with running_worker(app, [QUEUE]):
        handle = await app.queue(QUEUE).enqueue("parent", {})
        run = await wait_status(app, handle.run_id, "suspended", within=10)
    (wait,) = run.waiting_for
    assert (wait.step_id, wait.kind, wait.until, run.wakes_at) == (
        "far",
        "invoke",
        None,
        None,
    )
    assert wait.child_run_id is not None and wait.child_run_id.endswith(".nowhere")
    child = (await runs_of(app, [wait.child_run_id]))[0]
    assert (child.job, child.status, child.payload) == ("remote", "queued", {"x": 1})


async def test_gathered_children_run_at_the_same_time(any_app: Stackshift) -> None:
    app = any_app
    windows: dict[int, tuple[float, float]] = {}

    @app.job("slow-child", queue=QUEUE)
    async def slow_child(ctx: JobContext[dict[str, int]]) -> int:
        began = time.monotonic()
        await asyncio.sleep(
            0.5
        )  # sync-ok: the child's work, not a wait for a condition
        windows[ctx.payload["i"]] = (began, time.monotonic())
        return ctx.payload["i"] * 10

    @app.job("fan-out", queue=QUEUE)
    async def fan_out(ctx: JobContext[Any]) -> list[int]:
        return list(
            await asyncio.gather(
                *(ctx.step.invoke(f"c{i}", "slow-child", {"i": i}) for i in range(4))
            )
        )

    async with running_worker(app, [QUEUE], concurrency=8):
        handle = await app.queue(QUEUE).enqueue("fan-out", {})
        assert await handle.result(timeout=10) == [0, 10, 20, 30]
    starts = [w[0] for w in windows.values()]
    ends = [w[1] for w in windows.values()]
    assert len(windows) == 4
    assert max(starts) < min(ends), "the children ran one after another"
    run = (await runs_of(app, [handle.run_id]))[0]
    # One suspension for the four; each child's end may resume it (a replay
    # then waits again for those still running), all in its first attempt.
    assert run.attempt == 1
    assert sorted(s.step_id for s in run.steps) == ["c0", "c1", "c2", "c3"]


async def test_a_childs_failure_fails_the_parents_step_and_replays_the_same(
    any_app: Stackshift,
) -> None:
    app = any_app
    ran: Counter[str] = Counter()
    register_children(app, ran)
    seen: list[tuple[int, str, str, str]] = []

    @app.job("parent", queue=QUEUE, backoff=0.05)
    async def parent(ctx: JobContext[Any]) -> str:
        try:
            await ctx.step.invoke("risky", "broken", {"n": 7})
        except JobFailed as exc:
            seen.append((ctx.attempt, exc.error_type, exc.message, exc.run_id))
            if len(seen) == 1:
                raise RuntimeError("the parent fails once after its child") from exc
            return f"handled {exc.error_type}"
        return "no failure?"

    async with running_worker(app, [QUEUE]):
        handle = await app.queue(QUEUE).enqueue("parent", {})
        assert await handle.result(timeout=10) == "handled ValueError"
    (a1, type1, msg1, child1), (a2, type2, msg2, child2) = seen
    assert (a1, a2) == (1, 2)  # 1 suspended, then got the failure; 2 replayed it
    assert type1 == type2 == "ValueError"
    assert msg1 == msg2 and "bad input 7" in msg1
    assert child1 == child2 and child1.endswith(f".{QUEUE}")
    assert ran == {"broken": 1}  # the child ran once
    child = (await runs_of(app, [child1]))[0]
    assert child.status == "failed" and child.parent_run_id == handle.run_id


async def test_an_unhandled_child_failure_fails_the_parent_with_job_failed(
    app: Stackshift,
) -> None:
    ran: Counter[str] = Counter()
    register_children(app, ran)

    @app.job("parent", queue=QUEUE, retries=0)
    async def parent(ctx: JobContext[Any]) -> None:
        await ctx.step.invoke("risky", "broken", {"n": 8})

    async with running_worker(app, [QUEUE]):
        handle = await app.queue(QUEUE).enqueue("parent", {})
        with pytest.raises(JobFailed) as failed:
            await handle.result(timeout=10)
    assert failed.value.error_type == "JobFailed"
    assert "bad input 8" in failed.value.message


async def test_a_child_inherits_the_correlation_id_and_logs_with_it(
    app: Stackshift,
) -> None:
    @app.job("child", queue=QUEUE)
    async def child(ctx: JobContext[Any]) -> str:
        ctx.log.info("child_working")
        return ctx.correlation_id

    @app.job("parent", queue=QUEUE)
    async def parent(ctx: JobContext[Any]) -> Any:
        return await ctx.step.invoke("kid", "child", {})

    with structlog.testing.capture_logs(
        processors=[structlog.contextvars.merge_contextvars]
    ) as logs:
        async with running_worker(app, [QUEUE]):
            handle = await app.queue(QUEUE).enqueue(
                "parent", {}, correlation_id="corr-77"
            )
            assert await handle.result(timeout=10) == "corr-77"
    run = (await runs_of(app, [handle.run_id]))[0]
    child_id = run.steps[0].result["run_id"]
    child_run = (await runs_of(app, [child_id]))[0]
    assert child_run.correlation_id == "corr-77"
    child_lines = [line for line in logs if line.get("run_id") == child_id]
    assert {"child_working", "run_finished"} <= {line["event"] for line in child_lines}
    assert all(line["correlation_id"] == "corr-77" for line in child_lines)


async def test_an_invoke_times_out_with_job_failed(any_app: Stackshift) -> None:
    app = any_app

    @app.job("parent", queue=QUEUE)
    async def parent(ctx: JobContext[Any]) -> dict[str, str]:
        try:
            await ctx.step.invoke("far", "remote", {}, queue="nowhere", timeout=0.3)
        except JobFailed as exc:
            return {"type": exc.error_type, "message": exc.message}
        return {}

    async with running_worker(app, [QUEUE]):
        began = time.monotonic()
        handle = await app.queue(QUEUE).enqueue("parent", {})
        got = await handle.result(timeout=10)
        assert time.monotonic() - began >= 0.3
    assert got["type"] == "TimeoutError"
    assert "did not finish before the timeout" in got["message"]


async def test_an_invoke_of_a_job_no_worker_knows_fails_the_step(
    app: Stackshift,
) -> None:
    @app.job("parent", queue=QUEUE)
    async def parent(ctx: JobContext[Any]) -> str:
        try:
            await ctx.step.invoke("ghost", "no-such-job", {}, queue=QUEUE)
        except JobFailed as exc:
            return exc.error_type
        return "?"

    async with running_worker(app, [QUEUE]):
        handle = await app.queue(QUEUE).enqueue("parent", {})
        assert await handle.result(timeout=15) == "UnknownJobError"


async def test_a_childs_end_reaches_its_parent_once_when_the_hand_off_is_lost(
    app: Stackshift,
) -> None:
    """The child is finished (its finish says 'handoff') by a worker that dies
    before telling the parent: a scheduler serving the child's queue tells it
    after the grace period, once."""
    resumed: Counter[int] = Counter()

    @app.job("parent", queue="parents")
    async def parent(ctx: JobContext[Any]) -> Any:
        got = await ctx.step.invoke("kid", "child", {"k": 1}, queue="kids")
        resumed[ctx.attempt] += 1
        return got

    async with running_worker(app, ["parents"]):
        handle = await app.queue("parents").enqueue("parent", {})
        run = await wait_status(app, handle.run_id, "suspended", within=10)
        child_id = run.waiting_for[0].child_run_id
        assert child_id is not None
        # The child's worker: starts it, finishes it, and "dies".
        await app.store.ensure_group("kids")
        ((_entry, started),) = await read_and_start(app.store, "kids", "gone-1", 1)
        assert started.lease is not None and started.lease.run_id == child_id
        done = await app.store.finish(started.lease, Complete(b'"from the child"'))
        assert done.outcome == "handoff"
        ended = time.monotonic()
        assert (await runs_of(app, [handle.run_id]))[0].status == "suspended"
        async with running_worker(app, ["kids"]):
            assert await handle.result(timeout=15) == "from the child"
            took = time.monotonic() - ended
        again = await app.store.hand_off(child_id)  # a late second hand-off
    assert 4.5 <= took < 12, took  # after the 5 s grace, by the backstop
    assert again in ("exists", "gone")
    assert resumed == {1: 1}
    run = (await runs_of(app, [handle.run_id]))[0]
    assert (run.status, run.attempt) == ("completed", 1)
    assert await app.store.overdue_handoffs("kids") == []
