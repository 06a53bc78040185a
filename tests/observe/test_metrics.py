"""Prometheus metrics of a real worker on a real Redis (DESIGN.md §7), scraped
over HTTP from its own port after runs whose outcomes are known."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client import REGISTRY

from stackshift import (
    JobContext,
    JobFailed,
    NonRetriableError,
    RunHandle,
    RunStatus,
    Stackshift,
    Worker,
)
from tests.support.waiting import wait_until
from tests.support.workers import running_worker

from .scrape import Samples, names, scrape, value

# DESIGN.md §7: each metric and its labels (histograms: their _bucket has le).
CONTRACT = {
    "stackshift_runs_started_total": {"queue", "job"},
    "stackshift_runs_finished_total": {"queue", "job", "outcome"},
    "stackshift_run_duration_seconds_bucket": {"queue", "job", "le"},
    "stackshift_run_duration_seconds_sum": {"queue", "job"},
    "stackshift_run_duration_seconds_count": {"queue", "job"},
    "stackshift_step_duration_seconds_bucket": {"job", "le"},
    "stackshift_step_duration_seconds_sum": {"job"},
    "stackshift_step_duration_seconds_count": {"job"},
    "stackshift_queue_runs": {"queue", "status"},
    "stackshift_queue_latency_seconds": {"queue"},
    "stackshift_runs_reclaimed_total": {"queue"},
    "stackshift_leases_lost_total": {"queue"},
}
OUTCOMES = {"completed", "retried", "failed", "cancelled", "suspended"}
STATUSES = {"queued", "running", "scheduled", "suspended", "dead"}
METRICS = {"metrics_port": 0, "metrics_host": "127.0.0.1"}


def one() -> int:
    return 1


async def settled(worker: Worker, check: Callable[[Samples], bool]) -> Samples:
    """Scrape until ``check`` holds: a run's result reaches its caller a moment
    before its worker has counted how it ended."""
    found: Samples = {}

    async def holds() -> bool:
        nonlocal found
        found = await scrape(worker)
        return check(found)

    await wait_until(holds, message="the metrics to settle")
    return found


def started(s: Samples, queue: str, job: str) -> float | None:
    return value(s, "stackshift_runs_started_total", queue=queue, job=job)


def finished(s: Samples, queue: str, job: str, outcome: str) -> float | None:
    return value(
        s, "stackshift_runs_finished_total", queue=queue, job=job, outcome=outcome
    )


def queue_runs(s: Samples, queue: str) -> dict[str, float | None]:
    return {
        st: value(s, "stackshift_queue_runs", queue=queue, status=st) for st in STATUSES
    }


async def test_metrics_count_each_attempt_and_how_it_ended(app: Stackshift) -> None:
    @app.job("ok")
    async def ok(ctx: JobContext[Any]) -> int:
        await ctx.step.run("one", one)
        await ctx.step.run("two", one)
        return 2

    @app.job("flaky", retries=3, backoff=0.05)
    async def flaky(ctx: JobContext[Any]) -> str:
        if ctx.attempt == 1:
            raise RuntimeError("the first attempt fails")
        return "ok"

    @app.job("broken", retries=0)
    async def broken(ctx: JobContext[Any]) -> None:
        raise NonRetriableError("bad input")

    @app.job("held")
    async def held(ctx: JobContext[Any]) -> None:
        await asyncio.Event().wait()  # until it is cancelled

    @app.job("waiter")
    async def waiter(ctx: JobContext[Any]) -> Any:
        return await ctx.step.wait_for_event(
            "go", event="go", match={"run": ctx.run_id}
        )

    q = app.queue("m")
    async with running_worker(app, ["m"], **METRICS) as worker:
        assert await (await q.enqueue("ok")).result(timeout=10) == 2
        assert await (await q.enqueue("flaky")).result(timeout=10) == "ok"
        with pytest.raises(JobFailed):
            await (await q.enqueue("broken")).result(timeout=10)
        held_run = await q.enqueue("held")
        await wait_until(lambda: _is(app, held_run, RunStatus.RUNNING))
        await app.cancel(held_run.run_id)
        with pytest.raises(JobFailed):
            await held_run.result(timeout=10)
        waiting = await q.enqueue("waiter")
        await wait_until(lambda: _is(app, waiting, RunStatus.SUSPENDED))

        s = await settled(
            worker, lambda s: finished(s, "m", "waiter", "suspended") == 1
        )
        assert finished(s, "m", "held", "cancelled") == 1
        assert started(s, "m", "waiter") == 1

        await app.send_event("go", {"run": waiting.run_id})
        assert await waiting.result(timeout=10) == {"run": waiting.run_id}
        s = await settled(
            worker, lambda s: finished(s, "m", "waiter", "completed") == 1
        )

    expected = {
        "ok": (1, {"completed": 1}),
        "flaky": (2, {"retried": 1, "completed": 1}),
        "broken": (1, {"failed": 1}),
        "held": (1, {"cancelled": 1}),
        "waiter": (2, {"suspended": 1, "completed": 1}),  # a resume is an attempt
    }
    for job, (attempts, ends) in expected.items():
        assert started(s, "m", job) == attempts, job
        for outcome in OUTCOMES:
            assert finished(s, "m", job, outcome) == ends.get(outcome, 0), (
                job,
                outcome,
            )
        # One duration per attempt that finished, every bucket counting it.
        count = value(s, "stackshift_run_duration_seconds_count", queue="m", job=job)
        assert count == attempts, job
        inf = value(
            s, "stackshift_run_duration_seconds_bucket", queue="m", job=job, le="+Inf"
        )
        assert inf == attempts, job
    # The two step bodies of "ok" ran once each; a wait is not a step body.
    assert value(s, "stackshift_step_duration_seconds_count", job="ok") == 2
    assert value(s, "stackshift_step_duration_seconds_count", job="waiter") == 0
    assert value(s, "stackshift_runs_reclaimed_total", queue="m") == 0
    assert value(s, "stackshift_leases_lost_total", queue="m") == 0
    _check_contract(s, queues={"m"}, jobs=set(expected))


def _check_contract(s: Samples, *, queues: set[str], jobs: set[str]) -> None:
    """Exactly DESIGN §7's names and labels, and bounded label values."""
    assert names(s) == set(CONTRACT)
    for name, labels in s:
        keys = {k for k, _ in labels}
        assert keys == CONTRACT[name], name
        for key, label in labels:
            allowed = {
                "queue": queues,
                "job": jobs,
                "outcome": OUTCOMES,
                "status": STATUSES,
            }.get(key)
            if allowed is not None:
                assert label in allowed, (name, key, label)


