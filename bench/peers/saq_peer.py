"""SAQ as a system under test (bench/.venvs/saq). Defaults kept: concurrency
10; no bulk enqueue API (``map`` waits for results), so W1b runs concurrent
enqueues.

``saq-light`` (saq_light.py): its lightest documented set-up, jobs enqueued
with ``ttl=-1`` ("-1 means disabled": the job's record and result are deleted
when it finishes, instead of kept 600 s)."""

from __future__ import annotations

import sys
import time
from importlib import metadata
from typing import Any

from saq import Queue, Worker

from bench.peers import _bulk
from bench.workloads import common, driver


async def noop(ctx: Any, *, t: float) -> None:
    await common.do_work(t)


async def step(ctx: Any, *, i: int) -> int:
    return await common.step_work(i)


class SaqAdapter(driver.Adapter):
    name = "saq"
    module = "bench.peers.saq_peer"
    default_concurrency = 10
    light = False  # saq-light: nothing kept once a job finishes

    @property
    def _job(self) -> dict[str, Any]:
        return {"ttl": -1} if self.light else {}

    def __init__(self) -> None:
        self._queue: Any = None

    async def open(self) -> None:
        self._queue = Queue.from_url(common.bench_url(), name=driver.QUEUE)
        await self._queue.connect()

    async def close(self) -> None:
        if self._queue is not None:
            queue, self._queue = self._queue, None
            await queue.disconnect()

    async def enqueue(self, enqueued_at: float) -> None:
        await self._queue.enqueue("noop", t=enqueued_at, **self._job)

    async def enqueue_many(self, n: int) -> None:
        await _bulk.concurrent(
            n, lambda: self._queue.enqueue("noop", t=0.0, **self._job)
        )

    async def queued(self) -> int:
        return int(await self._queue.count("queued"))

    async def chain(self, steps: int) -> None:
        for i in range(steps):
            await self._queue.apply("step", timeout=60, i=i)

    async def enqueue_sleepers(self, seconds: list[float], *, hold: bool) -> None:
        async def one(s: float) -> None:
            due = time.time() + s
            await self._queue.enqueue("noop", t=0.0 if hold else due, scheduled=due)

        it = iter(seconds)
        await _bulk.concurrent(len(seconds), lambda: one(next(it)))

    async def suspended(self) -> int:
        return int(await self._queue.count("incomplete"))  # scheduled ones too

    async def serve(self, concurrency: int, mode: str = "") -> None:
        queue = Queue.from_url(common.bench_url(), name=driver.QUEUE)
        await queue.connect()
        worker = Worker(queue, functions=[noop, step], concurrency=concurrency)
        await worker.start()

    def versions(self) -> dict[str, str]:
        return {
            name: metadata.version(name) for name in ("saq", "redis", "hiredis")
        } | {"python": sys.version.split()[0]}


class SaqLightAdapter(SaqAdapter):
    name = "saq-light"
    module = "bench.peers.saq_light"
    light = True


if __name__ == "__main__":
    raise SystemExit(driver.main(SaqAdapter()))
