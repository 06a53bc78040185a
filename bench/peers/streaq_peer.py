"""streaq as a system under test (bench/.venvs/streaq). Defaults kept:
concurrency 16, pickle serializer; it speaks to Redis through coredis (the job's
own work uses redis-py, like every other system's).

``streaq-light`` (streaq_light.py): its lightest documented set-up, tasks
registered with ``ttl=0`` (no result stored) and ``silent=True`` (no task
logs)."""

from __future__ import annotations

import sys
import time
from datetime import timedelta
from importlib import metadata
from typing import Any

import anyio
from streaq import Worker

from bench.workloads import common, driver


def _worker(concurrency: int = 16) -> Any:
    return Worker(
        redis_url=common.bench_url(),
        queue_name=driver.QUEUE,
        concurrency=concurrency,
        handle_signals=False,
    )


def _register(worker: Any, light: bool = False) -> tuple[Any, Any]:
    options: dict[str, Any] = {"ttl": 0, "silent": True} if light else {}

    @worker.task(name="noop", **options)
    async def noop(t: float) -> None:
        await common.do_work(t)

    @worker.task(name="step", **options)
    async def step(i: int) -> int:
        return await common.step_work(i)

    return noop, step


class StreaqAdapter(driver.Adapter):
    name = "streaq"
    module = "bench.peers.streaq_peer"
    default_concurrency = 16
    light = False  # streaq-light: no results stored, no task logs

    def __init__(self) -> None:
        self._worker: Any = None
        self._stack: Any = None

    async def open(self) -> None:
        self._worker = _worker()
        self._noop, self._step = _register(self._worker, self.light)
        self._ctx = self._worker.__asynccontextmanager__()
        await self._ctx.__aenter__()

    async def close(self) -> None:
        if self._worker is not None:
            self._worker = None
            await self._ctx.__aexit__(None, None, None)

    async def enqueue(self, enqueued_at: float) -> None:
        await self._noop.enqueue(enqueued_at)

    async def enqueue_many(self, n: int) -> None:
        for start in range(0, n, 1000):
            tasks = [self._noop.enqueue(0.0) for _ in range(min(1000, n - start))]
            await self._worker.enqueue_many(tasks)

    async def queued(self) -> int:
        return int(await self._worker.queue_size())

    async def chain(self, steps: int) -> None:
        for i in range(steps):
            task = await self._step.enqueue(i)
            await task.result(timeout=60)

    async def enqueue_sleepers(self, seconds: list[float], *, hold: bool) -> None:
        for start in range(0, len(seconds), 1000):
            tasks = [
                self._noop.enqueue(0.0 if hold else time.time() + s).start(
                    delay=timedelta(seconds=s)
                )
                for s in seconds[start : start + 1000]
            ]
            await self._worker.enqueue_many(tasks)

    async def suspended(self) -> int:
        return int(await self._worker.queue_size())  # delayed tasks included

    async def serve(self, concurrency: int, mode: str = "") -> None:
        worker = _worker(concurrency)
        _register(worker, self.light)
        async with anyio.create_task_group() as tg:
            await tg.start(worker.run_async)

    def versions(self) -> dict[str, str]:
        return {
            name: metadata.version(name)
            for name in ("streaq", "coredis", "redis", "hiredis")
        } | {"python": sys.version.split()[0]}


class StreaqLightAdapter(StreaqAdapter):
    name = "streaq-light"
    module = "bench.peers.streaq_light"
    light = True


if __name__ == "__main__":
    raise SystemExit(driver.main(StreaqAdapter()))
