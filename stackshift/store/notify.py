"""Waiting for runs to finish: one pub/sub listener per app and event loop,
shared by every ``RunHandle.result()`` in that loop (the scripts that end a
run SPUBLISH its id on the queue's ``finished`` channel; store/pubsub.py)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING

import anyio

from ..errors import JobFailed, StackshiftError
from ..logs import get_logger
from ..serialization import RunStatus, error_decoder
from .keys import queue_of_run
from .pubsub import Listener

if TYPE_CHECKING:
    from . import Store

log = get_logger("stackshift")

# A backstop for a pub/sub message lost in a reconnect: re-read the run this
# often while waiting. Waiting is otherwise pure notification, not polling.
RESULT_RECHECK_SECONDS = 5.0


async def wait_for_result(store: Store, run_id: str, timeout: float) -> bytes | None:  # noqa: ASYNC109
    """Wait for ``run_id`` to end; its result (JSON), if it completed.

    Raises:
        JobFailed: it was dead-lettered or cancelled.
        TimeoutError: it did not end within ``timeout`` seconds.
    """
    link = store.link()
    if link.waiter is None:
        link.waiter = ResultWaiter(store)
    return await link.waiter.wait(run_id, timeout)


class ResultWaiter:
    """One pub/sub listener of one event loop, shared by every
    ``RunHandle.result()`` waiting in it."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._events: dict[str, set[asyncio.Event]] = {}
        self._pubsub: Listener | None = None
        self._listener: asyncio.Task[None] | None = None
        self._channels: set[str] = set()

    async def wait(self, run_id: str, timeout: float) -> bytes | None:  # noqa: ASYNC109
        event = asyncio.Event()
        self._events.setdefault(run_id, set()).add(event)
        deadline = time.monotonic() + timeout
        try:
            with contextlib.suppress(StackshiftError):
                await self._subscribe(
                    queue_of_run(run_id)
                )  # else: the recheck carries on
            while True:
                status, result, error = await self.store.run_outcome(run_id)
                if status == RunStatus.COMPLETED:
                    return result or None
                if status in (RunStatus.FAILED, RunStatus.CANCELLED):
                    info = error_decoder.decode(error) if error else None
                    raise JobFailed(
                        run_id,
                        info.type if info else status.title(),
                        info.message if info else status,
                    )
                if not status:
                    raise StackshiftError(
                        f"run {run_id} does not exist (never enqueued, or its record expired)"
                    )
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(
                        f"run {run_id} did not finish within {timeout} s"
                    )
                with anyio.move_on_after(min(remaining, RESULT_RECHECK_SECONDS)):
                    await event.wait()
                event.clear()
        finally:
            waiters = self._events.get(run_id)
            if waiters is not None:
                waiters.discard(event)
                if not waiters:
                    del self._events[run_id]

    async def _subscribe(self, queue: str) -> None:
        channel = self.store.keys.queue(queue).finished
        if channel not in self._channels:
            self._channels.add(channel)
            if self._pubsub is None:
                self._pubsub = Listener(self.store.client, poll=self.store.memory)
            await self._pubsub.subscribe(channel)
            if self._listener is None or self._listener.done():
                self._listener = asyncio.create_task(self._listen())
        # Wait for the server's confirmation (the listener task reads it), so
        # that no publish can slip past us.
        if self._pubsub is not None:
            await self._pubsub.confirmed(channel)

    async def _listen(self) -> None:
        while self._pubsub is not None:
            try:
                message = await self._pubsub.next(timeout=RESULT_RECHECK_SECONDS)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # connection lost: the recheck covers the gap
                log.warning("result_listener_error", error=str(exc))
                await asyncio.sleep(1.0)
                await self._listen_again()
                continue
            if message is None:
                continue
            data = message[1]
            run_id = data.decode() if isinstance(data, bytes) else str(data)
            for event in self._events.get(run_id, ()):
                event.set()

    async def _listen_again(self) -> None:
        """A new listener on the channels (a node may have failed over)."""
        old, self._pubsub = (
            self._pubsub,
            Listener(self.store.client, poll=self.store.memory),
        )
        if old is not None:
            await old.aclose()
        with contextlib.suppress(Exception):
            await self._pubsub.subscribe(*self._channels)
        for waiting in self._events.values():  # what ended meanwhile is re-read
            for event in waiting:
                event.set()

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            await asyncio.wait([self._listener])  # (see pubsub._Feed.close)
            self._listener = None
        if self._pubsub is not None:
            pubsub, self._pubsub = self._pubsub, None
            await pubsub.aclose()
        self._channels.clear()
