"""The Store's base: its connections (one set per event loop), its scripts and
its key names."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
import weakref
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError, ResponseError

from ..config import Settings
from ..errors import StoreError
from . import scripts as _scripts
from .batching import ScriptBatcher
from .commands import Commands, open_commands
from .connection import is_memory_url, open_client
from .keys import Keys
from .records import as_str, mapped_errors, store_error

if TYPE_CHECKING:
    from .notify import ResultWaiter


class Link:
    """What one event loop uses to reach Redis: its client (and connection
    pool), the direct command path and the script batcher.

    redis-py's asyncio objects belong to the loop they were made in, so an app
    used from several loops (``asyncio.run()`` twice, pytest's per-test loops,
    a thread with a loop of its own) gets one Link per loop.
    """

    def __init__(self, url: str, memory: bool, scripts: dict[str, _scripts.Script]):
        self.client: Any = open_client(url)
        self.commands: Commands = open_commands(self.client, memory=memory)
        self.batcher = ScriptBatcher(self.commands, scripts)
        self.waiter: ResultWaiter | None = None  # made on first result() wait
        self.closed = False

    async def aclose(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.waiter is not None:
            await self.waiter.close()
        await self.commands.aclose()
        await self.client.aclose()
        sentinel = getattr(self.client, "stackshift_sentinel", None)
        if sentinel is not None:  # the clients it asks for the primary
            await sentinel.aclose()


async def _close_with_loop(store: StoreBase, link: Link) -> AsyncGenerator[None]:
    """Closes ``link`` when its loop shuts down: an async generator that has
    started is closed by ``loop.shutdown_asyncgens()``, which ``asyncio.run()``
    (and pytest-asyncio's runner) call before closing the loop. Without it, a
    loop that ends without ``app.close()`` would leave its sockets open."""
    try:
        yield
    finally:
        store._closers.pop(link, None)
        await link.aclose()


def _worst(infos: list[dict[str, str]]) -> dict[str, str]:
    """One server's INFO, or of several the one each check should see."""
    if len(infos) <= 1:
        return infos[0] if infos else {}
    worst = dict(infos[0])
    for info in infos[1:]:
        if info.get("maxmemory_policy", "noeviction") != "noeviction":
            worst["maxmemory_policy"] = info["maxmemory_policy"]
        if info.get("aof_enabled") == "0":
            worst["aof_enabled"] = "0"
        version = info.get("redis_version", "")
        if version and _version(version) < _version(
            worst.get("redis_version", version)
        ):
            worst["redis_version"] = version
    worst["run_id"] = ",".join(sorted(i.get("run_id", "") for i in infos))
    return worst


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(".") if part.isdigit())


def _ignore_outcome(task: asyncio.Future[None]) -> None:
    if not task.cancelled():
        task.exception()  # retrieved: a closer closed before it started is fine


