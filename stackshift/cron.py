"""Cron schedules: parse once, then tick arithmetic in epoch milliseconds.

An expression has five fields (``minute hour day-of-month month day-of-week``) or
six, whose FIRST field is seconds: ``"*/5 * * * * *"`` is every 5 seconds. Ticks
fall on whole seconds of the wall clock in the schedule's IANA time zone.

Parsing and field matching belong to cronsim (ranges, steps, lists, names such as
``MON`` or ``JAN``, ``L``, ``LW``, ``MON#2``, ``5L``). It is only ever asked about
naive wall-clock times; this module maps wall time to instants (time zones,
daylight saving), counts ticks without visiting them, and applies the catch-up
rule.

Daylight saving (two kinds of schedule, as Debian's cron has):

- *Wall-clock* schedules are pinned to a time of day: neither their minute nor
  their hour field starts with ``*`` (``"30 2 * * *"``, ``"0 0 9-17 * * 1-5"``).
  When clocks go forward, times inside the skipped interval run once, at its
  end (02:30 -> 03:00 on that day); when clocks go back, the repeated interval
  runs once, in its first pass. Each day keeps its ticks: none lost, none doubled.
- *Elapsed-time* schedules (``"*/5 * * * * *"``, ``"0 * * * *"``) follow real
  time: a skipped interval has no ticks and a repeated one has its ticks twice,
  so the spacing between ticks stays regular.

Both kinds give five and six fields the same meaning: ``"0 30 2 * * *"`` is
``"30 2 * * *"``.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import pairwise
from typing import NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from .errors import ConfigError
from .store.keys import check_name

MAX_EXPRESSION = 200
# Accepted times run from 1970 to the year 3000: far inside datetime's range,
# even with cronsim searching 50 years past them.
MAX_MS = 32_503_680_000_000

_NAIVE_EPOCH = datetime(1970, 1, 1)
_DAY = 86_400
# UTC offsets are sampled this often when looking for changes; this assumes no
# zone changes its offset twice within 6 hours (none has since 1970).
_PROBE = 6 * 3600
# A fixed start for period_hint_ms, so that a schedule's hint never changes.
_REFERENCE = 1_735_689_600  # 2025-01-01T00:00:00Z
_FIELDS_HELP = (
    "use five fields 'minute hour day-of-month month day-of-week', "
    "or six with seconds first"
)

# Below, an *instant* is seconds since the epoch and a *wall* time is seconds
# since 1970-01-01 00:00 on the zone's clock (the instant plus the UTC offset).


def check_cron_name(name: object) -> str:
    """Return ``name`` if it can name a cron schedule, else raise InvalidNameError."""
    return check_name(name, "cron")


class _Level(NamedTuple):
    """One granularity of the wall clock, for counting ticks without visiting them."""

    unit: int  # seconds in one day, hour, minute or second
    ticks: int  # ticks in one whole matching unit
    expression: str  # ticks once, at the start of each matching unit


@dataclass(frozen=True)
class CronSchedule:
    """A validated cron expression in a time zone; all times are epoch ms.

    Build one with :meth:`parse`. Equal expressions (up to spacing) in the same
    zone are equal and hash alike.
    """

    expression: str
    tz: str = "UTC"
    _zone: ZoneInfo = field(init=False, repr=False, compare=False)
    _six: str = field(init=False, repr=False, compare=False)
    _wall_clock: bool = field(init=False, repr=False, compare=False)
    _levels: tuple[_Level, ...] = field(init=False, repr=False, compare=False)

    @classmethod
    def parse(cls, expression: str, tz: str = "UTC") -> CronSchedule:
        """Validate a cron expression and an IANA time zone name.

        Args:
            expression: five fields, or six with seconds first.
            tz: an IANA zone such as ``"Europe/Berlin"``; ``"UTC"`` by default.

        Raises:
            ConfigError: the expression or the zone cannot be used.
        """
        return cls(expression, tz)

    def __post_init__(self) -> None:
        fields = _split(self.expression)
        zone = _load_zone(self.tz)
        six = fields if len(fields) == 6 else ["0", *fields]
        _check_fields(" ".join(six), self.expression)
        second, minute, hour, dom, month, dow = six
        days = f"{dom} {month} {dow}"
        in_minute = _count_ticks(f"{second} * * * * *", 0, 60)
        in_hour = _count_ticks(f"0 {minute} * * * *", 0, 3600) * in_minute
        in_day = _count_ticks(f"0 0 {hour} * * *", 0, _DAY) * in_hour
        levels = (
            _Level(_DAY, in_day, f"0 0 0 {days}"),
            _Level(3600, in_hour, f"0 0 {hour} {days}"),
            _Level(60, in_minute, f"0 {minute} {hour} {days}"),
            _Level(1, 1, " ".join(six)),
        )
        wall_clock = not minute.startswith("*") and not hour.startswith("*")
        put = object.__setattr__  # frozen: the derived fields are set once, here
        put(self, "expression", " ".join(fields))
        put(self, "_zone", zone)
        put(self, "_six", " ".join(six))
        put(self, "_wall_clock", wall_clock)
        put(self, "_levels", levels)
        if self._next(_REFERENCE) is None:
            raise ConfigError(f"cron expression {self.expression!r} never matches")

    # -- the API ---------------------------------------------------------------

    def next_after(self, after_ms: int) -> int:
        """The first tick strictly after ``after_ms``.

        Raises:
            ConfigError: the schedule has no tick in the 50 years after it.
        """
        tick = self._next(_check_ms(after_ms, "after_ms") // 1000)
        if tick is None:
            raise ConfigError(
                f"cron expression {self.expression!r} has no tick in the "
                f"50 years after {after_ms} ms"
            )
        return tick * 1000

    def latest_at_or_before(self, at_ms: int) -> int | None:
        """The most recent tick at or before ``at_ms``; None if none in 50 years."""
        tick = self._latest(_check_ms(at_ms, "at_ms") // 1000)
        return None if tick is None else tick * 1000

    def catch_up(self, last_tick_ms: int | None, now_ms: int) -> tuple[int | None, int]:
        """The tick to run now, and how many earlier due ticks it replaces.

        Args:
            last_tick_ms: the tick that ran last; None if the schedule never ran
                (nothing is backfilled then).
            now_ms: the current time.

        Returns:
            ``(tick, missed)``: ``tick`` is the latest tick in
            ``(last_tick_ms, now_ms]`` and ``missed`` counts the other ticks of
            that interval, which are skipped; ``(None, 0)`` when nothing is due.
        """
        now = _check_ms(now_ms, "now_ms")
        if last_tick_ms is None:
            return None, 0
        last = _check_ms(last_tick_ms, "last_tick_ms")
        latest = self.latest_at_or_before(now)
        if latest is None or latest <= last:
            return None, 0
        return latest, self.count_between(last, latest) - 1

    def count_between(self, after_ms: int, until_ms: int) -> int:
        """How many ticks fall in ``(after_ms, until_ms]``, without visiting them."""
        after = _check_ms(after_ms, "after_ms") // 1000
        until = _check_ms(until_ms, "until_ms") // 1000
        return self._count(after, until) if until > after else 0

    @property
    def period_hint_ms(self) -> int:
        """A typical interval between ticks, for display only: the median of 32
        on the wall clock (so daylight saving does not skew it)."""
        walls = [_REFERENCE]
        for _ in range(33):
            wall = _matching_after(self._six, walls[-1])
            if wall is None:  # the rest is over 50 years away
                break
            walls.append(wall)
        gaps = [b - a for a, b in pairwise(walls)][1:]  # not from the reference
        return int(statistics.median_low(gaps or [50 * 365 * _DAY])) * 1000

    # -- finding ticks ---------------------------------------------------------

    def _next(self, after: int) -> int | None:
        if self._wall_clock:
            wall = _matching_after(self._six, self._wall_reached(after))
            return None if wall is None else self._instant(wall)
        # Elapsed time: within one UTC offset, wall and instant are a shift apart.
        offset = self._offset(after + 1)
        while True:
            wall = _matching_after(self._six, after + offset)
            if wall is None:
                return None
            change = next(self._changes(after + 1, wall - offset), None)
            if change is None:
                return wall - offset
            after, offset = change[0] - 1, change[2]

    def _latest(self, at: int) -> int | None:
        if self._wall_clock:
            wall = _matching_at_or_before(self._six, self._wall_reached(at))
            return None if wall is None else self._instant(wall)
        offset = self._offset(at)
        while True:
            wall = _matching_at_or_before(self._six, at + offset)
            if wall is None:
                return None
            change = self._last_change(wall - offset, at)
            if change is None:
                return wall - offset
            at = change - 1
            offset = self._offset(at)

    def _instant(self, wall: int) -> int:
        """When a wall-clock schedule's wall time runs: its first pass if repeated,
        the end of the gap if skipped."""
        local = _naive(wall).replace(tzinfo=self._zone)
        first = int(local.timestamp())  # fold=0: the first pass
        if _wall_of(datetime.fromtimestamp(first, self._zone)) == wall:
            return first
        # Skipped: the gap ends at the offset change between its two readings.
        return self._change_in(int(local.replace(fold=1).timestamp()), first)

    def _wall_reached(self, at: int) -> int:
        """The latest wall time that a wall-clock schedule runs at or before ``at``."""
        local = datetime.fromtimestamp(at, self._zone)
        if not local.fold:
            return _wall_of(local)
        # In the second pass of a repeated interval: the whole interval has run.
        back = _seconds(local.replace(fold=0).utcoffset()) - self._offset(at)
        change = self._change_in(at - back, at)
        return change + self._offset(change - 1) - 1

    # -- counting ticks --------------------------------------------------------

    def _count(self, after: int, until: int) -> int:
        """Ticks in ``(after, until]``: stretches of one UTC offset are counted on
        the wall clock, then each offset change is accounted for."""
        changes = list(self._changes(after - _DAY, until))  # a repeat began before?
        cuts = [at for at, _, _ in changes if after < at <= until]
        total = 0
        for lo, hi in pairwise([after, *(cut - 1 for cut in cuts), until]):
            offset = self._offset(hi)
            total += self._count_wall(lo + offset + 1, hi + offset + 1)
        if self._wall_clock:
            total += sum(self._correction(change, after, until) for change in changes)
        return total

    def _correction(self, change: tuple[int, int, int], after: int, until: int) -> int:
        """What the wall-clock rule changes, at one offset change, in a count of
        elapsed-time ticks."""
        at, old, new = change
        if new < old:  # clocks went back: the repeat's second pass has no ticks
            lo, hi = max(at, after + 1), min(at + old - new, until + 1)
            return -self._count_wall(lo + new, hi + new) if lo < hi else 0
        if not after < at <= until:
            return 0
        # Clocks went forward: the skipped times make one tick at the gap's end.
        end = at + new
        skipped = self._count_wall(end - (new - old), end)
        return 1 if skipped and not self._count_wall(end, end + 1) else 0

    def _count_wall(self, start: int, end: int, level: int = 0) -> int:
        """Matching wall times in ``[start, end)``: whole days, hours and minutes
        are counted by their first second, and only the edges are walked."""
        if end <= start:
            return 0
        unit, ticks, expression = self._levels[level]
        if unit == 1:
            return _count_ticks(expression, start, end)
        first, last = -(-start // unit) * unit, end // unit * unit
        if first > last:  # inside one unit
            return self._count_wall(start, end, level + 1)
        return (
            self._count_wall(start, first, level + 1)
            + ticks * _count_ticks(expression, first, last)
            + self._count_wall(last, end, level + 1)
        )

    # -- the zone's UTC offset -------------------------------------------------

    def _offset(self, instant: int) -> int:
        return _seconds(datetime.fromtimestamp(instant, self._zone).utcoffset())

    def _change_in(self, lo: int, hi: int) -> int:
        """The instant in ``(lo, hi]`` where the offset changes (they differ)."""
        target = self._offset(hi)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if self._offset(mid) == target:
                hi = mid
            else:
                lo = mid
        return hi

    def _changes(self, lo: int, hi: int) -> Iterator[tuple[int, int, int]]:
        """``(instant, old offset, new offset)`` of each change in ``(lo, hi]``."""
        offset = self._offset(lo)
        while lo < hi:
            probe = min(lo + _PROBE, hi)
            new = self._offset(probe)
            if new != offset:
                probe = self._change_in(lo, probe)
                yield probe, offset, new
            lo, offset = probe, new

    def _last_change(self, lo: int, hi: int) -> int | None:
        """The instant of the last offset change in ``(lo, hi]``, if any."""
        offset = self._offset(hi)
        while hi > lo:
            probe = max(hi - _PROBE, lo)
            if self._offset(probe) != offset:
                return self._change_in(probe, hi)
            hi = probe
        return None


def _split(expression: object) -> list[str]:
    if not isinstance(expression, str):
        raise ConfigError(f"a cron expression must be a string, got {expression!r}")
    if len(expression) > MAX_EXPRESSION:
        raise ConfigError(
            f"cron expression is {len(expression)} characters; the limit is "
            f"{MAX_EXPRESSION}"
        )
    fields = expression.split()
    if len(fields) not in (5, 6):
        raise ConfigError(
            f"invalid cron expression {expression!r}: {len(fields)} fields; "
            f"{_FIELDS_HELP}"
        )
    return fields


def _check_fields(six: str, expression: str) -> None:
    try:
        CronSim(six, _NAIVE_EPOCH)
    except CronSimError as exc:  # its messages name the field: "Bad day-of-week"
        raise ConfigError(
            f"invalid cron expression {expression!r}: {str(exc).lower()} field; "
            f"{_FIELDS_HELP}"
        ) from exc


def _load_zone(tz: object) -> ZoneInfo:
    if not isinstance(tz, str) or not tz or len(tz) > 64 or "\0" in tz:
        raise ConfigError(f"invalid time zone {tz!r}: use an IANA name like 'UTC'")
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        raise ConfigError(
            f"unknown time zone {tz!r}: use an IANA name such as 'Europe/Berlin'"
        ) from exc


def _check_ms(value: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be epoch milliseconds (int), got {value!r}")
    if not 0 <= value < MAX_MS:
        raise ValueError(f"{what}={value} is outside the years 1970 to 2999")
    return value


def _matching_after(six: str, wall: int) -> int | None:
    """The first matching wall time after ``wall``; None if none in 50 years."""
    tick = next(CronSim(six, _naive(wall)), None)
    return None if tick is None else _wall_of(tick)


def _matching_at_or_before(six: str, wall: int) -> int | None:
    """The last matching wall time at or before ``wall``; None if none in 50 years."""
    tick = next(CronSim(six, _naive(wall + 1), reverse=True), None)
    return None if tick is None else _wall_of(tick)


def _count_ticks(six: str, start: int, end: int) -> int:
    """Matching wall times in ``[start, end)``, visited one by one."""
    stop, count = _naive(end), 0
    for tick in CronSim(six, _naive(start - 1)):
        if tick >= stop:
            break
        count += 1
    return count


def _naive(wall: int) -> datetime:
    return _NAIVE_EPOCH + timedelta(seconds=wall)


def _wall_of(moment: datetime) -> int:
    return (moment.replace(tzinfo=None) - _NAIVE_EPOCH) // timedelta(seconds=1)


def _seconds(offset: timedelta | None) -> int:
    assert offset is not None  # a ZoneInfo always knows an aware time's offset
    return offset // timedelta(seconds=1)
