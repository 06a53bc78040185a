"""Bulk enqueue for peers that have no bulk API: concurrent awaited enqueues."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

CONCURRENT = 100  # enqueues in flight at once


async def concurrent(n: int, enqueue: Callable[[], Awaitable[object]]) -> None:
    for start in range(0, n, CONCURRENT):
        await asyncio.gather(*(enqueue() for _ in range(min(CONCURRENT, n - start))))
