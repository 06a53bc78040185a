"""W12: what one completed run costs Redis, for any system.

The cell starts a Redis of its own (the *measured* one) and points the system
under test at it; the jobs' own work (``common.do_work``'s round trip) and the
cell's marks go to the bench's server instead (``$BENCH_WORK_URL``), so the
measured server sees the system's commands and nothing else. Then:

1. enqueue N no-op jobs, awaited one at a time (the system's ``enqueue``, as a
   request handler would; ``bulk``: its ``enqueue_many``);
2. drain them with one worker process at the cell's concurrency, as W2 does.

``INFO`` is read before, between and after the phases (its counters are
cumulative; a fresh server per cell means nothing else touched them):

- commands: ``INFO commandstats`` calls, per command. Commands a script runs
  (``redis.call``) are counted too, under their own names, as Redis counts
  them; ``eval``/``evalsha``/``fcall`` are the script calls themselves.
- reads: ``total_reads_processed``, the socket reads of requests (about one
  per round trip a client makes, however many commands it pipelines).
- bytes in: ``total_net_input_bytes``, what clients sent (requests).
- AOF bytes: growth of ``aof_current_size``. The measured server runs with
  ``appendonly yes``, ``appendfsync everysec`` (the set-up docs/reliability.md
  recommends): the AOF holds the write effects of every command and script,
  which is also the stream a replica would receive; it stands for "bytes
  written". ``aof: false`` in the params turns it off.
- Redis CPU: ``used_cpu_user`` + ``used_cpu_sys`` (the whole redis-server
  process, its AOF fsync thread included).

A second after the drain, the same counters over one idle second show what the
system costs Redis when there is nothing to do (``idle_*``); the drain's
figures include at most half a second of that (the settle time).
Standard library and redis-py only (it runs in every peer's venv).
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import redis.asyncio as aioredis

from bench.server import BenchRedis

from . import common, driver

SCRIPT_CALLS = ("eval", "evalsha", "eval_ro", "evalsha_ro", "fcall", "fcall_ro")
AOF_ARGS = (
    "--appendonly", "yes", "--appendfsync", "everysec",
    "--auto-aof-rewrite-percentage", "0",  # no rewrite mid-cell
)  # fmt: skip
# Our INFO request, as sent (*2 $4 INFO $10 everything): not the system's bytes.
INFO_BYTES = len(b"*2\r\n$4\r\nINFO\r\n$10\r\neverything\r\n")
SETTLE_SECONDS = 0.5  # after the last job: its run's finish still being written
IDLE_SECONDS = 1.0


class Snapshot:
    """The cumulative counters of the measured server at one moment."""

    def __init__(self, info: dict[str, Any]) -> None:
        self.commands: dict[str, int] = {}
        self.usec: dict[str, int] = {}
        for key, value in info.items():
            if key.startswith("cmdstat_") and isinstance(value, dict):
                name = key.removeprefix("cmdstat_")
                self.commands[name] = int(value["calls"])
                self.usec[name] = int(value["usec"])
        self.reads = int(info["total_reads_processed"])
        self.bytes_in = int(info["total_net_input_bytes"])
        self.aof = int(info.get("aof_current_size", 0))
        self.cpu = float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
        self.at = time.monotonic()


async def snapshot(probe: Any) -> Snapshot:
    return Snapshot(await probe.info("everything"))


def delta(before: Snapshot, after: Snapshot, runs: int) -> dict[str, Any]:
    """Per-run costs between two snapshots. The INFO that took ``before`` is
    counted in ``after``: it is ours, not the system's, and is taken out."""
    calls = {
        name: n - before.commands.get(name, 0) for name, n in after.commands.items()
    }
    usec = {name: n - before.usec.get(name, 0) for name, n in after.usec.items()}
    if calls.get("info"):
        usec["info"] -= usec["info"] // calls["info"]
        calls["info"] -= 1
    calls = {name: n for name, n in calls.items() if n > 0}
    return {
        "calls_per_run": sum(calls.values()) / runs,
        "scripts_per_run": sum(calls.get(s, 0) for s in SCRIPT_CALLS) / runs,
        "reads_per_run": (after.reads - before.reads - 1) / runs,
        "bytes_in_per_run": (after.bytes_in - before.bytes_in - INFO_BYTES) / runs,
        "aof_bytes_per_run": (after.aof - before.aof) / runs,
        "redis_cpu_us_per_run": (after.cpu - before.cpu) * 1e6 / runs,
        "seconds": after.at - before.at,
        "commands": {
            name: n / runs for name, n in sorted(calls.items(), key=lambda c: -c[1])
        },
        "command_usec": {name: usec[name] / runs for name in calls},
    }


