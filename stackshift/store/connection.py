"""Opens the Redis client a URL names: a real server, or memory:// (fakeredis)."""

from __future__ import annotations

from typing import Any, NamedTuple
from urllib.parse import parse_qs, unquote

import hiredis
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.connection import HiredisRespSerializer
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..errors import ConfigError

# Longer than the longest blocking read (XREADGROUP BLOCK), so that a blocked
# read is never mistaken for a dead connection; short enough that a black-holed
# connection is noticed.
SOCKET_TIMEOUT = 15.0
CONNECT_TIMEOUT = 5.0
# Connections per app: a run holds one only while its command is in flight, so a
# worker needs about `concurrency` + 4. redis-py 8's default cap (100) fails
# commands past it; its blocking pool waits instead but costs a queue hand-off
# on every command. A plain pool with a cap far above any sane concurrency.
MAX_CONNECTIONS = 5000
# A command cut off by a dropped connection is sent again this many times, after
# these pauses (every script and command stackshift sends is safe to repeat).
RETRIES = 3
RETRY_BACKOFF = ExponentialWithJitterBackoff(base=0.05, cap=1.0)


# redis-py sync client's packer (hiredis), used for our asyncio connections too.
_HIREDIS_PACKER = HiredisRespSerializer()

# A send larger than this goes through redis-py's own timed send (see below).
FAST_SEND_BYTES = 16 * 1024


class _UntimedSmallSends:
    """Sends small commands without redis-py's ``asyncio.wait_for``; maps
    uvloop's closed-transport error to a connection error; packs commands with
    hiredis.

    With a socket timeout set, redis-py wraps every send in ``wait_for``, which
    on Python 3.11 makes a task per command: ~15-20 µs of CPU and an event loop
    turn, on every enqueue, start and completion. A small send cannot wait: it
    fits in the transport's buffer, which is empty because this connection's
    previous reply has been read. The read that follows keeps its timeout, and
    notices a dead peer as before. Connecting, health checks and large sends
    (pipelines) keep the timed path.

    Under uvloop, a write on a connection the peer has reset raises
    ``RuntimeError`` ("the handler is closed"), which redis-py neither maps nor
    retries: it escaped the fetch loop and killed the worker. It is a dropped
    connection, so it becomes one (retried like any other).
    """

    socket_timeout: float | None

    def pack_command(self, *args: Any) -> list[bytes]:
        """One command in RESP, packed by hiredis: redis-py's asyncio client
        packs argument by argument in Python, ~10 µs of CPU per enqueue.
        Pipelines pack through this too.

        hiredis takes str, bytes, int and float as they are. redis-py's own
        hiredis packer first splits a first argument holding a space
        ("CLIENT SETNAME") and copies every argument that is a bytearray or
        memoryview, in a Python loop over all of them (~0.3 µs an argument; a
        start call has ~100): only commands that need it go that way."""
        first = args[0]
        if isinstance(first, str) and " " not in first:
            try:
                return [hiredis.pack_command(args)]
            except TypeError:
                pass  # a bytearray or memoryview among them: redis-py's way
        return _HIREDIS_PACKER.pack(*args)  # type: ignore[no-any-return]

    async def send_packed_command(
        self, command: Any, check_health: bool = True
    ) -> None:
        try:
            await self._send_mapped(command, check_health)
        except RuntimeError as exc:
            if "closed" not in str(exc):
                raise
            await self.disconnect(nowait=True)  # type: ignore[attr-defined]
            raise RedisConnectionError(f"connection closed by peer: {exc}") from exc

    async def _send_mapped(self, command: Any, check_health: bool) -> None:
        send = super().send_packed_command  # type: ignore[misc]
        size = (
            len(command)
            if isinstance(command, (bytes, str))
            else sum(len(part) for part in command)
        )
        if not self.is_connected or size > FAST_SEND_BYTES:  # type: ignore[attr-defined]
            await send(command, check_health)
            return
        if check_health:
            await self.check_health()  # type: ignore[attr-defined]
        timeout, self.socket_timeout = self.socket_timeout, None
        try:
            await send(command, False)
        finally:
            self.socket_timeout = timeout


_CONNECTION_CLASSES: dict[type, type] = {}


def _untimed_small_sends(base: type) -> type:
    """``base`` (plain, TLS or unix socket connection) with untimed small sends."""
    if base not in _CONNECTION_CLASSES:
        _CONNECTION_CLASSES[base] = type(base.__name__, (_UntimedSmallSends, base), {})
    return _CONNECTION_CLASSES[base]


def is_memory_url(url: str) -> bool:
    return url.startswith("memory://")


CLUSTER_SCHEMES = ("redis+cluster://", "rediss+cluster://")
SENTINEL_SCHEMES = ("redis+sentinel://", "rediss+sentinel://")
# A Sentinel failover takes 3-4 s (down-after, vote, promotion), a cluster
# failover 2-3 s: commands to those are retried over about 6 s (the backoff
# doubles from 50 ms, capped at 1 s), not the 2 s of a single server.
FAILOVER_RETRIES = 9


