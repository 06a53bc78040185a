"""The ``stackshift`` command: ``worker``, and ``stats`` / ``show`` / ``dead`` / ``retry``
to look at queues and runs from a shell."""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import functools
import importlib
import importlib.metadata
import math
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Sequence
from typing import Any

import anyio
import msgspec
from anyio.abc import TaskStatus

from .app import Stackshift
from .config import redacted_url
from .errors import ConfigError, StackshiftError, StoreError
from .logs import configure_logging, get_logger
from .worker import DEFAULT_CONCURRENCY, DEFAULT_GRACE_PERIOD, DEFAULT_LEASE_TIMEOUT
from .worker.health import check as check_health
from .worker.health import log_task_waits

log = get_logger("stackshift.cli")

EXIT_RUNTIME = 1  # Redis unreachable or failing; a worker that failed while running
EXIT_USAGE = 2  # bad arguments or settings, an app that cannot be loaded, a bad request

EPILOG = """\
exit status:
  0  done (a worker: stopped by SIGTERM/SIGINT, or --burst and the queues are empty)
  1  Redis could not be reached or failed; a worker failed after it started;
     `check`: the health file is missing or stale
  2  bad usage: bad arguments or settings, an app that cannot be imported, a
     request that cannot be done (an unknown run, a run that is not failed)
errors before a worker starts are one line on stderr: `stackshift: ...`
"""


def load_app(target: str) -> Stackshift:
    """Import ``module:attribute`` (the current directory is importable).

    Raises:
        ConfigError: the target is malformed, does not import (or raises while
            importing), or is not a Stackshift app; the message says which.
    """
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise ConfigError(
            f"expected MODULE:APP (e.g. workers.uploads:app), got {target!r}"
        )
    if "" not in sys.path:
        sys.path.insert(0, "")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # the app's own code failed: say where, in one line
        raise ConfigError(
            f"cannot import {module_name}: {type(exc).__name__}: {exc}{_where(exc)}"
        ) from exc
    app = getattr(module, attr, None)
    if app is None:
        raise ConfigError(f"{module_name} has no attribute {attr!r}")
    if not isinstance(app, Stackshift):
        raise ConfigError(
            f"{target} is not a Stackshift app (found {type(app).__name__})"
        )
    return app


_IMPORTLIB = os.path.dirname(importlib.__file__)


def _where(exc: BaseException) -> str:
    """`` (at FILE:LINE)``: the innermost frame of the failed import outside
    Python's import machinery and this module, if any."""
    frames = [
        frame
        for frame in traceback.extract_tb(exc.__traceback__)
        if not frame.filename.startswith(("<", _IMPORTLIB))
        and frame.filename != __file__
    ]
    return f" (at {frames[-1].filename}:{frames[-1].lineno})" if frames else ""


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Appends ``(default: X)`` to an option's help, unless the help already
    names its default or there is none to show (None, a flag's False)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if (
            "(default" in text
            or action.default in (None, False, argparse.SUPPRESS)
            or not action.option_strings
        ):
            return text
        return f"{text} (default: %(default)s)"


def _subcommand(
    sub: Any, name: str, help_text: str, description: str | None = None
) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(
        name,
        help=help_text,
        description=description or help_text,
        epilog=EPILOG,
        formatter_class=_HelpFormatter,
    )
    return parser


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stackshift",
        description="Durable background jobs on Redis Streams.",
        epilog=EPILOG,
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    _worker_options(_subcommand(sub, "worker", "run a worker"))

    c = _subcommand(sub, "check", "exit 0 if a worker's health file is fresh (probes)")
    c.add_argument("--health-file", required=True, metavar="PATH")
    c.add_argument(
        "--max-age",
        type=_non_negative_seconds,
        default=30.0,
        metavar="SECONDS",
        help="older than this, the file is stale",
    )

    s = _subcommand(
        sub,
        "stats",
        "show the depth of queues",
        "Runs waiting, running, scheduled and dead now, and totals since each\n"
        "queue was created.",
    )
    s.add_argument("queues", nargs="+", metavar="QUEUE")
    d = _subcommand(
        sub,
        "dead",
        "list dead-lettered runs",
        "Dead-lettered runs of each queue, newest first: run id, job, attempt,\n"
        "the error, and its traceback.",
    )
    d.add_argument("queues", nargs="+", metavar="QUEUE")
    w = _subcommand(sub, "show", "show a run")
    w.add_argument("run_id")
    r = _subcommand(sub, "retry", "re-drive a dead-lettered run")
    r.add_argument("run_id")
    for inspecting in (s, d, w):
        inspecting.add_argument(
            "--json",
            action="store_true",
            help="machine output: one JSON object per line (per queue for "
            "stats, per run for dead)",
        )
    for inspecting in (s, d, w, r):
        inspecting.add_argument(
            "--url",
            help="Redis URL (default: $STACKSHIFT_REDIS_URL; the key prefix is "
            "$STACKSHIFT_PREFIX, else stackshift:)",
        )
    return parser