async def _is(app: Stackshift, handle: RunHandle[Any], wanted: RunStatus) -> bool:
    info = await app.get_run(handle.run_id)
    return info is not None and info.status == wanted


async def test_queue_gauges_show_runs_by_status_and_the_oldest_queued_age(
    app: Stackshift,
) -> None:
    release = asyncio.Event()

    @app.job("block")
    async def block(ctx: JobContext[Any]) -> None:
        await release.wait()

    @app.job("quick")
    async def quick(ctx: JobContext[Any]) -> None:
        pass

    @app.job("bad", retries=0)
    async def bad(ctx: JobContext[Any]) -> None:
        raise NonRetriableError("no")

    @app.job("wait")
    async def wait(ctx: JobContext[Any]) -> None:
        await ctx.step.wait_for_event("never", event="never-sent")

    q = app.queue("g")
    async with running_worker(app, ["g"], concurrency=1, **METRICS) as worker:
        s = await scrape(worker)
        assert queue_runs(s, "g") == dict.fromkeys(STATUSES, 0)
        assert value(s, "stackshift_queue_latency_seconds", queue="g") == 0

        dead = await q.enqueue("bad")
        await wait_until(lambda: _is(app, dead, RunStatus.FAILED))
        waiting = await q.enqueue("wait")
        await wait_until(lambda: _is(app, waiting, RunStatus.SUSPENDED))
        blocker = await q.enqueue("block")
        await wait_until(lambda: _is(app, blocker, RunStatus.RUNNING))
        # The one slot is held: these two stay in the stream, undelivered.
        before = time.time()
        await q.enqueue("quick")
        await q.enqueue("quick")
        await q.enqueue("quick", delay=3600)

        s = await settled(
            worker,
            lambda s: (
                (value(s, "stackshift_queue_latency_seconds", queue="g") or 0) >= 0.05
            ),
        )
        assert queue_runs(s, "g") == {
            "queued": 2,
            "running": 1,
            "scheduled": 1,
            "suspended": 1,
            "dead": 1,
        }
        age = value(s, "stackshift_queue_latency_seconds", queue="g")
        assert age is not None
        # The oldest queued run's age, on the server's clock (same host: ours).
        assert age <= time.time() - before + 0.5

        release.set()
        s = await settled(
            worker,
            lambda s: (
                queue_runs(s, "g")["queued"] == 0 and queue_runs(s, "g")["running"] == 0
            ),
        )
        assert value(s, "stackshift_queue_latency_seconds", queue="g") == 0


async def test_runs_of_jobs_the_worker_does_not_know_share_one_label(
    app: Stackshift,
) -> None:
    q = app.queue("u")
    async with running_worker(app, ["u"], **METRICS) as worker:
        runs = [await q.enqueue(f"nosuch{i}") for i in range(3)]
        for run in runs:
            with pytest.raises(JobFailed):
                await run.result(timeout=10)
        s = await settled(
            worker,
            lambda s: finished(s, "u", "(unregistered)", "failed") == 3,
        )
    jobs = {dict(labels).get("job") for _name, labels in s} - {None}
    assert jobs == {"(unregistered)"}