def _flat(phases: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Headline floats (the report summarises floats only): the whole run's
    cost (enqueue + drain), and each phase's under its prefix."""
    out: dict[str, Any] = {}
    metrics = [k for k, v in phases["drain"].items() if k.endswith("_per_run")]
    for metric in metrics:
        out[metric] = float(phases["enqueue"][metric] + phases["drain"][metric])
        for phase in ("enqueue", "drain"):
            out[f"{phase}_{metric}"] = float(phases[phase][metric])
    commands: dict[str, float] = {}
    for phase in ("enqueue", "drain"):
        for name, n in phases[phase]["commands"].items():
            commands[name] = commands.get(name, 0.0) + n
    out["commands"] = dict(sorted(commands.items(), key=lambda c: -c[1]))
    out["phases"] = phases
    return out


async def w12(a: driver.Adapter, params: dict[str, Any]) -> dict[str, Any]:
    n = int(params["n"])
    concurrency = int(params.get("concurrency") or a.default_concurrency)
    args = AOF_ARGS if params.get("aof", True) else ()
    with BenchRedis(args=args) as server:
        # The system speaks to the measured server; the work and marks go to
        # the bench's (the URL the cell was given). Worker processes inherit both.
        os.environ[common.WORK_URL_ENV] = common.bench_url()
        os.environ[common.URL_ENV] = server.url
        marks = aioredis.Redis.from_url(common.work_url())
        probe = aioredis.Redis.from_url(server.url)
        try:
            await probe.ping()
            return await _measure(a, marks, probe, n, concurrency, params) | {
                "aof": bool(args)
            }
        finally:
            await a.close()
            await common.close_client()
            await marks.aclose()
            await probe.aclose()


async def _measure(
    a: driver.Adapter,
    marks: Any,
    probe: Any,
    n: int,
    concurrency: int,
    params: dict[str, Any],
) -> dict[str, Any]:
    start = await snapshot(probe)
    await a.open()
    if params.get("bulk"):
        await a.enqueue_many(n)
    else:
        for _ in range(n):
            await a.enqueue(0.0)
    enqueued = await snapshot(probe)
    await driver.set_target(marks, n)
    with driver.Workers(a, concurrency) as workers:
        end = await driver.wait_end(marks, workers, max(120.0, n / 50))
        first = float(await marks.get(common.FIRST))
        await asyncio.sleep(SETTLE_SECONDS)
        drained = await snapshot(probe)
        await asyncio.sleep(IDLE_SECONDS)
        idle = await snapshot(probe)
        workers.check_alive()
    done = await driver.check_done(marks, n)
    phases = {
        "enqueue": delta(start, enqueued, n),
        "drain": delta(enqueued, drained, n),
    }
    quiet = delta(drained, idle, 1)
    seconds = quiet["seconds"]
    return _flat(phases) | {
        "jobs_per_s": (n - 1) / max(end - first, 1e-9),
        "idle_calls_per_s": quiet["calls_per_run"] / seconds,
        "idle_redis_cpu_ms_per_s": quiet["redis_cpu_us_per_run"] / 1000 / seconds,
        "idle_commands": quiet["commands"],
        "n": n,
        "checked": done,
        "concurrency": concurrency,
        "bulk": bool(params.get("bulk")),
    }
