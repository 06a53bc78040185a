"""The Store's base: its connection, its scripts and its key names."""

from __future__ import annotations

from typing import Any

from redis.exceptions import RedisError, ResponseError

from ..config import Settings
from ..errors import StoreError
from . import scripts as _scripts
from .batching import ScriptBatcher
from .commands import Commands, open_commands
from .connection import is_memory_url, open_client
from .keys import Keys
from .records import as_str, mapped_errors, store_error


class StoreBase:
    """The connection, the scripts and the key names; the Store's methods are
    on its subclasses (starting.py, then Store in __init__.py)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.keys = Keys(settings.prefix)
        self.memory = is_memory_url(settings.url)
        self._client: Any = None
        self._commands: Commands | None = None
        self._batcher: ScriptBatcher | None = None
        self._scripts = _scripts.load_scripts(with_flags=not self.memory)
        self._groups_made: set[str] = set()

    # --- connection -------------------------------------------------------

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = open_client(self.settings.url)
        return self._client

    @property
    def commands(self) -> Commands:
        """Where script calls go (commands.py): straight to a connection."""
        if self._commands is None:
            self._commands = open_commands(self.client, memory=self.memory)
        return self._commands

    @property
    def batcher(self) -> ScriptBatcher:
        if self._batcher is None:
            self._batcher = ScriptBatcher(self.commands, self._scripts)
        return self._batcher

    async def close(self) -> None:
        self._batcher = None
        if self._commands is not None:
            commands, self._commands = self._commands, None
            await commands.aclose()
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    async def ping(self) -> None:
        with mapped_errors("ping"):
            await self.client.ping()

    async def server_info(self) -> dict[str, str]:
        """``INFO server``, ``memory`` and ``persistence`` fields (empty if ACL-denied)."""
        info: dict[str, str] = {}
        for section in ("server", "memory", "persistence"):
            try:
                raw = await self.client.info(section)
            except ResponseError:
                continue
            except RedisError as exc:
                raise StoreError(f"INFO: {exc}") from exc
            info.update({str(k): as_str(v) for k, v in raw.items()})
        return info

    async def _call(self, name: str, keys: list[str], args: list[Any]) -> Any:
        """One script call, group-committed with concurrent ones (batching.py)."""
        # try/except, not mapped_errors(): a context manager costs ~1.5 µs, and
        # this is every enqueue's path.
        try:
            return await self.batcher.call(self._scripts[name], keys, args)
        except RedisError as exc:
            raise store_error(name, exc) from exc
