"""Templates and the filters they use; "not available yet" for missing data."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import jinja2
import msgspec

from .. import durations

T = TypeVar("T")


@dataclasses.dataclass(frozen=True, slots=True)
class Unavailable:
    """A piece of a page whose data call does not exist yet."""

    what: str


async def optional(call: Awaitable[T]) -> T | Unavailable:
    """The call's value, or ``Unavailable`` when it raises NotImplementedError."""
    try:
        return await call
    except NotImplementedError as exc:
        return Unavailable(str(exc) or "this")


def when(value: datetime | None) -> str:
    """A time as UTC, to the millisecond."""
    if value is None:
        return "—"
    text = value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    return text[:-3] + " UTC"


_DURATION: dict[durations.Unit, str] = {
    "ms": "{count:.0f} ms",
    "s": "{count:.1f} s",
    "m": "{count:.0f} min {rest:02d} s",
    "h": "{count:.0f} h {rest:02d} min",
    "d": "{count:.0f} d {rest} h",
}


def duration(value: timedelta | float | None) -> str:
    """A short human duration: 850 ms, 12.3 s, 4 min 05 s, 2 h 10 min, 3 d 4 h."""
    if value is None:
        return "—"
    seconds = value.total_seconds() if isinstance(value, timedelta) else value
    return durations.written(seconds, _DURATION)


def ago(value: datetime | None, now: datetime | None = None) -> str:
    if value is None:
        return "—"
    elapsed = (now or datetime.now(UTC)) - value
    if elapsed < timedelta(0):
        return "in " + duration(-elapsed)
    return duration(elapsed) + " ago"


def pretty_json(value: Any) -> str:
    """Indented JSON for a payload, result or event (shown escaped, in <pre>)."""
    try:
        return msgspec.json.format(msgspec.json.encode(value), indent=2).decode()
    except (TypeError, msgspec.EncodeError, UnicodeDecodeError):
        return repr(value)


def percent(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f} %"


def environment() -> jinja2.Environment:
    """The dashboard's templates: every value is escaped unless marked safe."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("stackshift.dashboard", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        when=when, duration=duration, ago=ago, pretty_json=pretty_json, percent=percent
    )
    env.tests["unavailable"] = lambda value: isinstance(value, Unavailable)
    return env