def _worker_options(w: argparse.ArgumentParser) -> None:
    w.add_argument(
        "app", help="the app to serve, as MODULE:APP (e.g. workers.uploads:app)"
    )
    w.add_argument(
        "--queue",
        "-q",
        action="append",
        dest="queues",
        metavar="QUEUE",
        help="a queue to serve; repeat for more (default: default)",
    )
    w.add_argument(
        "--concurrency",
        "-c",
        type=_positive_int,
        default=DEFAULT_CONCURRENCY,
        help="handlers running at once",
    )
    w.add_argument(
        "--lease-timeout",
        type=_positive_seconds,
        default=DEFAULT_LEASE_TIMEOUT,
        metavar="SECONDS",
        help="after this long without renewal, a worker's runs are taken over by others",
    )
    w.add_argument(
        "--grace-period",
        type=_non_negative_seconds,
        default=DEFAULT_GRACE_PERIOD,
        metavar="SECONDS",
        help="on SIGTERM/SIGINT, time for in-flight runs to finish before they are "
        "handed back (a second signal hands them back at once)",
    )
    w.add_argument(
        "--burst", action="store_true", help="exit once the queues are empty"
    )
    w.add_argument("--name", help="consumer name (default: HOST-PID-RANDOM)")
    w.add_argument(
        "--health-file",
        metavar="PATH",
        help="rewrite PATH every 5 s while Redis answers (for `stackshift check`)",
    )
    w.add_argument(
        "--log-format",
        choices=["auto", "json", "console"],
        default="auto",
        help="auto: JSON unless stdout is a terminal",
    )
    w.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="the lowest level of the lines logged",
    )
    w.add_argument(
        "--loop",
        choices=["auto", "asyncio", "uvloop"],
        default="auto",
        help="event loop; auto: uvloop when installed (pip install 'stackshift[uvloop]')",
    )


def _version() -> str:
    try:
        return importlib.metadata.version("stackshift")
    except importlib.metadata.PackageNotFoundError:  # a checkout, not installed
        return "(not installed)"


