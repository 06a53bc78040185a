"""Private Redis Cluster deployments on free ports, for tests that need several
masters, replicas, failovers or slot routing (no containers: real redis-server
processes, created with ``redis-cli --cluster create``)."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis

from tests.support.redis_server import RedisServer
from tests.support.waiting import wait_until

T = TypeVar("T")

SLOTS = 16384
# Short enough that a killed master is failed over in ~2-3 s; long enough that a
# busy 2-core machine does not see false failures.
NODE_TIMEOUT_MS = 1000


def poll_until(
    condition: Callable[[], T], *, timeout: float, message: str, interval: float = 0.02
) -> T:
    """Synchronous twin of ``waiting.wait_until``, for fixture set-up."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout} s waiting for {message}")
        time.sleep(interval)  # sync-ok: poll interval of a deadline-bounded wait


def distinct_free_ports(count: int) -> list[int]:
    """``count`` different free ports (``free_port`` alone may return a port twice
    once its socket is closed)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def parse_info(text: str | dict[str, Any]) -> dict[str, str]:
    """``CLUSTER INFO`` / ``INFO`` text as a dict (redis-py returns it raw)."""
    if isinstance(text, dict):
        return {str(k): str(v) for k, v in text.items()}
    pairs = (line.split(":", 1) for line in text.splitlines() if ":" in line)
    return {key: value.strip() for key, value in pairs}


class ClusterServer(RedisServer):
    """One cluster-enabled redis-server. Its nodes.conf lives in its own directory,
    so ``restart()`` (same port, same files) rejoins the cluster as the same node."""

    def __init__(
        self,
        workdir: Path,
        ports: tuple[int, int],
        *,
        appendonly: bool,
        extra: tuple[str, ...],
    ) -> None:
        # The bus port is set explicitly: the default (port + 10000) may be taken or
        # above 65535 for an ephemeral port.
        self.bus_port = ports[1]
        super().__init__(
            workdir,
            "--cluster-enabled", "yes",
            "--cluster-config-file", str(workdir / "nodes.conf"),
            "--cluster-port", str(self.bus_port),
            "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
            "--appendonly", "yes" if appendonly else "no",
            # replicas sync at once instead of waiting 5 s for more replicas
            "--repl-diskless-sync-delay", "0",
            *extra,
        )  # fmt: skip
        self.port = ports[0]
        self.node_id = ""
        self.paused = False

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def alive(self) -> bool:
        """Running and answering: neither killed, stopped nor paused."""
        return self.proc is not None and self.proc.poll() is None and not self.paused

    def pause(self) -> None:
        """SIGSTOP: the node hangs without closing its sockets, as a stalled host."""
        self.signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        self.signal(signal.SIGCONT)
        self.paused = False

    def start(self) -> ClusterServer:
        self.paused = False  # a fresh process, whatever happened to the last one
        try:
            super().start()
        except RuntimeError as exc:  # say why: the log's last lines
            raise RuntimeError(f"{exc}:\n{self.log_tail()}") from None
        return self

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = (self.dir / "redis.log").read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def query(self, *args: Any) -> Any:
        """One command, replies decoded, on a short-lived connection (fixtures
        outlive event loops, so no connection is kept)."""
        with redis.Redis(port=self.port, decode_responses=True, socket_timeout=2) as c:
            return c.execute_command(*args)

    def cluster_info(self) -> dict[str, str]:
        return parse_info(self.query("CLUSTER INFO"))

    def replication(self) -> dict[str, str]:
        return parse_info(self.query("INFO", "replication"))

    def __repr__(self) -> str:
        return f"<ClusterServer {self.addr} {self.node_id[:8]}>"


class RedisClusterDeployment:
    """N masters with R replicas each. Node roles change on failover, so every
    question about roles or slots is asked of the live cluster (only the slots
    each master served last are remembered, for ``wait_for_failover``)."""

    def __init__(
        self,
        workdir: Path,
        *,
        masters: int = 3,
        replicas: int = 0,
        appendonly: bool = False,
        extra: tuple[str, ...] = (),
    ) -> None:
        if masters < 3:
            raise ValueError("redis-cli --cluster create needs at least 3 masters")
        self.dir = workdir
        self.replicas_per_master = replicas
        count = masters * (1 + replicas)
        ports = distinct_free_ports(2 * count)
        self.nodes = [
            ClusterServer(
                workdir / f"node-{i}",
                (ports[2 * i], ports[2 * i + 1]),
                appendonly=appendonly,
                extra=extra,
            )
            for i in range(count)
        ]
        self.startup_seconds = 0.0
        self._slot_of: dict[str, int] = {}  # master's node id -> its first slot

    # -- life cycle -----------------------------------------------------------

    def start(self, timeout: float = 30.0) -> RedisClusterDeployment:
        began = time.monotonic()
        binary = shutil.which("redis-cli")
        if binary is None:
            pytest.skip("redis-cli is not installed (Debian's redis-server package)")
        with ThreadPoolExecutor(len(self.nodes)) as pool:  # starts overlap
            list(pool.map(lambda node: node.start(), self.nodes))
        create = subprocess.run(
            [binary, "--cluster", "create", *(n.addr for n in self.nodes),
             "--cluster-replicas", str(self.replicas_per_master), "--cluster-yes"],
            capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip
        if (
            create.returncode != 0
            or "[OK] All 16384 slots covered" not in create.stdout
        ):
            raise RuntimeError(f"redis-cli --cluster create failed:\n{create.stdout}")
        for node in self.nodes:
            node.node_id = node.query("CLUSTER MYID")
        self.wait_healthy(timeout=timeout - (time.monotonic() - began))
        self.shards()  # learn which master serves which slots
        self.startup_seconds = time.monotonic() - began
        return self

    def close(self) -> None:
        """Kill every node (resuming stopped ones first) and remove the files."""
        for node in self.nodes:
            if node.proc is not None:
                node.proc.send_signal(signal.SIGCONT)  # a test may have left it stopped
            node.kill()
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- addresses ------------------------------------------------------------

    @property
    def seed(self) -> ClusterServer:
        return self.nodes[0]

    @property
    def url(self) -> str:
        """stackshift's scheme for a cluster (DESIGN.md section 8)."""
        return f"redis+cluster://127.0.0.1:{self.seed.port}"

    @property
    def redis_url(self) -> str:
        """The same seed as redis-py's ``RedisCluster.from_url`` wants it."""
        return f"redis://127.0.0.1:{self.seed.port}"

    @property
    def seeds(self) -> list[tuple[str, int]]:
        """Every node's host and port (any one of them is enough to bootstrap)."""
        return [("127.0.0.1", node.port) for node in self.nodes]

    # -- topology, asked of the cluster ---------------------------------------

    def live_nodes(self) -> list[ClusterServer]:
        return [node for node in self.nodes if node.alive]

    def by_id(self, node_id: str) -> ClusterServer:
        return next(node for node in self.nodes if node.node_id == node_id)

    def by_port(self, port: int) -> ClusterServer:
        return next(node for node in self.nodes if node.port == port)

    def shards(self, via: ClusterServer | None = None) -> list[dict[str, Any]]:
        """``CLUSTER SHARDS`` as one live node sees it."""
        node = via or self.live_nodes()[0]
        shards: list[dict[str, Any]] = node.query("CLUSTER SHARDS")
        for shard in shards:  # remembered: a failed master's shard loses its slots
            for entry in shard["nodes"]:
                if shard["slots"] and entry["role"] == "master":
                    self._slot_of[entry["id"]] = int(shard["slots"][0])
        return shards

    def keyslot(self, key: str | bytes) -> int:
        return int(self.live_nodes()[0].query("CLUSTER KEYSLOT", key))

    def owner_of_slot(
        self, slot: int, via: ClusterServer | None = None
    ) -> ClusterServer:
        """The online master serving ``slot``, per ``CLUSTER SHARDS``."""
        for shard in self.shards(via):
            ranges = shard["slots"]
            if any(
                lo <= slot <= hi
                for lo, hi in zip(ranges[::2], ranges[1::2], strict=True)
            ):
                for entry in shard["nodes"]:
                    if entry["role"] == "master" and entry["health"] == "online":
                        return self.by_id(entry["id"])
        raise LookupError(f"no online master serves slot {slot}")

    def owner_of(self, key: str | bytes) -> ClusterServer:
        return self.owner_of_slot(self.keyslot(key))

    def masters(self) -> list[ClusterServer]:
        """The online masters that serve slots now, in slot order."""
        shards = sorted(
            (shard for shard in self.shards() if shard["slots"]),
            key=lambda shard: int(shard["slots"][0]),
        )
        return [
            self.by_id(entry["id"])
            for shard in shards
            for entry in shard["nodes"]
            if entry["role"] == "master" and entry["health"] == "online"
        ]

    def replicas_of(self, master: ClusterServer) -> list[ClusterServer]:
        """The online replicas in ``master``'s shard."""
        for shard in self.shards(via=self._other_live(master)):
            ids = [entry["id"] for entry in shard["nodes"]]
            if master.node_id in ids:
                return [
                    self.by_id(entry["id"])
                    for entry in shard["nodes"]
                    # "loading" is also how Redis 7.0 shows a replica at offset 0
                    if entry["role"] == "replica" and entry["health"] != "fail"
                ]
        return []

    # -- health ---------------------------------------------------------------

    def healthy(self) -> bool:
        """Every live node: state ok, all slots served, all live peers known,
        every replica's link to its master up, and one slot map agreed by all
        (a node resumed after a failover may still think it is a master)."""
        live = self.live_nodes()
        try:
            if not all(self._node_healthy(node, len(live)) for node in live):
                return False
            if len({self._slot_map(node) for node in live}) != 1:
                return False
            return self._replicas_known(live)
        except (redis.ConnectionError, redis.TimeoutError):
            return False

    @staticmethod
    def _node_healthy(node: ClusterServer, live: int) -> bool:
        info = node.cluster_info()
        if (
            info.get("cluster_state") != "ok"
            or info.get("cluster_slots_ok") != str(SLOTS)
            or int(info.get("cluster_known_nodes", 0)) < live
        ):
            return False
        repl = node.replication()
        return repl.get("role") != "slave" or repl.get("master_link_status") == "up"

    def _replicas_known(self, live: list[ClusterServer]) -> bool:
        """Every live replica shows in its master's shard as every live node
        sees it: a replica's link can be up before the others' gossip has
        placed it (``replicas_of`` then finds none)."""
        replicas = {
            node.node_id for node in live if node.replication().get("role") == "slave"
        }
        for node in live:
            placed = {
                entry["id"]
                for shard in self.shards(via=node)
                if shard["slots"]
                for entry in shard["nodes"]
                if entry["role"] == "replica"
            }
            if not replicas <= placed:
                return False
        return True

    def _slot_map(self, node: ClusterServer) -> frozenset[tuple[int, str]]:
        """(first slot, online master id) per shard, as ``node`` sees them."""
        return frozenset(
            (int(shard["slots"][0]), entry["id"])
            for shard in self.shards(via=node)
            if shard["slots"]
            for entry in shard["nodes"]
            if entry["role"] == "master" and entry["health"] == "online"
        )

    def wait_healthy(self, timeout: float = 20.0) -> None:
        poll_until(
            self.healthy, timeout=timeout, message="cluster_state:ok on every node"
        )

    def failed_over(self, old_master_id: str, slot: int) -> ClusterServer | None:
        """The node that took over ``slot`` from ``old_master_id``, once every live
        node agrees on it and the cluster is healthy again; else None."""
        try:
            owners = {self.owner_of_slot(slot, via=node) for node in self.live_nodes()}
        except (LookupError, redis.ConnectionError, redis.TimeoutError):
            return None
        if len(owners) != 1:
            return None
        (owner,) = owners
        if owner.node_id == old_master_id or not self.healthy():
            return None
        return owner

    async def wait_for_failover(
        self,
        old_master: ClusterServer,
        *,
        timeout: float = 20.0,  # noqa: ASYNC109 - a deadline for polling, by design
    ) -> ClusterServer:
        """After ``old_master`` was killed, stopped or paused: wait until one of its
        replicas serves its slots on every live node's map; return that node."""
        slot = self._first_slot_of(old_master)
        node_id = old_master.node_id
        promoted = await wait_until(
            lambda: self.failed_over(node_id, slot),
            timeout=timeout,
            interval=0.05,
            message=f"a replica of {old_master!r} to be promoted",
        )
        assert promoted is not None
        return promoted

    def _first_slot_of(self, master: ClusterServer) -> int:
        """A slot ``master`` serves, or served last time the cluster was asked
        (the failover may be over by the time a test waits for it)."""
        self.shards(via=self._other_live(master))
        try:
            return self._slot_of[master.node_id]
        except KeyError:
            raise LookupError(f"{master!r} never served a slot") from None

    def _other_live(self, node: ClusterServer) -> ClusterServer:
        return next(other for other in self.live_nodes() if other is not node)


@pytest.fixture
def redis_cluster_factory(
    tmp_path: Path,
) -> Iterator[Callable[..., RedisClusterDeployment]]:
    """``make(masters=3, replicas=0, appendonly=False, extra=())`` starts a
    private cluster and waits until it is healthy; all are removed afterwards."""
    clusters: list[RedisClusterDeployment] = []

    def make(**options: Any) -> RedisClusterDeployment:
        cluster = RedisClusterDeployment(
            tmp_path / f"cluster-{len(clusters)}", **options
        )
        clusters.append(cluster)  # before start: a failed start is cleaned up too
        return cluster.start()

    try:
        yield make
    finally:
        for cluster in clusters:
            cluster.close()


@pytest.fixture(scope="session")
def redis_cluster(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RedisClusterDeployment]:
    """A shared 3-master cluster without replicas. Tests use their own keys and
    must not kill its nodes (use ``redis_cluster_factory`` for that)."""
    cluster = RedisClusterDeployment(tmp_path_factory.mktemp("redis-cluster"))
    try:
        yield cluster.start()
    finally:
        cluster.close()
