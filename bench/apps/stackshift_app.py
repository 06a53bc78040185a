"""The stackshift app the benchmark's worker processes serve.

``stackshift worker bench.apps.stackshift_app:app --queue bench`` (the bench
Redis URL comes from ``$BENCH_REDIS_URL``). The cron job's queue is served only
by W11's workers, so no other cell makes its ticks.
"""

from __future__ import annotations

import os
import time
from typing import Any

from bench.workloads import common
from stackshift import JobContext, Stackshift

PREFIX = "ssb:"
CRON_QUEUE = "bench-cron"

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


@app.job("step_child")
async def step_child(ctx: JobContext[dict[str, int]]) -> int:
    """A W4i child: one step's work (one Redis round trip)."""
    return await common.step_work(int(ctx.payload["i"]))


@app.job("invokes")
async def invokes(ctx: JobContext[dict[str, int]]) -> int:
    """A W4i run: ``n`` child runs invoked one after the other."""
    total = 0
    for i in range(int(ctx.payload["n"])):
        # queue=: a child goes to its job's queue, else "default", not its
        # parent's; this worker serves only the parent's.
        total = await ctx.step.invoke(
            f"child-{i}", "step_child", {"i": i}, queue=ctx.queue
        )
    return total


@app.job("waiter")
async def waiter(ctx: JobContext[dict[str, Any]]) -> None:
    """W8, W10: wait for event ``e`` (with ``k`` equal to the payload's, when
    given). The resumed attempt records when its handler started."""
    started = time.time()
    key = ctx.payload.get("k")
    match = None if key is None else {"k": key}
    await ctx.step.wait_for_event("event", ctx.payload["e"], match=match)
    await common.note_start(started)


async def _due_in(seconds: float) -> float:
    # async: a sync step function would run in a worker thread
    return time.time() + seconds


@app.job("sleeper")
async def sleeper(ctx: JobContext[dict[str, Any]]) -> None:
    """W9: sleep ``d`` seconds from the run's start, then record how late the
    resumed handler started. ``hold`` runs just sleep (the memory and CPU of
    sleeping runs, with nothing else recorded)."""
    started = time.time()
    seconds = float(ctx.payload["d"])
    if ctx.payload.get("hold"):
        await ctx.step.sleep("nap", seconds)
        return
    # The due time, recorded on the first attempt, so the resumed one knows it.
    due = await ctx.step.run("due", _due_in, seconds)
    await ctx.step.sleep_until("nap", due)
    await common.do_work(due, started=started)


@app.cron("tick", "* * * * * *", queue=CRON_QUEUE)
async def tick(ctx: JobContext[dict[str, Any]]) -> None:
    """W11: one run per second; records its tick and how late it started."""
    await common.note_tick(int(ctx.payload["tick"]), time.time())
