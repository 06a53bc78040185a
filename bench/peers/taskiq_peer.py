"""taskiq with taskiq-redis as a system under test (bench/.venvs/taskiq):
``RedisStreamBroker`` with ``RedisAsyncResultBackend``, run programmatically
with the CLI's default of 100 concurrent tasks. No bulk enqueue API, so W1b runs
concurrent ``kiq`` calls."""

from __future__ import annotations

import asyncio
import sys
from importlib import metadata
from typing import Any

from taskiq.api import run_receiver_task
from taskiq_redis import RedisAsyncResultBackend, RedisStreamBroker

from bench.peers import _bulk
from bench.workloads import common, driver

STREAM = "taskiq"  # the broker's default queue (stream) name


def _broker() -> Any:
    url = common.bench_url()
    broker = RedisStreamBroker(url).with_result_backend(RedisAsyncResultBackend(url))

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

    def __init__(self) -> None:
        self._broker: Any = None

    async def open(self) -> None:
        self._broker, self._noop, self._step = _broker()
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
        return int(await common.client().xlen(STREAM))

    async def chain(self, steps: int) -> None:
        for i in range(steps):
            task = await self._step.kiq(i)
            await task.wait_result(timeout=60)

    async def serve(self, concurrency: int, mode: str = "") -> None:
        broker, _, _ = _broker()
        await broker.startup()
        await run_receiver_task(broker, max_async_tasks=concurrency)
        await asyncio.Event().wait()

    def versions(self) -> dict[str, str]:
        return {
            name: metadata.version(name)
            for name in ("taskiq", "taskiq-redis", "redis", "hiredis")
        } | {"python": sys.version.split()[0]}


if __name__ == "__main__":
    raise SystemExit(driver.main(TaskiqAdapter()))
