"""A Redis that restarts empty is reported loudly; with AOF nothing is lost."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import structlog

from stackshift import JobContext, Stackshift
from tests.support.redis_server import RedisServer
from tests.support.waiting import wait_until
from tests.support.workers import running_worker


async def test_an_empty_restart_is_reported_and_the_worker_carries_on(
    redis_server_factory: Callable[..., RedisServer],
) -> None:
    server = redis_server_factory("--appendonly", "no")
    async with Stackshift(server.url) as app:

        @app.job("echo")
        async def echo(ctx: JobContext[Any]) -> Any:
            return ctx.payload

        with structlog.testing.capture_logs() as logs:
            async with running_worker(app, ["q"], lease_timeout=1.0):
                assert (
                    await (await app.queue("q").enqueue("echo", 1)).result(timeout=10)
                    == 1
                )
                server.restart()  # empty: no persistence
                await wait_until(
                    lambda: any(line["event"] == "redis_data_lost" for line in logs),
                    timeout=20,
                    message="the data loss to be reported",
                )
                # New runs flow again once the group is recreated.
                handle = await app.queue("q").enqueue("echo", 2)
                assert await handle.result(timeout=20) == 2
    (lost,) = [line for line in logs if line["event"] == "redis_data_lost"][:1]
    assert lost["log_level"] == "critical" and lost["cause"] == "redis restarted empty"


async def test_with_aof_queued_runs_survive_a_redis_crash(
    redis_server_factory: Callable[..., RedisServer],
) -> None:
    server = redis_server_factory("--appendonly", "yes", "--appendfsync", "always")
    async with Stackshift(server.url) as app:

        @app.job("echo")
        async def echo(ctx: JobContext[Any]) -> Any:
            return ctx.payload

        handles = await app.queue("q").enqueue_many("echo", list(range(50)))
        server.restart()  # kill -9, then start on the same AOF
        async with running_worker(app, ["q"]):
            assert [await h.result(timeout=20) for h in handles] == list(range(50))
