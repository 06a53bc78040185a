"""Jobs the dashboard tests run, registered on the test's own app."""

from __future__ import annotations

import dataclasses
from typing import Any

import anyio

from stackshift import JobContext, NonRetriableError, Stackshift


@dataclasses.dataclass
class Upstream:
    """What ``fragile`` depends on: it fails while ``up`` is False."""

    up: bool = False


async def fetch_input(name: str) -> dict[str, Any]:
    await anyio.sleep(0.02)  # sync-ok: some work, so the waterfall has widths
    return {"name": name, "rows": 3}


async def transform(data: dict[str, Any]) -> int:
    await anyio.sleep(0.04)  # sync-ok: simulated work
    return int(data["rows"]) * 2


def store_output(rows: int) -> str:
    return f"stored {rows} rows"


def register_jobs(app: Stackshift, upstream: Upstream) -> None:
    @app.job("steps")
    async def steps(ctx: JobContext[dict[str, Any]]) -> dict[str, Any]:
        data = await ctx.step.run("fetch-input", fetch_input, ctx.payload["name"])
        rows = await ctx.step.run("transform", transform, data)
        note = await ctx.step.run("store-output", store_output, rows)
        return {"rows": rows, "note": note}

    @app.job("fragile", retries=0)
    async def fragile(ctx: JobContext[dict[str, Any]]) -> dict[str, Any]:
        await ctx.step.run("prepare", fetch_input, "fragile")
        if not upstream.up:
            raise RuntimeError(f"upstream said no: {ctx.payload.get('why', '')}")
        return {"fixed": True}

    @app.job("refuse", retries=0)
    async def refuse(ctx: JobContext[dict[str, Any]]) -> None:
        raise NonRetriableError(str(ctx.payload.get("message", "refused")))
