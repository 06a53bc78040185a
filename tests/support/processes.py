"""Worker subprocesses (``python -m stackshift worker ...``) that tests can kill,
pause, resume and stop with real signals, and that never outlive a test."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import anyio
import pytest

from stackshift import RunInfo, Stackshift
from tests.support.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]  # the checkout: tests.apps is importable
DEFAULT_APP = "tests.apps.durable:app"

T = TypeVar("T")


class WorkerProcess:
    """One ``stackshift worker`` (or other) subprocess, its output in a file."""

    def __init__(self, proc: subprocess.Popen[bytes], name: str, log: Path) -> None:
        self.proc = proc
        self.name = name
        self.log = log
        self.paused = False

    def __repr__(self) -> str:
        return f"WorkerProcess({self.name!r}, pid={self.pid})"

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        return self.proc.poll()

    def events(self) -> list[dict[str, Any]]:
        """The worker's JSON log lines so far (tracebacks and other text skipped)."""
        out = []
        for raw in self.log.read_bytes().splitlines():
            try:
                line = json.loads(raw)
            except ValueError:
                continue
            if isinstance(line, dict):
                out.append(line)
        return out

    def logged(self, event: str, **fields: Any) -> list[dict[str, Any]]:
        """Log lines of ``event`` whose fields equal ``fields``."""
        return [
            line
            for line in self.events()
            if line.get("event") == event
            and all(line.get(k) == v for k, v in fields.items())
        ]

    async def wait_logged(
        self, event: str, *, within: float = 30.0, **fields: Any
    ) -> list[dict[str, Any]]:
        return await wait_until(
            lambda: self.logged(event, **fields),
            timeout=within,
            interval=0.05,
            message=f"{self.name} to log {event} {fields or ''}\n{self.tail()}",
        )

    async def wait_ready(self, within: float = 30.0) -> None:
        """Until its consumer groups exist and it fetches (``worker_started``)."""
        await self.wait_logged("worker_started", within=within)

    async def wait_exit(self, within: float = 30.0) -> int:
        try:
            await wait_until(
                lambda: self.proc.poll() is not None,
                timeout=within,
                interval=0.05,
                message=f"{self.name} (pid {self.pid}) to exit",
            )
        except AssertionError as exc:
            # Stuck: ask it where its tasks wait (SIGUSR1), for the failure message.
            self.send(signal.SIGUSR1)
            with contextlib.suppress(AssertionError):
                await self.wait_logged("worker_task_waits", within=3)
            raise AssertionError(f"{exc}\n{self.tail(200)}") from None
        return self.proc.returncode

    def tail(self, lines: int = 30) -> str:
        """The end of its output, for failure messages."""
        text = self.log.read_bytes().decode(errors="replace").splitlines()
        return "\n".join(f"  {self.name}| {line}" for line in text[-lines:])

    def send(self, sig: int) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    def kill(self) -> None:
        """SIGKILL: no shutdown, no hand-back, nothing flushed."""
        self.send(signal.SIGKILL)
        self.proc.wait()

    def pause(self) -> None:
        self.send(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        self.send(signal.SIGCONT)
        self.paused = False

    def terminate(self) -> None:
        self.send(signal.SIGTERM)

    def cleanup(self) -> None:
        """Kill it if it still runs (resuming it first if it was stopped)."""
        if self.proc.poll() is None:
            if self.paused:
                self.resume()
            self.send(signal.SIGKILL)
        self.proc.wait()


class Workers:
    """Starts worker subprocesses on the test's Redis and prefix; all of them are
    killed at teardown. ``ledger`` is the effects file the test apps append to."""

    def __init__(self, directory: Path, redis_url: str, prefix: str) -> None:
        self.directory = directory
        self.ledger = directory / "ledger.jsonl"
        self.env = {
            **os.environ,
            "STACKSHIFT_REDIS_URL": redis_url,
            "STACKSHIFT_PREFIX": prefix,
            "DURABILITY_LEDGER": str(self.ledger),
            "PYTHONUNBUFFERED": "1",
        }
        self.started: list[WorkerProcess] = []

    def start(
        self,
        name: str,
        *,
        queues: tuple[str, ...] = ("default",),
        app: str = DEFAULT_APP,
        concurrency: int = 10,
        lease_timeout: float = 1.5,
        grace_period: float = 10.0,
        burst: bool = False,
        env: dict[str, str] | None = None,
    ) -> WorkerProcess:
        """Start ``stackshift worker`` as consumer ``name`` (unique per test)."""
        args = [app, "--name", name]
        for queue in queues:
            args += ["--queue", queue]
        args += [
            "--concurrency", str(concurrency),
            "--lease-timeout", str(lease_timeout),
            "--grace-period", str(grace_period),
            "--log-format", "json",
        ]  # fmt: skip
        if burst:
            args.append("--burst")
        return self.start_module(name, "stackshift", "worker", *args, env=env)

    def start_module(
        self, name: str, module: str, *args: str, env: dict[str, str] | None = None
    ) -> WorkerProcess:
        """Start ``python -m module *args`` in the checkout, with the test's Redis
        and prefix; its output goes to ``<name>.log``."""
        log = self.directory / f"{name}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", module, *args],
                cwd=ROOT,
                env={**self.env, **(env or {})},
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        process = WorkerProcess(proc, name, log)
        self.started.append(process)
        return process

    def cleanup(self) -> None:
        for worker in self.started:
            worker.cleanup()


