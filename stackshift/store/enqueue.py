"""The enqueue side: making runs (enqueue.lua), one or a batch per round trip."""

from __future__ import annotations

import dataclasses
from typing import Any

from redis.exceptions import ResponseError

from . import scripts as _scripts
from .base import StoreBase
from .keys import GROUP, QueueKeys, queue_of_run
from .records import EnqueueRequest, EnqueueResult, as_str, mapped_errors

# Runs per enqueue.lua call in a bulk enqueue (bounds the script's run time).
ENQUEUE_ITEMS = 200

# The record fields that keep the trace context of the enqueue that made a run
# (W3C Trace Context), written through an enqueue's extra fields when tracing
# is on (stackshift.tracing).
TRACE_FIELDS = ("traceparent", "tracestate")


@dataclasses.dataclass(slots=True, frozen=True)
class QueueGauges:
    """A queue at one moment, for /metrics and /readyz (worker/metrics.py)."""

    group: bool  # its consumer group exists
    queued: int  # entries not yet delivered to any worker
    running: int  # entries delivered, not yet acknowledged
    scheduled: int
    suspended: int
    dead: int
    # The entry time (server clock, ms) of the oldest run not yet delivered.
    oldest_queued_ms: int | None


def _shared(req: EnqueueRequest) -> tuple[str, str, int, int, bytes]:
    """What the runs of one enqueue.lua call must have in common."""
    return req.job, req.correlation_id, req.delay_ms, req.run_at_ms, req.extra


class EnqueueStore(StoreBase):
    def _enqueue_call(
        self, q: QueueKeys, reqs: list[EnqueueRequest]
    ) -> tuple[_scripts.Script, list[str], list[Any]]:
        """One enqueue.lua call for runs that share job, correlation id,
        idempotency key (then there is one run), delay and extra fields."""
        first = reqs[0]
        idem = q.idem(first.idempotency_key) if first.idempotency_key else q.stats
        keys = [q.stream, q.delayed, q.stats, idem]
        args: list[Any] = [
            first.job,
            first.correlation_id,
            first.idempotency_key or "",
            int(self.settings.idempotency_ttl * 1000),
            first.delay_ms,
            first.run_at_ms,
            q.wake,
            first.extra,
        ]
        for req in reqs:
            keys += [q.run(req.run_id), q.bucket(req.run_id)]
            args += [req.run_id, req.payload]
        return self._scripts["enqueue"], keys, args

    async def enqueue(self, queue: str, req: EnqueueRequest) -> EnqueueResult:
        """Create a run (one round trip), or find the one its key already made."""
        _script, keys, args = self._enqueue_call(self.keys.queue(queue), [req])
        (reply,) = await self._call("enqueue", keys, args)
        return EnqueueResult(as_str(reply[0]), bool(int(reply[1])))

    async def enqueue_many(
        self, queue: str, reqs: list[EnqueueRequest]
    ) -> list[EnqueueResult]:
        """Create many runs in one pipelined round trip: runs that share job,
        correlation id and delay go ENQUEUE_ITEMS to a script call (a call's
        fixed cost, in Python and in Redis, outweighs a run's)."""
        q = self.keys.queue(queue)
        calls = []
        batch: list[EnqueueRequest] = []
        for req in reqs:
            if batch and (
                len(batch) == ENQUEUE_ITEMS
                or req.idempotency_key is not None
                or batch[0].idempotency_key is not None
                or _shared(req) != _shared(batch[0])
            ):
                calls.append(self._enqueue_call(q, batch))
                batch = []
            batch.append(req)
        if batch:
            calls.append(self._enqueue_call(q, batch))
        with mapped_errors("enqueue_many"):
            replies = await _scripts.call_many(self.commands, self._scripts, calls)
        out = []
        for reply in replies:
            if isinstance(reply, Exception):
                with mapped_errors("enqueue_many"):
                    raise reply
            out += [EnqueueResult(as_str(r[0]), bool(int(r[1]))) for r in reply]
        return out

    @property
    def registered_queues(self) -> set[str]:
        """Queues this process has added to the registry."""
        return self._registered

    async def register_queue(self, queue: str) -> None:
        """Add ``queue`` to the registry of queues (what the dashboard and
        ``stackshift queues`` list); the enqueue side does it once per queue
        and process, after its first enqueue there."""
        with mapped_errors("register queue"):
            await self.client.sadd(self.keys.queue_registry, queue)
        self._registered.add(queue)

    # --- reads for stackshift.observe: /metrics, /readyz, traces ----------------
    # (Read-only views, like inspect.py's; kept here for now.)

    async def queue_gauges(self, queue: str) -> QueueGauges:
        """Runs by state and the oldest undelivered entry of a queue: one
        pipelined read, then, if runs are queued, one XRANGE of one entry
        (the first after the group's last-delivered id: acknowledged entries
        are deleted, so the stream holds running and queued entries only).
        A queue that does not exist reads as empty (and is not created)."""
        q = self.keys.queue(queue)
        with mapped_errors("queue gauges"):
            pipe = self.client.pipeline(transaction=False)
            pipe.xinfo_groups(q.stream)
            pipe.xlen(q.stream)
            pipe.zcard(q.delayed)
            pipe.zcard(q.suspended)
            pipe.zcard(q.dead)
            groups, length, scheduled, suspended, dead = await pipe.execute(
                raise_on_error=False
            )
        if isinstance(groups, ResponseError):  # no such stream (yet)
            groups = []
        for reply in (length, scheduled, suspended, dead):
            if isinstance(reply, Exception):
                with mapped_errors("queue gauges"):
                    raise reply
        group = next((g for g in groups if as_str(g["name"]) == GROUP), None)
        running = int(group["pending"]) if group else 0
        queued = max(0, int(length) - running)
        oldest = None
        if queued:
            delivered = as_str(group["last-delivered-id"]) if group else "0-0"
            with mapped_errors("queue gauges"):
                first = await self.client.xrange(
                    q.stream, f"({delivered}", "+", count=1
                )
            if first:
                oldest = int(as_str(first[0][0]).partition("-")[0])
        return QueueGauges(
            group=group is not None,
            queued=queued,
            running=running,
            scheduled=int(scheduled),
            suspended=int(suspended),
            dead=int(dead),
            oldest_queued_ms=oldest,
        )

    async def trace_context(self, run_id: str) -> dict[str, str]:
        """The trace context kept on a run's record since its enqueue
        (``TRACE_FIELDS``; empty if none was kept)."""
        q = self.keys.queue(queue_of_run(run_id))
        with mapped_errors("trace context"):
            values = await self.client.hmget(q.run(run_id), *TRACE_FIELDS)
        return {
            name: as_str(value)
            for name, value in zip(TRACE_FIELDS, values, strict=True)
            if value
        }
