"""stackshift's own loggers (``stackshift.logs.get_logger``) in an app that did,
or did not, configure structlog."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Iterator

import pytest
import structlog
from structlog.testing import LogCapture

from stackshift.logs import configure_logging, get_logger

# Created at import, as module-level loggers are: before any configuration.
module_log = get_logger("stackshift.test")


@pytest.fixture(autouse=True)
def unconfigured() -> Iterator[None]:
    """Each test starts, and leaves, with structlog's defaults."""
    structlog.reset_defaults()
    yield
    structlog.reset_defaults()


def configure(level: int) -> LogCapture:
    capture = LogCapture()
    structlog.configure(
        processors=[capture],
        wrapper_class=structlog.make_filtering_bound_logger(level),
    )
    return capture


def every_level(log: structlog.typing.FilteringBoundLogger) -> None:
    log.debug("a_debug")
    log.info("an_info")
    log.msg("a_msg")
    log.log(logging.INFO, "an_info_by_level")
    log.warning("a_warning")
    log.error("an_error")
    log.critical("a_critical")
    log.log(logging.ERROR, "an_error_by_level")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log.exception("an_exception")


def test_unconfigured_structlog_prints_warnings_and_errors_only(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert not structlog.is_configured()
    every_level(module_log)
    out = capsys.readouterr().out
    for event in ["a_debug", "an_info", "a_msg", "an_info_by_level"]:
        assert event not in out
    for event in ["a_warning", "an_error", "a_critical", "an_error_by_level"]:
        assert event in out
    assert "an_exception" in out and "RuntimeError: boom" in out
    assert not module_log.is_enabled_for(logging.INFO)
    assert module_log.is_enabled_for(logging.WARNING)
    assert module_log.get_effective_level() == logging.WARNING


async def test_unconfigured_async_methods_drop_debug_and_info_too(
    capsys: pytest.CaptureFixture[str],
) -> None:
    await module_log.adebug("a_debug")
    await module_log.ainfo("an_info")
    await module_log.awarning("a_warning")
    await module_log.aerror("an_error")
    out = capsys.readouterr().out
    assert "a_debug" not in out and "an_info" not in out
    assert "a_warning" in out and "an_error" in out


def test_once_the_app_configures_structlog_its_level_applies_in_full() -> None:
    """Configured after the logger was made (and bound): debug lines go through."""
    bound = module_log.bind(run_id="r-1")
    capture = configure(logging.DEBUG)
    every_level(bound)
    events = [entry["event"] for entry in capture.entries]
    assert events[:4] == ["a_debug", "an_info", "a_msg", "an_info_by_level"]
    assert {entry["run_id"] for entry in capture.entries} == {"r-1"}
    assert bound.is_enabled_for(logging.DEBUG)
    assert bound.get_effective_level() == logging.DEBUG


def test_the_apps_own_level_filters_when_it_is_configured() -> None:
    capture = configure(logging.ERROR)
    every_level(module_log)
    assert [entry["event"] for entry in capture.entries] == [
        "an_error",
        "a_critical",
        "an_error_by_level",
        "an_exception",
    ]


def test_resetting_structlog_drops_debug_lines_again(
    capsys: pytest.CaptureFixture[str],
) -> None:
    capture = configure(logging.DEBUG)
    module_log.debug("while_configured")
    structlog.reset_defaults()
    module_log.debug("after_reset")
    assert [entry["event"] for entry in capture.entries] == ["while_configured"]
    assert "after_reset" not in capsys.readouterr().out


def test_bind_unbind_and_new_keep_their_values() -> None:
    capture = configure(logging.DEBUG)
    log = module_log.bind(a=1, b=2)
    log.try_unbind("a", "missing").info("one")
    log.unbind("b").info("two")
    log.new(c=3).info("three")
    with pytest.raises(KeyError):
        log.unbind("missing")
    assert [
        {k: v for k, v in entry.items() if k not in ("event", "log_level")}
        for entry in capture.entries
    ] == [{"b": 2}, {"a": 1}, {"c": 3}]


class _Writes:
    """A stdout that records each write() call (as unbuffered stdout makes one
    system call of each)."""

    def __init__(self) -> None:
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False


def test_the_commands_log_lines_are_each_written_whole_in_one_write(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The workers of ``--processes N`` share stdout: a line written in two
    parts (the line, then its newline) can run into another process's line."""
    out = _Writes()
    monkeypatch.setattr(sys, "stdout", out)
    configure_logging(level="info")
    log = get_logger("stackshift.worker")
    log.info("worker_stopped", consumer="sup-0")
    log.warning("worker_process_died", index=1)
    assert len(out.writes) == 2
    assert all(w.endswith("}\n") and w.count("\n") == 1 for w in out.writes)
    assert [json.loads(w)["event"] for w in out.writes] == [
        "worker_stopped",
        "worker_process_died",
    ]


def test_a_fresh_process_that_never_configures_structlog_sees_no_debug_lines() -> None:
    """The situation of an app embedding stackshift, end to end."""
    code = (
        "from stackshift.logs import get_logger\n"
        "log = get_logger('stackshift.worker').bind(queue='q')\n"
        "log.debug('fetched_entries')\n"
        "log.info('worker_started')\n"
        "log.warning('redis_without_aof')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "fetched_entries" not in done.stdout
    assert "worker_started" not in done.stdout
    assert "redis_without_aof" in done.stdout and "queue=q" in done.stdout
