"""``stackshift worker --metrics-port`` and ``--json``, ``check --json`` and
``stackshift dashboard``, as a user runs them."""

from __future__ import annotations

import json
import signal
import socket
import time
from pathlib import Path

import httpx
import pytest

from stackshift.cli import main
from tests.integration.test_cli_runs import run_at_terminal
from tests.support.processes import Workers, wait_for
from tests.support.processes import workers as workers  # the fixture

APP = "tests.support.cli_app:app"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_a_bad_metrics_port_is_named(capsys: pytest.CaptureFixture[str]) -> None:
    for value, says in [("0", "must be 1 or more, got '0'"),
                        ("65536", "must be a port, 1 to 65535, got '65536'"),
                        ("http", "must be a whole number, got 'http'")]:  # fmt: skip
        with pytest.raises(SystemExit) as exited:
            main(["worker", APP, "--metrics-port", value])
        assert exited.value.code == 2
        assert f"argument --metrics-port: {says}" in capsys.readouterr().err


async def test_a_worker_with_a_metrics_port_serves_prometheus_and_health(
    workers: Workers,
) -> None:
    port = free_port()
    worker = workers.start_module(
        "metrics", "stackshift", "worker", APP, "--queue", "cli",
        "--metrics-port", str(port), "--log-format", "json",
    )  # fmt: skip
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as web:

        async def healthy() -> httpx.Response | None:
            try:
                answer = await web.get("/healthz")
            except httpx.TransportError:
                assert worker.returncode is None, worker.tail()
                return None
            return answer if answer.status_code == 200 else None

        await wait_for(healthy, within=30, message="/healthz")
        metrics = await web.get("/metrics")
        assert metrics.status_code == 200
        assert "stackshift_runs_started_total" in metrics.text
        assert (await web.get("/readyz")).status_code == 200
    worker.terminate()
    assert await worker.wait_exit() == 0


def test_worker_json_logs_json_lines_even_at_a_terminal() -> None:
    env = {"STACKSHIFT_REDIS_URL": "memory://cli-json"}
    status, shown, _ = run_at_terminal("worker", APP, "--burst", "--json", env=env)
    assert status == 0
    events = [json.loads(line) for line in shown.splitlines() if line.strip()]
    assert "worker_started" in [e["event"] for e in events]


def test_check_json_says_whether_the_health_file_is_fresh(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    health = tmp_path / "health.json"
    assert main(["check", "--health-file", str(health), "--json"]) == 1
    (missing,) = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert missing["healthy"] is False and "no usable health file" in missing["detail"]
    health.write_text(json.dumps({"at": time.time(), "running": 2}))
    assert main(["check", "--health-file", str(health), "--json"]) == 0
    (fresh,) = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert fresh["healthy"] is True and "2 runs in flight" in fresh["detail"]


def test_dashboard_is_a_command_of_stackshift(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["dashboard", "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert "usage: stackshift dashboard" in out and "default: 8787" in out


async def test_stackshift_dashboard_serves_the_queues_page_until_sigterm(
    workers: Workers, redis_url: str, prefix: str
) -> None:
    port = free_port()
    served = workers.start_module(
        "dashboard", "stackshift", "dashboard", "--url", redis_url, "--prefix", prefix,
        "--port", str(port), "--queue", "uploads",
    )  # fmt: skip
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as web:

        async def page() -> httpx.Response | None:
            try:
                return await web.get("/")
            except httpx.TransportError:
                assert served.returncode is None, served.tail()
                return None

        answer = await wait_for(page, within=30, message="the dashboard")
    assert answer.status_code == 200 and 'data-queue="uploads"' in answer.text
    served.send(signal.SIGTERM)
    assert await served.wait_exit() == 0, served.tail()
