"""The ``stackshift`` command: ``worker`` and ``check``; ``queues``, ``stats``,
``runs``, ``show`` and ``dead`` to look at queues and runs; ``retry``,
``cancel`` and ``release-key`` to change them; ``dashboard``.

One module per concern: worker.py (the worker and its probe), inspect.py (the
commands that look), manage.py (the commands that change runs), output.py
(JSON lines, tables, progress), render.py (a run as text), reads.py (reads the
store does not offer), failures.py (one-line errors and exit statuses).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import sys
from collections.abc import Sequence

import anyio

from ..app import Stackshift
from ..config import redacted_url
from ..dashboard import cli as dashboard_cli
from ..logs import configure_logging
from . import args as a
from . import inspect, manage, worker
from .failures import EXIT_RUNTIME, EXIT_USAGE
from .failures import failure as _failure
from .failures import is_runtime as _is_runtime
from .failures import one_line as _one_line
from .output import Output
from .worker import load_app

__all__ = ["EXIT_RUNTIME", "EXIT_USAGE", "load_app", "main"]

COMMANDS = {**inspect.COMMANDS, **manage.COMMANDS}
EXIT_INTERRUPTED = 130  # Ctrl-C at a prompt or during a command, as shells say


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stackshift",
        description="Durable background jobs on Redis Streams.",
        epilog=a.EPILOG,
        formatter_class=a.HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    worker.add_parsers(sub)
    inspect.add_parsers(sub)
    manage.add_parsers(sub)
    dashboard_cli.add_parser(sub)
    return parser


def _version() -> str:
    try:
        return importlib.metadata.version("stackshift")
    except importlib.metadata.PackageNotFoundError:  # a checkout, not installed
        return "(not installed)"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    problem = args.validate(args) if hasattr(args, "validate") else None
    if problem:
        parser.error(f"{args.command}: {problem}")
    if args.command == "check":
        return worker.check(args)
    progress = worker.Progress()
    try:
        if args.command == "worker":
            return worker.run(args, progress)
        if args.command == "dashboard":
            anyio.run(dashboard_cli.serve, args)
            return 0
        configure_logging(json=False, level="warning")
        return anyio.run(_run_command, args)
    except KeyboardInterrupt:
        print("stackshift: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`stackshift runs | head`): stop quietly, and
        # keep Python from complaining again when it flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (Exception, BaseExceptionGroup) as exc:  # a group may hold cancellations
        found = None if progress.started else _failure(exc)
        if found is None:  # a bug, or the running worker failed: as logged
            raise
        print(f"stackshift: {_one_line(found)}", file=sys.stderr)
        return EXIT_RUNTIME if _is_runtime(found) else EXIT_USAGE


async def _run_command(args: argparse.Namespace) -> int:
    """A command that reads (or changes) runs: it first says, on stderr, which
    Redis and prefix it reads, any password masked."""
    async with Stackshift(args.url, prefix=args.prefix) as app:
        settings = app.settings
        print(
            f"reading {redacted_url(settings.url)} prefix {settings.prefix}",
            file=sys.stderr,
            flush=True,
        )
        return await COMMANDS[args.command](app, args, Output(json=args.json))


if __name__ == "__main__":
    sys.exit(main())
