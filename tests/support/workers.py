"""Run a worker inside the test's event loop."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import anyio

from stackshift import Stackshift, Worker


@asynccontextmanager
async def running_worker(
    app: Stackshift, queues: Sequence[str] = ("default",), **options: Any
) -> AsyncIterator[Worker]:
    """A worker serving ``queues`` for the duration of the block; ready on entry."""
    options.setdefault("lease_timeout", 5.0)
    options.setdefault("grace_period", 5.0)
    async with anyio.create_task_group() as tg:
        worker = app.worker(list(queues), **options)
        await tg.start(worker.run)
        try:
            yield worker
        finally:
            worker.stop()
