"""Script calls sent straight to a connection (store/commands.py): each reply
reaches its own caller, whatever happened to the command before it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from redis.exceptions import ResponseError

from stackshift.store.commands import DirectCommands
from stackshift.store.connection import open_client
from tests.support.waiting import wait_until


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[object]:
    client = open_client(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def commands(client: object) -> AsyncIterator[DirectCommands]:
    commands = DirectCommands(client.connection_pool)  # type: ignore[attr-defined]
    yield commands
    await commands.aclose()


async def test_replies_and_error_replies(commands: DirectCommands, prefix: str) -> None:
    assert await commands.execute("SET", f"{prefix}k", "v") == b"OK"
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        await commands.execute("LPUSH", f"{prefix}k", "x")
    # The error reply was a whole reply: the connection is still in step.
    assert await commands.execute("GET", f"{prefix}k") == b"v"
    replies = await commands.execute_many(
        [("INCR", f"{prefix}n"), ("LPUSH", f"{prefix}k", "x"), ("INCR", f"{prefix}n")]
    )
    assert replies[0] == 1 and replies[2] == 2
    assert isinstance(replies[1], ResponseError)
    assert await commands.execute_many([]) == []


async def test_a_killed_connection_is_reopened_and_the_command_sent_again(
    commands: DirectCommands, client: object, prefix: str
) -> None:
    first = await commands.execute("CLIENT", "ID")
    killed = await client.execute_command("CLIENT", "KILL", "ID", first)  # type: ignore[attr-defined]
    assert killed == 1
    # The next command finds its connection closed, reconnects and is answered.
    assert await commands.execute("INCR", f"{prefix}n") == 1
    assert await commands.execute("CLIENT", "ID") != first
    assert await commands.execute("GET", f"{prefix}n") == b"1"  # sent once


async def test_a_cancelled_command_leaves_no_reply_behind(
    commands: DirectCommands, client: object, prefix: str
) -> None:
    async def blocked() -> int:
        listed = await client.execute_command("CLIENT", "LIST")  # type: ignore[attr-defined]
        text = listed.decode() if isinstance(listed, bytes) else str(listed)
        return text.count("cmd=blpop")

    waiting = asyncio.create_task(commands.execute("BLPOP", f"{prefix}list", 10))
    # Once Redis holds the blocked BLPOP, cancel its caller.
    await wait_until(blocked, message="the BLPOP to block")
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting

    async def unblocked() -> bool:
        return await blocked() == 0

    await wait_until(unblocked, message="the BLPOP's connection to close")
    await client.rpush(f"{prefix}list", "item")  # type: ignore[attr-defined]
    # The cancelled BLPOP's connection was closed: it took nothing, and the next
    # command gets its own reply, not the BLPOP's.
    assert await commands.execute("LLEN", f"{prefix}list") == 1
    assert await commands.execute("ECHO", "mine") == b"mine"


async def test_close_disconnects_its_connections(
    commands: DirectCommands, client: object
) -> None:
    ids = await asyncio.gather(*(commands.execute("CLIENT", "ID") for _ in range(3)))
    assert len(set(ids)) == 3  # concurrent commands, one connection each
    await commands.aclose()
    listed = await client.execute_command("CLIENT", "LIST", "ID", *ids)  # type: ignore[attr-defined]
    assert listed in (b"", "")
