"""memory://: the same Store and scripts over an in-process fakeredis server.

For demos and users' unit tests: one process only (the data lives in this
process's memory). ``memory://`` and ``memory://NAME`` share one server per name
within the process.
"""

from __future__ import annotations

import threading
from typing import Any

from ..errors import ConfigError

_servers: dict[str, Any] = {}
# Apps used from several threads (each with its own loop and client) must all
# find the same server, not make one each.
_lock = threading.Lock()


def open_memory_client(url: str) -> Any:
    try:
        import fakeredis
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ConfigError(
            "memory:// needs fakeredis with Lua: pip install 'stackshift[memory]'"
        ) from exc
    name = url.removeprefix("memory://").strip("/") or "default"
    with _lock:
        server = _servers.get(name)
        if server is None:
            server = _servers[name] = fakeredis.FakeServer()
    return fakeredis.FakeAsyncRedis(server=server, decode_responses=False)


def reset_memory(name: str = "default") -> None:
    """Empty ``memory://NAME`` (``memory://`` is "default"): clients opened after
    this see a new, empty server (for test isolation)."""
    with _lock:
        _servers.pop(name, None)
