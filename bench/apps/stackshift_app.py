"""The stackshift app the benchmark's worker processes serve.

``stackshift worker bench.apps.stackshift_app:app --queue bench`` (the bench
Redis URL comes from ``$BENCH_REDIS_URL``).
"""

from __future__ import annotations

import os

from bench.workloads import common
from stackshift import JobContext, Stackshift

PREFIX = "ssb:"

app = Stackshift(os.environ.get(common.URL_ENV), prefix=PREFIX)


@app.job("noop")
async def noop(ctx: JobContext[dict[str, float]]) -> None:
    """A no-op job: its only work is the benchmark's one round trip."""
    await common.do_work(float(ctx.payload.get("t", 0.0)))


@app.job("steps")
async def steps(ctx: JobContext[dict[str, int]]) -> int:
    """A W4 run: ``n`` checkpointed steps, each one Redis round trip."""
    total = 0
    for i in range(int(ctx.payload["n"])):
        total = await ctx.step.run(f"step-{i}", common.step_work, i)
    return total
