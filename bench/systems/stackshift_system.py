"""stackshift as a system under test (runs in the project's venv)."""

from __future__ import annotations

import logging
import sys
from importlib import metadata
from typing import Any

import structlog

from bench.workloads import driver

BATCH = 1000


class StackshiftAdapter(driver.Adapter):
    name = "stackshift"
    module = "bench.systems.stackshift_system"
    default_concurrency = 10  # stackshift.worker.DEFAULT_CONCURRENCY
    has_cron = True
    app_path = "bench.apps.stackshift_app:app"  # what its workers serve

    def __init__(self) -> None:
        self._app: Any = None

    async def open(self) -> None:
        # An app configures structlog; unconfigured, structlog prints every
        # debug line (one per enqueue) to stdout, which is not what we measure.
        structlog.configure(
            wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
            cache_logger_on_first_use=True,
        )
        from bench.apps.stackshift_app import app

        self._app = app
        self._queue = app.queue(driver.QUEUE)

    async def close(self) -> None:
        if self._app is not None:
            app, self._app = self._app, None
            await app.close()

    async def enqueue(self, enqueued_at: float) -> None:
        await self._queue.enqueue("noop", {"t": enqueued_at})

    async def enqueue_many(self, n: int) -> None:
        payload = {"t": 0.0}
        for start in range(0, n, BATCH):
            await self._queue.enqueue_many("noop", [payload] * min(BATCH, n - start))

    async def queued(self) -> int:
        stats = await self._app.store.queue_stats(driver.QUEUE)
        return int(stats.waiting)

    async def chain(self, steps: int) -> None:
        handle = await self._queue.enqueue("steps", {"n": steps})
        await handle.result(timeout=60)

    async def serve(self, concurrency: int, mode: str = "") -> None:
        raise NotImplementedError("stackshift workers run through its own CLI")

    def worker_argv(self, concurrency: int, mode: str = "") -> list[str]:
        from bench.apps.stackshift_app import CRON_QUEUE

        return [
            sys.executable,
            "-m",
            "stackshift",
            "worker",
            self.app_path,
            "--queue",
            CRON_QUEUE if mode == "W11" else driver.QUEUE,
            "--concurrency",
            str(concurrency),
            "--log-level",
            "warning",
        ]

    def supervised_argv(self, concurrency: int, procs: int) -> list[str]:
        return [*self.worker_argv(concurrency), "--processes", str(procs)]

    # --- events and durable time ------------------------------------------------------

    async def add_waiters(self, event: str, keys: list[int | None]) -> None:
        payloads = [{"e": event, "k": k} for k in keys]
        await self._queue.enqueue_many("waiter", payloads)

    async def suspended(self) -> int:
        stats = await self._app.store.queue_stats(driver.QUEUE)
        return int(stats.suspended)

    async def send_event(self, event: str, key: int | None) -> None:
        await self._app.send_event(event, {} if key is None else {"k": key})

    async def enqueue_sleepers(self, seconds: list[float], *, hold: bool) -> None:
        payloads = [{"d": s, "hold": hold} for s in seconds]
        await self._queue.enqueue_many("sleeper", payloads)

    async def chain_invoke(self, steps: int) -> None:
        handle = await self._queue.enqueue("invokes", {"n": steps})
        await handle.result(timeout=60)

    def versions(self) -> dict[str, str]:
        found = {}
        for name in ("stackshift", "redis", "hiredis", "msgspec", "anyio", "uvloop"):
            try:
                found[name] = metadata.version(name)
            except metadata.PackageNotFoundError:  # uvloop is optional
                found[name] = "not installed"
        return found | {"python": sys.version.split()[0]}


if __name__ == "__main__":
    raise SystemExit(driver.main(StackshiftAdapter()))
