"""Read-only views of runs and queues, for the app, the CLI and the
dashboard. Nothing here writes to Redis."""

from __future__ import annotations

import collections
import dataclasses
import time
from collections.abc import Awaitable, Callable
from typing import Any

from redis.exceptions import ResponseError

from ..serialization import RunInfo, RunStatus, run_info_from_hash
from .enqueue import EnqueueStore
from .keys import GROUP, QueueKeys, queue_of_run
from .records import TRACE_FIELDS, QueueGauges, QueueStats, as_str, mapped_errors

# The order runs are listed in when no status is given: in flight first, then
# those that wait, then those that ended.
LISTED = (
    RunStatus.RUNNING,
    RunStatus.QUEUED,
    RunStatus.SUSPENDED,
    RunStatus.SCHEDULED,
    RunStatus.COMPLETED,
    RunStatus.FAILED,
    RunStatus.CANCELLED,
)
# When filtering by job, a page reads at most this many run ids, for at most
# this long: it may come back short (with a cursor to go on from) rather than
# read a whole queue for a rare job (the dashboard's pages stay under 200 ms).
SCAN_PER_PAGE = 5000
SCAN_SECONDS = 0.1
# Run ids read per round trip when filtering by job: only their job names are
# read (or taken from their stream entries), and whole runs only for matches.
JOB_FILTER_READ = 500

# (run id, the position after it, its job if the index holding it says)
_Row = tuple[str, str, str | None]
# What orders a run in its status across partitions: (its entry id's ms, run
# id) in the stream, (score, run id) in a sorted set.
_Key = tuple[float, str]


def _listed(
    status: RunStatus | None, cursor: str | None
) -> tuple[list[RunStatus], int, str]:
    """The statuses a listing goes through, which of them a cursor
    (``<status>:<position>``) is at, and its position there ("" to start)."""
    statuses = list(LISTED) if status is None else [RunStatus(status)]
    if not cursor:
        return statuses, 0, ""
    name, _, position = cursor.partition(":")
    return statuses, statuses.index(RunStatus(name)), position


