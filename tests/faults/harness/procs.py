"""Worker and enqueuer processes, started as real OS processes so that
SIGKILL, SIGSTOP and SIGTERM are real; every one is reaped in teardown."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[3]
STACKSHIFT = Path(sys.executable).parent / "stackshift"
APP = "tests.faults.harness.apps:app"


class Proc:
    """One child process with its output in a file."""

    def __init__(
        self, name: str, argv: list[str], env: dict[str, str], log: Path
    ) -> None:
        self.name = name
        self.log = log
        self._out = log.open("ab")
        self.popen = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdout=self._out, stderr=subprocess.STDOUT
        )
        self.stopped = False

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive:
            os.kill(self.pid, sig)
            if sig == signal.SIGSTOP:
                self.stopped = True
            elif sig == signal.SIGCONT:
                self.stopped = False

    def kill(self) -> None:
        """SIGKILL (after SIGCONT, so a stopped process really goes) and reap."""
        if self.alive:
            if self.stopped:
                os.kill(self.pid, signal.SIGCONT)
            self.popen.kill()
        self.popen.wait()
        self._out.close()

    def wait(self, timeout: float) -> int:
        return self.popen.wait(timeout)

    def lines(self) -> list[dict[str, Any]]:
        """The JSON log lines written so far (other output is skipped)."""
        out = []
        for raw in self.log.read_bytes().splitlines():
            if raw.startswith(b"{"):
                try:
                    out.append(json.loads(raw))
                except ValueError:
                    continue
        return out

    def events(self, name: str) -> list[dict[str, Any]]:
        return [line for line in self.lines() if line.get("event") == name]

    def text(self) -> str:
        return self.log.read_text(errors="replace")


class Processes:
    """Starts workers and enqueuers for one scenario; ``close()`` reaps them all."""

    def __init__(self, workdir: Path, env: dict[str, str]) -> None:
        self.workdir = workdir
        self.env = env
        self.all: list[Proc] = []

    def _env(self, extra: dict[str, str] | None) -> dict[str, str]:
        env = dict(os.environ)
        env.update(self.env)
        env.update(extra or {})
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def worker(
        self,
        *,
        queue: str = "faults",
        concurrency: int = 4,
        lease: float = 2.0,
        grace: float = 2.0,
        burst: bool = False,
        loop: str = "auto",
        env: dict[str, str] | None = None,
    ) -> Proc:
        name = f"w{len(self.all)}"
        argv = [
            str(STACKSHIFT), "worker", APP, "--queue", queue,
            "--concurrency", str(concurrency), "--lease-timeout", str(lease),
            "--grace-period", str(grace), "--name", name, "--log-format", "json",
            "--loop", loop,
        ]  # fmt: skip
        if burst:
            argv.append("--burst")
        proc = Proc(name, argv, self._env(env), self.workdir / f"{name}.log")
        self.all.append(proc)
        return proc

    def enqueuer(
        self, acked: Path, count: int, *args: str, env: dict[str, str] | None = None
    ) -> Proc:
        name = f"e{len(self.all)}"
        argv = [
            sys.executable, "-m", "tests.faults.harness.enqueuer",
            "--acked", str(acked), "--count", str(count), "--tag", name, *args,
        ]  # fmt: skip
        proc = Proc(name, argv, self._env(env), self.workdir / f"{name}.log")
        self.all.append(proc)
        return proc

    def close(self) -> None:
        for proc in self.all:
            if proc.alive and proc.stopped:
                os.kill(proc.pid, signal.SIGCONT)
        for proc in self.all:
            proc.kill()


def wait_for(
    condition: Callable[[], Any],
    *,
    timeout: float,
    interval: float = 0.05,
    message: str = "condition",
) -> Any:
    """Poll ``condition`` until it is truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {message}")
        time.sleep(interval)


def read_acked(path: Path) -> list[tuple[str, str, bool]]:
    """(key, run_id, deduplicated) for each enqueue acknowledged to an enqueuer."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        parts = line.split("\t")
        if len(parts) == 3:
            out.append((parts[0], parts[1], parts[2] == "1"))
    return out
