"""stackshift on a real Redis Cluster (issue #14): every script in one slot,
each queue read on its own, scripts reloaded after a failover, and what an
asynchronous-replication failover can lose, measured."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import pytest

from stackshift import JobContext, RunStatus, Stackshift, Worker
from tests.support import ledger
from tests.support.processes import Workers, enqueue_steps, runs_of, wait_finished
from tests.support.redis_cluster import RedisClusterDeployment
from tests.support.waiting import wait_until
from workers import register_all, services

RESULT_TIMEOUT = 20.0
STEP_TOTAL = 1 + 4 + 9 + 16  # tests.apps.durable's "steps" job with 4 steps


def queues_on_each_master(cluster: RedisClusterDeployment, *bases: str) -> list[str]:
    """One queue name per master: ``<base>``, else ``<base>-<n>`` for the first n
    whose slot lives on a master no other queue of the list uses."""
    used: set[str] = set()
    names = []
    for base in bases:
        for n in range(1000):
            name = base if n == 0 else f"{base}-{n}"
            owner = cluster.owner_of(f"{{{name}}}").node_id
            if owner not in used:
                used.add(owner)
                names.append(name)
                break
    assert len(names) == len(bases), "not enough masters for the queues"
    return names


@pytest.fixture
def fresh_services() -> Iterator[None]:
    services.reset()
    yield
    services.reset()


@pytest.fixture
async def cluster_app(
    redis_cluster: RedisClusterDeployment,
) -> AsyncIterator[Stackshift]:
    async with Stackshift(redis_cluster.url, prefix=f"c{uuid.uuid4().hex[:8]}:") as app:
        yield app


@contextlib.asynccontextmanager
async def serving(
    app: Stackshift, queues: list[str], **options: Any
) -> AsyncIterator[Worker]:
    options.setdefault("lease_timeout", 5.0)
    worker = app.worker(queues, **options)
    async with anyio.create_task_group() as tg:
        await tg.start(worker.run)
        try:
            yield worker
        finally:
            worker.stop()


async def test_the_documented_flows_on_queues_of_three_masters_one_worker(
    cluster_app: Stackshift, redis_cluster: RedisClusterDeployment, fresh_services: None
) -> None:
    """Signup, payment and upload, each on a queue of another master, served
    by one worker that reads each queue on its own connection."""
    emails, payments, uploads = queues_on_each_master(
        redis_cluster, "emails", "payments", "uploads"
    )
    owners = {
        redis_cluster.owner_of(f"{{{q}}}").port for q in (emails, payments, uploads)
    }
    assert len(owners) == 3
    app = register_all(cluster_app, backoff=0.05)
    services.FAIL_ONCE.add("enable_paid_plan")
    services.payments["pay_1"] = ("paid", "ada@example.com")
    async with serving(app, [emails, payments, uploads], concurrency=4):
        signup = [
            await app.queue(emails).enqueue(
                "sendVerificationEmail",
                {"userId": "u1", "email": "ada@example.com"},
                idempotency_key="verify:u1",
            )
            for _ in range(3)
        ]
        payment = await app.queue(payments).enqueue(
            "provisionAfterPayment", {"paymentId": "pay_1", "customerId": "cus_1"}
        )
        upload = await app.queue(uploads).enqueue("processUpload", {"fileId": "f_1"})
        assert [h.deduplicated for h in signup] == [False, True, True]
        assert await signup[0].result(timeout=RESULT_TIMEOUT) == {
            "messageId": "msg-verify-u1"
        }
        assert await payment.result(timeout=RESULT_TIMEOUT) == {"provisioned": True}
        assert await upload.result(timeout=RESULT_TIMEOUT) == {"rows": 250}
    assert services.calls["mail_verification_link"] == 1
    assert services.calls["verify_payment"] == 1  # replayed on the retry
    assert services.calls["enable_paid_plan"] == 2
    assert await app.state.get("files:f_1:rows") == 250
    run = await app.get_run(payment.run_id)
    assert run is not None and (run.status, run.attempt) == ("completed", 2)


async def test_events_waits_sleeps_and_child_runs_across_slots(
    cluster_app: Stackshift, redis_cluster: RedisClusterDeployment
) -> None:
    """An event routed through {events}, a waiter in its name's slot, a child
    on another master, a cron tick: all on one worker."""
    app = cluster_app
    first, second, third = queues_on_each_master(redis_cluster, "qa", "qb", "qc")

    @app.job("child", queue=third)
    async def child(ctx: JobContext[dict[str, int]]) -> int:
        return ctx.payload["n"] * 10

    @app.job("parent", queue=first)
    async def parent(ctx: JobContext[dict[str, str]]) -> dict[str, Any]:
        await ctx.step.sleep("settle", 0.1)
        got = await ctx.step.wait_for_event(
            "confirmed", event="order.confirmed", match={"order": ctx.payload["order"]}
        )
        children = await asyncio.gather(
            ctx.step.invoke("a", "child", {"n": 1}),
            ctx.step.invoke("b", "child", {"n": 2}),
        )
        return {"event": got, "children": children}

    @app.job("on_order", on_event="order.confirmed", queue=second)
    async def on_order(ctx: JobContext[dict[str, Any]]) -> str:
        return str(ctx.payload["order"])

    async with serving(app, [first, second, third], concurrency=6):
        handle = await parent.enqueue({"order": "o-1"})
        receipt = await app.send_event("order.confirmed", {"order": "o-1"}, id="e-1")
        result = await handle.result(timeout=RESULT_TIMEOUT)
        made = [run async for run in app.runs(second)]
        await wait_until(
            lambda: app.get_run(made[0].run_id) if made else None,
            message="the run made by the event",
        )
    assert result == {"event": {"order": "o-1"}, "children": [10, 20]}
    assert not receipt.duplicate
    assert [run.job for run in made] == ["on_order"]


async def test_a_worker_killed_mid_run_on_a_cluster_is_taken_over(
    redis_cluster: RedisClusterDeployment, tmp_path: Any
) -> None:
    """kill -9 while runs are in step 2: a second worker finishes them, and no
    step recorded before the kill runs again."""
    prefix = f"c{uuid.uuid4().hex[:8]}:"
    workers = Workers(tmp_path, redis_cluster.url, prefix)
    try:
        async with Stackshift(redis_cluster.url, prefix=prefix) as app:
            first = workers.start("first", queues=("kill9",), concurrency=5)
            await first.wait_ready()
            run_ids = await enqueue_steps(
                app, "kill9", 5, steps=4, pause=0.4, counter="k9"
            )

            def all_in_step_2() -> bool:
                lines = ledger.read(workers.ledger)
                started = {
                    line["run_id"]
                    for line in ledger.select(
                        lines, event="start", step="step-2", attempt=1
                    )
                }
                return started == set(run_ids)

            await wait_until(all_in_step_2, timeout=30, message="runs in step 2")
            first.kill()
            before = {run.run_id: run for run in await runs_of(app, run_ids)}
            second = workers.start("second", queues=("kill9",), concurrency=5)
            runs = await wait_finished(app, run_ids, within=60)
            lines = ledger.read(workers.ledger)
            for run in runs:
                assert run.status == "completed", (run.run_id, run.error)
                assert run.result == {"total": STEP_TOTAL, "pid": second.pid}
                kept = before[run.run_id].steps
                assert run.steps[: len(kept)] == kept
                starts = ledger.starts_per_step(lines, run.run_id)
                assert all(starts[s.step_id] == 1 for s in kept), starts
            assert await app.state.get("k9") == 5 * 4
    finally:
        workers.cleanup()


@pytest.mark.timeout(180)
async def test_a_master_failover_mid_load_keeps_workers_going(
    redis_cluster_factory: Any,
) -> None:
    """3 masters + 3 replicas: the master of the queue's slot is killed while
    runs are enqueued and run. The replica is promoted, scripts are loaded on
    it again (NOSCRIPT), and the workers carry on. Replication is asynchronous:
    writes acknowledged by the old master just before it died may be lost; the
    runs lost that way are counted, not hidden (docs/reliability.md)."""
    cluster: RedisClusterDeployment = redis_cluster_factory(masters=3, replicas=1)
    prefix = f"c{uuid.uuid4().hex[:8]}:"
    async with Stackshift(cluster.url, prefix=prefix) as app:

        @app.job("work", queue="load")
        async def work(ctx: JobContext[dict[str, int]]) -> int:
            await ctx.step.run("one", lambda: ctx.payload["n"])
            return ctx.payload["n"]

        acknowledged: list[str] = []
        stop = anyio.Event()

        async def produce(n: int) -> None:
            while not stop.is_set():
                try:
                    handle = await work.enqueue({"n": n})
                except Exception:  # during the failover: not acknowledged
                    await anyio.sleep(0.05)  # sync-ok: backoff, not a wait
                    continue
                acknowledged.append(handle.run_id)
                n += 4

        async with serving(app, ["load"], concurrency=10):
            async with anyio.create_task_group() as tg:
                for first in range(4):  # four producers, back to back
                    tg.start_soon(produce, first)
                await wait_until(lambda: len(acknowledged) >= 200, timeout=30)
                victim = cluster.owner_of("{load}")
                victim.kill()
                await cluster.wait_for_failover(victim)
                ahead = len(acknowledged) + 400
                await wait_until(
                    lambda: len(acknowledged) >= ahead, timeout=60, message="more runs"
                )
                stop.set()

            async def settled() -> bool:
                runs = await app.store.get_runs(acknowledged)
                return all(r is None or r.status == RunStatus.COMPLETED for r in runs)

            await wait_until(settled, timeout=60, message="every run to finish")
        runs = await app.store.get_runs(acknowledged)
        lost = [rid for rid, run in zip(acknowledged, runs, strict=True) if run is None]
        completed = sum(1 for run in runs if run is not None)
        # What asynchronous replication may lose: the runs acknowledged by the
        # old master in the moment before it died, never more than a few.
        print(f"[cluster_failover] acknowledged={len(acknowledged)} "
              f"completed={completed} lost_in_failover={len(lost)}")  # fmt: skip
        assert completed + len(lost) == len(acknowledged)
        assert len(lost) <= 20, lost
        assert completed >= len(acknowledged) - 20


@pytest.mark.timeout(180)
async def test_a_sentinel_failover_is_followed(redis_sentinel_factory: Any) -> None:
    """redis+sentinel://: the primary is killed mid-load; the sentinels promote
    the replica, and the app and its worker follow it. Acknowledged runs lost
    to asynchronous replication are counted."""
    deployment = redis_sentinel_factory()
    prefix = f"s{uuid.uuid4().hex[:8]}:"
    async with Stackshift(deployment.url, prefix=prefix) as app:

        @app.job("work")
        async def work(ctx: JobContext[dict[str, int]]) -> int:
            return await ctx.step.run("one", lambda: ctx.payload["n"])

        acknowledged: list[str] = []
        stop = anyio.Event()

        async def produce() -> None:
            n = 0
            while not stop.is_set():
                try:
                    handle = await work.enqueue({"n": n})
                except Exception:  # while no primary answers
                    await anyio.sleep(0.05)  # sync-ok: backoff, not a wait
                    continue
                acknowledged.append(handle.run_id)
                n += 1

        async with serving(app, ["default"], concurrency=10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(produce)
                await wait_until(lambda: len(acknowledged) >= 200, timeout=30)
                old = deployment.kill_master()
                await deployment.wait_for_failover(old)
                ahead = len(acknowledged) + 300
                await wait_until(
                    lambda: len(acknowledged) >= ahead, timeout=60, message="more runs"
                )
                stop.set()

            async def settled() -> bool:
                runs = await app.store.get_runs(acknowledged)
                return all(r is None or r.status == RunStatus.COMPLETED for r in runs)

            await wait_until(settled, timeout=60, message="every run to finish")
        runs = await app.store.get_runs(acknowledged)
        lost = sum(1 for run in runs if run is None)
        print(f"[sentinel_failover] acknowledged={len(acknowledged)} "
              f"completed={len(acknowledged) - lost} lost_in_failover={lost}")  # fmt: skip
        assert lost <= 20


async def test_a_partitioned_queue_spreads_over_the_masters(
    cluster_app: Stackshift, redis_cluster: RedisClusterDeployment
) -> None:
    """One logical queue, six partitions: its runs live on several masters,
    one worker serving the queue runs them all, and stats see one queue."""
    app = cluster_app
    spread = app.queue("spread", partitions=6)

    @app.job("echo", queue="spread")
    async def echo(ctx: JobContext[dict[str, int]]) -> int:
        return ctx.payload["n"]

    handles = await spread.enqueue_many("echo", [{"n": n} for n in range(60)])
    owners = {redis_cluster.owner_of(f"{{spread:{n}}}").node_id for n in range(6)}
    assert len(owners) >= 2
    assert (await app.store.queue_stats("spread")).waiting == 60
    async with serving(app, ["spread"], concurrency=10):
        assert [await h.result(timeout=RESULT_TIMEOUT) for h in handles] == list(
            range(60)
        )
