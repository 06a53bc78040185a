"""memory://: the same Store and scripts over an in-process fakeredis server.

For demos and users' unit tests: one process only (the data lives in this
process's memory). ``memory://`` and ``memory://NAME`` share one server per name
within the process.
"""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError

_servers: dict[str, Any] = {}


def open_memory_client(url: str) -> Any:
    try:
        import fakeredis
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ConfigError(
            "memory:// needs fakeredis with Lua: pip install 'stackshift[memory]'"
        ) from exc
    name = url.removeprefix("memory://").strip("/") or "default"
    server = _servers.get(name)
    if server is None:
        server = _servers[name] = fakeredis.FakeServer()
    return fakeredis.FakeAsyncRedis(server=server, decode_responses=False)


def reset_memory(name: str = "default") -> None:
    """Empty ``memory://NAME`` (``memory://`` is "default"): clients opened after
    this see a new, empty server (for test isolation)."""
    _servers.pop(name, None)