# argparse type functions: on a bad value, argparse prints
# "argument --concurrency/-c: must be ..., got '0'" and exits 2.


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be a whole number, got {text!r}"
        ) from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {text!r}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be a number of seconds, got {text!r}"
        ) from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def _positive_seconds(text: str) -> float:
    value = _seconds(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, got {text!r}")
    return value


def _non_negative_seconds(text: str) -> float:
    value = _seconds(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text!r}")
    return value


class _Progress:
    """How far ``stackshift worker`` got: errors before the worker started are
    reported in one line, errors after it as they are logged."""

    started = False


async def _serve(
    app: Stackshift, args: argparse.Namespace, progress: _Progress
) -> None:
    if app.settings.url.startswith("memory://"):
        log.warning(
            "memory_backend_single_process",
            url=app.settings.url,
            detail="memory:// lives inside this process: this worker sees only "
            "the runs enqueued by this process, none from other processes",
        )
    worker = app.worker(
        args.queues or ["default"],
        concurrency=args.concurrency,
        lease_timeout=args.lease_timeout,
        grace_period=args.grace_period,
        burst=args.burst,
        name=args.name,
        health_file=args.health_file,
    )

    async def on_signals() -> None:
        with anyio.open_signal_receiver(
            signal.SIGTERM, signal.SIGINT, signal.SIGUSR1
        ) as signals:
            async for received in signals:
                if received == signal.SIGUSR1:
                    log_task_waits()
                    continue
                # First signal: drain within the grace period. Second: hand back now.
                worker.stop(force=worker_stopping[0])
                worker_stopping[0] = True

    async def run_worker(*, task_status: TaskStatus[None]) -> None:
        await worker.run(task_status=task_status)
        tg.cancel_scope.cancel()

    worker_stopping = [False]
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(on_signals)
            await tg.start(run_worker)
            progress.started = True
    finally:
        await app.close()


async def _inspect(args: argparse.Namespace) -> int:
    async with Stackshift(args.url) as app:
        settings = app.settings
        print(
            f"reading {redacted_url(settings.url)} prefix {settings.prefix}",
            file=sys.stderr,
            flush=True,
        )
        if args.command == "stats":
            stats = [await app.store.queue_stats(queue) for queue in args.queues]
            _output(args, stats, _stats_lines)
        elif args.command == "dead":
            for queue in args.queues:
                runs = await app.dead_letters(queue)
                _output(args, runs, functools.partial(_dead_lines, queue))
        elif args.command == "show":
            run = await app.get_run(args.run_id)
            if run is None:
                raise StackshiftError(
                    f"run {args.run_id} does not exist (or its record expired)"
                )
            _output(args, [run], lambda rows: _run_lines(rows[0]))
        elif args.command == "retry":
            handle = await app.retry(args.run_id)
            print(f"re-driven: {handle.run_id}")
    return 0


Row = dict[str, Any]


def _output(
    args: argparse.Namespace,
    values: Sequence[Any],
    lines: Callable[[list[Row]], list[str]],
) -> None:
    """JSON lines with ``--json``, else lines for a person to read."""
    if args.json:
        for value in values:
            sys.stdout.buffer.write(msgspec.json.encode(value) + b"\n")
        sys.stdout.flush()
        return
    rows: list[Row] = [msgspec.to_builtins(value) for value in values]
    for line in lines(rows):
        print(_printable(line))


def _stats_lines(rows: list[Row]) -> list[str]:
    """A table: one row per queue, the counts now, then the totals."""
    flat = [
        {
            **{k: v for k, v in row.items() if not isinstance(v, dict)},
            **row.get("totals", {}),
        }
        for row in rows
    ]
    columns = list(dict.fromkeys(key for row in flat for key in row))
    cells = [[str(row.get(c, "")) for c in columns] for row in flat]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    return [
        "  ".join(
            cell.ljust(width) if i == 0 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(line, widths, strict=True))
        ).rstrip()
        for line in [columns, *cells]
    ]


def _dead_lines(queue: str, runs: list[Row]) -> list[str]:
    if not runs:
        return [f"queue {queue}: no dead runs"]
    lines = [f"queue {queue}: {len(runs)} dead run{'s' if len(runs) > 1 else ''}"]
    for run in runs:
        head = f"{run.get('run_id')}  {run.get('job')}  attempt {run.get('attempt')}"
        if run.get("finished_at"):
            head += f"  failed {run['finished_at']}"
        lines += ["", head, *_error_lines(run.get("error"), "  ")]
    return lines


def _error_lines(error: Row | None, indent: str) -> list[str]:
    """``Type: message``, then the traceback as lines of its own."""
    if not error:
        return [f"{indent}(no error recorded)"]
    message = str(error.get("message", "")).splitlines() or [""]
    lines = [f"{indent}{error.get('type', '?')}: {message[0]}"]
    lines += [f"{indent}  {more}" for more in message[1:]]
    traceback_text = str(error.get("traceback") or "").rstrip()
    lines += [f"{indent}  | {line}" for line in traceback_text.splitlines()]
    return lines


def _run_lines(run: Row) -> list[str]:
    """A run, field by field; its JSON values (payload, results) as compact JSON."""
    shown = {
        k: v
        for k, v in run.items()
        if k not in ("steps", "error", "waiting_for")
        and v is not None
        and v is not False
    }
    width = max(len(key) for key in [*shown, "steps"])
    lines = [
        f"{key.ljust(width)}  {_json(value) if key in JSON_FIELDS else value}"
        for key, value in shown.items()
    ]
    lines.extend(
        f"{'waits for'.ljust(width)}  {_wait_text(wait)}"
        for wait in run.get("waiting_for") or []
    )
    steps = run.get("steps") or []
    lines.append(f"{'steps'.ljust(width)}  {len(steps)}")
    lines.extend(
        f"  {step.get('step_id')}  attempt {step.get('attempt')}"
        f"  {step.get('recorded_at') or ''}  -> {_json(step.get('result'))}"
        for step in steps
    )
    if run.get("error"):
        lines += ["error", *_error_lines(run["error"], "  ")]
    return lines


