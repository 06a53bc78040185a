"""The app the fault scenarios' worker processes serve.

``stackshift worker tests.faults.harness.apps:app`` (from the repository root).
Settings come from the environment (``$STACKSHIFT_REDIS_URL``,
``$STACKSHIFT_PREFIX``, and the ``FAULT_*`` knobs below), so every scenario can
start workers on its own Redis and prefix.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
import uuid
from typing import Any

from stackshift import JobContext, Stackshift

from .ledger import LedgerWriter

app = Stackshift(
    # Crashes are what the scenarios inject: a run must not be declared poison
    # because a chaos loop happened to kill its workers a few times.
    max_deliveries=int(os.environ.get("FAULT_MAX_DELIVERIES", "1000")),
    result_ttl=float(os.environ.get("FAULT_RESULT_TTL", "600")),
    dead_ttl=float(os.environ.get("FAULT_RESULT_TTL", "600")),
    max_payload_bytes=int(os.environ.get("FAULT_MAX_PAYLOAD", str(512 * 1024))),
)
ledger = LedgerWriter.from_env()
COUNTER = "faults.n"


async def step_body(
    run_id: str, step: str, attempt: int, low_ms: int, high_ms: int
) -> str:
    """A step's side effect: logged before and after, returns a fresh token."""
    ledger.write(run_id, step, attempt, "start")
    if high_ms > 0:
        await asyncio.sleep(random.uniform(low_ms, high_ms) / 1000)
    token = uuid.uuid4().hex[:12]
    ledger.write(run_id, step, attempt, "end", token)
    return token


@app.job("multistep", retries=30, backoff=0.2)
async def multistep(ctx: JobContext[dict[str, Any]]) -> list[str]:
    """``steps`` checkpointed steps sleeping ``low``..``high`` ms; after the
    third, the counter ``faults.n`` (or ``counter``) gets +1."""
    p = ctx.payload
    values = []
    for i in range(int(p.get("steps", 5))):
        step = f"s{i}"
        value = await ctx.step.run(
            step,
            step_body,
            ctx.run_id,
            step,
            ctx.attempt,
            int(p.get("low", 0)),
            int(p.get("high", 50)),
        )
        ledger.write(ctx.run_id, step, ctx.attempt, "got", value)
        values.append(value)
        if i == 2:
            await ctx.state.increment(str(p.get("counter", COUNTER)), 1)
    ledger.write(ctx.run_id, "-", ctx.attempt, "return")
    return values


@app.job("inside_step_counter", retries=30, backoff=0.2)
async def inside_step_counter(ctx: JobContext[dict[str, Any]]) -> str:
    """Increments a counter inside a step body, then once more after it."""
    key = str(ctx.payload.get("counter", COUNTER))

    async def count_in_step() -> str:
        await ctx.state.increment(key, 1)
        return "counted"

    await ctx.step.run("a", count_in_step)
    ledger.write(ctx.run_id, "a", ctx.attempt, "got")
    if ctx.attempt == 1:
        await asyncio.sleep(3600)  # sync-ok: stopped here; the run is handed back
    await ctx.state.increment(key, 1)
    return "ok"


@app.job("quick", retries=5, backoff=0.1)
async def quick(ctx: JobContext[dict[str, Any]]) -> int:
    """One tiny step (the soak)."""

    def body() -> int:
        return 1

    return await ctx.step.run("one", body)


@app.job("sleeper", retries=0, timeout=1.0)
async def sleeper(ctx: JobContext[dict[str, Any]]) -> None:
    """Never returns: its 1 s timeout must end it."""
    ledger.write(ctx.run_id, "-", ctx.attempt, "start")
    await asyncio.Event().wait()


@app.job("blocker", retries=30, backoff=0.2)
async def blocker(ctx: JobContext[dict[str, Any]]) -> str:
    """On its first attempt, blocks the event loop (``time.sleep``) for
    ``seconds``, then writes a step: a zombie's late write."""
    ledger.write(ctx.run_id, "-", ctx.attempt, "begin")
    if ctx.attempt == 1:
        time.sleep(float(ctx.payload["seconds"]))  # noqa: ASYNC251 (on purpose)
    value = await ctx.step.run(
        "after", step_body, ctx.run_id, "after", ctx.attempt, 0, 0
    )
    ledger.write(ctx.run_id, "after", ctx.attempt, "got", value)
    await ctx.state.increment(str(ctx.payload.get("counter", COUNTER)), 1)
    ledger.write(ctx.run_id, "-", ctx.attempt, "return")
    return value


@app.job("always_fails", retries=1, backoff=0.05)
async def always_fails(ctx: JobContext[dict[str, Any]]) -> None:
    raise RuntimeError("this job always fails")
