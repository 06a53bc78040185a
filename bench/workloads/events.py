"""Workloads of events and durable time (issue #11), written against the same
``Adapter`` as driver.py's:

- W8: an event resumes a run waiting for it (``step.wait_for_event``), on an
  idle worker, one at a time: from ``send_event`` returning to the resumed
  attempt's handler starting (the handler records its start). The raw baseline
  does the same path by hand, and also the one-hop floor (an entry that a
  worker blocked on the stream reads at once);
- W9: N runs sleeping 1-5 s (random, seeded): how late each resumed handler
  starts after its due time; and (``phase: hold``) N runs sleeping an hour:
  Redis bytes per sleeping run, and the worker's and Redis' CPU while they
  sleep. Peers: delayed jobs, due that long after their enqueue;
- W10: fan-out: one event resuming N waiters, N events resuming N waiters
  (one each): resumes per second, from the first send to the last resumed
  handler's start;
- W11: a one-second cron schedule served by three worker processes for a
  while: runs made of each tick (exactly one), lateness of each tick's run.

Standard library and redis-py only (imported in every peer's venv).
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

from . import common
from .driver import (
    Adapter,
    CellError,
    Unsupported,
    Workers,
    Workload,
    _quantile,
    _timeout,
    check_done,
    set_target,
    used_memory,
    wait_count,
    wait_end,
)

W8_EVENT = "bench.go"
FAN_EVENT = "bench.fan"  # W10: one event, every waiter
EACH_EVENT = "bench.each"  # W10: one event per waiter (matched on k)
WARM_EVENT = "bench.warm"
SEND_CONCURRENCY = 100  # W10: events in flight at once
SEED = 11  # W9's durations: the same for every system


async def wait_suspended(a: Adapter, n: int, workers: Workers) -> None:
    """Until ``n`` runs are suspended (waiting without holding the worker)."""
    deadline = time.monotonic() + _timeout(n)
    while (found := await a.suspended()) < n:
        workers.check_alive()
        if time.monotonic() > deadline:
            raise CellError(f"{found} runs suspended, expected {n}")
        await asyncio.sleep(0.01)


async def pop_start(r: Any, workers: Workers, seconds: float = 30.0) -> float:
    """The next resumed handler's start time (wall clock)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        popped = await r.blpop([common.STARTS], timeout=1)
        if popped:
            return float(popped[1])
        workers.check_alive()
    raise CellError(f"no resumed run started within {seconds:.0f} s")


def _ms(values: list[float]) -> dict[str, float]:
    """p50 / p99 / max of ``values`` (ms)."""
    ordered = sorted(values)
    return {
        "p50_ms": _quantile(ordered, 0.50),
        "p99_ms": _quantile(ordered, 0.99),
        "max_ms": ordered[-1],
    }


async def w8(a: Adapter, r: Any, p: dict[str, Any]) -> dict[str, Any]:
    """Event -> resumed run start latency on an idle worker, one at a time."""
    n = int(p["n"])
    pace = float(p.get("pace_ms", 5.0)) / 1000
    after: list[float] = []
    before: list[float] = []
    floor: list[float] = []
    floor_before: list[float] = []
    with Workers(a, a.default_concurrency, mode="W8") as workers:
        # n + 1 waiters: the first event is a warm-up (connections, scripts).
        await a.add_waiters(W8_EVENT, list(range(n + 1)))
        await wait_suspended(a, n + 1, workers)
        await asyncio.sleep(0.3)
        for k in range(n + 1):
            began = time.time()
            await a.send_event(W8_EVENT, k)
            sent = time.time()
            started = await pop_start(r, workers)
            if k:
                after.append((started - sent) * 1000)
                before.append((started - began) * 1000)
            await asyncio.sleep(pace)  # the resumed run ends: the worker is idle
        if a.has_direct:
            for i in range(n + 1):
                began = time.time()
                await a.send_direct()
                sent = time.time()
                started = await pop_start(r, workers)
                if i:
                    floor.append((started - sent) * 1000)
                    floor_before.append((started - began) * 1000)
                await asyncio.sleep(pace)
    expected = (n + 1) * (2 if floor else 1)
    done = await check_done(r, expected)
    if await r.llen(common.STARTS):
        raise CellError("a run was resumed more than once")
    out = _ms(after) | {
        "p50_from_send_ms": _quantile(sorted(before), 0.5),
        "p99_from_send_ms": _quantile(sorted(before), 0.99),
        "n": n,
        "checked": done - (n + 1 if floor else 0) - 1,
    }
    if floor:
        hop, hop_before = _ms(floor), _ms(floor_before)
        out |= {
            "floor_p50_ms": hop["p50_ms"],
            "floor_p99_ms": hop["p99_ms"],
            "floor_p50_from_send_ms": hop_before["p50_ms"],
            "floor_p99_from_send_ms": hop_before["p99_ms"],
        }
    return out