class StoreBase:
    """Connections, scripts and key names; the Store's methods are in the
    modules of its roles (enqueue, intake, finish, control, events, inspect)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.keys = Keys(settings.prefix)
        self.memory = is_memory_url(settings.url)
        self._scripts = _scripts.load_scripts(with_flags=not self.memory)
        self._groups_made: set[str] = set()
        self._registered: set[str] = set()  # queues added to the registry
        self._registered_counters: set[str] = set()
        self._partition_counts: dict[str, int] = {}  # queue -> partitions (1: none)
        self._rotation = itertools.count()  # spreads runs over partitions
        self._registered_events: set[str] = set()
        self._carrying: set[str] = set()  # lanes whose start calls carry finishes
        # (queue, consumer) -> (minute, keys, args): finish.py's shared parts
        self._shared_parts: dict[tuple[str, str], tuple[int, list[str], list[Any]]] = {}
        self._clock_offset_ms: float | None = None  # server clock - ours
        # One Link per event loop; the last one used is kept at hand, since
        # nearly every call comes from the same loop as the one before it.
        self._links: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Link] = (
            weakref.WeakKeyDictionary()
        )
        self._last: tuple[asyncio.AbstractEventLoop, Link] | None = None
        self._closers: dict[Link, AsyncGenerator[None]] = {}
        self._lock = threading.Lock()

    # --- connection -------------------------------------------------------

    def link(self) -> Link:
        """The Link of the running event loop (made on first use)."""
        loop = asyncio.get_running_loop()
        last = self._last
        if last is not None and last[0] is loop:
            return last[1]
        with self._lock:
            link = self._links.get(loop)
            if link is None:
                link = self._links[loop] = Link(
                    self.settings.url, self.memory, self._scripts
                )
                self._close_at_loop_end(link)
            self._last = (loop, link)
        return link

    def _close_at_loop_end(self, link: Link) -> None:
        closer = _close_with_loop(self, link)
        self._closers[link] = closer  # the loop tracks async generators weakly
        started = asyncio.ensure_future(anext(closer))  # runs to its yield
        started.add_done_callback(_ignore_outcome)

    @property
    def client(self) -> Any:
        """The redis-py client of the running loop."""
        return self.link().client

    @property
    def commands(self) -> Commands:
        """Where script calls go (commands.py): straight to a connection."""
        return self.link().commands

    @property
    def batcher(self) -> ScriptBatcher:
        return self.link().batcher

    def _batcher_if_open(self) -> ScriptBatcher | None:
        """The running loop's batcher, without opening a connection for it."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return None
        link = self._links.get(loop)
        return None if link is None else link.batcher

    async def close(self) -> None:
        """Close the running loop's connections (and forget those of loops
        that have been closed)."""
        loop = asyncio.get_running_loop()
        with self._lock:
            link = self._links.pop(loop, None)
            if self._last is not None and self._last[0] is loop:
                self._last = None
            for old in [lp for lp in self._links if lp.is_closed()]:
                self._closers.pop(self._links.pop(old), None)
        if link is not None:
            closer = self._closers.pop(link, None)
            if closer is not None:
                await closer.aclose()
            await link.aclose()  # a no-op if the closer did it

    def saw_server_time(self, server_ms: int) -> None:
        """Note the server's clock, read from a script's reply: due times are
        on that clock, not ours (schedulers sleep until them)."""
        self._clock_offset_ms = server_ms - time.time() * 1000

    def server_now_ms(self, margin_ms: int = 0) -> int | None:
        """The server's clock now, as last seen (None: never seen)."""
        if self._clock_offset_ms is None:
            return None
        return int(time.time() * 1000 + self._clock_offset_ms + margin_ms)

    async def ping(self) -> None:
        with mapped_errors("ping"):
            await self.client.ping()

    async def server_info(self) -> dict[str, str]:
        """``INFO server``, ``memory`` and ``persistence`` fields (empty if
        ACL-denied). On Redis Cluster, of every primary, the worst first: the
        oldest version, an eviction policy other than noeviction, AOF off."""
        nodes: dict[str, dict[str, str]] = {}
        cluster = hasattr(self.client, "nodes_manager")
        for section in ("server", "memory", "persistence"):
            try:
                if cluster:
                    raw = await self.client.info(section, target_nodes="primaries")
                    replies = dict(raw)
                else:
                    replies = {"": await self.client.info(section)}
            except ResponseError:
                continue
            except RedisError as exc:
                raise StoreError(f"INFO: {exc}") from exc
            for node, fields in replies.items():
                nodes.setdefault(node, {}).update(
                    {str(k): as_str(v) for k, v in fields.items()}
                )
        return _worst(list(nodes.values()))

    async def _call(self, name: str, keys: list[str], args: list[Any]) -> Any:
        """One script call, group-committed with concurrent ones (batching.py)."""
        # try/except, not mapped_errors(): a context manager costs ~1.5 µs, and
        # this is every enqueue's path.
        try:
            return await self.link().batcher.call(self._scripts[name], keys, args)
        except RedisError as exc:
            raise store_error(name, exc) from exc
