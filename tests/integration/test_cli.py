"""The `stackshift` command, run as a user runs it."""

from __future__ import annotations

import importlib.metadata
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from stackshift import JobFailed, Stackshift
from stackshift.cli.worker import GC_THRESHOLDS
from tests.support.processes import Workers
from tests.support.processes import workers as workers  # the fixture
from tests.support.waiting import wait_until
from tests.support.workers import running_worker

STACKSHIFT = [sys.executable, "-m", "stackshift"]


def run_cli(
    *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*STACKSHIFT, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def test_worker_help_documents_the_options_and_their_defaults() -> None:
    out = run_cli("worker", "--help").stdout
    options = out[out.index("options:") :]
    for text in ["--queue", "--concurrency", "--lease-timeout", "--grace-period", "--burst",
                 "default: 10", "default: 30.0", "default: 25.0", "exit status:"]:  # fmt: skip
        assert text in out, text
    assert "(default: None)" not in out and "(default: False)" not in out
    queue_help = " ".join(
        options[options.index("--queue QUEUE") : options.index("--concurrency")].split()
    )
    assert queue_help.endswith("repeat for more (default: default)"), queue_help
    level_help = options[options.index("--log-level {") : options.index("--loop {")]
    assert "lowest level" in level_help and "(default: info)" in level_help


def test_version_is_the_installed_distributions() -> None:
    done = run_cli("--version")
    assert done.returncode == 0
    assert done.stdout.split() == [
        "stackshift",
        importlib.metadata.version("stackshift"),
    ]


def test_a_bad_number_option_names_the_option_and_the_value() -> None:
    app = "tests.support.cli_app:app"
    for args, named in [
        (["worker", app, "-c", "0"], "argument --concurrency/-c: must be 1 or more, got '0'"),
        (["worker", app, "--concurrency", "ten"], "argument --concurrency/-c: must be a whole number, got 'ten'"),
        (["worker", app, "--lease-timeout", "0"], "argument --lease-timeout: must be more than 0, got '0'"),
        (["worker", app, "--lease-timeout", "inf"], "argument --lease-timeout: must be a finite number, got 'inf'"),
        (["worker", app, "--grace-period", "-1"], "argument --grace-period: must be 0 or more, got '-1'"),
        (["check", "--health-file", "h", "--max-age", "soon"], "argument --max-age: must be a number of seconds, got 'soon'"),
        (["check", "--health-file", "h", "--max-age", "-1"], "argument --max-age: must be 0 or more, got '-1'"),
    ]:  # fmt: skip
        done = run_cli(*args)
        assert done.returncode == 2 and named in done.stderr, (args, done.stderr)
    zero_grace = run_cli("worker", app, "--grace-period", "0", "--help")
    assert zero_grace.returncode == 0  # 0 s of grace is allowed


async def test_a_burst_worker_runs_the_queue_dry_and_logs_json(
    redis_url: str, prefix: str
) -> None:
    env = {"STACKSHIFT_REDIS_URL": redis_url, "STACKSHIFT_PREFIX": prefix}
    async with Stackshift(redis_url, prefix=prefix) as app:
        ok = await app.queue("cli").enqueue(
            "shout", {"text": "hi"}, correlation_id="c-\x1b[2J"
        )
        bad = await app.queue("cli").enqueue("refuse", {})
        done = run_cli("worker", "tests.support.cli_app:app", "--queue", "cli", "--burst",
                       "--concurrency", "4", env=env)  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert await ok.result(timeout=5) == "HI"
        try:
            await bad.result(timeout=5)
        except JobFailed as exc:
            assert exc.message == "refused on purpose"
        else:
            raise AssertionError("the refused run should have failed")
    lines = [
        json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")
    ]
    shouting = [line for line in lines if line["event"] == "shouting"]
    assert shouting and shouting[0]["run_id"] == ok.run_id
    assert shouting[0]["correlation_id"] == "c-\x1b[2J" and shouting[0]["attempt"] == 1
    assert {"worker_started", "worker_stopped", "run_finished"} <= {
        e["event"] for e in lines
    }

    inspect_runs(redis_url, env, ok.run_id, bad.run_id)


def inspect_runs(redis_url: str, env: dict[str, str], ok: str, bad: str) -> None:
    """``show``, ``stats``, ``dead`` and ``retry`` on a completed and a dead run."""

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        done = run_cli(*args, "--url", redis_url, env=env)
        assert done.returncode == 0, done.stderr
        return done

    def json_lines(*args: str) -> list[dict[str, Any]]:
        return [json.loads(line) for line in cli(*args, "--json").stdout.splitlines()]

    (shown,) = json_lines("show", ok)
    assert shown["status"] == "completed" and shown["result"] == "HI"
    (stats,) = json_lines("stats", "cli")
    assert stats["totals"] == {"enqueued": 2, "completed": 1, "failed": 1}
    assert [stats["queue"] for stats in json_lines("stats", "cli", "other")] == [
        "cli",
        "other",
    ]
    assert [d["run_id"] for d in json_lines("dead", "cli")] == [bad]

    table = cli("stats", "cli").stdout.splitlines()
    assert table[0].split()[:5] == ["queue", "waiting", "running", "scheduled", "dead"]
    row = dict(zip(table[0].split(), table[1].split(), strict=True))
    assert row["queue"] == "cli" and row["dead"] == row["failed"] == "1"

    shown_text = cli("show", ok).stdout.splitlines()
    assert "status          completed" in shown_text, shown_text
    assert (
        "correlation_id  c-\\x1b[2J" in shown_text
    )  # escaped, not sent to the terminal
    assert any(  # the step, in the timeline
        line.startswith("  ") and line.endswith('|  shout  attempt 1  -> "HI"')
        for line in shown_text
    ), shown_text

    dead = cli("dead", "cli").stdout
    assert "\\n" not in dead  # the traceback is lines, not escaped JSON
    lines = dead.splitlines()
    assert lines[0] == "queue cli: 1 dead run"
    assert lines[2].startswith(f"{bad}  refuse  attempt 1  failed ")
    assert lines[3] == "  NonRetriableError: refused on purpose"
    assert lines[4] == "    | Traceback (most recent call last):"
    assert '    |     raise NonRetriableError("refused on purpose")' in lines
    assert "error" in cli("show", bad).stdout.splitlines()
    assert "queue other: no dead runs" in cli("dead", "other").stdout

    retried = cli("retry", bad)
    assert bad in retried.stdout
    again = run_cli("retry", ok, "--url", redis_url, env=env)
    assert again.returncode == 2 and "not failed" in again.stderr


def test_a_worker_on_memory_warns_that_it_sees_only_its_own_process() -> None:
    done = run_cli("worker", "tests.support.cli_app:app", "--burst", "--log-format", "json",
                   env={"STACKSHIFT_REDIS_URL": "memory://cli-warning"})  # fmt: skip
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines()]
    (warning,) = [e for e in events if e["event"] == "memory_backend_single_process"]
    assert warning["level"] == "warning"
    assert "only the runs enqueued by this process" in warning["detail"]
    assert "worker_started" in [e["event"] for e in events]