def _wait_text(wait: Row) -> str:
    """What a suspended run waits for, in a line: ``await-refund: event
    refund.issued where {...}, until ...``."""
    kind = wait.get("kind")
    text = f"{wait.get('step_id')}: "
    if kind == "sleep":
        text += "sleep"
    elif kind == "event":
        text += "event " + " or ".join(wait.get("events") or [])
        if wait.get("match"):
            text += f" where {_json(wait['match'])}"
    else:
        text += f"child run {wait.get('child_run_id')}"
    if wait.get("until"):
        text += f", until {wait['until']}"
    return text


JSON_FIELDS = frozenset({"payload", "result"})


def _json(value: Any) -> str:
    return msgspec.json.encode(value).decode()


def _printable(line: str) -> str:
    """Control characters from stored text (an error message, a payload) are
    shown escaped, not sent to the terminal."""
    return "".join(c if c.isprintable() or c == "\t" else repr(c)[1:-1] for c in line)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "check":
        healthy, why = check_health(args.health_file, args.max_age)
        print(why, file=sys.stdout if healthy else sys.stderr)
        return 0 if healthy else 1
    progress = _Progress()
    try:
        if args.command == "worker":
            fmt = args.log_format
            configure_logging(
                json=None if fmt == "auto" else fmt == "json", level=args.log_level
            )
            app = load_app(args.app)
            anyio.run(
                _serve, app, args, progress, backend_options=_loop_options(args.loop)
            )
            _exit_past_abandoned_threads()
            return 0
        configure_logging(json=False, level="warning")
        return anyio.run(_inspect, args)
    except (Exception, BaseExceptionGroup) as exc:  # a group may hold cancellations
        failure = None if progress.started else _failure(exc)
        if failure is None:  # a bug, or the running worker failed: as logged
            raise
        print(f"stackshift: {_one_line(failure)}", file=sys.stderr)
        return EXIT_RUNTIME if _is_runtime(failure) else EXIT_USAGE


def _failure(exc: BaseException) -> BaseException | None:
    """The error to report in one line, or None to let ``exc`` propagate.

    anyio's task groups wrap errors in exception groups (nested, and with
    the cancellations they caused): look inside for the StackshiftError, or
    OSError / redis-py error, that stopped the command. Anything else in there
    is a bug, and its traceback is kept.
    """
    leaves = _leaves(exc)
    if not leaves or not all(_is_expected(e) for e in leaves):
        return None
    ours = [e for e in leaves if isinstance(e, StackshiftError)]
    return (ours or leaves)[0]


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    if isinstance(exc, asyncio.CancelledError):  # a sibling of the failure
        return []
    return [exc]


def _is_expected(exc: BaseException) -> bool:
    return isinstance(exc, StackshiftError | OSError) or _is_redis_error(exc)


def _is_redis_error(exc: BaseException) -> bool:
    # Only store/ imports redis; a redis-py error that escaped unmapped is
    # still an error of Redis, not a bug of the command.
    return any(
        cls.__module__.split(".")[0] == "redis" and cls.__name__ == "RedisError"
        for cls in type(exc).__mro__
    )


def _is_runtime(exc: BaseException) -> bool:
    """Redis or the network failed (exit 1); otherwise the request was wrong (2)."""
    return not isinstance(exc, StackshiftError) or isinstance(exc, StoreError)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, StackshiftError):
        return text
    return f"{type(exc).__name__}: {text}"


def _loop_options(choice: str) -> dict[str, Any]:
    """anyio's asyncio backend options for ``--loop``. uvloop cuts the worker's
    CPU per run by about a sixth (docs/performance.md)."""
    if choice == "asyncio":
        return {}
    try:
        import uvloop  # noqa: F401
    except ImportError:
        if choice == "uvloop":
            raise StackshiftError(
                "--loop uvloop: uvloop is not installed (pip install 'stackshift[uvloop]')"
            ) from None
        return {}
    return {"use_uvloop": True}


def _exit_past_abandoned_threads() -> None:
    """Exit now if sync steps abandoned at shutdown still hold their threads.

    Their runs were handed back already; waiting for the threads (the
    interpreter joins them before it exits) would only delay the exit the
    orchestrator waits for. ``os._exit`` skips that join, and the atexit
    handlers too: those are run here first.
    """
    abandoned = [
        t
        for t in threading.enumerate()
        if t is not threading.main_thread() and not t.daemon
    ]
    if abandoned:
        log.warning("worker_exit_abandoning_threads", threads=len(abandoned))
        _flush()
        atexit._run_exitfuncs()
        _flush()
        os._exit(0)


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # closed, or a broken pipe
            stream.flush()


if __name__ == "__main__":
    sys.exit(main())
