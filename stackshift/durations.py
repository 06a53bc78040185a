"""Durations for people: the cascade of units the CLI and the dashboard both
read a duration in (each writes it in its own style)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

Unit = Literal["ms", "s", "m", "h", "d"]


def split(seconds: float) -> tuple[Unit, float, int]:
    """The largest unit that reads well, its count, and the count of the next
    smaller unit: ``("ms", 850.0, 0)``, ``("s", 12.34, 0)``, ``("m", 4, 5)``
    (4 min 05 s), ``("h", 2, 10)``, ``("d", 3, 4)`` (3 d 4 h). Hours are kept
    up to 48, so that "36 h" reads as such."""
    if seconds < 1:
        return "ms", seconds * 1000, 0
    if seconds < 60:
        return "s", seconds, 0
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return "m", minutes, secs
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return "h", hours, minutes
    days, hours = divmod(hours, 24)
    return "d", days, hours


def written(seconds: float, style: Mapping[Unit, str]) -> str:
    """``seconds`` in the unit ``split`` picks, by that unit's format in
    ``style`` (``str.format`` with ``count`` and ``rest``)."""
    unit, count, rest = split(seconds)
    return style[unit].format(count=count, rest=rest)
