"""The raw baselines of events and durable time (W8-W10, W4i): the same Redis
paths as stackshift's, written by hand with redis-py, with none of its records,
fencing or recovery.

- Events (W8, W10): a waiter is a member of a set named by its event and key
  (``raw:w:<event>:<k>``). A sent event is an ``XADD`` to ``raw:events``; the
  worker's router reads it (blocked ``XREADGROUP``), claims the set's members
  (``SMEMBERS`` + ``DEL`` in one transaction) and adds one entry per waiter to
  ``raw:resume``, which the worker's job loop reads (blocked ``XREADGROUP``)
  and runs, ``concurrency`` at a time: the two hops stackshift makes (event
  stream, router, queue stream, worker). W8's floor is one hop: an ``XADD``
  to ``raw:direct``, which a task blocked on ``XREADGROUP`` reads at once.
- Sleeps (W9): a sorted set scored by due time; the worker pops what is due,
  then waits for a wake message (pub/sub) until the earliest due time, timed
  on the client (a ``BLPOP`` timeout would be timed by Redis, which checks
  timeouts only ``hz`` times a second: up to 100 ms late); the enqueuer
  publishes after each batch, so an earlier sleeper wakes it.
- Child runs (W4i): the parent ``XADD``s each child to ``raw:chain`` and
  blocks on a reply list (``BLPOP``) that the worker pushes the result to.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from bench.workloads import common

GROUP = "raw"
EVENTS = "raw:events"
RESUME = "raw:resume"
DIRECT = "raw:direct"
WAITING = "raw:waiting"  # how many waiters are registered and not yet claimed
DELAYED = "raw:delayed"
WAKE = "raw:wake"
CHAIN = "raw:chain"
BATCH = 100
PIPELINE = 1000


def waiter_key(event: str, key: int | None) -> str:
    return f"raw:w:{event}:{'' if key is None else key}"


def connect() -> Any:
    return aioredis.Redis.from_url(
        common.bench_url(), socket_timeout=None, socket_connect_timeout=None
    )


# --- the driver's side ----------------------------------------------------------


async def add_waiters(r: Any, event: str, keys: list[int | None]) -> None:
    for start in range(0, len(keys), PIPELINE):
        chunk = keys[start : start + PIPELINE]
        pipe = r.pipeline(transaction=False)
        for i, key in enumerate(chunk, start):
            pipe.sadd(waiter_key(event, key), f"{event}:{i}")
        pipe.incrby(WAITING, len(chunk))
        await pipe.execute()


async def send_event(r: Any, event: str, key: int | None) -> None:
    await r.xadd(EVENTS, {"e": event, "k": "" if key is None else str(key)})


async def enqueue_sleepers(r: Any, seconds: list[float], *, hold: bool) -> None:
    """Each due ``seconds`` after its enqueue; the member carries its due time."""
    for start in range(0, len(seconds), PIPELINE):
        pipe = r.pipeline(transaction=False)
        for i, s in enumerate(seconds[start : start + PIPELINE], start):
            due = time.time() + s
            member = f"{i}:{0.0 if hold else due!r}"
            pipe.zadd(DELAYED, {member: due * 1000})
        pipe.publish(WAKE, 1)
        await pipe.execute()


async def chain_invoke(r: Any, steps: int) -> None:
    for i in range(steps):
        reply = f"raw:reply:{os.getpid()}:{time.monotonic_ns()}"
        await r.xadd(CHAIN, {"i": i, "reply": reply})
        if not await r.blpop([reply], timeout=60):
            raise RuntimeError(f"child {i} did not answer within 60 s")


# --- the worker's side ----------------------------------------------------------


async def _group(r: Any, stream: str) -> None:
    try:
        await r.xgroup_create(stream, GROUP, id="0", mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


async def _consume(
    r: Any, stream: str, count: int, work: Callable[[list[Any]], Awaitable[None]]
) -> None:
    """Blocked XREADGROUP, the batch's work, one batched XACK; forever."""
    await _group(r, stream)
    consumer = f"raw-{os.getpid()}"
    while True:
        reply = await r.xreadgroup(
            GROUP, consumer, {stream: ">"}, count=count, block=1000
        )
        if not reply:
            continue
        entries = reply[0][1]
        await work(entries)
        await r.xack(stream, GROUP, *(entry_id for entry_id, _ in entries))


async def serve_events(concurrency: int) -> None:
    """Router, job loop and W8's one-hop reader, in one process."""
    router, jobs, direct = connect(), connect(), connect()

    async def route(entries: list[Any]) -> None:
        claim = router.pipeline(transaction=True)
        for _, fields in entries:
            key = waiter_key(fields[b"e"].decode(), fields[b"k"].decode() or None)
            claim.smembers(key)
            claim.delete(key)
        replies = await claim.execute()
        waiters = [w for members in replies[::2] for w in members]
        if waiters:
            pipe = router.pipeline(transaction=False)
            for waiter in waiters:
                pipe.xadd(RESUME, {"r": waiter})
            pipe.decrby(WAITING, len(waiters))
            await pipe.execute()

    async def run(entries: list[Any]) -> None:
        await asyncio.gather(*(common.note_start(time.time()) for _ in entries))

    async def floor(entries: list[Any]) -> None:
        for _ in entries:
            await common.note_start(time.time())

    await asyncio.gather(
        _consume(router, EVENTS, BATCH, route),
        _consume(jobs, RESUME, concurrency, run),
        _consume(direct, DIRECT, 1, floor),
    )


async def serve_delayed() -> None:
    """Pop what is due, do its work; else wait until the earliest due time."""
    r = connect()
    wake = r.pubsub()
    await wake.subscribe(WAKE)
    while True:
        now = time.time() * 1000
        due = await r.zrangebyscore(DELAYED, "-inf", now, start=0, num=BATCH)
        if due:
            pipe = r.pipeline(transaction=False)
            for member in due:
                pipe.zrem(DELAYED, member)
            won = [m for m, ok in zip(due, await pipe.execute(), strict=True) if ok]
            if won:
                await common.do_work_batch([float(m.split(b":")[1]) for m in won])
            continue
        head = await r.zrange(DELAYED, 0, 0, withscores=True)
        wait = (head[0][1] - time.time() * 1000) / 1000 if head else 5.0
        if wait > 0:
            await wake.get_message(ignore_subscribe_messages=True, timeout=wait)


async def serve_chain(concurrency: int) -> None:
    r = connect()

    async def one(fields: dict[bytes, bytes]) -> None:
        value = await common.step_work(int(fields[b"i"]))
        await r.rpush(fields[b"reply"].decode(), value)

    async def run(entries: list[Any]) -> None:
        await asyncio.gather(*(one(fields) for _, fields in entries))

    await _consume(r, CHAIN, concurrency, run)


async def send_direct(r: Any) -> None:
    await r.xadd(DIRECT, {"t": "0"})


async def suspended(r: Any) -> int:
    """Waiters not yet claimed, plus sleepers not yet due."""
    pipe = r.pipeline(transaction=False)
    pipe.get(WAITING)
    pipe.zcard(DELAYED)
    waiting, delayed = await pipe.execute()
    return int(waiting or 0) + int(delayed)
