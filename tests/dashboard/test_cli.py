"""``stackshift dashboard`` (``python -m stackshift.dashboard.cli`` until the
main command wires it), run as a user runs it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx

from tests.dashboard.conftest import ROOT
from tests.support.processes import wait_for

COMMAND = [sys.executable, "-m", "stackshift.dashboard.cli"]


def test_help_names_the_options_and_their_defaults() -> None:
    out = subprocess.run(
        [*COMMAND, "--help"], capture_output=True, text=True, timeout=60
    ).stdout
    for text in ["--url", "--queue", "--host", "--port", "default: 127.0.0.1",
                 "default: 8787"]:  # fmt: skip
        assert text in out, text


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _start(log: Path, *args: str) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [*COMMAND, *args],
            cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            stdout=out,
            stderr=subprocess.STDOUT,
        )


async def test_it_serves_the_queues_page_and_stops_cleanly_on_sigterm(
    redis_url: str, prefix: str, tmp_path: Path
) -> None:
    port = _free_port()
    log = tmp_path / "dashboard.log"
    proc = _start(log, "--url", redis_url, "--prefix", prefix, "--port", str(port),
                  "--queue", "uploads", "--queue", "emails", "--title", "ops <jobs>")  # fmt: skip
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as web:

            async def page() -> httpx.Response | None:
                try:
                    return await web.get("/")
                except httpx.TransportError:
                    assert proc.poll() is None, log.read_text()
                    return None

            answer = await wait_for(page, within=30, message="the dashboard")
        assert answer.status_code == 200
        assert 'data-queue="uploads"' in answer.text
        assert 'data-queue="emails"' in answer.text
        assert "ops &lt;jobs&gt;" in answer.text
        assert "server" not in answer.headers  # no version banner
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def test_without_queue_options_it_shows_every_queue_used_so_far(
    redis_url: str, prefix: str, tmp_path: Path
) -> None:
    from stackshift import Stackshift

    async with Stackshift(redis_url, prefix=prefix) as app:
        await app.queue("payments").enqueue("provision", {})
        await app.queue("emails").enqueue("send", {})
    port = _free_port()
    log = tmp_path / "dashboard.log"
    proc = _start(log, "--url", redis_url, "--prefix", prefix, "--port", str(port))
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as web:

            async def page() -> httpx.Response | None:
                try:
                    return await web.get("/runs?queue=payments")
                except httpx.TransportError:
                    assert proc.poll() is None, log.read_text()
                    return None

            answer = await wait_for(page, within=30, message="the dashboard")
            assert answer.status_code == 200, answer.text
            queues = (await web.get("/")).text
        assert 'data-queue="payments"' in queues and 'data-queue="emails"' in queues
        assert 'data-queue="default"' not in queues
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
