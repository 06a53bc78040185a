"""A private redis-server for one benchmark run: a free port, no persistence."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import redis


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class BenchRedis:
    """``with BenchRedis() as server:`` starts redis-server, stops it at exit.

    The shared Redis at 6379 is never used: teammates run tests on it.
    """

    def __init__(
        self, binary: str = "redis-server", args: tuple[str, ...] = ()
    ) -> None:
        found = shutil.which(binary)
        if found is None:
            raise SystemExit(f"{binary} not found (make redis installs it)")
        self.binary = found
        self._args = args  # more redis-server options (W12: an AOF)
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.version = ""
        self._dir = tempfile.TemporaryDirectory(prefix="stackshift-bench-")
        self._proc: subprocess.Popen[bytes] | None = None
        self._client: redis.Redis | None = None

    def __enter__(self) -> BenchRedis:
        workdir = Path(self._dir.name)
        self._proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", str(workdir),
             "--logfile", str(workdir / "redis.log"), *self._args],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        self._client = redis.Redis(port=self.port, socket_timeout=5)
        deadline = time.monotonic() + 10
        while True:
            try:
                self._client.ping()
                break
            except redis.ConnectionError:
                if self._proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the bench redis-server did not start") from None
                time.sleep(0.02)
        info = self._client.info("server")
        self.version = str(info.get("redis_version", ""))
        return self

    def flushall(self) -> None:
        assert self._client is not None
        self._client.flushall()

    def __exit__(self, *exc: object) -> None:
        if self._client is not None:
            self._client.close()
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._dir.cleanup()
