"""arq as a system under test (bench/.venvs/arq). Defaults kept: max_jobs 10,
poll_delay 0.5 s, results kept 1 h; jobs live in a sorted set, not a stream.

``arq-light`` (arq_light.py): its lightest documented set-up, the worker's
``keep_result=0`` ("the result is not kept") and ``log_results=False``; the
poll delay stays (a shorter one is faster but polls Redis more, not lighter)."""

from __future__ import annotations

import sys
import time
from importlib import metadata
from typing import Any

from arq import Worker, create_pool
from arq.connections import RedisSettings

from bench.peers import _bulk
from bench.workloads import common, driver


async def noop(ctx: dict[str, Any], t: float) -> None:
    await common.do_work(t)


async def step(ctx: dict[str, Any], i: int) -> int:
    return await common.step_work(i)


class ArqAdapter(driver.Adapter):
    name = "arq"
    module = "bench.peers.arq_peer"
    default_concurrency = 10
    light = False  # arq-light: results neither kept nor logged

    def __init__(self) -> None:
        self._pool: Any = None

    def _settings(self) -> RedisSettings:
        return RedisSettings.from_dsn(common.bench_url())

    async def open(self) -> None:
        self._pool = await create_pool(self._settings())

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.aclose()

    async def enqueue(self, enqueued_at: float) -> None:
        await self._pool.enqueue_job("noop", enqueued_at)

    async def enqueue_many(self, n: int) -> None:
        await _bulk.concurrent(n, lambda: self._pool.enqueue_job("noop", 0.0))

    async def queued(self) -> int:
        return int(await self._pool.zcard("arq:queue"))

    async def chain(self, steps: int) -> None:
        for i in range(steps):
            job = await self._pool.enqueue_job("step", i)
            await job.result(timeout=60)

    async def enqueue_sleepers(self, seconds: list[float], *, hold: bool) -> None:
        async def one(s: float) -> None:
            due = time.time() + s
            await self._pool.enqueue_job("noop", 0.0 if hold else due, _defer_by=s)

        it = iter(seconds)
        await _bulk.concurrent(len(seconds), lambda: one(next(it)))

    async def suspended(self) -> int:
        return int(await self._pool.zcard("arq:queue"))  # deferred jobs wait there

    async def serve(self, concurrency: int, mode: str = "") -> None:
        worker = Worker(
            functions=[noop, step],
            redis_settings=self._settings(),
            max_jobs=concurrency,
            handle_signals=False,
            **({"keep_result": 0, "log_results": False} if self.light else {}),
        )
        await worker.main()

    def versions(self) -> dict[str, str]:
        return {
            name: metadata.version(name) for name in ("arq", "redis", "hiredis")
        } | {"python": sys.version.split()[0]}


class ArqLightAdapter(ArqAdapter):
    name = "arq-light"
    module = "bench.peers.arq_light"
    light = True


if __name__ == "__main__":
    raise SystemExit(driver.main(ArqAdapter()))
