"""Cron jobs for the tests that run them in worker subprocesses.

Each run appends a line to the effects ledger named by ``$DURABILITY_LEDGER``
(tests/support/ledger.py): its cron, tick, missed count, run id and pid. A
worker makes the ticks of the crons whose queue it serves: ``crons`` (a fast
job, every second) or ``crons-slow`` (a job slower than its period).
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from stackshift import JobContext, Stackshift
from tests.support import ledger

app = Stackshift()
LEDGER = os.environ.get("DURABILITY_LEDGER", os.devnull)
SLOW_SECONDS = 2.5


def _note(ctx: JobContext[dict[str, Any]], event: str) -> None:
    ledger.append(
        LEDGER,
        event=event,
        cron=ctx.payload["cron"],
        tick=ctx.payload["tick"],
        missed=ctx.payload["missed"],
        run_id=ctx.run_id,
        attempt=ctx.attempt,
        pid=os.getpid(),
    )


@app.cron("every-second", "* * * * * *", queue="crons")
async def every_second(ctx: JobContext[dict[str, Any]]) -> int:
    _note(ctx, "tick")
    return int(ctx.payload["tick"])


@app.cron("slow-every-second", "* * * * * *", queue="crons-slow")
async def slow_every_second(ctx: JobContext[dict[str, Any]]) -> int:
    _note(ctx, "start")
    await asyncio.sleep(SLOW_SECONDS)  # sync-ok: the job's own slowness
    _note(ctx, "end")
    return int(ctx.payload["tick"])
