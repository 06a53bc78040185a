"""Workers of harness/event_apps.py, and what the event scenarios do and read:
enqueue waiters, send events (from the test's thread, through any URL), and
read runs and queues with a plain redis client."""

from __future__ import annotations

import os
from typing import Any

import anyio
import redis

from stackshift import Stackshift

from .event_apps import QUEUE
from .procs import STACKSHIFT, Proc, Processes

APP = "tests.faults.harness.event_apps:app"


def start_worker(
    procs: Processes,
    *,
    queue: str = QUEUE,
    lease: float = 1.5,
    concurrency: int = 8,
    url: str | None = None,
) -> Proc:
    """A ``stackshift worker`` of the event app, reaped with ``procs``; ``url``
    overrides the Redis it talks to (a fault proxy)."""
    name = f"w{len(procs.all)}"
    argv = [
        str(STACKSHIFT), "worker", APP, "--queue", queue,
        "--concurrency", str(concurrency), "--lease-timeout", str(lease),
        "--grace-period", "2", "--name", name, "--log-format", "json",
    ]  # fmt: skip
    env = {**os.environ, **procs.env, "PYTHONUNBUFFERED": "1"}
    if url is not None:
        env["STACKSHIFT_REDIS_URL"] = url
    proc = Proc(name, argv, env, procs.workdir / f"{name}.log")
    procs.all.append(proc)
    return proc


def enqueue_waiters(url: str, prefix: str, keys: list[int]) -> list[str]:
    """One ``await-ping`` run per key; their run ids, in key order."""

    async def go() -> list[str]:
        async with Stackshift(url, prefix=prefix) as app:
            handles = await app.queue(QUEUE).enqueue_many(
                "await-ping", [{"k": k} for k in keys]
            )
            return [h.run_id for h in handles]

    return anyio.run(go)


def send_pings(url: str, prefix: str, keys: list[int]) -> list[bool]:
    """One ``ping`` event per key (id ``ping-<k>``); whether each was a duplicate."""

    async def go() -> list[bool]:
        async with Stackshift(url, prefix=prefix) as app:
            return [
                (
                    await app.send_event("ping", {"k": k, "n": k * 3}, id=f"ping-{k}")
                ).duplicate
                for k in keys
            ]

    return anyio.run(go)


def run_hash(
    client: redis.Redis, prefix: str, queue: str, run_id: str
) -> dict[str, str]:
    raw: dict[Any, Any] = client.hgetall(f"{prefix}{{{queue}}}:run:{run_id}")
    return {_s(k): _s(v) for k, v in raw.items()}


def stats(client: redis.Redis, prefix: str, queue: str) -> dict[str, int]:
    raw: dict[Any, Any] = client.hgetall(f"{prefix}{{{queue}}}:stats")
    return {_s(k): int(v) for k, v in raw.items()}


def stream_idle(client: redis.Redis, stream: str) -> bool:
    """Nothing left in a stream and nothing pending in its group."""
    if not client.exists(stream):
        return True
    if client.xlen(stream):
        return False
    return all(int(g["pending"]) == 0 for g in client.xinfo_groups(stream))


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
