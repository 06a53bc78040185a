"""The marginal cost of a checkpointed step, against one Redis round trip.

W4's table divides a 10-step run's time by 10, which charges each step a tenth
of the run's fixed cost (enqueue, wake-up, start, complete, notification). This
measures the step alone: runs of 10 and of 100 steps awaited one by one with an
in-process worker; (t100 - t10) / 90 is a step, its own INCR included.

    .venv/bin/python -m bench.marginal_step [REDIS_URL]
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
import uuid

import anyio
import redis.asyncio as aioredis
import structlog

from stackshift import JobContext, Stackshift

RUNS = 30


async def main(url: str) -> None:
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING)
    )
    side = aioredis.Redis.from_url(url)
    prefix = f"bench-step-{uuid.uuid4().hex[:8]}:"

    async def step_work(i: int) -> int:
        return int(await side.incr(prefix + "steps"))

    app = Stackshift(url, prefix=prefix)

    @app.job("steps")
    async def steps(ctx: JobContext[dict[str, int]]) -> int:
        total = 0
        for i in range(ctx.payload["n"]):
            total = await ctx.step.run(f"step-{i}", step_work, i)
        return total

    per_run: dict[int, list[float]] = {10: [], 100: []}
    worker = app.worker(["steps"], concurrency=10)
    async with anyio.create_task_group() as tg:
        await tg.start(worker.run)
        for n in (10, 100, 10, 100):
            began = time.perf_counter()
            for _ in range(RUNS):
                handle = await app.queue("steps").enqueue("steps", {"n": n})
                await handle.result(timeout=60)
            per_run[n].append((time.perf_counter() - began) / RUNS * 1000)
        worker.stop()
    began = time.perf_counter()
    for _ in range(2000):
        await side.incr(prefix + "raw")
    round_trip = (time.perf_counter() - began) / 2000 * 1000
    step = (min(per_run[100]) - min(per_run[10])) / 90
    print(
        f"10-step run {min(per_run[10]):.2f} ms; 100-step run {min(per_run[100]):.2f} ms; "
        f"a step {step:.3f} ms; one round trip {round_trip:.3f} ms; "
        f"overhead per step {(step - round_trip) / round_trip:.1f} round trips"
    )
    keys = [k async for k in side.scan_iter(match=prefix + "*")]
    if keys:
        await side.delete(*keys)
    await side.aclose()
    await app.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "redis://127.0.0.1:6379/0"))
