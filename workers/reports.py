"""A cron job: build the daily report at 03:00 UTC, one run per tick however
many workers serve the ``reports`` queue. The workers make the ticks: nothing
is enqueued by hand.

Serve: ``stackshift worker workers.reports:app --queue reports``
"""

from __future__ import annotations

import msgspec

from stackshift import JobContext, Stackshift

from .services import build_daily_report

app = Stackshift()  # $STACKSHIFT_REDIS_URL, else redis://localhost:6379/0

QUEUE = "reports"
SCHEDULE = "0 3 * * *"
REPORTS_MADE = "reports:made"  # a counter of the reports built


class Tick(msgspec.Struct, frozen=True):
    """The payload stackshift gives each cron run."""

    cron: str
    tick: int  # the tick's time, ms since the epoch
    missed: int = 0  # ticks missed before it (workers were down)


@app.cron("dailyReport", SCHEDULE, queue=QUEUE)
async def daily_report(ctx: JobContext[Tick]) -> dict[str, str | int]:
    name = await ctx.step.run("build-report", build_daily_report, ctx.payload.tick)
    await ctx.state.increment(REPORTS_MADE)
    return {"report": name, "tick": ctx.payload.tick}
