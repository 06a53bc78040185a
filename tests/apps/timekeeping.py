"""Jobs that sleep, wait for events, invoke children and get cancelled, for
the tests that run them in worker subprocesses (events and durable time).

Every step body appends ``start`` and ``end`` lines to the effects ledger named
by ``$DURABILITY_LEDGER`` (tests/support/ledger.py), so a test can tell what
really ran. ``$STACKSHIFT_REDIS_URL`` and ``$STACKSHIFT_PREFIX`` choose the
Redis and key prefix.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from stackshift import JobContext, Stackshift
from tests.support import ledger

app = Stackshift()
LEDGER = os.environ.get("DURABILITY_LEDGER", os.devnull)


async def effect(run_id: str, step: str, attempt: int) -> int:
    """A step's side effect, seen from outside Redis."""
    ledger.append(LEDGER, event="start", run_id=run_id, step=step, attempt=attempt)
    ledger.append(LEDGER, event="end", run_id=run_id, step=step, attempt=attempt)
    return os.getpid()


@app.job("nap-between", queue="naps")
async def nap_between(ctx: JobContext[dict[str, Any]]) -> dict[str, int]:
    """A step, a durable sleep of ``seconds``, a step."""
    before = await ctx.step.run("before", effect, ctx.run_id, "before", ctx.attempt)
    await ctx.step.sleep("nap", float(ctx.payload["seconds"]))
    after = await ctx.step.run("after", effect, ctx.run_id, "after", ctx.attempt)
    return {"before": before, "after": after}


@app.job("await-between", queue="naps")
async def await_between(ctx: JobContext[dict[str, Any]]) -> dict[str, Any]:
    """A step, a wait for the ``go`` event of its ``key``, a step."""
    before = await ctx.step.run("before", effect, ctx.run_id, "before", ctx.attempt)
    got = await ctx.step.wait_for_event(
        "go", event="go", match={"key": ctx.payload["key"]}, timeout=120
    )
    after = await ctx.step.run("after", effect, ctx.run_id, "after", ctx.attempt)
    return {"before": before, "after": after, "got": got}


@app.job("cancellable", queue="naps")
async def cancellable(ctx: JobContext[dict[str, Any]]) -> str:
    """Runs until it is cancelled; says so in the ledger."""
    ledger.append(LEDGER, event="running", run_id=ctx.run_id, attempt=ctx.attempt)
    try:
        await asyncio.sleep(3600)  # sync-ok: stopped by a cancel, not by time
    except asyncio.CancelledError:
        ledger.append(LEDGER, event="cancelled", run_id=ctx.run_id)
        raise
    return "not cancelled"


@app.job("child-echo", queue="naps")
async def child_echo(ctx: JobContext[dict[str, Any]]) -> dict[str, Any]:
    ctx.log.info("child_working")
    return {"echo": ctx.payload, "correlation_id": ctx.correlation_id}


@app.job("parent-invoke", queue="naps")
async def parent_invoke(ctx: JobContext[dict[str, Any]]) -> Any:
    before = await ctx.step.run("before", effect, ctx.run_id, "before", ctx.attempt)
    child = await ctx.step.invoke("child", "child-echo", ctx.payload)
    return {"before": before, "child": child}
