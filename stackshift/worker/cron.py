"""Cron ticks: every worker serving a cron's queue tries to make each tick's
run, and exactly one succeeds (cron_tick.lua only moves the schedule forward,
and the run id is made from the name and the tick). The next tick is computed
from the schedule alone, never from the previous run: a slow or crashed run
does not hold the schedule back.

Times are the Redis server's: the worker sleeps until a tick by its own clock,
corrected by the offset it has seen in the scripts' replies, and the script
refuses a tick that is not due on the server's clock ('early').
"""

from __future__ import annotations

import dataclasses
import time

from ..logs import get_logger
from ..registry import JobSpec
from ..serialization import encode
from ..store import Store
from ..store.keys import derived_run_id

log = get_logger("stackshift.worker")


@dataclasses.dataclass(slots=True, eq=False)
class _Cron:
    spec: JobSpec
    queue: str  # as stored: on a partitioned queue, the partition its name picks
    last: int | None = None  # the last tick made (by anyone), ms
    next: int | None = None  # the next tick to make, ms
    loaded: bool = False


def tick_run_id(queue: str, name: str, tick_ms: int) -> str:
    return derived_run_id(queue, tick_ms, f"cron\x1f{name}\x1f{tick_ms}")


class CronKeeper:
    """The crons of the jobs registered in this worker's app whose queue it
    serves; a chore of the scheduler."""

    def __init__(self, store: Store, specs: list[JobSpec], queues: list[str]) -> None:
        self._store = store
        self._started = int(time.time() * 1000)
        self._crons = [
            _Cron(spec, spec.queue or "default")
            for spec in specs
            if spec.cron is not None and (spec.queue or "default") in queues
        ]
        for cron in self._crons:
            count = store.partitions_known(cron.queue)
            cron.queue = store.placed(cron.queue, count, by=cron.spec.name)

    def __len__(self) -> int:
        return len(self._crons)

    def _now(self) -> int:
        return self._store.server_now_ms() or int(time.time() * 1000)

    async def __call__(self) -> float | None:
        """Make every tick that is due; seconds until the next one."""
        soonest: float | None = None
        for cron in self._crons:
            if not cron.loaded:
                await self._load(cron)
            assert cron.spec.cron is not None and cron.next is not None
            if self._now() >= cron.next:
                await self._tick(cron)
            wait = max(0.0, (cron.next - self._now()) / 1000)
            soonest = wait if soonest is None else min(soonest, wait)
        return soonest

    async def _load(self, cron: _Cron) -> None:
        """Start from the last tick anyone made; a schedule never run before
        starts from when this worker started (no backfill)."""
        assert cron.spec.cron is not None
        state = await self._store.cron_state(cron.queue, cron.spec.name)
        cron.last = int(state["last"]) if "last" in state else None
        cron.next = cron.spec.cron.next_after(
            cron.last if cron.last is not None else self._started
        )
        cron.loaded = True

    async def _tick(self, cron: _Cron) -> None:
        schedule, name = cron.spec.cron, cron.spec.name
        assert schedule is not None
        since = cron.last if cron.last is not None else self._started
        tick, missed = schedule.catch_up(since, self._now())
        if tick is None:
            return
        run_id = tick_run_id(cron.queue, name, tick)
        outcome, last, now = await self._store.cron_tick(
            cron.queue,
            name,
            tick_ms=tick,
            missed=missed,
            run_id=run_id,
            payload=encode({"cron": name, "tick": tick, "missed": missed}),
            schedule=schedule.expression,
            tz=schedule.tz,
        )
        self._store.saw_server_time(now)
        if outcome == "early":  # our clock ran ahead of the server's
            return
        cron.last = max(last, tick) if outcome != "done" else last
        cron.next = schedule.next_after(cron.last)
        if outcome == "made":
            log.info(
                "cron_tick_made", cron=name, tick=tick, missed=missed, run_id=run_id
            )
            if missed:
                log.warning("cron_ticks_missed", cron=name, missed=missed)