async def _warm_up(a: Adapter, r: Any, workers: Workers) -> None:
    """One sleeper of 50 ms, done: the worker is up, its scripts loaded."""
    await a.enqueue_sleepers([0.05], hold=False)
    await wait_count(r, common.DONE, 1, workers)
    await r.delete(common.LATENCY, common.FIRST, common.END)


async def w9(a: Adapter, r: Any, p: dict[str, Any]) -> dict[str, Any]:
    """Durable sleeps: wake lateness, or (hold) bytes and CPU while asleep."""
    n = int(p["n"])
    concurrency = int(p.get("concurrency") or a.default_concurrency)
    if p.get("phase") == "hold":
        return await _w9_hold(a, r, p, n, concurrency)
    rng = random.Random(SEED)
    lo, hi = float(p.get("min_s", 1.0)), float(p.get("max_s", 5.0))
    seconds = [rng.uniform(lo, hi) for _ in range(n)]
    with Workers(a, concurrency, mode="W9") as workers:
        await _warm_up(a, r, workers)
        await set_target(r, n + 1)
        began = time.monotonic()
        await a.enqueue_sleepers(seconds, hold=False)
        enqueued = time.monotonic() - began
        await wait_end(r, workers, _timeout(n) + hi)
    done = await check_done(r, n + 1)
    late = [float(v) for v in await r.lrange(common.LATENCY, 0, -1)]
    if len(late) != n:
        raise CellError(f"{len(late)} wake-ups recorded, expected {n}")
    return _ms(late) | {
        "min_ms": min(late),
        "enqueue_s": enqueued,
        "n": n,
        "checked": done - 1,
        "concurrency": concurrency,
    }


async def _redis_cpu(r: Any) -> float:
    info = await r.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


async def _w9_hold(
    a: Adapter, r: Any, p: dict[str, Any], n: int, concurrency: int
) -> dict[str, Any]:
    window = float(p.get("seconds", 5.0))
    with Workers(a, concurrency, mode="W9") as workers:
        await _warm_up(a, r, workers)
        # Both readings without the enqueuing client's connections: their
        # buffers are not what we measure.
        await a.close()
        await asyncio.sleep(0.5)
        base = await used_memory(r)
        await a.open()
        await a.enqueue_sleepers([3600.0] * n, hold=True)
        await wait_suspended(a, n, workers)
        await a.close()
        await asyncio.sleep(1.0)  # the last suspends' writes settle
        bytes_per_run = (await used_memory(r) - base) / n
        cpu, redis_cpu, began = (
            workers.cpu_seconds(),
            await _redis_cpu(r),
            time.monotonic(),
        )
        await asyncio.sleep(window)
        elapsed = time.monotonic() - began
        cpu = workers.cpu_seconds() - cpu
        redis_cpu = await _redis_cpu(r) - redis_cpu
        workers.check_alive()
        rss = workers.rss_kb()
    done = int(await r.get(common.DONE) or 0)
    if done != 1:  # the warm-up only: nothing woke early
        raise CellError(f"{done - 1} runs woke during an hour's sleep")
    return {
        "bytes_per_suspended": bytes_per_run,
        "worker_cpu_ms_per_s": cpu / elapsed * 1000,
        "redis_cpu_ms_per_s": redis_cpu / elapsed * 1000,
        "worker_rss_mb": rss / 1024,
        "window_s": elapsed,
        "n": n,
        "checked": n,
        "concurrency": concurrency,
    }