async def test_entries_taken_over_and_leases_lost_are_counted(app: Stackshift) -> None:
    started_once = asyncio.Event()
    attempts: list[int] = []

    @app.job("slow")
    async def slow(ctx: JobContext[Any]) -> str:
        attempts.append(ctx.attempt)
        if len(attempts) == 1:
            started_once.set()
            await asyncio.Event().wait()  # until its lease is lost
        return "done"

    q = app.queue("r")
    # An entry delivered to a worker that died at once: taken over later.
    orphan = await q.enqueue("slow")
    await app.store.ensure_group("r")
    assert len(await app.store.read("r", "ghost", 1, 100)) == 1
    async with running_worker(app, ["r"], lease_timeout=0.6, **METRICS) as worker:
        s = await settled(
            worker,
            lambda s: value(s, "stackshift_runs_reclaimed_total", queue="r") == 1,
        )
        await wait_until(started_once.is_set, message="the first attempt")
        # Another consumer takes the running entry over: this worker's next
        # renewal finds its lease lost and stops the attempt.
        taken = await app.store.autoclaim("r", "thief", 0, 10)
        assert [e.run_id for e in taken] == [orphan.run_id]
        s = await settled(
            worker, lambda s: value(s, "stackshift_leases_lost_total", queue="r") == 1
        )
        # The thief never runs it: it is taken over again, and completes.
        assert await orphan.result(timeout=10) == "done"
        s = await settled(worker, lambda s: finished(s, "r", "slow", "completed") == 1)
    assert value(s, "stackshift_runs_reclaimed_total", queue="r") == 2
    assert value(s, "stackshift_leases_lost_total", queue="r") == 1
    assert started(s, "r", "slow") == 2
    # The lost attempt did not finish: no outcome, no duration for it.
    assert value(s, "stackshift_run_duration_seconds_count", queue="r", job="slow") == 1


async def test_each_worker_has_a_registry_of_its_own(app: Stackshift) -> None:
    @app.job("noop")
    async def noop(ctx: JobContext[Any]) -> None:
        pass

    async with (
        running_worker(app, ["a"], **METRICS) as first,
        running_worker(app, ["b"], **METRICS) as second,
    ):
        await (await app.queue("a").enqueue("noop")).result(timeout=10)
        s = await settled(first, lambda s: started(s, "a", "noop") == 1)
        other = await scrape(second)
    assert first.metrics_registry is not second.metrics_registry
    assert started(other, "a", "noop") is None
    assert value(other, "stackshift_queue_runs", queue="a", status="queued") is None
    assert value(s, "stackshift_queue_runs", queue="b", status="queued") is None
    assert not [m for m in REGISTRY.collect() if m.name.startswith("stackshift")], (
        "nothing goes to prometheus-client's global registry"
    )


async def test_a_worker_without_a_metrics_port_serves_nothing(app: Stackshift) -> None:
    async with running_worker(app, ["n"]) as worker:
        assert worker.metrics_address is None
        assert worker.metrics_registry is None


async def test_an_early_start_that_start_lua_refuses_is_no_lost_lease(
    app: Stackshift,
) -> None:
    """A run started from its entry before start.lua confirms it, then refused
    (here: its record and index are gone, so the entry is buried)."""

    @app.job("orphan")
    async def orphan(ctx: JobContext[Any]) -> str:
        return "not recorded"

    handle = await app.queue("o").enqueue("orphan")
    q = app.store.keys.queue("o")
    assert await app.store.client.hdel(*q.queued_index(handle.run_id)) == 1
    async with running_worker(app, ["o"], **METRICS) as worker:
        await wait_until(lambda: app.dead_letters("o"), message="a dead letter")
        s = await settled(worker, lambda s: started(s, "o", "orphan") == 1)
    assert value(s, "stackshift_leases_lost_total", queue="o") == 0
    for outcome in OUTCOMES:
        assert finished(s, "o", "orphan", outcome) == 0
    assert (
        value(s, "stackshift_run_duration_seconds_count", queue="o", job="orphan") == 0
    )


async def test_a_partitioned_queue_is_one_series_summed_over_its_partitions(
    app: Stackshift,
) -> None:
    """Labels name the queue the app uses, never a partition: the runs of all
    four partitions count under "mail", and its gauges add them up."""

    @app.job("send", queue="mail")
    async def send(ctx: JobContext[Any]) -> None:
        pass

    @app.job("later", queue="mail")
    async def later(ctx: JobContext[Any]) -> None:
        pass

    mail = app.queue("mail", partitions=4)
    async with running_worker(app, ["mail"], **METRICS) as worker:
        handles = await mail.enqueue_many("send", [{}] * 20)
        for handle in handles:
            await handle.result(timeout=10)
        for n in range(8):
            await mail.enqueue("later", {}, idempotency_key=f"k{n}", delay=3600)
        s = await settled(
            worker,
            lambda s: value(s, "stackshift_runs_finished_total", queue="mail",
                            job="send", outcome="completed") == 20
                      and queue_runs(s, "mail")["scheduled"] == 8,
        )  # fmt: skip
    shown = {dict(labels).get("queue") for _name, labels in s} - {None}
    assert shown == {"mail"}
    assert value(s, "stackshift_runs_started_total", queue="mail", job="send") == 20
    assert queue_runs(s, "mail") == {
        "queued": 0, "running": 0, "scheduled": 8, "suspended": 0, "dead": 0
    }  # fmt: skip
