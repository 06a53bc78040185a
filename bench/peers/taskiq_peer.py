"""taskiq with taskiq-redis as a system under test (bench/.venvs/taskiq):
``RedisStreamBroker`` with ``RedisAsyncResultBackend``, run programmatically
with the CLI's default of 100 concurrent tasks. No bulk enqueue API, so W1b runs
concurrent ``kiq`` calls.

``taskiq-light`` (taskiq_light.py): its lightest documented set-up, the same
broker without a result backend (taskiq's default, a dummy that stores
nothing). Not ``ListQueueBroker``: it pops with ``BRPOP`` and has no
acknowledgement, so a worker that dies loses its tasks (no peer here is
compared in a set-up that can lose work)."""

from __future__ import annotations

import asyncio
import sys
from importlib import metadata
from typing import Any

import redis.asyncio as aioredis
from taskiq.api import run_receiver_task
from taskiq_redis import RedisAsyncResultBackend, RedisStreamBroker

from bench.peers import _bulk
from bench.workloads import common, driver

STREAM = "taskiq"  # the broker's default queue (stream) name


def _broker(light: bool = False) -> Any:
    url = common.bench_url()
    broker = RedisStreamBroker(url)
    if not light:
        broker = broker.with_result_backend(RedisAsyncResultBackend(url))

    @broker.task(task_name="noop")
    async def noop(t: float) -> None:
        await common.do_work(t)

    @broker.task(task_name="step")
    async def step(i: int) -> int:
        return await common.step_work(i)

    return broker, noop, step


class TaskiqAdapter(driver.Adapter):
    name = "taskiq"
    module = "bench.peers.taskiq_peer"
    default_concurrency = 100
    light = False  # taskiq-light: no result backend

    def __init__(self) -> None:
        self._broker: Any = None

    async def open(self) -> None:
        self._broker, self._noop, self._step = _broker(self.light)
        await self._broker.startup()

    async def close(self) -> None:
        if self._broker is not None:
            broker, self._broker = self._broker, None
            await broker.shutdown()

    async def enqueue(self, enqueued_at: float) -> None:
        await self._noop.kiq(enqueued_at)

    async def enqueue_many(self, n: int) -> None:
        await _bulk.concurrent(n, lambda: self._noop.kiq(0.0))

    async def queued(self) -> int:
        # Not common.client(): that is the jobs' own (another server in W12).
        async with aioredis.Redis.from_url(common.bench_url()) as r:
            return int(await r.xlen(STREAM))

    async def chain(self, steps: int) -> None:
        for i in range(steps):
            task = await self._step.kiq(i)
            await task.wait_result(timeout=60)

    async def serve(self, concurrency: int, mode: str = "") -> None:
        broker, _, _ = _broker(self.light)
        await broker.startup()
        await run_receiver_task(broker, max_async_tasks=concurrency)
        await asyncio.Event().wait()

    def versions(self) -> dict[str, str]:
        return {
            name: metadata.version(name)
            for name in ("taskiq", "taskiq-redis", "redis", "hiredis")
        } | {"python": sys.version.split()[0]}


class TaskiqLightAdapter(TaskiqAdapter):
    name = "taskiq-light"
    module = "bench.peers.taskiq_light"
    light = True


if __name__ == "__main__":
    raise SystemExit(driver.main(TaskiqAdapter()))
