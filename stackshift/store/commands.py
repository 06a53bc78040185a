"""Sends stackshift's script calls straight to a connection, past redis-py's
client layer.

Why: redis-py 8 wraps every command of its ``Redis`` client in a pool checkout
and check-in under an asyncio lock, observability hooks, a retry closure and
connection checks: 35-40 µs of CPU per command on the bench machine, against
~125 µs for a whole awaited ``XADD`` round trip. Script calls are what every hot
path sends (enqueue, fetch, start, complete, checkpoint), so they take this
path: pack (hiredis), send, read (hiredis), on connections of our own. Anything
else (blocking reads, pub/sub, inspection) uses the redis-py client as before.

What is kept: the connections are made by the client's own pool (same URL, auth,
TLS, timeouts and health checks), and so is the retry policy: a command cut off
by a dropped connection is sent again, up to ``RETRIES`` times with jittered
backoff (every script stackshift sends is safe to repeat).

memory:// (fakeredis) has no sockets to go straight to: there the same calls go
through the client (``ClientCommands``). So does Redis Cluster (``ClusterCommands``):
its client routes each script call to the node of its keys' slot, follows MOVED
and ASK, and re-reads the slots after a failover.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from redis.exceptions import ClusterDownError, ResponseError, TryAgainError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .connection import FAILOVER_RETRIES, RETRIES, RETRY_BACKOFF

_DROPPED = (RedisConnectionError, RedisTimeoutError)


class Commands(Protocol):
    async def execute(self, *args: Any) -> Any:
        """One command; an error reply is raised."""
        ...

    async def execute_many(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """Commands in one round trip, replies in order; an error reply is
        returned as its exception (one bad command does not hide the others)."""
        ...

    async def load(self, sources: list[str]) -> None:
        """SCRIPT LOAD each source where scripts run (every primary)."""
        ...

    async def aclose(self) -> None: ...


class DirectCommands:
    """Commands sent on connections made by ``pool``, one command (or one batch
    of commands) per connection at a time."""

    def __init__(self, pool: Any, retries: int = RETRIES) -> None:
        self._pool = pool
        self._retries = retries
        self._idle: list[Any] = []
        self._closed = False
        self._closing: set[asyncio.Task[None]] = set()

    async def execute(self, *args: Any) -> Any:
        conn = self._check_out()
        try:
            reply = await self._round_trip(conn, conn.pack_command(*args), 1)
        except ResponseError:
            self._check_in(conn)  # an error reply is a whole reply: still in step
            raise
        except BaseException:
            self._drop(conn)
            raise
        self._check_in(conn)
        return reply[0]

    async def execute_many(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        if not commands:
            return []
        conn = self._check_out()
        try:
            replies = await self._round_trip(
                conn, conn.pack_commands(commands), len(commands)
            )
        except BaseException:
            self._drop(conn)
            raise
        self._check_in(conn)
        return replies

    async def load(self, sources: list[str]) -> None:
        await _load_by_pipeline(self, sources)

    async def aclose(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            await conn.disconnect()
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)

    async def _round_trip(self, conn: Any, packed: Any, replies: int) -> list[Any]:
        failures = 0
        while True:
            try:
                if not conn.is_connected:
                    # connect() itself: a Sentinel-managed connection finds the
                    # primary there (a send would connect to its defaults).
                    await conn.connect()
                await conn.send_packed_command(packed)
                if replies == 1:
                    return [await conn.read_response()]
                return [await _read_reply(conn) for _ in range(replies)]
            except _DROPPED:
                # redis-py has closed the connection; the next send reconnects.
                failures += 1
                if failures > self._retries:
                    raise
                await asyncio.sleep(RETRY_BACKOFF.compute(failures))

    def _check_out(self) -> Any:
        return self._idle.pop() if self._idle else self._pool.make_connection()

    def _check_in(self, conn: Any) -> None:
        if self._closed:
            self._drop(conn)
        else:
            self._idle.append(conn)

    def _drop(self, conn: Any) -> None:
        # redis-py disconnects a connection on any error but an error reply;
        # make sure of it, without awaiting (we may be handling a cancellation).
        if conn.is_connected:
            task = asyncio.ensure_future(conn.disconnect(nowait=True))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)


async def _read_reply(conn: Any) -> Any:
    try:
        return await conn.read_response()
    except ResponseError as exc:
        return exc


class ClientCommands:
    """The same calls through a redis-py (or fakeredis) client."""

    def __init__(self, client: Any) -> None:
        self._client = client

    async def execute(self, *args: Any) -> Any:
        return await self._client.execute_command(*args)

    async def execute_many(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        if not commands:
            return []
        pipe = self._client.pipeline(transaction=False)
        for command in commands:
            pipe.execute_command(*command)
        replies: list[Any] = await pipe.execute(raise_on_error=False)
        return replies

    async def load(self, sources: list[str]) -> None:
        await _load_by_pipeline(self, sources)

    async def aclose(self) -> None:
        pass  # the client is closed by its owner


class ClusterCommands(ClientCommands):
    """The same calls through a Redis Cluster client, retried over a failover.

    The client routes each EVALSHA to the node of its keys' slot (every
    script's keys share one), groups a pipeline by node, follows MOVED and ASK,
    and re-reads the cluster's slots when a node fails; while a replica is
    being promoted (2-3 s) commands to its slots fail, so they are sent again
    with backoff (every command stackshift sends is safe to repeat).
    """

    async def execute(self, *args: Any) -> Any:
        failures = 0
        while True:
            try:
                return await self._client.execute_command(*args)
            except _FAILOVER as exc:
                failures = await _backoff(failures, exc)

    async def execute_many(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        failures = 0
        while True:
            try:
                return await super().execute_many(commands)
            except _FAILOVER as exc:
                failures = await _backoff(failures, exc)

    async def load(self, sources: list[str]) -> None:
        """SCRIPT LOAD on every primary: a script call goes to any of them, and a
        replica promoted by a failover starts with no scripts (NOSCRIPT, then
        this again)."""
        for source in sources:
            failures = 0
            while True:
                try:
                    await self._client.script_load(source)
                    break
                except _FAILOVER as exc:
                    failures = await _backoff(failures, exc)


_FAILOVER = (RedisConnectionError, RedisTimeoutError, ClusterDownError, TryAgainError)


async def _backoff(failures: int, exc: BaseException) -> int:
    failures += 1
    if failures > FAILOVER_RETRIES:
        raise exc
    await asyncio.sleep(RETRY_BACKOFF.compute(failures))
    return failures


async def _load_by_pipeline(commands: Commands, sources: list[str]) -> None:
    replies = await commands.execute_many([("SCRIPT", "LOAD", src) for src in sources])
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply


def open_commands(client: Any, *, memory: bool) -> Commands:
    """Direct commands on ``client``'s connections; through the client for
    memory:// and Redis Cluster."""
    if memory:
        return ClientCommands(client)
    if hasattr(client, "nodes_manager"):  # redis.asyncio.cluster.RedisCluster
        return ClusterCommands(client)
    if hasattr(client, "stackshift_sentinel"):  # a Sentinel group's primary
        return DirectCommands(client.connection_pool, FAILOVER_RETRIES)
    return DirectCommands(client.connection_pool)
