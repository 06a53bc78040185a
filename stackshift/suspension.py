"""When a run suspends: the waits of one attempt (sleeps, event waits, child
runs) are collected until every step in flight is waiting, then written in one
finish (lua/_finish.lua, kind suspend).

Why collect: ``await asyncio.gather(ctx.step.invoke(...), ctx.step.invoke(...))``
must start both children before the run suspends, so a wait does not suspend
the run on its own; the run suspends once no step is still working (each
step.run, and each wait still registering, counts as working). Then:

- the finish says ``ok``: the run is suspended; every waiting step raises
  ``RunSuspended``, the handler unwinds and the attempt ends. The run is put
  back in its queue when a wait resolves, and its next attempt replays.
- it says ``resolved``: a wait was resolved meanwhile (an event routed while the
  wait was being registered, a child that ended at once): those steps return
  their records, and the run goes on here; the others wait again.
- it says ``lost``: the run is not ours any more; the steps raise ``LeaseLost``.
"""

from __future__ import annotations

import asyncio
import dataclasses

from .context import Attempt, LeaseLost, RunSuspended
from .serialization import Wait, Waiting, encode
from .store import Suspend

# Event loop turns to let sibling steps (asyncio.gather) reach their own waits
# once no step is working, before the run suspends.
SETTLE_TURNS = 2


@dataclasses.dataclass(slots=True, eq=False)
class _Pending:
    wait: Wait
    future: asyncio.Future[bytes]


class Suspension:
    """The waits of one attempt, and whether any step is still working."""

    def __init__(self, attempt: Attempt) -> None:
        self._attempt = attempt
        self._working = 0
        self._pending: dict[str, _Pending] = {}
        self._scheduled = False
        self._flushing: asyncio.Task[None] | None = None
        self.suspended = False  # the finish said ok: the attempt is over

    def began(self) -> None:
        """A step started working (a function running, a wait registering)."""
        self._working += 1

    def ended(self) -> None:
        self._working -= 1
        self._maybe_flush()

    async def wait(self, wait: Wait) -> bytes:
        """Wait for ``wait`` to resolve; returns its step record."""
        if self.suspended:
            raise RunSuspended(wait.step)
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._pending[wait.step] = _Pending(wait, future)
        self._maybe_flush()
        try:
            return await future
        finally:
            self._pending.pop(wait.step, None)

    def _maybe_flush(self) -> None:
        if self.suspended:
            return
        if self._pending and not self._working and not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._settle, SETTLE_TURNS)

    def _settle(self, turns: int) -> None:
        if self._working or not self._pending:
            self._scheduled = False  # a step is working again: it flushes later
            self._maybe_flush()
            return
        if turns:
            asyncio.get_running_loop().call_soon(self._settle, turns - 1)
            return
        self._flushing = asyncio.get_running_loop().create_task(self._flush())

    async def _flush(self) -> None:
        pending = [p for p in self._pending.values() if not p.future.done()]
        try:
            if pending:
                await self._suspend(pending)
        except BaseException as exc:  # a store error: the steps fail with it
            for p in pending:
                if not p.future.done():
                    p.future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
        finally:
            self._scheduled = False
            self._flushing = None
            self._maybe_flush()  # waits that are still pending

    async def _suspend(self, pending: list[_Pending]) -> None:
        waiting = encode(Waiting([p.wait for p in pending]))
        done = await self._attempt.store.finish(self._attempt.lease, Suspend(waiting))
        if done.outcome == "resolved":
            self._attempt.recorded.update(done.steps)
            for p in pending:
                record = done.steps.get(p.wait.step)
                if record is not None:
                    p.future.set_result(record)
            return
        self.suspended = done.outcome == "ok"
        for p in pending:
            p.future.set_exception(
                RunSuspended(p.wait.step) if self.suspended else LeaseLost("suspend")
            )
