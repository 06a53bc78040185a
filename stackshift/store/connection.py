"""Opens the Redis client a URL names: a real server, or memory:// (fakeredis)."""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
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


def is_memory_url(url: str) -> bool:
    return url.startswith("memory://")


def open_client(url: str) -> Any:
    """A redis-py asyncio client for ``url`` (bytes in, bytes out).

    Every script and command stackshift sends is safe to repeat (enqueue is keyed
    by its run id, checkpoints keep the first record, completions are fenced), so
    commands cut off by a dropped connection are retried with jittered backoff.
    """
    if is_memory_url(url):
        from .memory import open_memory_client

        return open_memory_client(url)
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError(
            f"unsupported URL {url!r}: use redis://, rediss://, unix:// or memory://"
        )
    pool = aioredis.ConnectionPool.from_url(
        url,
        max_connections=MAX_CONNECTIONS,
        decode_responses=False,
        socket_timeout=SOCKET_TIMEOUT,
        socket_connect_timeout=CONNECT_TIMEOUT,
        socket_keepalive=True,
        health_check_interval=30,
        retry=Retry(ExponentialWithJitterBackoff(base=0.05, cap=1.0), retries=3),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
    )
    return aioredis.Redis.from_pool(pool)  # the client owns (and closes) the pool
