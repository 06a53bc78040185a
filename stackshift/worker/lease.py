"""Lease keeper: keeps this worker's in-flight entries fresh, however long a step runs."""

from __future__ import annotations

import asyncio
import dataclasses
import time

import anyio

from ..errors import StoreError
from ..logs import get_logger
from ..observe import AttemptObserver
from ..store import Lease, Store

log = get_logger("stackshift.worker")


@dataclasses.dataclass(slots=True, eq=False)
class Inflight:
    """A run being executed here, in ``task``."""

    lease: Lease
    task: asyncio.Task[None] | None
    lost: bool = False  # another worker took the entry over: write nothing more
    stopping: bool = False  # we cancelled its attempt (lease lost, shutdown, cancel)
    cancelled: bool = False  # app.cancel() asked for it: it ends cancelled
    finishing: bool = False  # its outcome is being written: never cancel it now
    timed_out: bool = False  # the job's timeout cancelled its attempt
    observer: AttemptObserver | None = None  # metrics, traces (observe.py)

    def time_out(self) -> None:
        """The attempt ran past the job's timeout: cancel it (unless it is
        already stopping or finishing)."""
        if self.finishing or self.stopping or self.task is None:
            return
        self.timed_out = True
        self.task.cancel()

    def stop(self, *, lost: bool = False, cancel: bool = False) -> None:
        """Cancel the attempt, unless its outcome is already being written."""
        if self.finishing or self.task is None:
            return
        self.lost = self.lost or lost
        self.cancelled = self.cancelled or cancel
        self.stopping = True
        self.task.cancel()


class LeaseKeeper:
    """Renews every tracked lease each ``interval`` (a third of the lease timeout),
    with one fenced script per queue; cancels the runs whose lease was lost."""

    def __init__(self, store: Store, consumer: str, lease_timeout: float) -> None:
        self._store = store
        self._consumer = consumer
        self._lease_timeout = lease_timeout
        self.interval = lease_timeout / 3
        # Keyed by (queue, entry id): two streams can mint the same entry id.
        self._inflight: dict[tuple[str, str], Inflight] = {}

    def track(self, lease: Lease) -> Inflight:
        """Track the run of the current task."""
        inflight = Inflight(lease, asyncio.current_task())
        self._inflight[lease.queue, lease.entry_id] = inflight
        return inflight

    def untrack(self, inflight: Inflight) -> None:
        self._inflight.pop((inflight.lease.queue, inflight.lease.entry_id), None)

    def __len__(self) -> int:
        return len(self._inflight)

    def cancel_all(self) -> None:
        for inflight in list(self._inflight.values()):
            inflight.stop()

    def stop_refused(self, lease: Lease) -> None:
        """start.lua refused a run started early: stop it if it runs (one whose
        task has not begun yet finds its gate settled when it does)."""
        inflight = self._inflight.get((lease.queue, lease.entry_id))
        if inflight is not None and inflight.lease is lease:
            inflight.stop(lost=True)

    def cancel_run(self, queue: str, run_id: str) -> bool:
        """app.cancel() asked for this run: stop its handler if it runs here."""
        for inflight in list(self._inflight.values()):
            if inflight.lease.queue == queue and inflight.lease.run_id == run_id:
                inflight.stop(cancel=True)
                return True
        return False

    async def run(self) -> None:
        """Renew until cancelled; warns when the event loop was blocked."""
        while True:
            due = time.monotonic() + self.interval
            await anyio.sleep(self.interval)
            late = time.monotonic() - due
            if late > self._lease_timeout / 3:
                # A handler blocked the loop: leases may have expired meanwhile,
                # and other workers may have taken runs over (their writes win).
                log.critical(
                    "event_loop_blocked",
                    seconds=round(late, 2),
                    lease_timeout=self._lease_timeout,
                )
            await self.renew_all()

    async def renew_all(self) -> None:
        by_queue: dict[str, list[Inflight]] = {}
        for inflight in self._inflight.values():
            by_queue.setdefault(inflight.lease.queue, []).append(inflight)
        for queue, runs in by_queue.items():
            try:
                lost, cancel = await self._store.renew(
                    queue, self._consumer, [r.lease for r in runs]
                )
            except StoreError as exc:
                log.warning("lease_renew_failed", queue=queue, error=str(exc))
                continue
            for inflight in runs:
                entry = inflight.lease.entry_id
                if entry in lost and not inflight.finishing:
                    inflight.stop(lost=True)
                    log.warning("lease_lost", run_id=inflight.lease.run_id, queue=queue)
                elif entry in cancel:  # the cancel channel's message was missed
                    inflight.stop(cancel=True)