def is_cluster_url(url: str) -> bool:
    return url.startswith(CLUSTER_SCHEMES)


def open_client(url: str) -> Any:
    """A redis-py asyncio client for ``url`` (bytes in, bytes out).

    Every script and command stackshift sends is safe to repeat (enqueue is keyed
    by its run id, checkpoints keep the first record, completions are fenced), so
    commands cut off by a dropped connection are retried with jittered backoff.
    """
    if is_memory_url(url):
        from .memory import open_memory_client

        return open_memory_client(url)
    if url.startswith(CLUSTER_SCHEMES):
        return _open_cluster(url)
    if url.startswith(SENTINEL_SCHEMES):
        return _open_sentinel(url)
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError(
            f"unsupported URL {url!r}: use redis://, rediss://, unix://, "
            "redis+cluster://, redis+sentinel:// (or rediss+...) or memory://"
        )
    pool = aioredis.ConnectionPool.from_url(
        url,
        max_connections=MAX_CONNECTIONS,
        decode_responses=False,
        socket_timeout=SOCKET_TIMEOUT,
        socket_connect_timeout=CONNECT_TIMEOUT,
        socket_keepalive=True,
        health_check_interval=30,
        retry=Retry(RETRY_BACKOFF, retries=RETRIES),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
    )
    pool.connection_class = _untimed_small_sends(pool.connection_class)
    return aioredis.Redis.from_pool(pool)  # the client owns (and closes) the pool


class _Address(NamedTuple):
    """What a cluster or Sentinel URL says: ``scheme://[user:password@]host:port
    [,host:port...][/path][?query]``."""

    tls: bool
    hosts: list[tuple[str, int]]
    username: str | None
    password: str | None
    path: str
    query: dict[str, str]


def _address(url: str, default_port: int) -> _Address:
    scheme, _, rest = url.partition("://")
    netloc, slash, path = rest.partition("/")
    path, _, query = (slash + path).partition("?")
    if "?" in netloc:
        netloc, _, query = netloc.partition("?")
    userinfo, at, hostlist = netloc.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    hosts = []
    for part in hostlist.split(","):
        host, colon, port = part.strip().rpartition(":")
        if not colon:
            host, port = port, str(default_port)
        if not host or not port.isdigit():
            raise ConfigError(f"cannot read host:port {part!r} in {url!r}")
        hosts.append((host.strip("[]"), int(port)))
    return _Address(
        tls=scheme.startswith("rediss"),
        hosts=hosts,
        username=username,
        password=password,
        path=path.strip("/"),
        query={k: v[-1] for k, v in parse_qs(query).items()},
    )


def _connection_options() -> dict[str, Any]:
    return {
        "decode_responses": False,
        "socket_timeout": SOCKET_TIMEOUT,
        "socket_connect_timeout": CONNECT_TIMEOUT,
        "socket_keepalive": True,
        "health_check_interval": 30,
    }


def _open_cluster(url: str) -> Any:
    """A Redis Cluster client: it finds the node of each key's slot itself,
    follows MOVED and ASK, and re-reads the slots after a failover."""
    from redis.asyncio.cluster import ClusterNode, RedisCluster

    address = _address(url, 6379)
    return RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in address.hosts],
        username=address.username,
        password=address.password,
        ssl=address.tls,
        max_connections=MAX_CONNECTIONS,
        retry=Retry(RETRY_BACKOFF, retries=RETRIES),
        **_connection_options(),
    )


def _open_sentinel(url: str) -> Any:
    """A client of the primary a Sentinel group names: ``redis+sentinel://
    host:26379[,host:26379]/service[/db]``; ``?sentinel_password=`` if the
    sentinels need one. It asks the sentinels again after a failover."""
    from redis.asyncio.sentinel import Sentinel

    address = _address(url, 26379)
    service, _, db = address.path.partition("/")
    if not service:
        raise ConfigError(
            f"{url!r}: name the service: redis+sentinel://host:26379/NAME"
        )
    sentinel_options: dict[str, Any] = {"socket_timeout": CONNECT_TIMEOUT}
    if "sentinel_password" in address.query:
        sentinel_options["password"] = address.query["sentinel_password"]
    sentinel = Sentinel(address.hosts, sentinel_kwargs=sentinel_options)  # type: ignore[no-untyped-call]
    client = sentinel.master_for(
        service,
        db=int(db or 0),
        username=address.username,
        password=address.password,
        ssl=address.tls,
        max_connections=MAX_CONNECTIONS,
        retry=Retry(RETRY_BACKOFF, retries=FAILOVER_RETRIES),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
        **_connection_options(),
    )
    pool = client.connection_pool
    pool.connection_class = _untimed_small_sends(pool.connection_class)
    client.stackshift_sentinel = sentinel  # closed with the client (base.Link)
    return client
