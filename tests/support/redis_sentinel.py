"""A private Sentinel deployment on free ports: one master, one replica and three
sentinels (quorum 2), with short timeouts so a failover takes seconds."""

from __future__ import annotations

import re
import secrets
import shutil
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.support.redis_cluster import parse_info, poll_until
from tests.support.redis_server import RedisServer
from tests.support.waiting import wait_until

DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 5000
QUORUM = 2
SERVICE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


class SentinelServer(RedisServer):
    """One ``redis-server --sentinel``. Sentinel must own a config file it can
    rewrite, so the file is written once and kept across restarts."""

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        self.myid = secrets.token_hex(20)  # known up front so peers can be listed
        self.config = ""  # set by the deployment once every peer's id is known

    @property
    def conf_path(self) -> Path:
        return self.dir / "sentinel.conf"

    def start(self) -> SentinelServer:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("redis-server is not installed (make test installs it)")
        self.dir.mkdir(parents=True, exist_ok=True)
        if not self.conf_path.exists():
            self.conf_path.write_text(self.config)
        # The config file must come first on the command line (redis-server's rule).
        self.proc = subprocess.Popen(
            [binary, str(self.conf_path), "--sentinel"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.wait_ready()
        return self

    def query(self, *args: Any) -> Any:
        with redis.Redis(port=self.port, decode_responses=True, socket_timeout=2) as c:
            return c.execute_command(*args)


class SentinelDeployment:
    """Master + replica + 3 sentinels monitoring them as ``service``."""

    def __init__(self, workdir: Path, *, service: str = "stackshift") -> None:
        if not SERVICE_NAME.fullmatch(service):
            raise ValueError(f"bad service name {service!r}")
        self.dir = workdir
        self.service = service
        self.servers: list[RedisServer] = []
        self.sentinels: list[SentinelServer] = []

    def start(self, timeout: float = 20.0) -> SentinelDeployment:
        fast_sync = ("--repl-diskless-sync-delay", "0")
        master = RedisServer(self.dir / "redis-0", *fast_sync)
        replica = RedisServer(
            self.dir / "redis-1",
            "--replicaof",
            "127.0.0.1",
            str(master.port),
            *fast_sync,
        )
        self.servers = [master, replica]
        master.start()
        replica.start()
        self.sentinels = [SentinelServer(self.dir / f"sentinel-{i}") for i in range(3)]
        for sentinel in self.sentinels:
            sentinel.config = self._config(sentinel, master, replica)
            sentinel.start()
        poll_until(self.ready, timeout=timeout, message="sentinels to see the set-up")
        return self

    def _config(
        self, sentinel: SentinelServer, master: RedisServer, replica: RedisServer
    ) -> str:
        # Peers and replica are listed up front (as Sentinel itself persists them),
        # so nobody waits for the 2 s hello or the 10 s INFO period to discover them.
        name = self.service
        lines = [
            f"port {sentinel.port}",
            "bind 127.0.0.1",
            f"dir {sentinel.dir}",
            f"logfile {sentinel.dir / 'sentinel.log'}",
            f"sentinel myid {sentinel.myid}",
            f"sentinel monitor {name} 127.0.0.1 {master.port} {QUORUM}",
            f"sentinel down-after-milliseconds {name} {DOWN_AFTER_MS}",
            f"sentinel failover-timeout {name} {FAILOVER_TIMEOUT_MS}",
            f"sentinel known-replica {name} 127.0.0.1 {replica.port}",
        ]
        lines += [
            f"sentinel known-sentinel {name} 127.0.0.1 {peer.port} {peer.myid}"
            for peer in self.sentinels
            if peer is not sentinel
        ]
        return "\n".join(lines) + "\n"

    def close(self) -> None:
        for server in [*self.sentinels, *self.servers]:
            if server.proc is not None:
                server.proc.send_signal(
                    signal.SIGCONT
                )  # a test may have left it stopped
            server.kill()
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- addresses ------------------------------------------------------------

    @property
    def url(self) -> str:
        """stackshift's scheme for Sentinel (DESIGN.md section 8)."""
        return f"redis+sentinel://127.0.0.1:{self.sentinels[0].port}/{self.service}"

    @property
    def sentinel_addrs(self) -> list[tuple[str, int]]:
        return [("127.0.0.1", sentinel.port) for sentinel in self.sentinels]

    # -- state, asked of the sentinels ----------------------------------------

    def reported_master_ports(self) -> set[int]:
        """The master port each live sentinel reports (one value once they agree)."""
        ports = set()
        for sentinel in self.sentinels:
            if sentinel.proc is None:
                continue
            host_port = sentinel.query("SENTINEL GET-MASTER-ADDR-BY-NAME", self.service)
            ports.add(int(host_port[1]))
        return ports

    def master(self) -> RedisServer:
        """The server every sentinel names as master now."""
        (port,) = self.reported_master_ports()
        return next(server for server in self.servers if server.port == port)

    def ready(self) -> bool:
        """Each sentinel sees the master up, its 2 peers and a replica whose link
        to the master is up."""
        try:
            for sentinel in self.sentinels:
                state = sentinel.query("SENTINEL MASTER", self.service)
                state = state if isinstance(state, dict) else _pairs(state)
                if (
                    state.get("flags") != "master"
                    or int(state.get("num-other-sentinels", 0))
                    < len(self.sentinels) - 1
                    or int(state.get("num-slaves", 0)) < 1
                ):
                    return False
            master = self.master()
            for server in self.servers:
                if server is master or server.proc is None:
                    continue
                with server.client() as client:
                    repl = parse_info(client.execute_command("INFO", "replication"))
                if repl.get("master_link_status") != "up":
                    return False
        except (redis.ConnectionError, redis.TimeoutError, ValueError):
            return False
        return True

    def kill_master(self) -> RedisServer:
        """SIGKILL the current master; returns it (``start()`` brings it back,
        and the sentinels then turn it into a replica)."""
        master = self.master()
        master.kill()
        return master

    def failed_over(self, old_port: int) -> RedisServer | None:
        try:
            ports = self.reported_master_ports()
            if len(ports) != 1 or old_port in ports:
                return None
            new = self.master()
            with new.client() as client:
                role = parse_info(client.execute_command("INFO", "replication"))
        except (redis.ConnectionError, redis.TimeoutError):
            return None
        return new if role.get("role") == "master" else None

    async def wait_for_failover(
        self,
        old_master: RedisServer,
        *,
        timeout: float = 30.0,  # noqa: ASYNC109 - a deadline for polling, by design
    ) -> RedisServer:
        """Wait until every sentinel names another server as master, and that
        server says it is one; return it."""
        old_port = old_master.port
        promoted = await wait_until(
            lambda: self.failed_over(old_port),
            timeout=timeout,
            interval=0.05,
            message=f"the sentinels to promote a replica of port {old_port}",
        )
        assert promoted is not None
        return promoted


def _pairs(flat: list[Any]) -> dict[str, Any]:
    return dict(zip(flat[::2], flat[1::2], strict=True))


@pytest.fixture
def redis_sentinel_factory(
    tmp_path: Path,
) -> Iterator[Callable[..., SentinelDeployment]]:
    """``make(service="stackshift")`` starts master + replica + 3 sentinels and
    waits until the sentinels see all of it; everything is removed afterwards."""
    deployments: list[SentinelDeployment] = []

    def make(**options: Any) -> SentinelDeployment:
        deployment = SentinelDeployment(
            tmp_path / f"sentinel-{len(deployments)}", **options
        )
        deployments.append(deployment)  # before start: a failed start is cleaned up
        return deployment.start()

    try:
        yield make
    finally:
        for deployment in deployments:
            deployment.close()
