"""Changes made to runs from outside an attempt: cancel, re-drive, resume a
suspended run (a waited event came, a child run ended), fire timers (delays,
backoffs, sleeps, wait timeouts), hand a child's end to its parent, and make
cron ticks' runs."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec

from ..serialization import ChildValue, ErrorInfo, encode
from .enqueue import EnqueueStore
from .finish import FinishStore
from .keys import queue_of_run
from .records import as_str, mapped_errors

# Runs looked at per timers.lua call, from the head of each timer set.
TIMER_BATCH = 100
# Candidates due up to this far past the server's clock (as last seen) are
# read: the estimate drifts by a little, and timers.lua checks them anyway.
TIMER_MARGIN_MS = 50
# A hand-off not done this long after its child ended is redone by a scheduler
# (its worker died between the child's finish and the parent's resume).
HANDOFF_GRACE_MS = 5_000


class ControlStore(FinishStore, EnqueueStore):
    async def cancel(self, run_id: str, reason: str = "") -> tuple[str, str]:
        """Cancel a run: ('cancelled'|'requested'|'ended'|'missing', detail).

        ``detail``: the status of an ended run, '1' if a cancelled run has a
        parent to tell (a hand-off), else ''."""
        queue = queue_of_run(run_id)
        q = self.keys.queue(queue)
        keys, args = self._finish_shared(q, "")
        error = encode(ErrorInfo("Cancelled", reason or "cancelled"))
        reply = await self._call(
            "cancel",
            [*keys, q.run(run_id), q.steps(run_id), q.bucket(run_id)],
            [*args, run_id, error, q.cancel_channel],
        )
        return as_str(reply[0]), (as_str(reply[1]) if len(reply) > 1 else "")

    async def redrive(self, run_id: str) -> tuple[str, str]:
        """Put a dead-lettered run back in its queue: ('ok'|'missing'|'not_failed', status)."""
        q = self.keys.queue(queue_of_run(run_id))
        reply = await self._call(
            "redrive", [q.run(run_id), q.steps(run_id), q.stream, q.dead], [run_id]
        )
        return as_str(reply[0]), (as_str(reply[1]) if len(reply) > 1 else "")

    async def redrive_all(self, queue: str) -> int:
        """Re-drive every dead letter of a queue (of all its partitions)."""
        await self.partitions(queue, register=False)
        return sum([await self._redrive_stored(s) for s in self.stored(queue)])

    async def _redrive_stored(self, queue: str) -> int:
        q = self.keys.queue(queue)
        done = 0
        while True:
            with mapped_errors("retry dead"):
                ids = [as_str(i) for i in await self.client.zrange(q.dead, 0, 99)]
            if not ids:
                return done
            replies = await asyncio.gather(*(self.redrive(i) for i in ids))
            moved = sum(outcome == "ok" for outcome, _ in replies)
            done += moved
            if not moved:
                return done  # what is left is not redrivable (expired records)

    async def release_idempotency_key(self, queue: str, key: str) -> bool:
        stored = self.placed(
            queue, await self.partitions(queue, register=False), by=key
        )
        with mapped_errors("release idempotency key"):
            return bool(await self.client.delete(self.keys.queue(stored).idem(key)))

    async def resume(
        self, run_id: str, step_key: str, kind: str, value: bytes, error: bytes = b""
    ) -> str:
        """Resolve a waited step of a run (resume.lua): 'resumed', 'recorded',
        'exists', 'stale' or 'gone'. ``kind``: 'event' or 'invoke'."""
        q = self.keys.queue(queue_of_run(run_id))
        reply = await self._call(
            "resume",
            [q.run(run_id), q.steps(run_id), q.stream, q.suspended],
            [run_id, step_key, value, error, kind],
        )
        return as_str(reply[0])

    async def fire_timers(
        self, queue: str, mode: str = "real"
    ) -> tuple[int, float | None]:
        """Move the runs whose time has come (timers.lua): scheduled runs that
        are due, suspended runs whose sleep or wait ran out. ``mode``: 'real',
        or for tests 'skip' (scheduled runs and sleeps are due now) and
        'skip_all' (and waits with a timeout time out now).

        Returns (runs moved, seconds until the next one is due, or None)."""
        q = self.keys.queue(queue)
        moved = 0
        skipped = 0  # suspended runs at the head that a 'skip' mode left waiting
        while True:
            # Candidates: what is due by the server's clock as last seen here
            # (timers.lua checks each against the server's clock itself).
            # Waits with no deadline (score inf) never come due.
            horizon = 1e15
            if mode == "real":
                horizon = self.server_now_ms(margin_ms=TIMER_MARGIN_MS) or horizon
            with mapped_errors("timers"):
                pipe = self.client.pipeline(transaction=False)
                pipe.zrangebyscore(q.delayed, "-inf", horizon, start=0, num=TIMER_BATCH)
                pipe.zrangebyscore(
                    q.suspended, "-inf", horizon, start=skipped, num=TIMER_BATCH
                )
                delayed, suspended = await pipe.execute()
            ids = [as_str(i) for i in (*delayed, *suspended)]
            if not ids:
                return moved, (await self._next_due(queue) if mode == "real" else None)
            keys = [q.delayed, q.suspended, q.stream]
            for run_id in ids:
                keys += [q.run(run_id), q.steps(run_id)]
            reply = await self._call("timers", keys, [len(delayed), mode, *ids])
            scheduled, woken, now = int(reply[0]), int(reply[1]), int(reply[2])
            self.saw_server_time(now)
            moved += scheduled + woken
            if mode != "real":
                # Every candidate was looked at: go on past those left waiting.
                skipped += len(suspended) - woken
                if len(delayed) < TIMER_BATCH and len(suspended) < TIMER_BATCH:
                    return moved, None
                continue
            # A full batch that was all due: more may be due behind it.
            if (len(delayed) == TIMER_BATCH and scheduled == len(delayed)) or (
                len(suspended) == TIMER_BATCH and woken == len(suspended)
            ):
                continue
            heads = [int(h) for h in reply[3:5] if int(h) >= 0]
            return moved, (max(0.0, (min(heads) - now) / 1000) if heads else None)

    async def _next_due(self, queue: str) -> float | None:
        """Seconds until the earliest timer of a queue comes due (None: none)."""
        q = self.keys.queue(queue)
        with mapped_errors("timers"):
            pipe = self.client.pipeline(transaction=False)
            pipe.execute_command("TIME")  # (pipe.time() is refused on a cluster)
            for zset in (q.delayed, q.suspended):
                pipe.zrangebyscore(zset, "-inf", 1e15, start=0, num=1, withscores=True)
            (now_s, now_us), *heads = await pipe.execute()
        now = int(now_s) * 1000 + int(now_us) // 1000
        self.saw_server_time(now)
        due = [score for head in heads for _member, score in head]
        return max(0.0, (min(due) - now) / 1000) if due else None

    # --- hand-offs: a child run's end reaches its parent ---------------------

    async def hand_off(self, child_id: str) -> str:
        """Tell a child run's parent how the child ended (resume.lua in the
        parent's queue), then forget the hand-off. Idempotent: a second hand-off
        finds the parent's step recorded ('exists').

        Returns what resume said, or 'gone' if the child has no parent."""
        q = self.keys.queue(queue_of_run(child_id))
        with mapped_errors("hand-off"):
            status, result, error, parent, step = await self.client.hmget(
                q.run(child_id), "status", "result", "error", "parent", "parent_step"
            )
        said = "gone"
        if parent and step and status:
            failed = as_str(status) != "completed"
            value = encode(
                ChildValue(
                    child_id, msgspec.Raw(b"null" if failed else result or b"null")
                )
            )
            said = await self.resume(
                as_str(parent),
                as_str(step),
                "invoke",
                value,
                (error or b"{}") if failed else b"",
            )
        with mapped_errors("hand-off"):
            await self.client.zrem(q.handoffs, child_id)
        return said

    async def overdue_handoffs(self, queue: str, limit: int = 100) -> list[str]:
        """Children whose end has not reached their parent for a while."""
        q = self.keys.queue(queue)
        with mapped_errors("hand-offs"):
            now_s, now_us = await self.client.execute_command("TIME")
            cutoff = int(now_s) * 1000 + int(now_us) // 1000 - HANDOFF_GRACE_MS
            ids = await self.client.zrangebyscore(
                q.handoffs, "-inf", cutoff, start=0, num=limit
            )
        return [as_str(i) for i in ids]

    # --- cron -------------------------------------------------------------------

    async def cron_tick(
        self,
        queue: str,
        name: str,
        *,
        tick_ms: int,
        missed: int,
        run_id: str,
        payload: bytes,
        schedule: str,
        tz: str,
    ) -> tuple[str, int, int]:
        """Make the run of one cron tick, once across all workers
        (cron_tick.lua): (outcome, last tick ms, server now ms)."""
        q = self.keys.queue(queue)
        reply = await self._call(
            "cron_tick",
            [
                q.cron(name),
                q.stream,
                q.delayed,
                q.stats,
                q.run(run_id),
                q.bucket(run_id),
            ],
            [tick_ms, missed, name, payload, run_id, q.wake, schedule, tz],
        )
        return as_str(reply[0]), int(reply[1]), int(reply[2])

    async def cron_state(self, queue: str, name: str) -> dict[str, str]:
        """A cron schedule's state (last tick, missed ticks...); on a partitioned
        queue it is kept in the partition its name picks."""
        count = await self.partitions(queue, register=False)
        stored = self.placed(queue, count, by=name)
        with mapped_errors("cron state"):
            raw: dict[Any, Any] = await self.client.hgetall(
                self.keys.queue(stored).cron(name)
            )
        return {as_str(k): as_str(v) for k, v in raw.items()}
