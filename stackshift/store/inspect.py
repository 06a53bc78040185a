"""Read-only views of runs and queues, for the app, the CLI and the
dashboard. Nothing here writes to Redis."""

from __future__ import annotations

from typing import Any

from redis.exceptions import ResponseError

from ..serialization import RunInfo, run_info_from_hash
from .base import StoreBase
from .keys import GROUP, queue_of_run
from .records import QueueStats, as_str, mapped_errors


class InspectStore(StoreBase):
    async def get_run(self, run_id: str) -> RunInfo | None:
        queue = queue_of_run(run_id)
        q = self.keys.queue(queue)
        with mapped_errors("get_run"):
            pipe = self.client.pipeline(transaction=False)
            pipe.hgetall(q.run(run_id))
            pipe.hgetall(q.steps(run_id))
            pipe.hget(*q.queued_index(run_id))
            run, steps, indexed = await pipe.execute()
        if not run and indexed:  # queued, no record until it starts
            run = {b"status": b"queued", b"entry": indexed}
        if not run:
            return None
        fields = {as_str(k): as_str(v) for k, v in run.items()}
        if "job" not in fields and "entry" in fields:
            # Not started yet: job and payload are still in its entry.
            with mapped_errors("get_run"):
                found = await self.client.xrange(
                    q.stream, fields["entry"], fields["entry"]
                )
            carried = (
                {as_str(k): as_str(v) for k, v in found[0][1].items()} if found else {}
            )
            fields["job"] = carried.get("j", "")
            fields["payload"] = carried.get("p", "null")
            if "c" in carried:
                fields.setdefault("correlation_id", carried["c"])
            fields["created_at"] = fields["entry"].partition("-")[0]
        return run_info_from_hash(
            run_id, queue, fields, {as_str(k): as_str(v) for k, v in steps.items()}
        )

    async def run_outcome(self, run_id: str) -> tuple[str, bytes | None, bytes | None]:
        """(status, result JSON, error JSON) of a run; status '' if unknown."""
        q = self.keys.queue(queue_of_run(run_id))
        with mapped_errors("run_outcome"):
            pipe = self.client.pipeline(transaction=False)
            pipe.hmget(q.run(run_id), "status", "result", "error")
            pipe.hexists(*q.queued_index(run_id))
            (status, result, error), indexed = await pipe.execute()
        if not status and indexed:
            return "queued", None, None
        return (as_str(status) if status else ""), result, error

    async def dead_runs(self, queue: str, limit: int = 100) -> list[str]:
        """Run ids in the dead letter set of a queue, newest first."""
        with mapped_errors("dead_runs"):
            ids = await self.client.zrevrange(self.keys.queue(queue).dead, 0, limit - 1)
        return [as_str(i) for i in ids]

    async def queue_stats(self, queue: str) -> QueueStats:
        """How many runs of a queue are in each state, and its totals. A queue
        that does not exist reads as empty (and is not created)."""
        q = self.keys.queue(queue)
        with mapped_errors("queue stats"):
            pipe = self.client.pipeline(transaction=False)
            pipe.xinfo_groups(q.stream)
            pipe.zcard(q.delayed)
            pipe.zcard(q.dead)
            pipe.hgetall(q.stats)
            pipe.xlen(q.stream)
            pipe.zcard(q.suspended)
            replies = await pipe.execute(raise_on_error=False)
        groups, scheduled, dead, totals, length, suspended = replies
        if isinstance(groups, ResponseError):  # no such stream (yet)
            groups = []
        for reply in (scheduled, dead, totals, length, suspended):
            if isinstance(reply, Exception):
                with mapped_errors("queue stats"):
                    raise reply
        group: Any = next((g for g in groups if as_str(g["name"]) == GROUP), None)
        running = int(group["pending"]) if group else 0
        consumers = int(group["consumers"]) if group else 0
        return QueueStats(
            queue=queue,
            waiting=max(0, int(length) - running),  # acked entries are deleted
            running=running,
            scheduled=int(scheduled),
            dead=int(dead),
            consumers=consumers,
            totals={as_str(k): int(v) for k, v in totals.items()},
            suspended=int(suspended),
        )
