"""The job's own work, and the marks a cell reads back from the bench Redis.

Every system's job calls ``do_work`` (or ``do_work_batch`` for the raw loop): one
pipelined round trip that counts the job and, when the payload carries an
enqueue time, records its start latency. The job that makes the counter reach
the cell's target pushes the end time, so a driver waits on a blocking pop
instead of polling. Depends on the standard library and redis-py only: this
module is imported inside every peer's virtualenv.
"""

from __future__ import annotations

import os
import time
from typing import Any

import redis.asyncio as aioredis

URL_ENV = "BENCH_REDIS_URL"
# Where the jobs' own work and the cell's marks go, when not to the system's
# Redis: W12 (cost.py) measures the system's server alone, so the jobs' INCRs
# and the marks live on another one. Unset: the system's Redis, as before.
WORK_URL_ENV = "BENCH_WORK_URL"

DONE = "bench:done"  # INCR by every job
TARGET = "bench:target"  # the count at which the cell ends
FIRST = "bench:first"  # wall time the first job started
END = "bench:end"  # list: wall time the target was reached
LATENCY = "bench:latency"  # list: start latency per job, ms
STEPS = "bench:steps"  # INCR by every step (W4)
READY = "bench:ready"  # list: one entry per worker process that is up
STARTS = "bench:starts"  # list: wall time a resumed run's handler started (W8, W10)
TICKS = "bench:ticks"  # hash: cron tick (ms) -> runs made of it (W11)
TICK_LATENESS = "bench:tick-lateness"  # list: "<tick ms> <lateness ms>" (W11)

_client: Any = None


def bench_url() -> str:
    url = os.environ.get(URL_ENV)
    if not url:
        raise RuntimeError(f"${URL_ENV} is not set (the bench Redis)")
    return url


def work_url() -> str:
    """The Redis of the jobs' own work and of the marks (see WORK_URL_ENV)."""
    return os.environ.get(WORK_URL_ENV) or bench_url()


def client() -> Any:
    """This process's own connection to the bench Redis, for the jobs' work.

    Configured explicitly, so the same job costs the same under every system:
    redis-py 8 (stackshift's, streaq's and taskiq's venvs) times every read out
    after 5 s by default, which wraps each read in a timeout; redis-py 5 and 7
    (arq's and SAQ's venvs) set no timeout. No timeout here, for all of them.
    """
    global _client
    if _client is None:
        _client = aioredis.Redis.from_url(
            work_url(), socket_timeout=None, socket_connect_timeout=None
        )
    return _client


async def do_work(enqueued_at: float = 0.0, started: float | None = None) -> None:
    """One job's work: one pipelined round trip (plus one more for the first
    and the last job of a cell, which mark the start and the end).

    ``started``: when the handler started, if earlier than this call (a
    resumed run replays its steps first); its latency is counted from there."""
    if started is None:
        started = time.time()
    r = client()
    pipe = r.pipeline(transaction=False)
    pipe.incr(DONE)
    pipe.get(TARGET)
    if enqueued_at > 0:
        pipe.rpush(LATENCY, round((started - enqueued_at) * 1000, 4))
    reply = await pipe.execute()
    await _mark(r, [int(reply[0])], reply[1], started)


async def do_work_batch(enqueued_at: list[float]) -> None:
    """The work of a batch of jobs in one pipelined round trip (the raw loop)."""
    started = time.time()
    r = client()
    pipe = r.pipeline(transaction=False)
    for _ in enqueued_at:
        pipe.incr(DONE)
    pipe.get(TARGET)
    for t in enqueued_at:
        if t > 0:
            pipe.rpush(LATENCY, round((started - t) * 1000, 4))
    reply = await pipe.execute()
    n = len(enqueued_at)
    await _mark(r, [int(v) for v in reply[:n]], reply[n], started)


async def _mark(r: Any, counts: list[int], target: Any, started: float) -> None:
    if 1 in counts:
        await r.set(FIRST, repr(started))
    if target is not None and int(target) in counts:
        await r.rpush(END, repr(time.time()))


async def note_start(started: float) -> None:
    """A resumed run's work (W8, W10): count it and record when its handler
    started, as wall time (the driver subtracts when it sent the event)."""
    r = client()
    pipe = r.pipeline(transaction=False)
    pipe.incr(DONE)
    pipe.get(TARGET)
    pipe.rpush(STARTS, repr(started))
    reply = await pipe.execute()
    await _mark(r, [int(reply[0])], reply[1], started)


async def note_tick(tick_ms: int, started: float) -> None:
    """A cron tick's run (W11): count the runs of its tick, record its lateness."""
    r = client()
    pipe = r.pipeline(transaction=False)
    pipe.incr(DONE)
    pipe.hincrby(TICKS, str(tick_ms), 1)
    pipe.rpush(TICK_LATENESS, f"{tick_ms} {started * 1000 - tick_ms:.3f}")
    await pipe.execute()


async def step_work(i: int) -> int:
    """Step ``i`` of a W4 run: one Redis round trip."""
    return int(await client().incr(STEPS))


async def close_client() -> None:
    global _client
    if _client is not None:
        client_, _client = _client, None
        await client_.aclose()
