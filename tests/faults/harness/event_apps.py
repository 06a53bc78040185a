"""The app the event, resume and cron fault scenarios' workers serve.

``stackshift worker tests.faults.harness.event_apps:app`` (from the repository
root), with ``$STACKSHIFT_REDIS_URL``, ``$STACKSHIFT_PREFIX`` and
``$FAULT_LEDGER`` set by the scenario (harness/event_workers.py).

Ledger lines (harness/ledger.py): ``sub`` start/end with the event's key (a run
an event made), ``w`` got with the event a waiter received (JSON), ``tick``
start/end with the cron tick.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
from typing import Any

from stackshift import JobContext, Stackshift

from .ledger import LedgerWriter

app = Stackshift(
    # Kills are what the scenarios inject: no run may turn poison from them.
    max_deliveries=1000,
    result_ttl=float(os.environ.get("FAULT_RESULT_TTL", "600")),
    dead_ttl=float(os.environ.get("FAULT_RESULT_TTL", "600")),
)
ledger = LedgerWriter.from_env()
QUEUE = "faults"
CRON_QUEUE = "faults-cron"


async def _busy() -> None:
    # A little work, so that kills land inside handlers too.
    await asyncio.sleep(random.uniform(0.0, 0.15))


@app.job("on-ping", on_event="ping", queue=QUEUE, retries=30, backoff=0.2)
async def on_ping(ctx: JobContext[dict[str, Any]]) -> int:
    """One run per ``ping`` event."""
    key = int(ctx.payload["k"])
    ledger.write(ctx.run_id, "sub", ctx.attempt, "start", str(key))
    await _busy()
    ledger.write(ctx.run_id, "sub", ctx.attempt, "end", str(key))
    return key


@app.job("await-ping", queue=QUEUE, retries=30, backoff=0.2)
async def await_ping(ctx: JobContext[dict[str, Any]]) -> Any:
    """Waits for the ``ping`` of its own key."""
    got = await ctx.step.wait_for_event(
        "w", event="ping", match={"k": ctx.payload["k"]}, timeout=600
    )
    ledger.write(ctx.run_id, "w", ctx.attempt, "got", json.dumps(got, sort_keys=True))
    await _busy()
    return got


@app.cron("tick", "* * * * * *", queue=CRON_QUEUE, retries=30, backoff=0.2)
async def tick(ctx: JobContext[dict[str, Any]]) -> int:
    """One run per second, however many workers serve CRON_QUEUE."""
    at = int(ctx.payload["tick"])
    ledger.write(ctx.run_id, "tick", ctx.attempt, "start", str(at))
    await _busy()
    ledger.write(ctx.run_id, "tick", ctx.attempt, "end", str(at))
    return at