DOWN = "redis://127.0.0.1:1/0"  # nothing listens on port 1: connection refused
NEVER_MADE = "01M8NN767RHDE9PX718TERFCMR.q"  # a well-formed run id


def one_line_error(done: subprocess.CompletedProcess[str]) -> str:
    """The single ``stackshift: ...`` line a failed command printed, and nothing
    else (no traceback on either stream) but the inspection commands' ``reading``
    line."""
    assert "Traceback" not in done.stdout + done.stderr, done.stderr
    lines = [x for x in done.stderr.splitlines() if not x.startswith("reading ")]
    assert len(lines) == 1 and lines[0].startswith("stackshift: "), done.stderr
    return lines[0]


def test_a_bad_app_path_is_a_clear_error() -> None:
    done = run_cli("worker", "no_such_module_here:app")
    line = one_line_error(done)
    assert done.returncode == 2
    assert "cannot import no_such_module_here" in line and "No module named" in line


def test_an_app_module_that_raises_at_import_is_one_line_naming_the_place(
    tmp_path: Path,
) -> None:
    (tmp_path / "broken_app.py").write_text(
        "from stackshift import Stackshift\n"
        "app = Stackshift()\n"
        "raise RuntimeError('broken on purpose')\n"
    )
    done = run_cli("worker", "broken_app:app", env={"PYTHONPATH": str(tmp_path)})
    line = one_line_error(done)
    assert done.returncode == 2
    assert "RuntimeError: broken on purpose" in line
    assert f"{tmp_path / 'broken_app.py'}:3" in line
    not_an_app = run_cli("worker", "broken_app:Stackshift", env={"PYTHONPATH": str(tmp_path)})  # fmt: skip
    assert not_an_app.returncode == 2 and "broken on purpose" in not_an_app.stderr


