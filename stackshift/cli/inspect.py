"""The commands that look: ``queues``, ``stats``, ``runs``, ``show`` and
``dead``. None of them writes to Redis."""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from ..app import Stackshift
from ..errors import StackshiftError
from ..serialization import RunInfo, RunStatus
from ..store.keys import check_name
from ..store.records import QueueStats
from . import args as a
from . import reads, render
from .output import EMPTY, Output, when

Command = Callable[[Stackshift, argparse.Namespace, Output], Awaitable[int]]

# The columns of `queues`: every status a run can be in, in a run's order.
STATUSES = [s.value for s in RunStatus]


def add_parsers(sub: Any) -> None:
    q = a.subcommand(
        sub,
        "queues",
        "list every queue with its runs by status",
        "Every queue used at this prefix (enqueued on, or served by a worker),\n"
        "with its runs in each status now: completed and cancelled runs are\n"
        "those still kept (result_ttl), failed ones are the dead letters.",
    )
    a.store_options(q, "per queue")

    s = a.subcommand(
        sub,
        "stats",
        "show the depth of queues",
        "Runs waiting, running, scheduled, suspended and dead now, and totals\n"
        "since each queue was created (a total named like a count of now ends\n"
        "in _total).",
    )
    s.add_argument("queues", nargs="+", metavar="QUEUE")
    a.store_options(s, "per queue")

    r = a.subcommand(
        sub,
        "runs",
        "list a queue's runs",
        "A queue's runs: running and queued ones newest first, then suspended\n"
        "and scheduled ones soonest due first, then ended ones (completed,\n"
        "failed, cancelled) newest first. The `finished/wakes` column is when\n"
        "an ended run ended, or when a waiting one is due.",
    )
    r.add_argument("queue", metavar="QUEUE")
    r.add_argument("--status", choices=STATUSES, help="only runs in this status")
    r.add_argument("--job", help="only runs of this job")
    r.add_argument(
        "--limit", type=a.positive_int, default=50, help="show at most this many"
    )
    a.store_options(r, "per run, as `show --json`")

    w = a.subcommand(
        sub,
        "show",
        "show a run",
        "A run: its fields, a timeline of its steps (offset from when it was\n"
        "made, time since the record before, as a waterfall), what it waits\n"
        "for, its child runs, and its error with the traceback.",
    )
    w.add_argument("run_id", metavar="RUN_ID")
    a.store_options(w, "the run, with its child_runs")

    d = a.subcommand(
        sub,
        "dead",
        "list dead-lettered runs",
        "Dead-lettered runs of each queue, newest first: run id, job, attempt,\n"
        "the error, and its traceback.",
    )
    d.add_argument("queues", nargs="+", metavar="QUEUE")
    d.add_argument(
        "--limit", type=a.positive_int, default=100, help="at most this many per queue"
    )
    a.store_options(d, "per run")


# --- queues -------------------------------------------------------------------


class QueueRuns(msgspec.Struct, frozen=True):
    """A line of ``queues --json``."""

    queue: str
    runs: dict[str, int]  # by status, now
    consumers: int
    totals: dict[str, int]  # since the queue was created


async def queues(app: Stackshift, args: argparse.Namespace, out: Output) -> int:
    names = await app.store.known_queues()
    ended = await reads.ended_counts(app, names)
    rows = [
        _queue_runs(await app.store.queue_stats(name), *ended[name]) for name in names
    ]
    if out.json:
        out.records(rows)
    elif not rows:
        out.lines(["no queues yet: nothing was enqueued or served at this prefix"])
    else:
        columns = ["queue", *STATUSES, "consumers"]
        out.table(
            columns,
            [
                [row.queue, *(str(row.runs[s]) for s in STATUSES), str(row.consumers)]
                for row in rows
            ],
            numeric=columns[1:],
        )
    return 0


def _queue_runs(stats: QueueStats, completed: int, cancelled: int) -> QueueRuns:
    counts = {
        RunStatus.QUEUED: stats.waiting,
        RunStatus.RUNNING: stats.running,
        RunStatus.SCHEDULED: stats.scheduled,
        RunStatus.SUSPENDED: stats.suspended,
        RunStatus.COMPLETED: completed,
        RunStatus.FAILED: stats.dead,
        RunStatus.CANCELLED: cancelled,
    }
    return QueueRuns(
        queue=stats.queue,
        runs={status.value: counts[status] for status in RunStatus},
        consumers=stats.consumers,
        totals=dict(stats.totals),
    )


