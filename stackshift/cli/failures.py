"""Which errors a command reports in one line (``stackshift: ...``), and with
which exit status; anything else is a bug and keeps its traceback."""

from __future__ import annotations

import asyncio

from ..errors import StackshiftError, StoreError

EXIT_RUNTIME = 1  # Redis unreachable or failing; a worker that failed while running
EXIT_USAGE = 2  # bad arguments or settings, an app that cannot be loaded, a bad request


def failure(exc: BaseException) -> BaseException | None:
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


def is_runtime(exc: BaseException) -> bool:
    """Redis or the network failed (exit 1); otherwise the request was wrong (2)."""
    return not isinstance(exc, StackshiftError) or isinstance(exc, StoreError)


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, StackshiftError):
        return text
    return f"{type(exc).__name__}: {text}"
