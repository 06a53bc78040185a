"""Argument parsing shared by the commands: the help layout, the options every
command that reads Redis takes, and argparse type functions that name the
wrong value."""

from __future__ import annotations

import argparse
import math
from typing import Any

EPILOG = """\
exit status:
  0  done (a worker: stopped by SIGTERM/SIGINT, or --burst and the queues are empty)
  1  Redis could not be reached or failed; a worker failed after it started;
     `check`: the health file is missing or stale
  2  bad usage: bad arguments or settings, an app that cannot be imported, a
     request that cannot be done (an unknown run, a run that is not failed),
     a bulk change not confirmed
errors before a worker starts are one line on stderr: `stackshift: ...`
"""


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
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


def subcommand(
    sub: Any, name: str, help_text: str, description: str | None = None
) -> argparse.ArgumentParser:
    """Add the command ``name`` with the shared help layout and exit statuses."""
    parser: argparse.ArgumentParser = sub.add_parser(
        name,
        help=help_text,
        description=description or help_text,
        epilog=EPILOG,
        formatter_class=HelpFormatter,
    )
    return parser


def store_options(parser: argparse.ArgumentParser, json_help: str) -> None:
    """``--url``, ``--prefix`` and ``--json``: every command that reads Redis."""
    parser.add_argument(
        "--url",
        help="Redis URL (default: $STACKSHIFT_REDIS_URL, else redis://localhost:6379/0)",
    )
    parser.add_argument(
        "--prefix", help="key prefix (default: $STACKSHIFT_PREFIX, else stackshift:)"
    )
    json_option(parser, json_help)


def json_option(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--json",
        action="store_true",
        help=f"machine output: one JSON object per line ({what})",
    )


def yes_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--yes",
        "-y",
        action="store_true",
        help="change many runs without asking (needed when stdin is not a terminal)",
    )


# Type functions: on a bad value, argparse prints
# "argument --concurrency/-c: must be ..., got '0'" and exits 2.


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be a whole number, got {text!r}"
        ) from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {text!r}")
    return value


def port(text: str) -> int:
    value = positive_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"must be a port, 1 to 65535, got {text!r}")
    return value


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be a number of seconds, got {text!r}"
        ) from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def positive_seconds(text: str) -> float:
    value = seconds(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, got {text!r}")
    return value


def non_negative_seconds(text: str) -> float:
    value = seconds(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text!r}")
    return value
