"""The cluster and Sentinel fixtures start what they promise, and redis-py's
asyncio clients work against them, across a failover too."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Callable
from urllib.parse import urlsplit

import pytest
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.sentinel import Sentinel

from tests.support.redis_cluster import ClusterServer, RedisClusterDeployment
from tests.support.redis_sentinel import SentinelDeployment
from tests.support.redis_server import RedisServer
from tests.support.waiting import wait_until


def key_on(cluster: RedisClusterDeployment, node: ClusterServer, tag: str) -> str:
    """A fresh key whose slot ``node`` serves."""
    for i in range(1000):
        key = f"{tag}:{i}"
        if cluster.owner_of(key) is node:
            return key
    raise AssertionError(f"no key of {tag} lands on {node!r}")


def replica_value(replica: ClusterServer, key: str) -> bytes | None:
    """``key`` as the replica has it (READONLY lets a cluster replica answer)."""
    with replica.client() as client:
        client.execute_command("READONLY")
        value: bytes | None = client.get(key)
        return value


def value_on(server: RedisServer, key: str) -> bytes | None:
    with server.client() as client:
        value: bytes | None = client.get(key)
        return value


def refuses_connections(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


async def test_cluster_serves_keys_on_each_of_three_masters(
    redis_cluster: RedisClusterDeployment,
) -> None:
    masters = redis_cluster.masters()
    assert len({master.port for master in masters}) == 3
    tag = uuid.uuid4().hex
    keys = {master.port: key_on(redis_cluster, master, tag) for master in masters}
    host, port = redis_cluster.seeds[0]
    async with RedisCluster(host=host, port=port, decode_responses=True) as client:
        for master in masters:
            await client.set(keys[master.port], master.addr)
        for master in masters:
            key = keys[master.port]
            assert await client.get(key) == master.addr
            node = client.get_node_from_key(key)
            assert node is not None and node.port == master.port
            assert master.query("GET", key) == master.addr  # stored where we said
        await client.delete(*keys.values())


async def test_cluster_url_names_a_seed_that_reveals_every_master(
    redis_cluster: RedisClusterDeployment,
) -> None:
    url = urlsplit(redis_cluster.url)
    assert url.scheme == "redis+cluster"
    assert (url.hostname, url.port) in redis_cluster.seeds
    async with RedisCluster.from_url(redis_cluster.redis_url) as client:
        primaries = {node.port for node in client.get_primaries()}
    assert primaries == {master.port for master in redis_cluster.masters()}


@pytest.mark.slow
async def test_cluster_client_keeps_working_after_a_master_fails_over(
    redis_cluster_factory: Callable[..., RedisClusterDeployment],
) -> None:
    cluster = redis_cluster_factory(masters=3, replicas=1)
    victim = cluster.masters()[0]
    (replica,) = cluster.replicas_of(victim)
    key = key_on(cluster, victim, uuid.uuid4().hex)
    async with RedisCluster(
        host="127.0.0.1", port=victim.port, decode_responses=True
    ) as client:
        await client.set(key, "before")
        await wait_until(lambda: replica_value(replica, key) == b"before")

        victim.kill()
        promoted = await cluster.wait_for_failover(victim)

        assert promoted is replica
        assert await client.get(key) == "before"
        await client.set(key, "after")
        assert promoted.query("GET", key) == "after"

    victim.start()  # same port and nodes.conf: it rejoins as a replica
    await wait_until(cluster.healthy, message="the old master to rejoin")
    assert cluster.replicas_of(promoted) == [victim]


async def test_closing_a_cluster_kills_its_nodes_and_removes_its_files(
    redis_cluster_factory: Callable[..., RedisClusterDeployment],
) -> None:
    cluster = redis_cluster_factory()
    ports = [port for _, port in cluster.seeds]
    assert not any(refuses_connections(port) for port in ports)

    cluster.close()

    assert all(refuses_connections(port) for port in ports)
    assert not cluster.dir.exists()


async def test_sentinel_url_names_a_sentinel_that_knows_the_master(
    redis_sentinel_factory: Callable[..., SentinelDeployment],
) -> None:
    deployment = redis_sentinel_factory(service="jobs")
    url = urlsplit(deployment.url)
    assert url.scheme == "redis+sentinel"
    assert url.path == "/jobs"
    assert (url.hostname, url.port) in deployment.sentinel_addrs
    async with Sentinel(deployment.sentinel_addrs, socket_timeout=2) as sentinel:
        _, port = await sentinel.discover_master("jobs")
        replicas = await sentinel.discover_slaves("jobs")
    assert port == deployment.master().port
    assert [replica_port for _, replica_port in replicas] == [
        server.port for server in deployment.servers if server.port != port
    ]


@pytest.mark.slow
async def test_sentinel_master_for_follows_a_failover(
    redis_sentinel_factory: Callable[..., SentinelDeployment],
) -> None:
    deployment = redis_sentinel_factory()
    key = uuid.uuid4().hex
    async with Sentinel(deployment.sentinel_addrs, socket_timeout=2) as sentinel:
        master = sentinel.master_for(
            deployment.service, decode_responses=True, socket_timeout=2
        )
        async with master:
            await master.set(key, "before")
            old = deployment.master()
            (replica,) = (server for server in deployment.servers if server is not old)
            await wait_until(lambda: value_on(replica, key) == b"before")

            deployment.kill_master()
            promoted = await deployment.wait_for_failover(old)

            assert promoted is replica
            assert await master.get(key) == "before"
            await master.set(key, "after")
            assert value_on(promoted, key) == b"after"
