"""The dashboard's server time per page with 100,000 runs in a queue.

DESIGN §7 asks for at most 200 ms of server time per page at 100,000 runs in
a queue. This fills a prefix of its own: 100,000 runs of two jobs in "orders",
each with an idempotency key and a correlation id, half of them completed (by
a real worker, each with a checkpoint and a counter increment) and half still
queued; 1,000 sleeping (suspended) runs; 200 dead-lettered runs in "mail";
events and a cron. Then it requests each page through the ASGI app in-process
(httpx, no network: what is timed is the app's own work, Redis round trips
included) and prints the median, p95 and max per page. The prefix is deleted
at the end.

    .venv/bin/python -m bench.dashboard_pages [REDIS_URL] [--runs N]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import time
import uuid
from typing import Any

import anyio
import httpx
import redis.asyncio as aioredis
import structlog

from stackshift import JobContext, NonRetriableError, Stackshift
from stackshift.dashboard import create_app

REQUESTS = 20
ENQUEUE_AT_ONCE = 500


def make_app(url: str, prefix: str) -> Stackshift:
    app = Stackshift(url, prefix=prefix)

    async def charge(order: int) -> int:
        return order * 2

    @app.job("ship", queue="orders")
    async def ship(ctx: JobContext[dict[str, int]]) -> int:
        total = await ctx.step.run("charge", charge, ctx.payload["order"])
        await ctx.state.increment("orders:shipped")
        return total

    @app.job("bill", queue="orders")
    async def bill(ctx: JobContext[dict[str, int]]) -> int:
        return await ctx.step.run("charge", charge, ctx.payload["order"])

    @app.job("nap", queue="orders")
    async def nap(ctx: JobContext[Any]) -> None:
        await ctx.step.sleep("nap", 3600)

    @app.job("broken", queue="mail", retries=0)
    async def broken(ctx: JobContext[Any]) -> None:
        raise NonRetriableError(f"mailbox {ctx.payload['n']} is full")

    @app.cron("nightly", "0 3 * * *", queue="orders")
    async def nightly(ctx: JobContext[Any]) -> None: ...

    return app


async def fill(app: Stackshift, runs: int) -> tuple[str, str]:
    """Enqueue and half-drain; returns a completed run's id and a key."""
    orders = app.queue("orders")
    began = time.perf_counter()
    # Started first by the worker below: they sleep (suspended) for an hour.
    await orders.enqueue_many("nap", [{}] * 1000)
    handles = []
    for start in range(0, runs, ENQUEUE_AT_ONCE):
        handles += await asyncio.gather(
            *(
                orders.enqueue(
                    "ship" if i % 2 else "bill",
                    {"order": i},
                    idempotency_key=f"order-{i}",
                    correlation_id=f"req-{i}",
                )
                for i in range(start, min(runs, start + ENQUEUE_AT_ONCE))
            )
        )
    await app.queue("mail").enqueue_many("broken", [{"n": n} for n in range(200)])
    for n in range(100):
        await app.send_event("order.paid", {"order": n})
    print(f"enqueued {runs + 1200} runs in {time.perf_counter() - began:.1f} s")

    began = time.perf_counter()
    worker = app.worker(["orders", "mail"], concurrency=100)
    async with anyio.create_task_group() as tg:
        await tg.start(worker.run)
        while True:
            stats = await app.store.queue_stats("orders")
            if stats.totals.get("completed", 0) >= runs // 2:
                break
            await asyncio.sleep(0.2)
        worker.stop()
    stats = await app.store.queue_stats("orders")
    print(
        f"drained to {stats.totals} in {time.perf_counter() - began:.1f} s; "
        f"waiting now: {stats.waiting}, suspended: {stats.suspended}"
    )
    # A run done early keeps its place: the first enqueued is completed.
    return handles[1].run_id, f"order-{runs // 4}"


async def timed(client: httpx.AsyncClient, path: str) -> list[float]:
    took = []
    for _ in range(REQUESTS):
        began = time.perf_counter()
        response = await client.get(path)
        took.append((time.perf_counter() - began) * 1000)
        if response.status_code not in (200, 303):
            raise SystemExit(f"{path}: {response.status_code} {response.text[:300]}")
    return took


async def deep_cursor(client: httpx.AsyncClient, pages: int) -> str:
    """The cursor of the runs listing's page ``pages`` (following links)."""
    path = "/runs?queue=orders&status=completed"
    cursor = ""
    for _ in range(pages):
        html = (await client.get(path + (f"&cursor={cursor}" if cursor else ""))).text
        mark = "cursor="
        at = html.rfind(mark)
        if at < 0:
            break
        cursor = html[at + len(mark) :].split('"', 1)[0].split("&", 1)[0]
    return cursor


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url", nargs="?", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--runs", type=int, default=100_000)
    args = parser.parse_args()
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL)
    )
    prefix = f"bench-dash-{uuid.uuid4().hex[:8]}:"
    app = make_app(args.url, prefix)
    try:
        run_id, key = await fill(app, args.runs)
        dashboard = create_app(app)
        transport = httpx.ASGITransport(app=dashboard)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://dash", follow_redirects=False
        ) as client:
            cursor = await deep_cursor(client, 100)
            pages = {
                "queues": "/",
                "runs, first page": "/runs?queue=orders",
                "runs, completed": "/runs?queue=orders&status=completed",
                "runs, queued": "/runs?queue=orders&status=queued",
                "runs, suspended": "/runs?queue=orders&status=suspended",
                "runs, job=ship": "/runs?queue=orders&job=ship",
                "runs, job=nap (1 %)": "/runs?queue=orders&job=nap",
                "runs, 100th page": f"/runs?queue=orders&status=completed&cursor={cursor}",
                "find by run id": f"/runs?queue=orders&find={run_id}&by=run_id",
                "find by idempotency key": (
                    f"/runs?queue=orders&find={key}&by=idempotency_key"
                ),
                "find by correlation id": (
                    f"/runs?queue=orders&find=req-{args.runs // 3}&by=correlation_id"
                ),
                "a run": f"/runs/{run_id}",
                "dead letters": "/dead?queue=mail",
                "retry all, confirmation": "/dead/retry-all?queue=mail",
                "counters": "/counters",
                "events": "/events",
                "crons": "/crons",
                "queues, live part": "/?partial=1",
            }
            print(f"\n{args.runs:,} runs in 'orders'; {REQUESTS} requests per page\n")
            print(f"{'page':<26} {'median':>9} {'p95':>9} {'max':>9}")
            for name, path in pages.items():
                took = sorted(await timed(client, path))
                p95 = took[int(len(took) * 0.95) - 1]
                print(
                    f"{name:<26} {statistics.median(took):>7.1f}ms "
                    f"{p95:>7.1f}ms {took[-1]:>7.1f}ms"
                )
    finally:
        side = aioredis.Redis.from_url(args.url)
        async for batch in _batches(side, prefix):
            await side.unlink(*batch)
        await side.aclose()
        await app.close()


async def _batches(side: aioredis.Redis, prefix: str) -> Any:
    batch: list[bytes] = []
    async for key in side.scan_iter(match=prefix + "*", count=1000):
        batch.append(key)
        if len(batch) == 500:
            yield batch
            batch = []
    if batch:
        yield batch


if __name__ == "__main__":
    asyncio.run(main())
