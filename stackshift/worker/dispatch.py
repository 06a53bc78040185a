"""Dispatch: starts delivered entries (one pipelined round trip per batch) and
hands each started run to a runner; buries entries that name no usable run.
Shared by the fetch loop and the reclaimer."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import structlog

from ..errors import StoreError
from ..serialization import ErrorInfo, encode
from ..store import Entry, StartResult, Store
from ..store.keys import new_run_id
from .slots import Slots

log = structlog.get_logger("stackshift.worker")

MAX_BATCH = 100  # entries per read or claim


class Dispatcher:
    """Starts delivered entries (one pipelined round trip per batch) and hands
    each started run to a runner; buries entries that name no usable run."""

    def __init__(
        self,
        store: Store,
        consumer: str,
        slots: Slots,
        spawn: Callable[[StartResult], Any],
    ) -> None:
        self._store = store
        self._consumer = consumer
        self._slots = slots
        self._spawn = spawn

    async def dispatch(self, entries: list[Entry]) -> None:
        """Slots for ``entries`` are already taken; each is given back when its
        run ends (or now, for entries that do not run)."""
        try:
            results = await self._store.start_many(entries, self._consumer)
        except StoreError as exc:
            # They stay pending under this consumer: a reclaimer takes them later.
            log.warning("start_failed", error=str(exc), entries=len(entries))
            self._slots.give(len(entries))
            return
        for entry, result in zip(entries, results, strict=True):
            if result.outcome == "ok":
                self._spawn(result)
                continue
            self._slots.give(1)
            if result.outcome == "gone":
                await self._bury(entry)
            elif result.outcome == "dead":
                log.error(
                    "run_dead_lettered",
                    run_id=entry.run_id,
                    queue=entry.queue,
                    reason="delivered too many times (poison)",
                )

    async def _bury(self, entry: Entry) -> None:
        run_id = new_run_id(entry.queue)
        reason = (
            "the stream entry has no valid run id (written by something other than stackshift?)"
            if entry.run_id is None or not entry.run_id.endswith("." + entry.queue)
            else f"the entry names run {entry.run_id}, whose record does not exist (expired or deleted)"
        )
        error = ErrorInfo("UndecodableEntryError", reason)
        try:
            await self._store.bury(entry, self._consumer, run_id, encode(error))
            log.error(
                "entry_dead_lettered",
                entry_id=entry.entry_id,
                queue=entry.queue,
                run_id=run_id,
                reason=reason,
            )
        except StoreError as exc:
            log.warning("bury_failed", entry_id=entry.entry_id, error=str(exc))


@dataclasses.dataclass(frozen=True, slots=True)
class Intake:
    """What the fetch loop and the reclaimer share: where entries come from
    (store, consumer, queues), the slots they fill, and where they go."""

    store: Store
    consumer: str
    queues: list[str]
    slots: Slots
    dispatcher: Dispatcher
