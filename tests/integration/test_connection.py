"""The client stackshift opens (store/connection.py): commands packed by hiredis
behave as redis-py's own packing does."""

from __future__ import annotations

import pytest
from redis.exceptions import DataError

from stackshift.store.connection import open_client


async def test_commands_packed_by_hiredis_reach_redis_intact(
    redis_url: str, prefix: str
) -> None:
    client = open_client(redis_url)
    try:
        key = f"{prefix}packed"
        text = "naïve ☃ \r\n $3 *2"  # non-ASCII, and RESP's own markers
        assert await client.set(key, text) is True
        assert (await client.get(key)).decode() == text
        assert await client.hset(f"{prefix}h", mapping={"n": 7, "x": 1.5}) == 2
        assert await client.hmget(f"{prefix}h", "n", "x") == [b"7", b"1.5"]
        # A command name of two words goes out as two arguments.
        assert "maxmemory-policy" in await client.config_get("maxmemory-policy")
        async with client.pipeline(transaction=True) as pipe:
            replies = await pipe.incr(f"{prefix}n").incr(f"{prefix}n").execute()
        assert replies == [1, 2]
    finally:
        await client.aclose()


async def test_a_value_redis_py_cannot_encode_is_refused_before_sending(
    redis_url: str, prefix: str
) -> None:
    client = open_client(redis_url)
    try:
        with pytest.raises(DataError):
            await client.set(f"{prefix}k", None)
        assert await client.ping() is True  # the connection is still usable
    finally:
        await client.aclose()
