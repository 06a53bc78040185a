"""The commands that change runs: ``retry`` (one run, or every dead letter of
a queue), ``cancel`` (runs by id, or every run of a queue in a status) and
``release-key``. A bulk change says how many runs it is about to change and
asks first (``--yes`` does not ask); its progress shows at a terminal."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from ..app import Stackshift
from ..errors import StackshiftError, StoreError
from ..serialization import RunStatus
from ..store.keys import check_name
from . import args as a
from .failures import EXIT_USAGE
from .inspect import Command
from .output import Output, confirm, plural, printable

# Statuses `cancel --queue` takes: runs that have not started (a running run is
# cancelled by id, one at a time, on purpose).
BULK_CANCEL = [RunStatus.QUEUED, RunStatus.SCHEDULED, RunStatus.SUSPENDED]
BATCH = 100  # runs changed at once (one round trip each, in flight together)


def add_parsers(sub: Any) -> None:
    r = a.subcommand(
        sub,
        "retry",
        "re-drive a dead-lettered run, or every one of a queue",
        "Re-drive a dead-lettered run (it resumes after its last recorded step),\n"
        "or with --all-dead every run dead-lettered in QUEUE now.",
    )
    r.add_argument("run_id", nargs="?", metavar="RUN_ID")
    r.add_argument("--all-dead", metavar="QUEUE", help="every dead letter of QUEUE")
    a.yes_option(r)
    a.store_options(r, "per run re-driven")
    r.set_defaults(validate=_check_retry)

    c = a.subcommand(
        sub,
        "cancel",
        "cancel runs",
        "Cancel runs by id, or with --queue and --status every run of a queue\n"
        "in that status (and of --job). A queued, scheduled or suspended run is\n"
        "cancelled at once; a running one is asked to stop (its handler is\n"
        "cancelled) and ends cancelled, unless it completes first. Each run's\n"
        "status after the call is printed.",
    )
    c.add_argument("run_ids", nargs="*", metavar="RUN_ID")
    c.add_argument("--queue", help="cancel every run of this queue in --status")
    c.add_argument(
        "--status",
        choices=[s.value for s in BULK_CANCEL],
        help="with --queue: the status of the runs to cancel",
    )
    c.add_argument("--job", help="with --queue: only runs of this job")
    a.yes_option(c)
    a.store_options(c, "per run: run_id, status")
    c.set_defaults(validate=_check_cancel)

    k = a.subcommand(
        sub,
        "release-key",
        "forget an idempotency key",
        "Forget an idempotency key of a queue, so that the next enqueue with it\n"
        "makes a new run (after its run was dead-lettered, say).",
    )
    k.add_argument("queue", metavar="QUEUE")
    k.add_argument("key", metavar="KEY")
    a.store_options(k, "queue, key, released")


def _check_retry(args: argparse.Namespace) -> str | None:
    if (args.run_id is None) == (args.all_dead is None):
        return "give a RUN_ID or --all-dead QUEUE (one of them)"
    return None


def _check_cancel(args: argparse.Namespace) -> str | None:
    if args.run_ids and args.queue is not None:
        return "give RUN_IDs or --queue with --status, not both"
    if not args.run_ids and args.queue is None:
        return "give RUN_IDs, or --queue QUEUE --status STATUS"
    if args.queue is not None and args.status is None:
        return "--queue needs --status (queued, scheduled or suspended)"
    if args.queue is None and (args.status or args.job):
        return "--status and --job go with --queue"
    return None


class RunChange(msgspec.Struct, frozen=True, omit_defaults=True):
    """A line of ``retry`` and ``cancel`` with ``--json``: a run's status after
    the change, or why it could not be made (then status is null)."""

    run_id: str
    status: str | None
    error: str | None = None


# --- retry ----------------------------------------------------------------------


async def retry(app: Stackshift, args: argparse.Namespace, out: Output) -> int:
    if args.all_dead is not None:
        return await _retry_all(app, check_name(args.all_dead, "queue"), args, out)
    handle = await app.retry(args.run_id)
    if out.json:
        out.records([RunChange(handle.run_id, RunStatus.QUEUED.value)])
    else:
        out.lines(
            [f"re-driven: {handle.run_id} (queued; it resumes after its last step)"]
        )
    return 0


async def _retry_all(
    app: Stackshift, queue: str, args: argparse.Namespace, out: Output
) -> int:
    count = (await app.store.queue_stats(queue)).dead
    # The dead letters now, once each: a run that fails again while this runs
    # is not retried twice.
    run_ids = await app.store.dead_runs(queue, count) if count else []
    if not run_ids:
        if not out.json:
            out.lines([f"queue {queue}: no dead runs"])
        return 0
    what = f"{plural(len(run_ids), 'dead run')} of queue {queue}"
    await confirm(f"retry {what}?", yes=args.yes)

    async def retry_one(run_id: str) -> RunChange:
        try:
            await app.retry(run_id)
        except StoreError:
            raise
        except StackshiftError as exc:  # expired, or retried by someone else
            return RunChange(run_id, None, str(exc))
        return RunChange(run_id, RunStatus.QUEUED.value)

    changes = await _each(run_ids, retry_one, out, f"retrying {queue}")
    done = sum(change.error is None for change in changes)
    _report(out, changes, f"retried {plural(done, 'dead run')} of queue {queue}")
    return 0


# --- cancel -------------------------------------------------------------------------


async def cancel(app: Stackshift, args: argparse.Namespace, out: Output) -> int:
    if args.queue is not None:
        return await _cancel_all(app, args, out)
    changes = [await _cancel_one(app, run_id) for run_id in args.run_ids]
    failed = [change.error for change in changes if change.error is not None]
    if out.json:
        out.records(changes)  # failures included, with their error
    else:
        out.lines(
            f"{change.run_id}  {_status_text(change.status)}"
            for change in changes
            if change.error is None
        )
        for error in failed:  # as one-line errors are
            print(f"stackshift: {printable(error)}", file=sys.stderr)
    return EXIT_USAGE if failed else 0  # unknown runs, or not run ids


async def _cancel_one(app: Stackshift, run_id: str) -> RunChange:
    try:
        status = await app.cancel(run_id)
    except StoreError:
        raise
    except StackshiftError as exc:  # unknown (or expired), or not a run id
        return RunChange(run_id, None, str(exc))
    return RunChange(run_id, status.value)


def _status_text(status: str | None) -> str:
    if status == RunStatus.RUNNING:
        return "running: asked to stop (it ends cancelled, unless it completes first)"
    if status == RunStatus.CANCELLED:
        return "cancelled"
    return f"{status}: it had already ended, nothing changed"


async def _cancel_all(app: Stackshift, args: argparse.Namespace, out: Output) -> int:
    queue = check_name(args.queue, "queue")
    job = None if args.job is None else check_name(args.job, "job")
    of_job = f" of job {job}" if job else ""
    # The runs in that status now, once each (the listing moves as runs change).
    run_ids = [
        run.run_id
        async for run in app.runs(queue, status=args.status, job=job, limit=None)
    ]
    if not run_ids:
        if not out.json:
            out.lines([f"queue {queue}: no {args.status} runs{of_job}"])
        return 0
    what = f"{plural(len(run_ids), f'{args.status} run')}{of_job} of queue {queue}"
    await confirm(f"cancel {what}?", yes=args.yes)
    changes = await _each(
        run_ids, lambda run_id: _cancel_one(app, run_id), out, f"cancelling {queue}"
    )
    counts = Counter(change.status for change in changes if change.error is None)
    summary = f"cancelled {plural(counts.pop(RunStatus.CANCELLED.value, 0), 'run')}"
    summary += f" ({args.status}{of_job}) of queue {queue}"
    started = counts.pop(RunStatus.RUNNING.value, 0)
    if started:
        summary += f"; {started} had started: asked to stop"
    if counts:
        ended = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
        summary += f"; already ended, unchanged: {ended}"
    _report(out, changes, summary)
    return 0


# --- release-key ------------------------------------------------------------------


class KeyRelease(msgspec.Struct, frozen=True):
    """``release-key --json``."""

    queue: str
    key: str
    released: bool  # False: the key was not held (expired, released, never used)


async def release_key(app: Stackshift, args: argparse.Namespace, out: Output) -> int:
    released = await app.release_idempotency_key(args.queue, args.key)
    if out.json:
        out.records([KeyRelease(args.queue, args.key, released)])
    elif released:
        out.lines(
            [
                f"released idempotency key {args.key!r} of queue {args.queue}: "
                "the next enqueue with it makes a new run"
            ]
        )
    else:
        out.lines(
            [
                f"idempotency key {args.key!r} of queue {args.queue} was not held "
                "(expired, released, or never used): nothing to release"
            ]
        )
    return 0


# --- bulk changes -----------------------------------------------------------------


async def _each(
    run_ids: list[str],
    change: Callable[[str], Awaitable[RunChange]],
    out: Output,
    what: str,
) -> list[RunChange]:
    """``change`` each run, ``BATCH`` at a time, with a progress bar."""
    changes: list[RunChange] = []
    with out.progress(len(run_ids), what) as advance:
        for start in range(0, len(run_ids), BATCH):
            batch = run_ids[start : start + BATCH]
            changes += await asyncio.gather(*(change(run_id) for run_id in batch))
            advance(len(batch))
    return changes


def _report(out: Output, changes: list[RunChange], summary: str) -> None:
    """Every run's change with --json; else the summary, and each run that
    could not be changed."""
    if out.json:
        out.records(changes)
        return
    out.lines(
        [
            summary,
            *(f"  {c.run_id}: {c.error}" for c in changes if c.error is not None),
        ]
    )


COMMANDS: dict[str, Command] = {
    "retry": retry,
    "cancel": cancel,
    "release-key": release_key,
}
