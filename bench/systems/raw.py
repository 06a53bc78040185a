"""Raw redis-py baselines: the same Redis work done by hand, no job system.

W1 an awaited XADD loop; W1b pipelined XADD; the worker a loop of batched
XREADGROUP, the batch's work in one pipeline, and one batched XACK; W3 the same
worker blocking on XREADGROUP; W4 ten awaited round trips, one per step. Events,
sleeps and child runs (W8-W10, W4i): raw_durable.py.

``raw-jobs`` is the same loop with each job's work as its own awaited round
trip, run concurrently (``asyncio.gather``), as a job system runs user code that
awaits its own commands: batched XREADGROUP of ``concurrency`` entries, the
jobs' round trips, one batched XACK. The pipelined loop is the ceiling for
Redis work; ``raw-jobs`` is the ceiling for jobs written as jobs are written.
Runs in any venv that has redis-py (the project's, for the table's baseline).
"""

from __future__ import annotations

import asyncio
import os
import sys
from importlib import metadata
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from bench.systems import raw_durable
from bench.workloads import common, driver

STREAM = "raw:stream"
GROUP = "raw"
BATCH = 100  # entries per XREADGROUP
PIPELINE = 1000  # XADDs per pipelined round trip (W1b)


class RawAdapter(driver.Adapter):
    name = "raw"
    module = "bench.systems.raw"
    default_concurrency = BATCH
    has_concurrency = False

    def __init__(self) -> None:
        self._r: Any = None

    async def open(self) -> None:
        self._r = aioredis.Redis.from_url(common.bench_url())

    async def close(self) -> None:
        if self._r is not None:
            r, self._r = self._r, None
            await r.aclose()

    async def enqueue(self, enqueued_at: float) -> None:
        await self._r.xadd(STREAM, {"t": repr(enqueued_at)})

    async def enqueue_many(self, n: int) -> None:
        fields = {"t": "0.0"}
        for start in range(0, n, PIPELINE):
            pipe = self._r.pipeline(transaction=False)
            for _ in range(min(PIPELINE, n - start)):
                pipe.xadd(STREAM, fields)
            await pipe.execute()

    async def queued(self) -> int:
        return int(await self._r.xlen(STREAM))

    async def chain(self, steps: int) -> None:
        for i in range(steps):
            await common.step_work(i)

    async def serve(self, concurrency: int, mode: str = "") -> None:
        if mode in ("W8", "W10"):
            await raw_durable.serve_events(concurrency)
        elif mode == "W9":
            await raw_durable.serve_delayed()
        elif mode == "W4i":
            await raw_durable.serve_chain(concurrency)
        else:
            await self._serve(BATCH, self._work)

    # --- events and durable time: raw_durable.py ----------------------------------

    has_direct = True

    async def add_waiters(self, event: str, keys: list[int | None]) -> None:
        await raw_durable.add_waiters(self._r, event, keys)

    async def suspended(self) -> int:
        return await raw_durable.suspended(self._r)

    async def send_event(self, event: str, key: int | None) -> None:
        await raw_durable.send_event(self._r, event, key)

    async def send_direct(self) -> None:
        await raw_durable.send_direct(self._r)

    async def enqueue_sleepers(self, seconds: list[float], *, hold: bool) -> None:
        await raw_durable.enqueue_sleepers(self._r, seconds, hold=hold)

    async def chain_invoke(self, steps: int) -> None:
        await raw_durable.chain_invoke(self._r, steps)

    @staticmethod
    async def _work(entries: list[Any]) -> None:
        await common.do_work_batch([float(f[b"t"]) for _, f in entries])

    async def _serve(self, count: int, work: Any) -> None:
        r = aioredis.Redis.from_url(common.bench_url())
        try:
            await r.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        consumer = f"raw-{os.getpid()}"
        while True:
            reply = await r.xreadgroup(
                GROUP, consumer, {STREAM: ">"}, count=count, block=1000
            )
            if not reply:
                continue
            entries = reply[0][1]
            await work(entries)
            await r.xack(STREAM, GROUP, *(entry_id for entry_id, _ in entries))

    def versions(self) -> dict[str, str]:
        return {name: metadata.version(name) for name in ("redis", "hiredis")} | {
            "python": sys.version.split()[0]
        }


class RawJobsAdapter(RawAdapter):
    """The raw loop with one awaited round trip per job, ``concurrency`` at once."""

    name = "raw-jobs"
    module = "bench.systems.raw_jobs"
    default_concurrency = 10  # as stackshift's worker
    has_concurrency = True

    async def serve(self, concurrency: int, mode: str = "") -> None:
        if mode:  # events, sleeps, child runs: the raw loops of raw_durable.py
            await super().serve(concurrency, mode)
        else:
            await self._serve(concurrency, self._each)

    @staticmethod
    async def _each(entries: list[Any]) -> None:
        await asyncio.gather(*(common.do_work(float(f[b"t"])) for _, f in entries))


if __name__ == "__main__":
    raise SystemExit(driver.main(RawAdapter()))
