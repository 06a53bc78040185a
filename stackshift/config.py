"""Settings, and the only place that reads ``STACKSHIFT_*`` environment variables."""

from __future__ import annotations

import math
import numbers
import os
import urllib.parse
from datetime import timedelta
from decimal import Decimal

import msgspec

from .errors import ConfigError

DEFAULT_URL = "redis://localhost:6379/0"

Duration = timedelta | float | int


def to_seconds(value: Duration, *, name: str = "duration") -> float:
    """Normalise a ``timedelta`` or a number of seconds.

    Raises:
        ConfigError: ``value`` is not a timedelta or a real number (text such as
            ``"5s"``, None, a bool), or it is negative, NaN or infinite.
    """
    # bool is an int: True would silently mean one second.
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, numbers.Real | Decimal) and not isinstance(value, bool):
        seconds = float(value)
    else:
        raise ConfigError(
            f"{name} must be a timedelta or a number of seconds, "
            f"got {value!r} ({type(value).__name__})"
        )
    if not math.isfinite(seconds) or seconds < 0:
        raise ConfigError(
            f"{name} must be a finite, non-negative duration, got {value!r}"
        )
    return seconds


def to_ms(value: Duration, *, name: str = "duration") -> int:
    """``to_seconds`` in whole milliseconds (same checks, same errors)."""
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


def redacted_url(url: str) -> str:
    """``url`` for display: a password, in the user part or as a ``password=``
    query parameter, is replaced by ``***``."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "(a URL that cannot be parsed)"
    if "://" not in url:  # not a URL redis-py takes; hide anything before an @
        return f"***@{url.rpartition('@')[2]}" if "@" in url else url
    userinfo, at, host = parts.netloc.rpartition("@")
    user, colon, password = userinfo.partition(":")
    netloc = f"{user}:***@{host}" if at and colon and password else parts.netloc
    query = parts.query
    pairs = urllib.parse.parse_qsl(query, keep_blank_values=True)
    if any(key.lower() == "password" for key, _ in pairs):
        hidden = [(k, "***" if k.lower() == "password" else v) for k, v in pairs]
        query = urllib.parse.urlencode(hidden, safe="*")
    # Rebuilt by hand: urlunsplit drops the // of an empty host (unix:///path).
    return (
        f"{parts.scheme}://{netloc}{parts.path}"
        + (f"?{query}" if query else "")
        + (f"#{parts.fragment}" if parts.fragment else "")
    )