# --- stats --------------------------------------------------------------------

NOW_COLUMNS = ["waiting", "running", "scheduled", "dead", "suspended", "consumers"]
TOTALS_ORDER = ["enqueued", "completed", "retried", "failed", "cancelled"]


async def stats(app: Stackshift, args: argparse.Namespace, out: Output) -> int:
    found = [await app.store.queue_stats(queue) for queue in args.queues]
    if out.json:
        out.records(found)
        return 0
    seen = {key for s in found for key in s.totals}
    totals = [k for k in TOTALS_ORDER if k in seen] + sorted(seen - {*TOTALS_ORDER})
    columns = [
        "queue",
        *NOW_COLUMNS,
        *(f"{k}_total" if k in NOW_COLUMNS else k for k in totals),
    ]
    out.table(
        columns,
        [
            [
                s.queue,
                *(str(getattr(s, c)) for c in NOW_COLUMNS),
                *(str(s.totals.get(k, 0)) for k in totals),
            ]
            for s in found
        ],
        numeric=columns[1:],
    )
    return 0


# --- runs ---------------------------------------------------------------------

RUN_COLUMNS = [
    "run_id",
    "job",
    "status",
    "attempt",
    "created",
    "finished/wakes",
    "error",
]


async def runs(app: Stackshift, args: argparse.Namespace, out: Output) -> int:
    check_name(args.queue, "queue")
    if args.job is not None:
        check_name(args.job, "job")
    found = [
        run
        async for run in app.runs(
            args.queue, status=args.status, job=args.job, limit=args.limit
        )
    ]
    if out.json:
        out.records(found)
    elif not found:
        out.lines([f"queue {args.queue}: no {_which_runs(args)}"])
    else:
        out.table(RUN_COLUMNS, [_run_row(run) for run in found], numeric=["attempt"])
    return 0


def _which_runs(args: argparse.Namespace) -> str:
    text = f"{args.status} runs" if args.status else "runs"
    return f"{text} of job {args.job}" if args.job else text


def _run_row(run: RunInfo) -> list[str]:
    if run.status.finished:
        later = run.finished_at
    elif run.status == RunStatus.SUSPENDED:
        later = run.wakes_at
    elif run.status == RunStatus.SCHEDULED:
        later = run.scheduled_for
    else:
        later = None
    return [
        run.run_id,
        run.job or EMPTY,
        run.status.value,
        str(run.attempt),
        when(run.created_at),
        when(later),
        run.error.type if run.error else EMPTY,
    ]


# --- show -----------------------------------------------------------------------


class ChildRun(msgspec.Struct, frozen=True):
    run_id: str
    job: str
    status: str


async def show(app: Stackshift, args: argparse.Namespace, out: Output) -> int:
    run = await app.get_run(args.run_id)
    if run is None:
        raise StackshiftError(
            f"run {args.run_id} does not exist (or its record expired)"
        )
    kinds = await reads.step_kinds(app, run.run_id)
    child_ids = [
        kinds[step.step_id].child_run_id
        for step in run.steps
        if step.step_id in kinds and kinds[step.step_id].child_run_id
    ] + [wait.child_run_id for wait in run.waiting_for if wait.child_run_id]
    unique = list(dict.fromkeys(i for i in child_ids if i))
    children = [c for c in await app.store.get_runs(unique) if c is not None]
    if out.json:
        shown = msgspec.to_builtins(run)
        shown["child_runs"] = [ChildRun(c.run_id, c.job, c.status) for c in children]
        out.records([shown])
    else:
        out.lines(render.run_lines(run, kinds, children))
    return 0


# --- dead -------------------------------------------------------------------------


async def dead(app: Stackshift, args: argparse.Namespace, out: Output) -> int:
    for queue in args.queues:
        found = await app.dead_letters(check_name(queue, "queue"), args.limit)
        if out.json:
            out.records(found)
        else:
            out.lines(render.dead_lines(queue, found))
    return 0


COMMANDS: dict[str, Command] = {
    "queues": queues,
    "stats": stats,
    "runs": runs,
    "show": show,
    "dead": dead,
}
