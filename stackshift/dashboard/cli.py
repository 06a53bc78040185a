"""``stackshift dashboard``: serve the dashboard with uvicorn.

stackshift/cli.py wires it: ``add_parser(sub)`` in its parser, and for the
``dashboard`` command ``anyio.run(serve, args)``.
"""

from __future__ import annotations

import argparse
import signal
import socket
import sys
from collections.abc import Sequence
from types import FrameType
from typing import Any

from ..app import Stackshift

DEFAULT_PORT = 8787
DEFAULT_HOST = "127.0.0.1"  # only this machine, unless --host says otherwise


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``dashboard`` command to ``stackshift``'s subparsers."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "dashboard",
        help="serve the web dashboard",
        description="Serve the web dashboard (pip install 'stackshift[dashboard]').",
    )
    parser.add_argument("--url", help="Redis URL (default: $STACKSHIFT_REDIS_URL)")
    parser.add_argument("--prefix", help="key prefix (default: $STACKSHIFT_PREFIX)")
    parser.add_argument(
        "--queue",
        "-q",
        action="append",
        dest="queues",
        metavar="QUEUE",
        help="a queue to show; repeat for more (default: every queue used so far)",
    )
    parser.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help=f"address to bind (default: {DEFAULT_HOST}, this machine only)",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        help=f"port to bind (default: {DEFAULT_PORT})",
    )
    parser.add_argument(
        "--title",
        default="stackshift",
        help="shown in the header (default: stackshift)",
    )
    parser.add_argument(
        "--refresh",
        type=float,
        default=3.0,
        metavar="SECONDS",
        help="how often open pages refresh their live parts (default: 3)",
    )
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="uvicorn's log level (default: info)",
    )
    return parser


async def serve(args: argparse.Namespace) -> None:
    """Serve the dashboard until SIGINT/SIGTERM; then close the app's connections.

    uvicorn stops on those signals, then raises them again for the handler that
    was there before it: a handler of ours that ignores them, so a stop on
    SIGTERM exits 0, as the worker does.
    """
    app = Stackshift(args.url, prefix=args.prefix)
    stops = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.signal(sig, _stopped) for sig in stops}
    try:
        await serve_app(
            app,
            host=args.host,
            port=args.port,
            queues=args.queues or None,  # None: every queue in the registry
            title=args.title,
            refresh_seconds=args.refresh,
            log_level=args.log_level,
        )
    finally:
        await app.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _stopped(signum: int, frame: FrameType | None) -> None:
    """uvicorn has already shut down on this signal: nothing is left to do."""


async def serve_app(
    app: Stackshift,
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    sock: socket.socket | None = None,
    queues: Sequence[str] | None = None,
    log_level: str = "info",
    **options: Any,
) -> None:
    """Serve ``create_app(app, queues=queues, **options)`` with uvicorn, on
    ``host:port`` or on an already bound ``sock``."""
    try:
        import uvicorn

        from .app import create_app
    except ImportError as exc:
        raise SystemExit(
            f"the dashboard needs its extra ({exc}): "
            "pip install 'stackshift[dashboard]'"
        ) from None

    config = uvicorn.Config(
        create_app(app, queues=queues, **options),
        host=host,
        port=port,
        log_level=log_level,
        lifespan="off",
        server_header=False,
    )
    server = uvicorn.Server(config)
    await server.serve(sockets=[sock] if sock is not None else None)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m stackshift.dashboard.cli``: the ``dashboard`` command alone."""
    import anyio

    parser = argparse.ArgumentParser(prog="stackshift")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["dashboard", *(argv if argv is not None else [])])
    anyio.run(serve, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
