"""Partitioned queues (issue #14): one logical queue spread over N hash slots."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from typing import Any

import pytest

from stackshift import ConfigError, JobContext, NonRetriableError, RunStatus, Stackshift
from tests.support.waiting import wait_until
from tests.support.workers import running_worker


async def test_runs_spread_over_partitions_and_a_worker_serves_them_all(
    app: Stackshift,
) -> None:
    @app.job("echo")
    async def echo(ctx: JobContext[dict[str, int]]) -> int:
        return ctx.payload["n"]

    emails = app.queue("emails", partitions=4)
    handles = await emails.enqueue_many("echo", [{"n": n} for n in range(40)])
    handles.append(await emails.enqueue("echo", {"n": 40}))
    runs = await app.store.get_runs([h.run_id for h in handles])
    placed = Counter(run.partition for run in runs if run is not None)
    assert set(placed) == {0, 1, 2, 3} and sum(placed.values()) == 41
    stats = await app.store.queue_stats("emails")
    assert stats.waiting == 41  # the logical queue: every partition's runs
    listed = [run.run_id async for run in app.runs("emails", limit=None)]
    assert sorted(listed) == sorted(h.run_id for h in handles)
    async with running_worker(app, ["emails"]):
        assert [await h.result(timeout=10) for h in handles] == list(range(41))
    run = await app.get_run(handles[0].run_id)
    assert run is not None and run.queue == "emails" and run.partition is not None
    assert (await app.store.queue_stats("emails")).totals["completed"] == 41


async def test_an_idempotency_key_always_picks_the_same_partition(
    app: Stackshift, redis_url: str, prefix: str
) -> None:
    emails = app.queue("emails", partitions=8)
    first = await emails.enqueue("job", {}, idempotency_key="order-7")
    for _ in range(5):
        again = await emails.enqueue("job", {}, idempotency_key="order-7")
        assert again.deduplicated and again.run_id == first.run_id
    # Another process, which did not declare the partitions, reads them from
    # Redis and dedupes the same way.
    async with Stackshift(redis_url, prefix=prefix) as other:
        elsewhere = await other.queue("emails").enqueue(
            "job", {}, idempotency_key="order-7"
        )
        assert elsewhere.deduplicated and elsewhere.run_id == first.run_id
        assert await other.release_idempotency_key("emails", "order-7") is True


async def test_the_partition_count_is_fixed_once_the_queue_is_used(
    app: Stackshift, redis_url: str, prefix: str
) -> None:
    await app.queue("emails", partitions=4).enqueue("job", {})
    async with Stackshift(redis_url, prefix=prefix) as other:
        with pytest.raises(ConfigError, match="has 4 partition"):
            await other.queue("emails", partitions=8).enqueue("job", {})
    with pytest.raises(ConfigError, match="partitions must be from 1 to 256"):
        app.queue("other", partitions=0)


async def test_children_events_and_crons_on_a_partitioned_queue(
    app: Stackshift,
) -> None:
    app.queue("work", partitions=3)

    @app.job("child", queue="work")
    async def child(ctx: JobContext[dict[str, int]]) -> int:
        return ctx.payload["n"] + 1

    @app.job("parent", queue="work")
    async def parent(ctx: JobContext[Any]) -> list[int]:
        return [await ctx.step.invoke(f"c{n}", "child", {"n": n}) for n in range(3)]

    @app.job("on_ping", on_event="ping", queue="work")
    async def on_ping(ctx: JobContext[dict[str, str]]) -> str:
        return ctx.payload["v"]

    async with running_worker(app, ["work"]):
        handle = await app.queue("work").enqueue("parent", {})
        assert await handle.result(timeout=15) == [1, 2, 3]
        await app.send_event("ping", {"v": "pong"}, id="p1")
        await app.send_event("ping", {"v": "pong"}, id="p1")  # a duplicate

        async def made() -> list[Any]:
            return [
                r
                async for r in app.runs("work", job="on_ping")
                if r.status == RunStatus.COMPLETED
            ]

        runs = await wait_until(made, message="the run the event made")
    assert len(runs) == 1 and runs[0].result == "pong"


async def test_a_handler_on_a_partition_sees_its_queue_by_name(
    app: Stackshift,
) -> None:
    """DESIGN §1 and §8: ``ctx.queue`` is the queue the run was enqueued on,
    also when the queue is partitioned (not ``emails:3``, which is no queue
    name): a handler can enqueue onto ``app.queue(ctx.queue)``."""
    emails = app.queue("emails", partitions=4)

    @app.job("where")
    async def where(ctx: JobContext[dict[str, int]]) -> str:
        if ctx.payload["n"] == 0:  # a follow-up run on the same queue, by name
            await app.queue(ctx.queue).enqueue("where", {"n": 1})
        return ctx.queue

    handles = await emails.enqueue_many("where", [{"n": 0} for _ in range(8)])
    await app.run_until_idle(["emails"])
    runs = await app.store.get_runs([h.run_id for h in handles])
    assert len({run.partition for run in runs if run is not None}) > 1
    assert [await h.result(timeout=10) for h in handles] == ["emails"] * 8
    followed = [r async for r in app.runs("emails", status="completed", limit=None)]
    assert len(followed) == 16 and {r.result for r in followed} == {"emails"}


async def test_a_partitioned_queues_runs_are_listed_as_one_queues_would_be(
    any_app: Stackshift,
) -> None:
    """DESIGN §6: ``app.runs(queue, status=...)`` gives RunInfo newest first,
    and §8 makes a partitioned queue one queue: its partitions' runs are
    merged into that order (they were listed one partition after the other)."""
    app = any_app
    orders = app.queue("orders", partitions=3)

    @app.job("ok")
    async def ok(ctx: JobContext[dict[str, int]]) -> int:
        return ctx.payload["n"]

    @app.job("no")
    async def no(ctx: JobContext[dict[str, int]]) -> None:
        raise NonRetriableError("no")

    ended = []  # each run ends before the next is made
    for n in range(8):
        ended.append(await orders.enqueue("ok" if n % 2 else "no", {"n": n}))
        await app.run_until_idle(["orders"], concurrency=1)
    delays = [40, 10, 30, 20]
    scheduled = [
        await orders.enqueue("ok", {"n": m}, delay=timedelta(minutes=m)) for m in delays
    ]
    queued = [await orders.enqueue("ok" if n % 2 else "no", {"n": n}) for n in range(7)]
    stored = await app.store.get_runs([h.run_id for h in ended + scheduled + queued])
    assert {run.partition for run in stored if run is not None} == {0, 1, 2}

    def ids(handles: list[Any]) -> list[str]:
        return [h.run_id for h in handles]

    async def listed(**options: Any) -> list[str]:
        return [r.run_id async for r in app.runs("orders", limit=None, **options)]

    newest_queued = ids(queued[::-1])
    soonest = ids([scheduled[delays.index(m)] for m in sorted(delays)])
    completed, failed = ids(ended[1::2][::-1]), ids(ended[0::2][::-1])
    assert await listed(status="queued") == newest_queued
    assert await listed(status="scheduled") == soonest
    assert await listed(status="completed") == completed
    assert await listed(status="failed") == failed
    everything = newest_queued + soonest + completed + failed
    assert await listed() == everything
    oks = ids(queued[1::2][::-1]) + soonest + completed
    assert await listed(job="ok") == oks

    # Page by page, the cursor goes on where the last page stopped.
    for limit, job in [(1, None), (2, None), (3, None), (2, "ok")]:
        paged: list[str] = []
        cursor: str | None = None
        while True:
            page, cursor = await app.store.list_runs(
                "orders", job=job, limit=limit, cursor=cursor
            )
            assert len(page) <= limit
            paged += [run.run_id for run in page]
            if cursor is None:
                break
        assert paged == (everything if job is None else oks), (limit, job)
