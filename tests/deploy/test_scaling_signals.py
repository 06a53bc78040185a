"""What KEDA's redis-streams triggers (deploy/k8s/keda/scaling.yaml) read, on a
real Redis with a real worker, read the way KEDA reads them (XLEN, XPENDING):

- streamLength: the queue's stream holds exactly the runs queued or in flight,
  because a finished run's entry is deleted;
- pendingEntriesCount: the consumer group's pending entries are the runs in
  flight, at most --concurrency per worker (so a target below --concurrency can
  be exceeded and make KEDA add replicas).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import pytest
import redis.asyncio as aioredis

from stackshift import JobContext, Stackshift
from tests.support.waiting import wait_until
from tests.support.workers import running_worker

QUEUE = "payments"
GROUP = "stackshift"  # the consumerGroup the ScaledObjects name
CONCURRENCY = 2
RUNS = 5


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    connection = aioredis.Redis.from_url(redis_url)
    yield connection
    await connection.aclose()


async def test_stream_length_and_pending_entries_follow_the_runs(
    app: Stackshift, prefix: str, client: aioredis.Redis
) -> None:
    release = anyio.Event()

    @app.job("hold")
    async def hold(ctx: JobContext[dict[str, int]]) -> int:
        await release.wait()
        return ctx.payload["n"]

    # The stream key the ScaledObjects name (stackshift:{payments}:stream),
    # under this test's own prefix.
    stream = f"{prefix}{{{QUEUE}}}:stream"

    async def pending() -> int:
        summary = await client.xpending(stream, GROUP)
        return int(summary["pending"])

    async def slots_full() -> bool:
        return await pending() == CONCURRENCY

    async def stream_empty() -> bool:
        return await client.xlen(stream) == 0

    handles = [await app.queue(QUEUE).enqueue("hold", {"n": n}) for n in range(RUNS)]
    assert await client.xlen(stream) == RUNS

    async with running_worker(app, [QUEUE], concurrency=CONCURRENCY):
        await wait_until(slots_full, message="runs in flight")
        # Every slot is taken and no more entries are read: the rest wait.
        assert await client.xlen(stream) == RUNS
        assert await pending() == CONCURRENCY
        release.set()
        assert [await h.result(timeout=10) for h in handles] == list(range(RUNS))
        await wait_until(stream_empty, message="an empty stream")
        assert await pending() == 0
