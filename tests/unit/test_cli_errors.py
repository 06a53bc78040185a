"""Which errors ``stackshift`` reports in one line, and with which exit status."""

from __future__ import annotations

import asyncio

import redis.exceptions

from stackshift.cli import EXIT_RUNTIME, EXIT_USAGE, _failure, _is_runtime, _one_line
from stackshift.errors import ConfigError, StoreError


def test_the_error_inside_nested_task_group_errors_is_found() -> None:
    down = StoreError("ping: ConnectionError: Error 111 connecting to 127.0.0.1:1.")
    group = BaseExceptionGroup(
        "outer",
        [asyncio.CancelledError(), ExceptionGroup("inner", [OSError("reset"), down])],
    )
    assert _failure(group) is down  # ours first, cancellations ignored
    assert _one_line(down) == str(down) and _is_runtime(down)


def test_a_bug_next_to_an_expected_error_keeps_its_traceback() -> None:
    group = ExceptionGroup("tg", [StoreError("down"), TypeError("a bug")])
    assert _failure(group) is None
    assert _failure(KeyError("a bug")) is None
    assert _failure(BaseExceptionGroup("only", [asyncio.CancelledError()])) is None


def test_redis_and_os_errors_are_runtime_failures_and_config_errors_usage() -> None:
    unmapped = redis.exceptions.ConnectionError("Error 111\nconnecting")
    assert _failure(unmapped) is unmapped
    assert _one_line(unmapped) == "ConnectionError: Error 111 connecting"
    assert _is_runtime(unmapped) and _is_runtime(OSError("refused"))
    assert not _is_runtime(ConfigError("bad"))
    assert (EXIT_RUNTIME, EXIT_USAGE) == (1, 2)
