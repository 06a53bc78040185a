"""Lease keeper: keeps this worker's in-flight entries fresh, however long a step runs."""

from __future__ import annotations

import dataclasses
import time

import anyio
import structlog

from ..errors import StoreError
from ..store import Lease, Store

log = structlog.get_logger("stackshift.worker")


@dataclasses.dataclass(slots=True, eq=False)
class Inflight:
    """A run being executed here; ``scope`` cancels its attempt."""

    lease: Lease
    scope: anyio.CancelScope = dataclasses.field(default_factory=anyio.CancelScope)
    lost: bool = False  # another worker took the entry over: write nothing more
    finishing: bool = False  # its outcome is being written (the entry may be acked)


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
        inflight = self._inflight[lease.queue, lease.entry_id] = Inflight(lease)
        return inflight

    def untrack(self, inflight: Inflight) -> None:
        self._inflight.pop((inflight.lease.queue, inflight.lease.entry_id), None)

    def __len__(self) -> int:
        return len(self._inflight)

    def cancel_all(self) -> None:
        for inflight in list(self._inflight.values()):
            inflight.scope.cancel()

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
                lost = await self._store.renew(
                    queue, self._consumer, [r.lease for r in runs]
                )
            except StoreError as exc:
                log.warning("lease_renew_failed", queue=queue, error=str(exc))
                continue
            for inflight in runs:
                if inflight.lease.entry_id in lost and not inflight.finishing:
                    inflight.lost = True
                    inflight.scope.cancel()
                    log.warning("lease_lost", run_id=inflight.lease.run_id, queue=queue)
