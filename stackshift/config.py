"""Settings, and the only place that reads ``STACKSHIFT_*`` environment variables."""

from __future__ import annotations

import os
from datetime import timedelta

import msgspec

from .errors import ConfigError

DEFAULT_URL = "redis://localhost:6379/0"

Duration = timedelta | float | int


def to_seconds(value: Duration, *, name: str = "duration") -> float:
    """Normalise a ``timedelta`` or a number of seconds; negative values are refused."""
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if seconds < 0 or seconds != seconds:  # NaN check
        raise ConfigError(f"{name} must be a non-negative duration, got {value!r}")
    return seconds


def to_ms(value: Duration, *, name: str = "duration") -> int:
    return int(to_seconds(value, name=name) * 1000)


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """Stable settings of one ``Stackshift`` app (durations in seconds)."""

    url: str
    prefix: str = "stackshift:"
    idempotency_ttl: float = 24 * 3600.0
    result_ttl: float = 7 * 24 * 3600.0  # completed run records and their steps
    dead_ttl: float = 30 * 24 * 3600.0  # dead-lettered runs stay inspectable this long
    max_payload_bytes: int = 512 * 1024
    max_deliveries: int = 5  # an entry delivered more often than this is poison
    default_retries: int = 3
    default_timeout: float | None = 30 * 60.0
    # A wait matches events of its name sent since its run was made, this far
    # back at most (docs/events-and-time.md: why there is no race).
    event_lookback: float = 10 * 60.0
    event_dedupe_ttl: float = 24 * 3600.0  # an event id sent again is a no-op


def url_from_env(url: str | None) -> str:
    """The URL given, else ``$STACKSHIFT_REDIS_URL``, else the local default."""
    return url or os.environ.get("STACKSHIFT_REDIS_URL") or DEFAULT_URL


def prefix_from_env(prefix: str | None) -> str:
    return prefix or os.environ.get("STACKSHIFT_PREFIX") or "stackshift:"
