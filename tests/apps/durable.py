"""Jobs for the durability tests.

Every step appends ``start`` and ``end`` lines (run id, step, attempt, pid) to an
effects ledger outside Redis, the file named by ``$DURABILITY_LEDGER``. The Redis
URL and key prefix come from ``$STACKSHIFT_REDIS_URL`` and ``$STACKSHIFT_PREFIX``;
``$DURABILITY_MAX_DELIVERIES`` sets ``max_deliveries``.
"""

from __future__ import annotations

import os
import time
from typing import Any

import anyio
import msgspec

from stackshift import JobContext, NonRetriableError, Stackshift
from tests.support import ledger

app = Stackshift(max_deliveries=int(os.environ.get("DURABILITY_MAX_DELIVERIES", "5")))
LEDGER = os.environ.get("DURABILITY_LEDGER", os.devnull)
GATE_POLL_SECONDS = 0.05


class Steps(msgspec.Struct, frozen=True):
    """What a ``steps`` run does; every field has a harmless default."""

    steps: int = 4
    pause: float = 0.0  # seconds each step takes
    slow_step: int = 0  # this step takes slow_pause instead, on attempt 1 only
    slow_pause: float = 0.0
    gate_step: int = 0  # this step waits until the file `gate` exists
    gate: str = ""
    fail_step: int = 0  # this step raises NonRetriableError while `fail_flag` exists
    fail_flag: str = ""
    sync_step: int = 0  # this step is a sync function (it runs in a thread)
    counter: str = "steps-done"


class StepOutcome(msgspec.Struct, frozen=True):
    value: int
    pid: int


class Effect(msgspec.Struct, frozen=True):
    """One step's instructions, as its step function receives them."""

    run_id: str
    step: int
    attempt: int
    pause: float
    gate: str
    fail_flag: str


def _record(effect: Effect, event: str) -> None:
    ledger.append(
        LEDGER,
        event=event,
        run_id=effect.run_id,
        step=f"step-{effect.step}",
        attempt=effect.attempt,
        pid=os.getpid(),
    )


def _begin(effect: Effect) -> None:
    _record(effect, "start")
    if effect.fail_flag and os.path.exists(effect.fail_flag):
        _record(effect, "fail")
        raise NonRetriableError(f"step-{effect.step}: the fail flag is set")


async def _wait_for_file(path: str) -> None:
    # The test creates it from another process: there is no event to wait on.
    while not await anyio.Path(path).exists():  # noqa: ASYNC110
        await anyio.sleep(GATE_POLL_SECONDS)


async def run_step(effect: Effect) -> StepOutcome:
    _begin(effect)
    await anyio.sleep(effect.pause)
    if effect.gate:
        await _wait_for_file(effect.gate)
    _record(effect, "end")
    return StepOutcome(effect.step * effect.step, os.getpid())


def run_step_blocking(effect: Effect) -> StepOutcome:
    """The same step as a sync function: it blocks its thread, not the loop."""
    _begin(effect)
    time.sleep(effect.pause)
    _record(effect, "end")
    return StepOutcome(effect.step * effect.step, os.getpid())


def _effect(ctx: JobContext[Steps], step: int) -> Effect:
    p = ctx.payload
    slow = step == p.slow_step and ctx.attempt == 1
    return Effect(
        run_id=ctx.run_id,
        step=step,
        attempt=ctx.attempt,
        pause=p.slow_pause if slow else p.pause,
        gate=p.gate if step == p.gate_step else "",
        fail_flag=p.fail_flag if step == p.fail_step else "",
    )


@app.job("steps")
async def steps(ctx: JobContext[Steps]) -> dict[str, int]:
    """``steps`` checkpointed steps; one counter increment after each."""
    total = 0
    for step in range(1, ctx.payload.steps + 1):
        effect = _effect(ctx, step)
        if step == ctx.payload.sync_step:
            outcome = await ctx.step.run(f"step-{step}", run_step_blocking, effect)
        else:
            outcome = await ctx.step.run(f"step-{step}", run_step, effect)
        total += outcome.value
        await ctx.state.increment(ctx.payload.counter)
    return {"total": total, "pid": os.getpid()}


class Signup(msgspec.Struct, rename="camel", frozen=True):
    user_id: str
    count: int


@app.job("typed")
async def typed(ctx: JobContext[Signup]) -> str:
    return f"{ctx.payload.user_id}:{ctx.payload.count}"


@app.job("echo")
async def echo(ctx: JobContext[Any]) -> Any:
    return ctx.payload
