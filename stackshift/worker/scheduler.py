"""Scheduler: time-driven work on the worker's queues. It moves runs whose time
has come back to their stream (delays, retry backoffs, sleeps, wait timeouts:
timers.lua), makes cron ticks' runs (cron.py), and redoes hand-offs of child
runs whose worker died before telling the parent.

It sleeps until the earliest due time it knows of. A run scheduled by another
process for an earlier time than that wakes it through the queue's wake
channel (notices.py); every worker runs one, and the scripts decide who moves
each run, so none is moved twice.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import anyio

from ..errors import StoreError
from ..logs import get_logger
from ..store import Store

log = get_logger("stackshift.worker")

# With nothing due, look again this often anyway: a wake message lost in a
# reconnect delays a run by this much at most.
IDLE_RECHECK_SECONDS = 15.0
HANDOFF_CHECK_SECONDS = 5.0

# Another time-driven chore (cron ticks): called each round, returns seconds
# until it wants to run again (None: no wish).
Chore = Callable[[], Awaitable[float | None]]


class Scheduler:
    def __init__(self, store: Store, queues: list[str], timers: str = "real") -> None:
        self._store = store
        self._queues = queues
        self._timers = timers
        self._poke = asyncio.Event()
        self._chores: list[Chore] = []
        self._next_handoff_check = 0.0

    def add_chore(self, chore: Chore) -> None:
        self._chores.append(chore)

    def poke(self) -> None:
        """Look again now (a wake message came, or this worker scheduled a retry)."""
        self._poke.set()

    async def run(self) -> None:
        while True:
            self._poke = asyncio.Event()
            wait = await self.tick()
            with anyio.move_on_after(wait):
                await self._poke.wait()

    async def tick(self) -> float:
        """Do what is due; seconds until the next thing is."""
        wait = IDLE_RECHECK_SECONDS
        for queue in self._queues:
            try:
                _moved, due_in = await self._store.fire_timers(queue, self._timers)
            except StoreError as exc:
                log.warning("timers_failed", queue=queue, error=str(exc))
                wait = min(wait, 1.0)
                continue
            if due_in is not None:
                wait = min(wait, due_in)
        for chore in self._chores:
            try:
                due_in = await chore()
            except StoreError as exc:
                log.warning("scheduler_chore_failed", error=str(exc))
                due_in = 1.0
            if due_in is not None:
                wait = min(wait, due_in)
        now = time.monotonic()
        if now >= self._next_handoff_check:
            self._next_handoff_check = now + HANDOFF_CHECK_SECONDS
            await self._redo_handoffs()
        return max(0.0, min(wait, self._next_handoff_check - now))

    async def _redo_handoffs(self) -> None:
        """Children that ended a while ago without their parent being told
        (their worker died in between): tell the parents now."""
        for queue in self._queues:
            try:
                for child in await self._store.overdue_handoffs(queue):
                    said = await self._store.hand_off(child)
                    log.info("hand_off_redone", child_run_id=child, parent=said)
            except StoreError as exc:
                log.warning("hand_off_failed", queue=queue, error=str(exc))