async def w10(a: Adapter, r: Any, p: dict[str, Any]) -> dict[str, Any]:
    """Fan-out: one event to N waiters (``events: one``) or N events to N
    waiters (``events: each``); resumes per second."""
    n = int(p["n"])
    each = p.get("events") == "each"
    concurrency = int(p.get("concurrency") or a.default_concurrency)
    event = EACH_EVENT if each else FAN_EVENT
    with Workers(a, concurrency, mode="W10") as workers:
        await a.add_waiters(WARM_EVENT, [0])
        await wait_suspended(a, 1, workers)
        await a.send_event(WARM_EVENT, 0)
        await wait_count(r, common.DONE, 1, workers)
        # As many sends at once as the timed ones, matching no waiter: the
        # client's connections are open before the clock starts.
        await asyncio.gather(
            *(a.send_event(WARM_EVENT, -1) for _ in range(SEND_CONCURRENCY))
        )
        await a.add_waiters(event, list(range(n)) if each else [None] * n)
        await wait_suspended(a, n, workers)
        await r.delete(common.STARTS)
        await set_target(r, n + 1)
        began = time.time()
        if each:
            for start in range(0, n, SEND_CONCURRENCY):
                keys = range(start, min(n, start + SEND_CONCURRENCY))
                await asyncio.gather(*(a.send_event(event, k) for k in keys))
        else:
            await a.send_event(event, None)
        sent = time.time()
        await wait_end(r, workers, _timeout(n))
    done = await check_done(r, n + 1)
    starts = [float(v) for v in await r.lrange(common.STARTS, 0, -1)]
    if len(starts) != n:
        raise CellError(f"{len(starts)} resumed runs recorded, expected {n}")
    span = max(starts) - began
    return {
        "resumes_per_s": n / span,
        "first_ms": (min(starts) - began) * 1000,
        "last_ms": span * 1000,
        "send_ms": (sent - began) * 1000,
        "n": n,
        "checked": done - 1,
        "concurrency": concurrency,
    }


async def w11(a: Adapter, r: Any, p: dict[str, Any]) -> dict[str, Any]:
    """A one-second cron schedule, ``procs`` workers, for ``seconds``."""
    if not a.has_cron:
        raise Unsupported(f"{a.name} has no cron schedules")
    seconds = float(p.get("seconds", 60.0))
    procs = int(p.get("procs", 3))
    with Workers(a, a.default_concurrency, procs, mode="W11") as workers:
        await wait_count(r, common.DONE, 1, workers)  # a worker is ticking
        began = time.time()
        while time.time() < began + seconds:
            workers.check_alive()
            await asyncio.sleep(0.5)
        ended = time.time()
        await asyncio.sleep(1.5)  # the window's last tick's runs land
        workers.check_alive()
    # Every whole second after the first full one, until the window's end.
    ticks = range((int(began) + 1) * 1000, int(ended) * 1000 + 1, 1000)
    made = {int(k): int(v) for k, v in (await r.hgetall(common.TICKS)).items()}
    counts = [made.get(t, 0) for t in ticks]
    late = []
    for line in await r.lrange(common.TICK_LATENESS, 0, -1):
        tick, ms = line.split()
        if int(tick) in ticks:
            late.append(float(ms))
    if not late:
        raise CellError("no tick's run in the window")
    return _ms(late) | {
        "ticks": len(counts),
        "runs_per_tick_min": float(min(counts)),
        "runs_per_tick_max": float(max(counts)),
        "ticks_not_one": sum(1 for c in counts if c != 1),
        "procs": procs,
        "checked": sum(counts),
    }


WORKLOADS: dict[str, Workload] = {"W8": w8, "W9": w9, "W10": w10, "W11": w11}
