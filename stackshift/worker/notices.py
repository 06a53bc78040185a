"""Notices: what the worker hears on its queues' pub/sub channels. A run
scheduled earlier than any other (wake) pokes the scheduler; a cancel asks the
runner of that run, if it runs here, to stop it.

Pub/sub is fast but may drop a message in a reconnect: the scheduler also looks
on its own every few seconds, and lease renewals carry cancel requests too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import anyio

from ..logs import get_logger
from ..store import Store
from ..store.pubsub import Listener

log = get_logger("stackshift.worker")

RECONNECT_SECONDS = 1.0


class Notices:
    def __init__(
        self,
        store: Store,
        queues: list[str],
        on_wake: Callable[[], None],
        on_cancel: Callable[[str, str], bool],
    ) -> None:
        self._store = store
        self._queues = queues  # filled in when the worker starts
        self._on_wake = on_wake
        self._on_cancel = on_cancel
        self._channels: dict[str, tuple[str, str]] = {}  # channel -> (kind, queue)

    async def run(self, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
        for queue in self._queues:
            q = self._store.keys.queue(queue)
            self._channels[q.wake] = ("wake", queue)
            self._channels[q.cancel_channel] = ("cancel", queue)
        started = False
        while True:
            listener = Listener(self._store.client, poll=self._store.memory)
            try:
                await listener.subscribe(*self._channels)
                if not started:
                    started = True
                    task_status.started()
                else:
                    self._on_wake()  # wakes may have been missed meanwhile
                await self._listen(listener)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # connection lost: subscribe again
                log.warning("notices_lost", error=str(exc))
                await anyio.sleep(RECONNECT_SECONDS)
            finally:
                await listener.aclose()

    async def _listen(self, listener: Listener) -> None:
        while True:
            message = await listener.next(timeout=30.0)
            if message is None:
                continue
            name, data = message
            kind, queue = self._channels.get(name, ("", ""))
            if kind == "wake":
                self._on_wake()
            elif kind == "cancel":
                run_id = data.decode() if isinstance(data, bytes) else str(data)
                if self._on_cancel(queue, run_id):
                    log.info("run_cancel_requested", run_id=run_id, queue=queue)