def test_a_worker_that_cannot_reach_redis_says_so_in_one_line() -> None:
    done = run_cli("worker", "tests.support.cli_app:app", "--burst",
                   env={"STACKSHIFT_REDIS_URL": DOWN})  # fmt: skip
    line = one_line_error(done)
    assert done.returncode == 1
    assert "ConnectionError" in line and "127.0.0.1:1" in line


def test_a_bad_queue_name_is_a_one_line_usage_error() -> None:
    done = run_cli("worker", "tests.support.cli_app:app", "--queue", "no spaces")
    assert "invalid queue name 'no spaces'" in one_line_error(done)
    assert done.returncode == 2


def test_showing_or_retrying_a_run_that_does_not_exist_is_a_usage_error(
    redis_url: str, prefix: str
) -> None:
    env = {"STACKSHIFT_PREFIX": prefix}
    for command in ("show", "retry"):
        done = run_cli(command, NEVER_MADE, "--url", redis_url, env=env)
        assert f"run {NEVER_MADE} does not exist" in one_line_error(done)
        assert done.returncode == 2


def test_inspecting_with_redis_down_is_one_line() -> None:
    run_id = NEVER_MADE
    for args in (["stats", "q"], ["dead", "q"], ["show", run_id], ["retry", run_id]):
        done = run_cli(*args, "--url", DOWN)
        assert "127.0.0.1:1" in one_line_error(done), args
        assert done.returncode == 1, args


def test_inspection_commands_say_which_redis_they_read_with_the_password_masked(
    redis_url: str, prefix: str
) -> None:
    env = {"STACKSHIFT_PREFIX": prefix}
    for args in (
        ["stats", "q"],
        ["dead", "q"],
        ["show", NEVER_MADE],
        ["retry", NEVER_MADE],
    ):
        done = run_cli(*args, "--url", redis_url, env=env)
        assert done.stderr.splitlines()[0] == f"reading {redis_url} prefix {prefix}"
        assert "reading" not in done.stdout
        secret = run_cli(*args, "--url", "redis://app:s3cret-pw@127.0.0.1:1/0", env=env)
        assert secret.stderr.splitlines()[0] == (
            f"reading redis://app:***@127.0.0.1:1/0 prefix {prefix}"
        )
        assert "s3cret-pw" not in secret.stdout + secret.stderr


async def test_check_reports_a_running_workers_health_file(
    redis_url: str, prefix: str, tmp_path: Path
) -> None:
    health = tmp_path / "health.json"
    async with Stackshift(redis_url, prefix=prefix) as app:
        assert run_cli("check", "--health-file", str(health)).returncode == 1
        async with running_worker(app, ["cli"], health_file=str(health)):
            await wait_until(health.exists, message="the health file")
            done = run_cli("check", "--health-file", str(health), "--max-age", "30")
            assert done.returncode == 0 and "healthy" in done.stdout
            stale = run_cli("check", "--health-file", str(health), "--max-age", "0")
            assert stale.returncode == 1 and "stale" in stale.stderr
        assert not health.exists()  # removed at shutdown


async def test_sigusr1_makes_a_worker_log_where_its_tasks_wait(
    workers: Workers,
) -> None:
    worker = workers.start("introspected", queues=("sig",), concurrency=2)
    await worker.wait_ready()
    worker.send(signal.SIGUSR1)
    # One line per task; a lane's says where it waits.
    await wait_until(
        lambda: [
            line
            for line in worker.logged("worker_task_waits")
            if any("Lane.run" in frame for frame in line["waits"])
        ],
        message="a lane's stack",
    )
    worker.terminate()  # SIGUSR1 did not stop it; SIGTERM still does
    assert await worker.wait_exit() == 0


async def test_a_worker_process_raises_the_collectors_young_threshold(
    redis_url: str, prefix: str
) -> None:
    """``stackshift worker`` owns its process: the app's imports are frozen and
    the young generation collected every 10,000 allocations, not 700 (at
    concurrency 100, a collection every ~10 runs; docs/performance.md)."""
    env = {"STACKSHIFT_REDIS_URL": redis_url, "STACKSHIFT_PREFIX": prefix}
    async with Stackshift(redis_url, prefix=prefix) as app:
        handle = await app.queue("cli").enqueue("collector", {})
        done = run_cli("worker", "tests.support.cli_app:app", "--queue", "cli",
                       "--burst", env=env)  # fmt: skip
        assert done.returncode == 0, done.stderr
        seen = await handle.result(timeout=5)
    assert seen["thresholds"] == list(GC_THRESHOLDS)
    assert seen["frozen"] > 1000  # the modules the app imported
