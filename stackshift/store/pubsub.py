"""Sharded pub/sub: the scripts SPUBLISH, listeners SSUBSCRIBE.

On Redis Cluster a sharded message stays within the shard that owns its
channel's slot, where a PUBLISH is sent to every node over the cluster bus (a
cost on every master, per run, that grows with the cluster). Each channel of
ours shares its queue's slot ("{queue}:finished"), so a listener subscribes to
each channel on the node that owns that slot: one connection per node, each
read by a task of its own. On one server (Sentinel's primary, memory://) it is
one connection, read by whoever calls ``next()``.

A listener that loses a connection raises from ``next()``; its owner makes a
new one and subscribes again. What was published meanwhile is lost, so every
owner has a backstop (results are re-read, timers looked at, cancels carried
by lease renewals).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import anyio
from redis.asyncio import ConnectionPool, Redis

CONFIRM_SECONDS = 2.0  # how long ``confirmed`` waits for the server
READ_SECONDS = 5.0  # one read of a node's connection (a cluster's)
# memory:// is polled: fakeredis wakes a blocked read from the publisher's
# thread, which is unsafe when the reader's event loop runs in another thread
# (a loop could sleep through the message, or through its own shutdown).
POLL_SECONDS = 0.005

Message = tuple[str, bytes]  # (channel, data)


class Listener:
    """Messages of some sharded channels, from whichever nodes own them."""

    def __init__(self, client: Any, *, poll: bool = False) -> None:
        self._client = client
        self._cluster = hasattr(client, "nodes_manager")
        self._poll = poll
        self._confirmed: dict[str, asyncio.Event] = {}
        # One server: its pubsub, read in next(). A cluster: one per node.
        self._single: Any = None if self._cluster else client.pubsub()
        self._nodes: dict[str, _NodeFeed] = {}
        self._inbox: asyncio.Queue[Message | BaseException] = asyncio.Queue()

    async def subscribe(self, *channels: str) -> None:
        """Send SSUBSCRIBE for ``channels`` (``confirmed`` waits for the
        server's answer, which ``next()`` reads)."""
        for channel in channels:
            self._confirmed.setdefault(channel, asyncio.Event())
            if self._single is not None:
                await self._single.ssubscribe(channel)
            else:
                await self._node_feed(channel).subscribe(channel)

    async def confirmed(self, *channels: str) -> None:
        """Return once the servers confirmed ``channels`` (someone must be
        calling ``next()``), or after CONFIRM_SECONDS: the owner's backstop
        covers a subscription that is late."""
        with anyio.move_on_after(CONFIRM_SECONDS):
            for channel in channels:
                await self._confirmed.setdefault(channel, asyncio.Event()).wait()

    async def next(self, timeout: float) -> Message | None:  # noqa: ASYNC109
        """The next message; None after ``timeout`` seconds without one.
        Raises what broke a connection."""
        if self._single is not None and self._poll:
            deadline = asyncio.get_running_loop().time() + timeout
            while True:
                taken = self._take(await self._single.get_message(timeout=0.0))
                if taken is not None or asyncio.get_running_loop().time() >= deadline:
                    return taken
                await asyncio.sleep(POLL_SECONDS)
        if self._single is not None:
            return self._take(await self._single.get_message(timeout=timeout))
        try:
            item = await asyncio.wait_for(self._inbox.get(), timeout)
        except TimeoutError:
            return None
        if isinstance(item, BaseException):
            # A node failed or a slot moved: re-read the slots, so that the
            # owner's next listener subscribes where they are now.
            with contextlib.suppress(Exception):
                await self._client.nodes_manager.initialize()
            raise item
        return item

    async def aclose(self) -> None:
        # Shielded: it is called from the finally of a task being cancelled
        # (a worker stopping), and its connections must close all the same.
        with anyio.CancelScope(shield=True):
            if self._single is not None:
                with contextlib.suppress(Exception):
                    await self._single.aclose()
            feeds, self._nodes = list(self._nodes.values()), {}
            for feed in feeds:
                await feed.close()

    def _take(self, message: dict[str, Any] | None) -> Message | None:
        """A message read: (channel, data) if it is one of ours; a server's
        confirmation is noted; a slot that moved breaks the listener."""
        if not message:
            return None
        kind = _text(message.get("type"))
        channel = _text(message.get("channel"))
        if kind == "smessage":
            return channel, message["data"]
        if kind == "ssubscribe":
            self._confirmed.setdefault(channel, asyncio.Event()).set()
        elif kind == "sunsubscribe":  # its slot moved: the owner subscribes again
            raise ConnectionError(f"{channel} was unsubscribed by the server")
        return None

    def _node_feed(self, channel: str) -> _NodeFeed:
        node = self._client.get_node_from_key(channel)
        feed = self._nodes.get(node.name)
        if feed is None:
            pool = ConnectionPool(
                connection_class=node.connection_class, **node.connection_kwargs
            )
            feed = self._nodes[node.name] = _NodeFeed(Redis.from_pool(pool), self)
        return feed


class _NodeFeed:
    """A cluster node's connection, read by a task of its own into the
    listener's inbox."""

    def __init__(self, client: Redis, listener: Listener) -> None:
        self._client = client
        self._pubsub = client.pubsub()
        self._listener = listener
        self._reader: asyncio.Task[None] | None = None

    async def subscribe(self, channel: str) -> None:
        await self._pubsub.ssubscribe(channel)
        if self._reader is None:
            self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        inbox = self._listener._inbox
        try:
            while True:
                message = await self._pubsub.get_message(timeout=READ_SECONDS)
                taken = self._listener._take(message)
                if taken is not None:
                    inbox.put_nowait(taken)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            inbox.put_nowait(exc)

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            # asyncio.wait: the reader's end is not raised here, while a cancel
            # of the task closing this still is.
            await asyncio.wait([self._reader])
        with contextlib.suppress(Exception):
            await self._pubsub.aclose()  # type: ignore[no-untyped-call]
        with contextlib.suppress(Exception):
            await self._client.aclose()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
