"""A small app for CLI tests (`stackshift worker tests.support.cli_app:app`)."""

from __future__ import annotations

from typing import Any

from stackshift import JobContext, NonRetriableError, Stackshift

app = Stackshift()  # $STACKSHIFT_REDIS_URL and $STACKSHIFT_PREFIX


def shout(text: str) -> str:
    return text.upper()


@app.job("shout")
async def shout_job(ctx: JobContext[dict[str, str]]) -> str:
    ctx.log.info("shouting", text=ctx.payload["text"])
    return await ctx.step.run("shout", shout, ctx.payload["text"])


@app.job("refuse", retries=0)
async def refuse(ctx: JobContext[Any]) -> None:
    raise NonRetriableError("refused on purpose")


@app.job("collector")
async def collector(ctx: JobContext[Any]) -> dict[str, Any]:
    """How the worker process's garbage collector is set."""
    import gc

    return {"thresholds": list(gc.get_threshold()), "frozen": gc.get_freeze_count()}
