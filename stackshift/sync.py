"""The sync API's event loop: a private loop in a thread of its own, made on
first use, for callers that have none (Flask and Django views, scripts).

Each ``*_sync`` call runs its coroutine there and blocks until it is done. A
call made from inside a running event loop is refused: blocking there would
stall every other task of that loop (await the async method instead).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from anyio.from_thread import BlockingPortal, start_blocking_portal

from .errors import StackshiftError

T = TypeVar("T")


class SyncPortal:
    """One private event loop (anyio's blocking portal) per app, shared by
    every thread that calls the sync API."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._portal: BlockingPortal | None = None
        self._manager: contextlib.AbstractContextManager[BlockingPortal] | None = None

    def call(self, what: str, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run ``fn(*args)`` on the private loop and wait for its result."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            raise StackshiftError(
                f"{what}_sync() blocks, and this thread runs an event loop: "
                f"use `await ...{what}(...)` here instead"
            )
        return self._started().call(fn, *args)

    def _started(self) -> BlockingPortal:
        portal = self._portal
        if portal is not None:
            return portal
        with self._lock:
            if self._portal is None:
                self._manager = start_blocking_portal(backend="asyncio")
                self._portal = self._manager.__enter__()
                atexit.register(self.close)
            return self._portal

    def close(self, before: Callable[[], Awaitable[None]] | None = None) -> None:
        """Stop the private loop (after awaiting ``before`` on it, if given)."""
        with self._lock:
            portal, manager = self._portal, self._manager
            self._portal = self._manager = None
        if portal is None or manager is None:
            return
        try:
            if before is not None:
                portal.call(before)
        finally:
            manager.__exit__(None, None, None)
            atexit.unregister(self.close)
