"""Dispatch: starts delivered entries of one queue (one start.lua call per
batch) and hands each started run to a runner; buries entries that name no
usable run. Shared by a lane's fetch loop and its reclaimer."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from ..errors import StoreError
from ..logs import get_logger
from ..serialization import ErrorInfo, encode
from ..store import Entry, Gate, Lease, StartResult, Store
from ..store.keys import new_run_id
from .slots import Slots

log = get_logger("stackshift.worker")

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
        refuse: Callable[[Lease], Any],
    ) -> None:
        self._store = store
        self._consumer = consumer
        self._slots = slots
        self._spawn = spawn
        # Stops a run started early that start.lua refused (if it is running).
        self._refuse = refuse

    async def dispatch(self, entries: list[Entry], *, fresh: bool = False) -> None:
        """Slots for ``entries`` are already taken; each is given back when its
        run ends (or now, for entries that do not run).

        ``fresh``: the entries were just read (first deliveries). Those that
        carry their run start at once, while start.lua confirms them; their
        writes wait for the confirmation (one gate for the batch: Lease.ready).
        """
        early: dict[int, Lease] = {}
        gate: Gate | None = None
        if fresh:
            gate = asyncio.get_running_loop().create_future()
            for i, entry in enumerate(entries):
                started = self._store.early_start(entry, self._consumer, gate)
                if started is not None and started.lease is not None:
                    early[i] = started.lease
                    self._spawn(started)
        start = asyncio.ensure_future(
            self._store.start_many(entries, self._consumer, early)
        )
        try:
            # Shielded: a shutdown cancels this loop, not the runs started early,
            # which learn from the script's reply whether they may go on.
            results = await asyncio.shield(start)
        except asyncio.CancelledError:
            # Shutdown: the entries not started early will not run here (the
            # worker hands them back); their slots are free again.
            self._slots.give(len(entries) - len(early))
            if gate is not None:
                start.add_done_callback(
                    lambda done: self._settle_late(done, gate, entries, early)
                )
            raise
        except StoreError as exc:
            # Not started (or not known to be): early runs stop and write nothing;
            # the entries stay pending under this consumer, for a reclaimer.
            if gate is not None:
                self._settle(gate, early, None)
            log.warning("start_failed", error=str(exc), entries=len(entries))
            self._slots.give(len(entries) - len(early))
            return
        if gate is not None:
            refused = frozenset(
                entries[i].entry_id for i in early if results[i].outcome != "ok"
            )
            self._settle(gate, early, refused)
        refusals = []
        for i, (entry, result) in enumerate(zip(entries, results, strict=True)):
            if i in early:
                if result.outcome == "ok":
                    continue  # already running, and confirmed
            elif self._hand_over(result):
                continue
            refusals.append((entry, result))
        await self._handle_refused(refusals)

    def _settle(
        self, gate: Gate, early: dict[int, Lease], refused: frozenset[str] | None
    ) -> None:
        """Settle the batch's early starts; stop those that may not run (a run
        whose task has not begun yet sees the gate settled when it does)."""
        self._store.settle(gate, refused)
        if refused is None or refused:
            for lease in early.values():
                if refused is None or lease.entry_id in refused:
                    self._refuse(lease)

    def _hand_over(self, result: StartResult) -> bool:
        """Spawn a started run, or free the slot of one that will not run. No
        await: every slot is settled before anything else can cancel us."""
        if result.outcome == "ok":
            self._spawn(result)
            return True
        self._slots.give(1)
        return False

    async def _handle_refused(self, refused: list[tuple[Entry, StartResult]]) -> None:
        for entry, result in refused:
            await self._refused(entry, result)

    async def _refused(self, entry: Entry, result: StartResult) -> None:
        if result.outcome == "gone":
            await self._bury(entry)
        elif result.outcome == "dead":
            log.error(
                "run_dead_lettered",
                run_id=entry.run_id,
                queue=entry.queue,
                reason="delivered too many times (poison)",
            )

    def _settle_late(
        self,
        start: asyncio.Future[list[StartResult]],
        gate: Gate,
        entries: list[Entry],
        early: dict[int, Lease],
    ) -> None:
        """The read was cancelled (shutdown) while its start was in flight: settle
        the early runs by the reply. Entries not started early stay pending for
        the worker's hand-back."""
        if start.cancelled() or start.exception() is not None:
            self._settle(gate, early, None)
            return
        results = start.result()
        refused = frozenset(
            entries[i].entry_id for i in early if results[i].outcome != "ok"
        )
        self._settle(gate, early, refused)

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
