"""The bench app with Prometheus metrics on: what ``stackshift worker
--metrics-port`` does (it passes ``metrics_port=`` to ``app.worker``), through
the same ``stackshift worker`` command line as the plain app.

Each worker serves ``/metrics`` on a free port and scrapes itself once a second
(Prometheus' default is every 15 s): an upper bound on what scraping costs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import anyio
from anyio.abc import TaskStatus

from bench.apps import stackshift_app
from stackshift import Stackshift, Worker

SCRAPE_EVERY = 1.0


class ScrapedWorker(Worker):
    """A worker with metrics on, scraped over HTTP while it runs."""

    async def run(
        self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._scrape)
            await super().run(task_status=task_status)
            tg.cancel_scope.cancel()

    async def _scrape(self) -> None:
        while True:
            await asyncio.sleep(SCRAPE_EVERY)
            address = self.metrics_address
            if address is None:
                continue
            reader, writer = await asyncio.open_connection(*address)
            writer.write(b"GET /metrics HTTP/1.1\r\nHost: bench\r\n\r\n")
            await writer.drain()
            body = await reader.read()
            writer.close()
            assert b"stackshift_runs_started_total" in body


class MetricsApp(Stackshift):
    def worker(self, queues: Sequence[str] = ("default",), **options: Any) -> Worker:
        options.setdefault("metrics_port", 0)
        options.setdefault("metrics_host", "127.0.0.1")
        return ScrapedWorker(self, list(queues), **options)


app = MetricsApp(stackshift_app.app.settings.url, prefix=stackshift_app.PREFIX)
app.registry = stackshift_app.app.registry  # the same jobs
