"""/healthz and /readyz of a real worker: alive while its event loop answers;
ready only while it runs, Redis answers and its consumer groups exist."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import anyio
import httpx
import pytest

from stackshift import ConfigError, JobContext, RunStatus, Stackshift, Worker
from tests.support.redis_server import RedisServer
from tests.support.waiting import wait_until
from tests.support.workers import running_worker

from .scrape import get

METRICS = {"metrics_port": 0, "metrics_host": "127.0.0.1"}


async def answers(worker: Worker, path: str, status: int, text: str = "") -> bool:
    response = await get(worker, path)
    return response.status_code == status and text in response.text


async def test_a_running_worker_is_alive_and_ready(app: Stackshift) -> None:
    async with running_worker(app, ["p"], **METRICS) as worker:
        healthz = await get(worker, "/healthz")
        readyz = await get(worker, "/readyz")
        missing = await get(worker, "/nothing")
        async with httpx.AsyncClient() as client:
            host, port = worker.metrics_address or ("", 0)
            posted = await client.post(f"http://{host}:{port}/metrics")
            head = await client.head(f"http://{host}:{port}/metrics")
    assert (healthz.status_code, healthz.text) == (200, "ok\n")
    assert (readyz.status_code, readyz.text) == (200, "ready\n")
    assert missing.status_code == 404
    assert posted.status_code == 405
    assert head.status_code == 200 and head.content == b""


async def test_readyz_says_503_while_the_worker_starts_and_stops(
    redis_server_factory: Callable[..., RedisServer],
) -> None:
    server = redis_server_factory()
    release = asyncio.Event()
    async with Stackshift(server.url, prefix="probe:") as app:

        @app.job("hold")
        async def hold(ctx: JobContext[Any]) -> None:
            await release.wait()

        admin = server.client()
        # Writes paused: the worker cannot make its consumer groups yet.
        admin.client_pause(20000, all=False)
        worker = app.worker(["p"], grace_period=30, **METRICS)
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker.run)
            await wait_until(lambda: worker.metrics_address is not None)
            assert await answers(worker, "/readyz", 503, "worker starting")
            assert await answers(worker, "/healthz", 200)
            admin.client_unpause()
            await wait_until(lambda: answers(worker, "/readyz", 200, "ready"))

            handle = await app.queue("p").enqueue("hold")
            await wait_until(lambda: _running(app, handle.run_id))
            worker.stop()  # draining: the run in flight has its grace period
            await wait_until(lambda: answers(worker, "/readyz", 503, "worker stopping"))
            assert await answers(worker, "/healthz", 200)
            release.set()
        assert worker.metrics_address is not None
        with pytest.raises(httpx.ConnectError):
            await get(worker, "/healthz")  # closed with the worker
        admin.close()


async def _running(app: Stackshift, run_id: str) -> bool:
    info = await app.get_run(run_id)
    return info is not None and info.status == RunStatus.RUNNING


async def test_readyz_says_503_while_redis_is_down(
    redis_server_factory: Callable[..., RedisServer],
) -> None:
    server = redis_server_factory()
    async with Stackshift(server.url, prefix="probe:") as app:
        async with running_worker(app, ["p"], **METRICS) as worker:
            assert await answers(worker, "/readyz", 200, "ready")
            server.kill()
            await wait_until(lambda: answers(worker, "/readyz", 503, "redis"))
            assert await answers(worker, "/healthz", 200)  # alive all the same
            scraped = await get(worker, "/metrics")
            # Counters still go out; queue gauges need Redis, and are left out.
            assert scraped.status_code == 200
            assert "stackshift_runs_reclaimed_total" in scraped.text
            assert "stackshift_queue_runs{" not in scraped.text
            server.start()
            await wait_until(
                lambda: answers(worker, "/readyz", 200, "ready"), timeout=20
            )


async def test_readyz_says_503_when_a_consumer_group_is_gone(app: Stackshift) -> None:
    release = asyncio.Event()

    @app.job("hold")
    async def hold(ctx: JobContext[Any]) -> None:
        await release.wait()

    async with running_worker(app, ["p", "other"], concurrency=1, **METRICS) as worker:
        handle = await app.queue("p").enqueue("hold")
        await wait_until(lambda: _running(app, handle.run_id))
        # Its one slot is held, so it reads nothing and does not notice yet.
        client = app.store.client
        await client.xgroup_destroy(app.store.keys.queue("other").stream, "stackshift")
        response = await get(worker, "/readyz")
        assert response.status_code == 503
        assert response.text == "consumer groups missing: other\n"
        release.set()
        # It recreates the group once it reads that queue again.
        await wait_until(lambda: answers(worker, "/readyz", 200, "ready"), timeout=20)


async def test_a_metrics_port_that_is_taken_or_invalid_is_a_clear_error(
    app: Stackshift,
) -> None:
    with pytest.raises(ConfigError, match="metrics_port must be 0 to 65535"):
        app.worker(["p"], metrics_port=70000)
    async with running_worker(app, ["p"], **METRICS) as first:
        assert first.metrics_address is not None
        taken = app.worker(
            ["p"], metrics_port=first.metrics_address[1], metrics_host="127.0.0.1"
        )
        with pytest.raises(ConfigError, match="cannot serve metrics on 127.0.0.1:"):
            await taken.run()
