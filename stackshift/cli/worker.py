"""``stackshift worker`` (load the app, serve its queues until a signal) and
``stackshift check`` (the probe that reads a worker's health file)."""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import gc
import importlib
import os
import signal
import sys
import threading
import traceback
from typing import Any

import anyio
import msgspec
from anyio.abc import TaskStatus

from ..app import Stackshift
from ..errors import ConfigError, StackshiftError
from ..logs import configure_logging, get_logger
from ..worker import (
    DEFAULT_CONCURRENCY,
    DEFAULT_GRACE_PERIOD,
    DEFAULT_LEASE_TIMEOUT,
    default_consumer_name,
)
from ..worker.health import check as check_health
from ..worker.health import log_task_waits
from ..worker.supervisor import Supervisor
from . import args as a

log = get_logger("stackshift.cli")


def add_parsers(sub: Any) -> None:
    """The ``worker`` and ``check`` commands."""
    worker_options(a.subcommand(sub, "worker", "run a worker"))
    c = a.subcommand(sub, "check", "exit 0 if a worker's health file is fresh (probes)")
    c.add_argument("--health-file", required=True, metavar="PATH")
    c.add_argument(
        "--max-age",
        type=a.non_negative_seconds,
        default=30.0,
        metavar="SECONDS",
        help="older than this, the file is stale",
    )
    a.json_option(c, '{"healthy": ..., "detail": ...}')


def worker_options(w: argparse.ArgumentParser) -> None:
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
        type=a.positive_int,
        default=DEFAULT_CONCURRENCY,
        help="handlers running at once",
    )
    w.add_argument(
        "--lease-timeout",
        type=a.positive_seconds,
        default=DEFAULT_LEASE_TIMEOUT,
        metavar="SECONDS",
        help="after this long without renewal, a worker's runs are taken over by others",
    )
    w.add_argument(
        "--grace-period",
        type=a.non_negative_seconds,
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
        "--processes",
        type=a.positive_int,
        default=1,
        metavar="N",
        help="run N worker processes under a supervisor that restarts a crashed "
        "one and drains them all on SIGTERM; each gets --concurrency slots, "
        "a name -<n>, a health file .<n> and metrics port +<n>",
    )
    w.add_argument(
        "--health-file",
        metavar="PATH",
        help="rewrite PATH every 5 s while Redis answers (for `stackshift check`)",
    )
    w.add_argument(
        "--metrics-port",
        type=a.port,
        metavar="PORT",
        help="serve Prometheus /metrics, /healthz and /readyz on this port "
        "(default: no metrics)",
    )
    w.add_argument(
        "--log-format",
        choices=["auto", "json", "console"],
        default="auto",
        help="auto: JSON unless stdout is a terminal",
    )
    w.add_argument(
        "--json",
        action="store_const",
        const="json",
        dest="log_format",
        help="the same as --log-format json",
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


class Health(msgspec.Struct, frozen=True):
    """``stackshift check --json``."""

    healthy: bool
    detail: str


def check(args: argparse.Namespace) -> int:
    healthy, why = check_health(args.health_file, args.max_age)
    if args.json:
        sys.stdout.buffer.write(msgspec.json.encode(Health(healthy, why)) + b"\n")
        sys.stdout.flush()
    else:
        print(why, file=sys.stdout if healthy else sys.stderr)
    return 0 if healthy else 1


class Progress:
    """How far ``stackshift worker`` got: errors before the worker started are
    reported in one line, errors after it as they are logged."""

    started = False


def run(args: argparse.Namespace, progress: Progress) -> int:
    """Serve the app's queues until a signal (or, with --burst, until empty)."""
    fmt = args.log_format
    configure_logging(
        json=None if fmt == "auto" else fmt == "json", level=args.log_level
    )
    app = load_app(args.app)  # a bad app is one line here, not N children's
    if args.processes > 1:
        progress.started = True
        return asyncio.run(_supervise(args))
    _tune_collector()
    anyio.run(_serve, app, args, progress, backend_options=_loop_options(args.loop))
    _exit_past_abandoned_threads()
    return 0


# The cyclic collector's thresholds in a worker process. A run in flight holds a
# few hundred young objects; at concurrency 100 that is above the default young
# threshold (700), and a drain then ran a young collection every ~10 runs and a
# full one every ~1,300: 24-28 us of a ~130 us run (docs/performance.md).
GC_THRESHOLDS = (10_000, 10, 10)


def _tune_collector() -> None:
    """Freeze what the app's imports made (the collector never scans it again)
    and raise the young threshold. Only in the process ``stackshift worker``
    owns: an app that runs a Worker in its own process keeps its settings."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


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


async def _serve(app: Stackshift, args: argparse.Namespace, progress: Progress) -> None:
    if app.settings.url.startswith("memory://"):
        log.warning(
            "memory_backend_single_process",
            url=app.settings.url,
            detail="memory:// lives inside this process: this worker sees only "
            "the runs enqueued by this process, none from other processes",
        )
    # Passed only when asked for: the option is the metrics module's.
    extra = {} if args.metrics_port is None else {"metrics_port": args.metrics_port}
    worker = app.worker(
        args.queues or ["default"],
        concurrency=args.concurrency,
        lease_timeout=args.lease_timeout,
        grace_period=args.grace_period,
        burst=args.burst,
        name=args.name,
        health_file=args.health_file,
        **extra,
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


async def _supervise(args: argparse.Namespace) -> int:
    """``--processes N``: N children, each a ``stackshift worker`` with the same
    options but its own name, health file and metrics port."""
    given = sys.argv[1:]
    per_child = {"--processes", "--name", "--health-file", "--metrics-port"}
    argv: list[str] = []
    skip = False
    for arg in given:
        if skip:
            skip = False
            continue
        option = arg.split("=", 1)[0]
        if option in per_child:
            skip = "=" not in arg
            continue
        argv.append(arg)

    def own(n: int) -> list[str]:
        extra = ["--name", f"{args.name or default_consumer_name()}-{n}"]
        if args.health_file:
            extra += ["--health-file", f"{args.health_file}.{n}"]
        if args.metrics_port:
            extra += ["--metrics-port", str(args.metrics_port + n)]
        return extra

    supervisor = Supervisor(
        argv,
        args.processes,
        grace_period=args.grace_period,
        own=own,
        burst=args.burst,
    )
    return await supervisor.run()


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
