"""Event router: every worker reads the events stream through its consumer
group (at least once) and, for each event:

1. logs it in its name's slot and claims the waiters it resolves
   (event_route.lua; a redelivered event claims the same ones again);
2. makes one run of every job subscribed to its name, with a run id derived
   from the event and the job, so a redelivered event makes no second run;
3. resumes each claimed waiter's run (resume.lua: the first record of a step
   wins, so a waiter resumes once);
4. acknowledges and deletes it from the stream.

A router that dies part-way leaves the event pending: another takes it over
after the lease timeout and does it all again, which changes nothing twice.
"""

from __future__ import annotations

import asyncio
import time

import anyio
import msgspec

from ..errors import StoreError
from ..logs import get_logger
from ..serialization import EventValue, encode
from ..store import EnqueueRequest, SentEvent, Store, Waiter
from ..store.events import subscriber_run_id

log = get_logger("stackshift.worker")

BATCH = 100
BLOCK_MS = 2000
MEMORY_POLL_SECONDS = 0.005


class EventRouter:
    def __init__(self, store: Store, consumer: str, lease_timeout: float) -> None:
        self._store = store
        self._consumer = consumer
        self._lease_ms = int(lease_timeout * 1000)
        self._reclaim_every = lease_timeout / 2
        self._shapes: dict[str, tuple[str, list[str]]] = {}

    async def run(self) -> None:
        await self._store.ensure_event_group()
        next_reclaim = time.monotonic() + self._reclaim_every
        failures = 0
        while True:
            try:
                if time.monotonic() >= next_reclaim:
                    next_reclaim = time.monotonic() + self._reclaim_every
                    events = await self._store.reclaim_events(
                        self._consumer, self._lease_ms, BATCH
                    )
                else:
                    block = int(min(BLOCK_MS, self._reclaim_every * 1000))
                    events = await self._store.read_events(self._consumer, BATCH, block)
                if events:
                    await self.route(events)
                elif self._store.memory:
                    await anyio.sleep(MEMORY_POLL_SECONDS)
                failures = 0
            except StoreError as exc:
                failures += 1
                delay = min(5.0, 0.1 * 2**failures)
                log.warning("event_routing_failed", error=str(exc), retry_in=delay)
                if "NOGROUP" in str(exc):
                    self._store.forget_groups()
                    await self._store.ensure_event_group()
                await anyio.sleep(delay)

    async def route(self, events: list[SentEvent]) -> None:
        """Route a batch (concurrently: their script calls share round trips)."""
        subs = await self._store.subscriptions()
        await asyncio.gather(*(self._route_one(e, subs) for e in events))
        await self._store.event_done(events)

    async def _route_one(
        self, event: SentEvent, subs: dict[str, list[tuple[str, str]]]
    ) -> None:
        waiters = await self._claim(event)
        made = [
            self._make_run(event, job, queue) for job, queue in subs.get(event.name, ())
        ]
        resumed = [self._resume(event, waiter) for waiter in waiters]
        await asyncio.gather(*made, *resumed)
        log.debug(
            "event_routed",
            event_name=event.name,
            event_id=event.event_id,
            runs_made=len(made),
            waiters_resumed=len(waiters),
        )

    async def _claim(self, event: SentEvent) -> list[Waiter]:
        shapes = self._shapes.get(event.name, ("0", []))
        while True:
            waiters, newer = await self._store.route_event(event, shapes)
            if newer is None:
                return waiters
            shapes = self._shapes[event.name] = newer

    async def _make_run(self, event: SentEvent, job: str, queue: str) -> None:
        stored, run_id = await self._store.place_derived(
            queue, subscriber_run_id(event, job, queue)
        )
        req = EnqueueRequest(
            run_id=run_id,
            job=job,
            payload=event.data,
            correlation_id=event.correlation_id,
            extra=encode({"event": event.name, "event_id": event.event_id}),
        )
        await self._store.enqueue(stored, req)

    async def _resume(self, event: SentEvent, waiter: Waiter) -> None:
        value = encode(
            EventValue(
                event.name,
                event.event_id,
                msgspec.Raw(event.data),
                event.correlation_id,
            )
        )
        said = await self._store.resume(waiter.run_id, waiter.step_key, "event", value)
        log.debug(
            "waiter_resumed",
            run_id=waiter.run_id,
            step=waiter.step_key,
            event_name=event.name,
            outcome=said,
        )