class InspectStore(EnqueueStore):
    async def get_run(self, run_id: str) -> RunInfo | None:
        queue = queue_of_run(run_id)
        q = self.keys.queue(queue)
        with mapped_errors("get_run"):
            pipe = self.client.pipeline(transaction=False)
            pipe.hget(*q.queued_index(run_id))  # first: see run_outcome
            pipe.hgetall(q.run(run_id))
            pipe.hgetall(q.steps(run_id))
            indexed, run, steps = await pipe.execute()
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
            _fill_from_entry(fields, carried)
        return run_info_from_hash(
            run_id, queue, fields, {as_str(k): as_str(v) for k, v in steps.items()}
        )

    async def get_runs(self, run_ids: list[str]) -> list[RunInfo | None]:
        """Many runs in one pipelined round trip (two, if some have not
        started: their job and payload are in their entries)."""
        if not run_ids:
            return []
        with mapped_errors("get_runs"):
            pipe = self.client.pipeline(transaction=False)
            for run_id in run_ids:
                q = self.keys.queue(queue_of_run(run_id))
                pipe.hget(*q.queued_index(run_id))  # first: see run_outcome
                pipe.hgetall(q.run(run_id))
                pipe.hgetall(q.steps(run_id))
            replies = await pipe.execute()
        found: list[tuple[str, dict[str, str], dict[str, str]]] = []
        entries: list[tuple[str, str]] = []  # (queue, entry id) still to read
        for i, run_id in enumerate(run_ids):
            indexed, run, steps = replies[3 * i : 3 * i + 3]
            if not run and indexed:
                run = {b"status": b"queued", b"entry": indexed}
            fields = {as_str(k): as_str(v) for k, v in run.items()}
            if fields and "job" not in fields and "entry" in fields:
                entries.append((queue_of_run(run_id), fields["entry"]))
            found.append(
                (run_id, fields, {as_str(k): as_str(v) for k, v in steps.items()})
            )
        carried: dict[tuple[str, str], dict[str, str]] = {}
        if entries:
            with mapped_errors("get_runs"):
                pipe = self.client.pipeline(transaction=False)
                for queue, entry in entries:
                    pipe.xrange(self.keys.queue(queue).stream, entry, entry)
                for (queue, entry), reply in zip(
                    entries, await pipe.execute(), strict=True
                ):
                    carried[queue, entry] = (
                        {as_str(k): as_str(v) for k, v in reply[0][1].items()}
                        if reply
                        else {}
                    )
        out: list[RunInfo | None] = []
        for run_id, fields, steps in found:
            if not fields:
                out.append(None)
                continue
            queue = queue_of_run(run_id)
            if "job" not in fields and "entry" in fields:
                _fill_from_entry(fields, carried.get((queue, fields["entry"]), {}))
            out.append(run_info_from_hash(run_id, queue, fields, steps))
        return out

    async def _stored_of(self, queue: str) -> list[str]:
        """The queues as stored that ``queue`` is: itself, or its partitions."""
        await self.partitions(queue, register=False)
        return self.stored(queue)

    async def list_runs(
        self,
        queue: str,
        *,
        status: RunStatus | None = None,
        job: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> tuple[list[RunInfo], str | None]:
        """A page of a queue's runs, through the structures that hold each
        status (never a scan of keys): running and queued runs newest first
        (the stream), suspended and scheduled runs soonest due first (their
        timer sets), ended runs newest first (completed, failed, cancelled:
        sets by when they ended). Without ``status``, in that order. A
        partitioned queue's runs come in that same order, as one queue's
        would: its partitions' pages are merged.

        Returns the runs and the cursor of the next page (None: no more)."""
        stored = await self._stored_of(queue)
        if len(stored) > 1:
            return await self._list_merged(
                stored, status=status, job=job, limit=limit, cursor=cursor,
                budget=_Budget(SCAN_PER_PAGE, time.monotonic() + SCAN_SECONDS),
            )  # fmt: skip
        at, _, inner = (cursor or "0/").partition("/")
        index = int(at) if at.isdigit() else 0
        out: list[RunInfo] = []
        budget = _Budget(SCAN_PER_PAGE, time.monotonic() + SCAN_SECONDS)
        while index < len(stored) and len(out) < limit and not budget.spent():
            page, inner_next = await self._list_stored(
                stored[index], status=status, job=job, limit=limit - len(out),
                cursor=inner or None, budget=budget,
            )  # fmt: skip
            out += page
            if inner_next is None:
                index, inner = index + 1, ""
            else:
                inner = inner_next
        return out, (f"{index}/{inner}" if index < len(stored) else None)

    async def _list_stored(
        self,
        queue: str,
        *,
        status: RunStatus | None,
        job: str | None,
        limit: int,
        cursor: str | None,
        budget: _Budget,
    ) -> tuple[list[RunInfo], str | None]:
        statuses, at, position = _listed(status, cursor)
        out: list[RunInfo] = []
        count = limit if job is None else JOB_FILTER_READ
        # A job filter may read past many runs of other jobs: within its
        # budget, then a short page and the cursor to go on from.
        while at < len(statuses) and len(out) < limit:
            if job is not None and budget.spent():
                break
            page, done = await self._page_ids(queue, statuses[at], position, count)
            budget.left -= len(page)
            valid = [row[0] for row in page if _is_run_id(row[0], queue)]
            if job is not None:
                valid = await self._maybe_of_job(valid, job, page)
            found = dict(zip(valid, await self.get_runs(valid), strict=True))
            for run_id, after, _job in page:
                position = after  # the next page starts after this run
                run = found.get(run_id)
                if run is not None and (job is None or run.job == job):
                    out.append(run)
                    if len(out) == limit:
                        done = False
                        break
            if done:
                at, position = at + 1, ""
        more = at < len(statuses)
        return out, (f"{statuses[at]}:{position}" if more else None)

    async def _list_merged(
        self,
        stored: list[str],
        *,
        status: RunStatus | None,
        job: str | None,
        limit: int,
        cursor: str | None,
        budget: _Budget,
    ) -> tuple[list[RunInfo], str | None]:
        """``_list_stored`` over the partitions of one queue at once: each
        status's runs in one order (what orders them in each partition: the
        stream entry id, the set's score), by a merge of the partitions'
        pages. The cursor is the status and each partition's position in it."""
        statuses, at, joined = _listed(status, cursor)
        positions = [""] * len(stored)
        given = joined.split(",")
        if len(given) == len(stored):
            positions = given
        out: list[RunInfo] = []
        count = limit if job is None else JOB_FILTER_READ
        while at < len(statuses) and len(out) < limit:
            merge = _Merge(self._keyed_page, stored, statuses[at], positions, count)
            left_over = False  # runs the merge gave that this page has no room for
            while len(out) < limit:
                if job is not None and budget.spent():
                    break
                batch = await merge.next(count)
                if not batch:
                    break
                budget.left -= len(batch)
                rows = [row for _, row in batch]
                valid = [r[0] for p, r in batch if _is_run_id(r[0], stored[p])]
                if job is not None:
                    valid = await self._maybe_of_job(valid, job, rows)
                found = dict(zip(valid, await self.get_runs(valid), strict=True))
                for n, (p, (run_id, after, _job)) in enumerate(batch, 1):
                    positions[p] = after  # the next page starts after this run
                    run = found.get(run_id)
                    if run is not None and (job is None or run.job == job):
                        out.append(run)
                        if len(out) == limit:
                            left_over = n < len(batch)
                            break
            if left_over or not merge.finished():
                break
            at, positions = at + 1, [""] * len(stored)
        if at >= len(statuses):
            return out, None
        return out, f"{statuses[at]}:{','.join(positions)}"

    async def _keyed_page(
        self, queue: str, status: RunStatus, position: str, count: int
    ) -> tuple[list[tuple[_Key, _Row]], bool]:
        """``_page_ids`` with what orders each row in its status: its entry
        id (the stream) or its score (a set), as a key that compares across
        partitions (larger first where the status lists newest first)."""
        if status in (RunStatus.RUNNING, RunStatus.QUEUED):
            with mapped_errors("list runs"):
                page, done = await self._stream_page(queue, status, position, count)
            # An entry id's sequence counts within one stream only: within a
            # millisecond, the run id (sortable by creation) orders them.
            keyed: list[tuple[_Key, _Row]] = [
                ((float(row[1].partition("-")[0]), row[0]), row) for row in page
            ]
            return keyed, done
        zset, newest_first = _ordered_set(self.keys.queue(queue), status)
        start = int(position or 0)
        read = self.client.zrevrange if newest_first else self.client.zrange
        with mapped_errors("list runs"):
            ids = await read(zset, start, start + count - 1, withscores=True)
        keyed = [
            ((float(score), as_str(i)), (as_str(i), str(start + n + 1), None))
            for n, (i, score) in enumerate(ids)
        ]
        return keyed, len(ids) < count

    async def _maybe_of_job(
        self, run_ids: list[str], job: str, page: list[_Row]
    ) -> list[str]:
        """The runs of ``run_ids`` that may be of ``job``: one small read per
        run whose stream entry did not say (a whole run is many fields)."""
        known = {run_id: name for run_id, _after, name in page}
        unknown = [run_id for run_id in run_ids if known.get(run_id) is None]
        if unknown:
            with mapped_errors("list runs"):
                pipe = self.client.pipeline(transaction=False)
                for run_id in unknown:
                    pipe.hget(self.keys.queue(queue_of_run(run_id)).run(run_id), "job")
                for run_id, name in zip(unknown, await pipe.execute(), strict=True):
                    known[run_id] = as_str(name) if name else None
        # No job recorded: not started yet or gone; get_runs tells which.
        return [r for r in run_ids if known.get(r) in (job, None)]

    async def _page_ids(
        self, queue: str, status: RunStatus, position: str, count: int
    ) -> tuple[list[_Row], bool]:
        """Up to ``count`` run ids of one status from ``position``, each with
        the position after it; and whether that status has no more."""
        q = self.keys.queue(queue)
        with mapped_errors("list runs"):
            if status in (RunStatus.RUNNING, RunStatus.QUEUED):
                return await self._stream_page(queue, status, position, count)
            zset, newest_first = _ordered_set(q, status)
            start = int(position or 0)
            read = self.client.zrevrange if newest_first else self.client.zrange
            ids = await read(zset, start, start + count - 1)
        page: list[_Row] = [
            (as_str(i), str(start + n + 1), None) for n, i in enumerate(ids)
        ]
        return page, len(ids) < count

    async def _stream_page(
        self, queue: str, status: RunStatus, position: str, count: int
    ) -> tuple[list[_Row], bool]:
        """Entries of the stream newest first: those up to the group's last
        delivered id are running (acknowledged entries are deleted), those
        after it are queued."""
        stream = self.keys.queue(queue).stream
        try:
            groups = await self.client.xinfo_groups(stream)
        except ResponseError:  # no stream yet
            return [], True
        group = next((g for g in groups if as_str(g["name"]) == GROUP), None)
        delivered = as_str(group["last-delivered-id"]) if group else "0-0"
        high = f"({position}" if position else None
        if status == RunStatus.QUEUED:
            low, high = f"({delivered}", high or "+"
        else:
            low, high = "-", high or delivered
        entries = await self.client.xrevrange(stream, high, low, count=count)
        page: list[_Row] = [
            (
                as_str(fields.get(b"r", b"")),
                as_str(entry_id),
                as_str(fields[b"j"]) if b"j" in fields else None,
            )
            for entry_id, fields in entries
        ]
        return page, len(entries) < count

    # --- for stackshift.observe: /metrics, /readyz, traces ---------------------

    async def queue_gauges(self, queue: str) -> QueueGauges:
        """Runs by state and the oldest undelivered entry of a queue (over its
        partitions): ``queue_stats``'s one pipelined read per partition, then,
        while runs are queued, an XRANGE of one entry. A queue that does not
        exist reads as empty (and is not created)."""
        parts = [await self._stored_read(s) for s in await self._stored_of(queue)]
        stats = _summed(queue, [part.stats for part in parts])
        oldest = [
            await self._first_after(part.stats.queue, part.delivered)
            for part in parts
            if part.stats.waiting
        ]
        found = [ms for ms in oldest if ms is not None]
        return QueueGauges(
            group=all(part.group for part in parts),
            queued=stats.waiting,
            running=stats.running,
            scheduled=stats.scheduled,
            suspended=stats.suspended,
            dead=stats.dead,
            oldest_queued_ms=min(found) if found else None,
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

    async def run_of_idempotency_key(self, queue: str, key: str) -> str | None:
        """The run an idempotency key made on a queue (within its TTL)."""
        count = await self.partitions(queue, register=False)
        stored = self.placed(queue, count, by=key)
        with mapped_errors("idempotency key"):
            run_id = await self.client.get(self.keys.queue(stored).idem(key))
        return as_str(run_id) if run_id else None

    async def run_outcome(self, run_id: str) -> tuple[str, bytes | None, bytes | None]:
        """(status, result JSON, error JSON) of a run; status '' if unknown."""
        q = self.keys.queue(queue_of_run(run_id))
        with mapped_errors("run_outcome"):
            # The index before the record: a start (start.lua) writes the record
            # and drops the index in one script, which may run between these
            # two reads; read the other way round, a run that starts between
            # them would look like no run at all.
            pipe = self.client.pipeline(transaction=False)
            pipe.hexists(*q.queued_index(run_id))
            pipe.hmget(q.run(run_id), "status", "result", "error")
            indexed, (status, result, error) = await pipe.execute()
        if not status and indexed:
            return "queued", None, None
        return (as_str(status) if status else ""), result, error

    async def dead_runs(self, queue: str, limit: int = 100) -> list[str]:
        """Run ids in the dead letter set of a queue, newest first."""
        found: list[tuple[float, str]] = []
        with mapped_errors("dead_runs"):
            for stored in await self._stored_of(queue):
                dead = self.keys.queue(stored).dead
                found += [
                    (score, as_str(i))
                    for i, score in await self.client.zrevrange(
                        dead, 0, limit - 1, withscores=True
                    )
                ]
        return [run_id for _score, run_id in sorted(found, reverse=True)[:limit]]

    async def minute_counts(
        self, queue: str, minutes: int
    ) -> list[tuple[int, dict[str, int]]]:
        """Runs that ended in each of the last ``minutes`` minutes (oldest
        first): (epoch minute, {completed, failed, retried, cancelled,
        suspended: n})."""
        now = self.server_now_ms() or int(time.time() * 1000)
        last = now // 60_000
        wanted = list(range(last - minutes + 1, last + 1))
        stored = await self._stored_of(queue)
        with mapped_errors("minute counts"):
            pipe = self.client.pipeline(transaction=False)
            for part in stored:
                for minute in wanted:
                    pipe.hgetall(self.keys.queue(part).minute(minute))
            replies = await pipe.execute()
        counts: list[dict[str, int]] = [{} for _ in wanted]
        for i, reply in enumerate(replies):
            into = counts[i % len(wanted)]
            for k, v in reply.items():
                into[as_str(k)] = into.get(as_str(k), 0) + int(v)
        return list(zip(wanted, counts, strict=True))

    async def oldest_queued_ms(self, queue: str) -> int | None:
        """When the oldest run still waiting for a worker was queued (ms), or
        None: the first entry after the group's last delivered one (the oldest
        of its partitions)."""
        found = [await self._oldest(s) for s in await self._stored_of(queue)]
        return min((ms for ms in found if ms is not None), default=None)

    async def _oldest(self, queue: str) -> int | None:
        stream = self.keys.queue(queue).stream
        with mapped_errors("oldest queued"):
            try:
                groups = await self.client.xinfo_groups(stream)
            except ResponseError:
                return None
        group = next((g for g in groups if as_str(g["name"]) == GROUP), None)
        return await self._first_after(
            queue, as_str(group["last-delivered-id"]) if group else "0-0"
        )

    async def _first_after(self, queue: str, delivered: str) -> int | None:
        """The entry time (server clock, ms) of the first entry after
        ``delivered``: the oldest run not yet delivered to any worker."""
        stream = self.keys.queue(queue).stream
        with mapped_errors("oldest queued"):
            first = await self.client.xrange(stream, f"({delivered}", "+", count=1)
        return int(as_str(first[0][0]).partition("-")[0]) if first else None

    async def runs_of_correlation_id(
        self, queue: str, correlation_id: str, limit: int = 50
    ) -> list[str]:
        """Runs of a queue made with a correlation id, newest first."""
        ids: list[str] = []
        with mapped_errors("correlation index"):
            for stored in await self._stored_of(queue):
                ids += [
                    as_str(i)
                    for i in await self.client.zrevrange(
                        self.keys.queue(stored).correlated(correlation_id), 0, limit - 1
                    )
                ]
        return sorted(ids, reverse=True)[:limit]

    async def registered(self, kind: str) -> list[str]:
        """The names in a registry (queues, counters, events, crons), sorted."""
        with mapped_errors(f"{kind} registry"):
            names = await self.client.smembers(self.keys.registry(kind))
        return sorted(as_str(n) for n in names)

    async def known_queues(self) -> list[str]:
        """Every queue used so far (the registry: workers add theirs, and the
        enqueue side each queue it enqueues on), sorted."""
        return await self.registered("queues")

    async def timed_suspended(self, queue: str) -> int:
        """Suspended runs that wake on their own (a sleep, a wait's timeout)."""
        with mapped_errors("suspended"):
            count = await self.client.zcount(
                self.keys.queue(queue).suspended, "-inf", 1e15
            )
        return int(count)

    async def queue_stats(self, queue: str) -> QueueStats:
        """How many runs of a queue are in each state, and its totals (of all
        its partitions). A queue that does not exist reads as empty (and is
        not created)."""
        stored = await self._stored_of(queue)
        parts = [(await self._stored_read(s)).stats for s in stored]
        return parts[0] if len(parts) == 1 else _summed(queue, parts)

    async def _stored_read(self, queue: str) -> _StoredRead:
        """One pipelined read of a queue as stored: its stream's group, sets
        and totals."""
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
        stats = QueueStats(
            queue=queue,
            waiting=max(0, int(length) - running),  # acked entries are deleted
            running=running,
            scheduled=int(scheduled),
            dead=int(dead),
            consumers=int(group["consumers"]) if group else 0,
            totals={as_str(k): int(v) for k, v in totals.items()},
            suspended=int(suspended),
        )
        delivered = as_str(group["last-delivered-id"]) if group else "0-0"
        return _StoredRead(stats, group is not None, delivered)


@dataclasses.dataclass(slots=True, frozen=True)
class _StoredRead:
    stats: QueueStats
    group: bool  # the consumer group exists
    delivered: str  # its last-delivered entry id ("0-0" without a group)


@dataclasses.dataclass(slots=True)
class _Budget:
    """What one page of a filtered listing may read: run ids, and time."""

    left: int
    until: float  # time.monotonic()

    def spent(self) -> bool:
        return self.left <= 0 or time.monotonic() > self.until


def _summed(queue: str, parts: list[QueueStats]) -> QueueStats:
    """The partitions of a queue, as one queue."""
    totals: dict[str, int] = {}
    for part in parts:
        for name, n in part.totals.items():
            totals[name] = totals.get(name, 0) + n
    return QueueStats(
        queue=queue,
        waiting=sum(p.waiting for p in parts),
        running=sum(p.running for p in parts),
        scheduled=sum(p.scheduled for p in parts),
        dead=sum(p.dead for p in parts),
        consumers=max(p.consumers for p in parts),
        totals=totals,
        suspended=sum(p.suspended for p in parts),
    )


def _fill_from_entry(fields: dict[str, str], carried: dict[str, str]) -> None:
    """A run that has not started: its job, payload and correlation id are
    in its entry, and its creation time is the entry's."""
    fields["job"] = carried.get("j", "")
    fields["payload"] = carried.get("p", "null")
    if "c" in carried:
        fields.setdefault("correlation_id", carried["c"])
    fields["created_at"] = fields["entry"].partition("-")[0]


def _ordered_set(q: QueueKeys, status: RunStatus) -> tuple[str, bool]:
    """The sorted set that holds a queue's runs in ``status``, and whether it
    is listed newest (highest score) first."""
    return {
        RunStatus.SUSPENDED: (q.suspended, False),
        RunStatus.SCHEDULED: (q.delayed, False),
        RunStatus.COMPLETED: (q.completed, True),
        RunStatus.FAILED: (q.dead, True),
        RunStatus.CANCELLED: (q.cancelled, True),
    }[status]


# (queue as stored, status, position, count) -> a page of rows with their
# keys, and whether that status has no more: InspectStore._keyed_page.
_KeyedRead = Callable[
    [str, RunStatus, str, int], Awaitable[tuple[list[tuple[_Key, _Row]], bool]]
]


class _Merge:
    """The runs of one status over a queue's partitions, in one order: a
    page of each partition is read ahead, and the run that comes first of
    their first ones is taken, one at a time."""

    def __init__(
        self,
        read: _KeyedRead,
        stored: list[str],
        status: RunStatus,
        positions: list[str],
        count: int,
    ) -> None:
        self._read = read
        self._stored = stored
        self._status = status
        # Newest first: the stream's statuses and the ended ones.
        self._largest = status not in (RunStatus.SUSPENDED, RunStatus.SCHEDULED)
        self._reads = list(positions)  # where each partition's next page starts
        self._ahead: list[collections.deque[tuple[_Key, _Row]]] = [
            collections.deque() for _ in stored
        ]
        self._ended = [False] * len(stored)  # nothing after what is read ahead
        self._count = count

    async def next(self, count: int) -> list[tuple[int, _Row]]:
        """Up to ``count`` more runs, in order, each with its partition."""
        batch: list[tuple[int, _Row]] = []
        while len(batch) < count:
            for p, ahead in enumerate(self._ahead):
                if not ahead and not self._ended[p]:
                    page, done = await self._read(
                        self._stored[p], self._status, self._reads[p], self._count
                    )
                    ahead.extend(page)
                    if page:
                        self._reads[p] = page[-1][1][1]
                    self._ended[p] = done or not page
            heads = [p for p, ahead in enumerate(self._ahead) if ahead]
            if not heads:
                break
            pick = max if self._largest else min
            first = pick(heads, key=lambda p: self._ahead[p][0][0])
            batch.append((first, self._ahead[first].popleft()[1]))
        return batch

    def finished(self) -> bool:
        """Whether every run of the status was given out."""
        return all(
            ended and not ahead
            for ended, ahead in zip(self._ended, self._ahead, strict=True)
        )


def _is_run_id(run_id: str, queue: str) -> bool:
    try:
        return queue_of_run(run_id) == queue
    except ValueError:
        return False
