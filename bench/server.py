"""A private redis-server for one benchmark run: a free port, no persistence;
and a private Redis Cluster of such servers (bench.cluster)."""

from __future__ import annotations

import contextlib
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


class BenchCluster:
    """``with BenchCluster(3) as cluster:`` a Redis Cluster of ``masters``
    cluster-enabled redis-servers (no replicas) on free ports, its slots spread
    by ``redis-cli --cluster create``; stopped at exit. ``args``: more options
    for every node (bench.cluster: the AOF W12 measures with)."""

    def __init__(self, masters: int = 3, args: tuple[str, ...] = ()) -> None:
        self.nodes = [
            BenchRedis(
                args=(
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-port",
                    str(free_port()),
                    *args,
                )  # fmt: skip
            )
            for _ in range(masters)
        ]
        hosts = ",".join(f"127.0.0.1:{node.port}" for node in self.nodes)
        self.url = f"redis+cluster://{hosts}"

    def __enter__(self) -> BenchCluster:
        # Nodes started before a failure are stopped again.
        with contextlib.ExitStack() as stack:
            for node in self.nodes:
                stack.enter_context(node)
            self._create()
            self._stack = stack.pop_all()
        return self

    def _create(self) -> None:
        cli = shutil.which("redis-cli")
        if cli is None:
            raise SystemExit("redis-cli not found (make redis installs it)")
        subprocess.run(
            [cli, "--cluster", "create",
             *(f"127.0.0.1:{node.port}" for node in self.nodes),
             "--cluster-replicas", "0", "--cluster-yes"],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while not all(self._ok(node) for node in self.nodes):
            if time.monotonic() > deadline:
                raise RuntimeError("the bench cluster did not become ready")
            time.sleep(0.05)

    @staticmethod
    def _ok(node: BenchRedis) -> bool:
        assert node._client is not None
        info = node._client.execute_command("CLUSTER", "INFO")
        text = info.decode() if isinstance(info, bytes) else str(info)
        return "cluster_state:ok" in text

    def master_of(self, key: str) -> int:
        """Which node (index in ``nodes``) serves ``key``'s slot."""
        client = self.nodes[0]._client
        assert client is not None
        slot = int(client.execute_command("CLUSTER", "KEYSLOT", key))
        for start, end, primary, *_ in client.execute_command("CLUSTER", "SLOTS"):
            if int(start) <= slot <= int(end):
                port = int(primary[1])
                return next(i for i, n in enumerate(self.nodes) if n.port == port)
        raise RuntimeError(f"no node serves slot {slot}")

    def flushall(self) -> None:
        for node in self.nodes:
            node.flushall()

    def __exit__(self, *exc: object) -> None:
        self._stack.close()