@pytest.fixture
def workers(tmp_path: Path, redis_url: str, prefix: str) -> Iterator[Workers]:
    """Worker subprocesses for this test; none survives it, pass or fail."""
    factory = Workers(tmp_path, redis_url, prefix)
    try:
        yield factory
    finally:
        factory.cleanup()


async def runs_of(app: Stackshift, run_ids: list[str]) -> list[RunInfo]:
    """The records of ``run_ids`` (each must exist)."""
    runs = [await app.get_run(run_id) for run_id in run_ids]
    missing = [r for r, run in zip(run_ids, runs, strict=True) if run is None]
    assert not missing, f"runs lost: {missing}"
    return [run for run in runs if run is not None]


async def wait_for(
    fetch: Callable[[], Awaitable[T | None]], *, within: float, message: str
) -> T:
    """Poll ``fetch`` until it returns something other than None; return that.

    (``wait_until`` with a typed result: fails after ``within`` seconds.)
    """
    deadline = time.monotonic() + within
    while True:
        value = await fetch()
        if value is not None:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within} s waiting for {message}")
        await anyio.sleep(0.1)  # sync-ok: poll interval of a deadline-bounded wait


async def wait_finished(
    app: Stackshift, run_ids: list[str], within: float = 30.0
) -> list[RunInfo]:
    """Until every run is completed or failed; returns their records."""

    async def finished() -> list[RunInfo] | None:
        runs = await runs_of(app, run_ids)
        return runs if all(r.status.finished for r in runs) else None

    return await wait_for(finished, within=within, message=f"runs to finish: {run_ids}")


async def wait_status(
    app: Stackshift, run_id: str, status: str, within: float = 30.0
) -> RunInfo:
    """Until the run has ``status``; returns its record."""

    async def reached() -> RunInfo | None:
        (run,) = await runs_of(app, [run_id])
        return run if run.status == status else None

    return await wait_for(
        reached, within=within, message=f"run {run_id} to be {status}"
    )


async def enqueue_steps(
    app: Stackshift, queue: str, count: int, **payload: Any
) -> list[str]:
    """Enqueue ``count`` runs of tests.apps.durable's ``steps`` job."""
    handles = await app.queue(queue).enqueue_many(
        "steps", [dict(payload) for _ in range(count)]
    )
    return [h.run_id for h in handles]
