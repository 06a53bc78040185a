"""Cron schedules: parsing, ticks, daylight saving and catch-up, in epoch ms."""

from __future__ import annotations

import bisect
import dataclasses
import random
import time
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from cronsim import CronSim

from stackshift.cron import CronSchedule, check_cron_name
from stackshift.errors import ConfigError, InvalidNameError

BERLIN = "Europe/Berlin"
NEW_YORK = "America/New_York"
WEEK_S = 7 * 86_400


def ms(
    year: int,
    month: int,
    day: int,
    hour: int = 0,
    minute: int = 0,
    second: int = 0,
    *,
    tz: str = "UTC",
) -> int:
    """Epoch ms of a wall-clock time in ``tz`` (the first pass, if repeated)."""
    moment = datetime(year, month, day, hour, minute, second, tzinfo=ZoneInfo(tz))
    return int(moment.timestamp() * 1000)


def local(epoch_ms: int, tz: str) -> str:
    return datetime.fromtimestamp(epoch_ms / 1000, ZoneInfo(tz)).isoformat()


def ticks(schedule: CronSchedule, after_ms: int, count: int) -> list[int]:
    out = [schedule.next_after(after_ms)]
    while len(out) < count:
        out.append(schedule.next_after(out[-1]))
    return out


def local_ticks(expression: str, tz: str, after: int, count: int) -> list[str]:
    return [
        local(t, tz) for t in ticks(CronSchedule.parse(expression, tz), after, count)
    ]


# -- fields and their meaning ------------------------------------------------------


def test_five_fields_tick_on_the_minute() -> None:
    assert local_ticks("0 3 * * *", "UTC", ms(2024, 5, 1, 12), 2) == [
        "2024-05-02T03:00:00+00:00",
        "2024-05-03T03:00:00+00:00",
    ]


def test_six_fields_put_seconds_first() -> None:
    every_5s = CronSchedule.parse("*/5 * * * * *")
    assert ticks(every_5s, ms(2024, 5, 1, 12), 3) == [
        ms(2024, 5, 1, 12, 0, 5),
        ms(2024, 5, 1, 12, 0, 10),
        ms(2024, 5, 1, 12, 0, 15),
    ]
    # 30 is the second, not the minute (some libraries read seconds last)
    assert local_ticks("30 * * * * *", "UTC", ms(2024, 5, 1, 12), 2) == [
        "2024-05-01T12:00:30+00:00",
        "2024-05-01T12:01:30+00:00",
    ]


def test_six_fields_with_zero_seconds_equal_five_fields() -> None:
    start = ms(2024, 3, 1)
    for tz in ("UTC", BERLIN, NEW_YORK):
        assert ticks(CronSchedule.parse("0 30 2 * * *", tz), start, 400) == ticks(
            CronSchedule.parse("30 2 * * *", tz), start, 400
        )


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("15,45 * * * *", ["12:15:00", "12:45:00", "13:15:00"]),
        ("*/20 * * * *", ["12:20:00", "12:40:00", "13:00:00"]),
        ("0 9-17/4 * * *", ["13:00:00", "17:00:00", "09:00:00"]),
        ("10-12 0 * * * *", ["13:00:10", "13:00:11", "13:00:12"]),
        ("0 0,30 12-13 * * *", ["12:30:00", "13:00:00", "13:30:00"]),
    ],
)
def test_ranges_steps_and_lists(expression: str, expected: list[str]) -> None:
    got = local_ticks(expression, "UTC", ms(2024, 5, 1, 12, 5), 3)
    assert [t[11:19] for t in got] == expected


def test_named_days_and_months_in_any_case() -> None:
    # 2024-05-01 is a Wednesday
    assert local_ticks("0 9 * * mon-fri", "UTC", ms(2024, 5, 3, 10), 2) == [
        "2024-05-06T09:00:00+00:00",
        "2024-05-07T09:00:00+00:00",
    ]
    assert local_ticks("0 0 1 JAN,JUL *", "UTC", ms(2024, 5, 1), 2) == [
        "2024-07-01T00:00:00+00:00",
        "2025-01-01T00:00:00+00:00",
    ]
    assert CronSchedule.parse("0 9 * * MON-FRI").next_after(ms(2024, 5, 3, 10)) == (
        CronSchedule.parse("0 9 * * 1-5").next_after(ms(2024, 5, 3, 10))
    )


def test_day_of_month_or_day_of_week_when_both_are_restricted() -> None:
    """Vixie cron: both restricted means either one; a '*' in one means both."""
    either = local_ticks("0 0 13 * FRI", "UTC", ms(2024, 9, 1), 3)
    assert either == [
        "2024-09-06T00:00:00+00:00",  # a Friday
        "2024-09-13T00:00:00+00:00",  # the 13th (and a Friday)
        "2024-09-20T00:00:00+00:00",
    ]
    both = local_ticks("0 0 13 * */7", "UTC", ms(2024, 9, 1), 1)
    assert both == ["2024-10-13T00:00:00+00:00"]  # */7 is days 0 and 7: Sundays


def test_leap_days() -> None:
    feb_29 = CronSchedule.parse("0 0 29 2 *")
    assert (
        local(feb_29.next_after(ms(2024, 3, 1)), "UTC") == "2028-02-29T00:00:00+00:00"
    )
    assert feb_29.latest_at_or_before(ms(2027, 12, 31)) == ms(2024, 2, 29)
    last_of_feb = CronSchedule.parse("0 0 L 2 *")
    assert [t[:10] for t in local_ticks("0 0 L 2 *", "UTC", ms(2023, 1, 1), 2)] == [
        "2023-02-28",
        "2024-02-29",
    ]
    assert last_of_feb.count_between(ms(2023, 1, 1), ms(2031, 1, 1)) == 8


def test_ticks_land_on_whole_seconds_and_respect_milliseconds() -> None:
    schedule = CronSchedule.parse("*/5 * * * * *")
    tick = ms(2024, 5, 1, 12, 0, 5)
    assert schedule.next_after(tick - 1) == tick
    assert schedule.next_after(tick) == tick + 5000
    assert schedule.next_after(tick - 4999) == tick
    assert schedule.latest_at_or_before(tick) == tick
    assert schedule.latest_at_or_before(tick + 4999) == tick
    assert schedule.latest_at_or_before(tick - 1) == tick - 5000


# -- daylight saving -----------------------------------------------------------


def test_berlin_spring_forward_runs_a_0230_schedule_once_at_0300() -> None:
    """02:30 does not exist on 2024-03-31: the day's tick is at 03:00 CEST."""
    for expression in ("30 2 * * *", "0 30 2 * * *"):
        schedule = CronSchedule.parse(expression, BERLIN)
        got = ticks(schedule, ms(2024, 3, 30, 12, tz=BERLIN), 3)
        assert [local(t, BERLIN) for t in got] == [
            "2024-03-31T03:00:00+02:00",
            "2024-04-01T02:30:00+02:00",
            "2024-04-02T02:30:00+02:00",
        ]
        # one tick that day: not zero, not two
        day = (ms(2024, 3, 31, tz=BERLIN) - 1, ms(2024, 4, 1, tz=BERLIN) - 1)
        assert schedule.count_between(*day) == 1


def test_berlin_fall_back_runs_a_0230_schedule_once_in_the_first_pass() -> None:
    """02:30 happens twice on 2024-10-27: the tick is the first, at 02:30 CEST."""
    schedule = CronSchedule.parse("30 2 * * *", BERLIN)
    got = ticks(schedule, ms(2024, 10, 26, 12, tz=BERLIN), 2)
    assert [local(t, BERLIN) for t in got] == [
        "2024-10-27T02:30:00+02:00",
        "2024-10-28T02:30:00+01:00",
    ]
    day = (ms(2024, 10, 27, tz=BERLIN) - 1, ms(2024, 10, 28, tz=BERLIN) - 1)
    assert schedule.count_between(*day) == 1
    # the second 02:30 (CET) is not a tick: the latest at or before it is the first
    second_pass = ms(2024, 10, 27, 1, 30)  # 02:30 CET
    assert schedule.latest_at_or_before(second_pass) == got[0]
    assert schedule.next_after(second_pass) == got[1]


def test_new_york_skipped_and_repeated_times_run_once() -> None:
    assert local_ticks("30 2 * * *", NEW_YORK, ms(2024, 3, 9, 12, tz=NEW_YORK), 2) == [
        "2024-03-10T03:00:00-04:00",
        "2024-03-11T02:30:00-04:00",
    ]
    assert local_ticks("30 1 * * *", NEW_YORK, ms(2024, 11, 2, 12, tz=NEW_YORK), 2) == [
        "2024-11-03T01:30:00-04:00",
        "2024-11-04T01:30:00-05:00",
    ]


def test_a_skipped_time_and_the_gap_end_make_one_tick() -> None:
    both = local_ticks("0 2,3 * * *", BERLIN, ms(2024, 3, 30, 12, tz=BERLIN), 3)
    assert both == [
        "2024-03-31T03:00:00+02:00",
        "2024-04-01T02:00:00+02:00",
        "2024-04-01T03:00:00+02:00",
    ]


def test_elapsed_time_schedules_keep_their_spacing_across_changes() -> None:
    hourly = CronSchedule.parse("0 * * * *", BERLIN)
    spring = ticks(hourly, ms(2024, 3, 31, 0, 30, tz=BERLIN), 3)
    assert [local(t, BERLIN)[11:] for t in spring] == [
        "01:00:00+01:00",
        "03:00:00+02:00",  # 02:00 does not exist, and 03:00 is one hour later
        "04:00:00+02:00",
    ]
    fall = ticks(hourly, ms(2024, 10, 27, 1, 30, tz=BERLIN), 3)
    assert [local(t, BERLIN)[11:] for t in fall] == [
        "02:00:00+02:00",
        "02:00:00+01:00",  # the repeated hour runs again
        "03:00:00+01:00",
    ]
    assert {b - a for a, b in zip(fall, fall[1:], strict=False)} == {3_600_000}
    every_5s = CronSchedule.parse("*/5 * * * * *", BERLIN)
    jump = ms(2024, 3, 31, 1)  # 02:00 CET becomes 03:00 CEST
    around = ticks(every_5s, jump - 10_000, 4)
    assert [b - a for a, b in zip(around, around[1:], strict=False)] == [5000] * 3


def wall_matches(expression: str, lo: datetime, hi: datetime) -> set[datetime]:
    """Every naive wall time in [lo, hi] the expression matches (cronsim parses)."""
    six = expression if len(expression.split()) == 6 else "0 " + expression
    found: set[datetime] = set()
    for tick in CronSim(six, lo - timedelta(seconds=1)):
        if tick > hi:
            return found
        found.add(tick)
    return found


def brute_ticks(
    expression: str, tz: str, lo: int, hi: int, wall_clock: bool
) -> list[int]:
    """Ticks in (lo, hi] seconds, by looking at every second's wall clock."""
    zone = ZoneInfo(tz)
    margin = timedelta(hours=4)
    first = datetime.fromtimestamp(lo, zone).replace(tzinfo=None)
    last = datetime.fromtimestamp(hi, zone).replace(tzinfo=None)
    walls = wall_matches(expression, first - margin, last + margin)
    found: list[int] = []
    previous = first
    for second in range(lo + 1, hi + 1):
        moment = datetime.fromtimestamp(second, zone)
        wall = moment.replace(tzinfo=None)
        if not wall_clock:
            hit = wall in walls
        elif wall - previous > timedelta(seconds=1):  # the end of a skipped interval
            hit = any(previous < w <= wall for w in walls)
        else:
            hit = wall in walls and moment.fold == 0  # a repeat runs in its first pass
        if hit:
            found.append(second)
        previous = wall
    return found


CHANGES = [
    (BERLIN, datetime(2024, 3, 31, 1, tzinfo=UTC)),
    (BERLIN, datetime(2024, 10, 27, 1, tzinfo=UTC)),
    (NEW_YORK, datetime(2024, 11, 3, 6, tzinfo=UTC)),
    ("Australia/Lord_Howe", datetime(2024, 4, 6, 15, tzinfo=UTC)),  # 30 minutes
    ("America/Sao_Paulo", datetime(2018, 11, 4, 3, tzinfo=UTC)),  # midnight skipped
]
EXPRESSIONS = [
    "30 2 * * *",
    "0 2,3 * * *",
    "*/15 30 1,2 * * *",
    "0 0 * * *",
    "*/10 2 * * *",
    "*/20 * * * * *",
    "0 * * * *",
]


@pytest.mark.parametrize(("tz", "change"), CHANGES, ids=lambda v: str(v))
def test_ticks_counts_and_lookups_agree_with_a_second_by_second_scan(
    tz: str, change: datetime
) -> None:
    lo, hi = int(change.timestamp()) - 9000, int(change.timestamp()) + 9000
    pick = random.Random(tz + str(change))
    for expression in EXPRESSIONS:
        schedule = CronSchedule.parse(expression, tz)
        wall_clock = not any(f.startswith("*") for f in expression.split()[-5:-3])
        expected = brute_ticks(expression, tz, lo, hi, wall_clock)
        chained, tick = [], lo * 1000
        while (tick := schedule.next_after(tick)) <= hi * 1000:
            chained.append(tick // 1000)
        assert chained == expected, expression
        for _ in range(40):
            a = pick.randrange(lo, hi)
            b = pick.randrange(a, hi + 1)
            inside = bisect.bisect_right(expected, b) - bisect.bisect_right(expected, a)
            a_ms, b_ms = (
                a * 1000 + pick.randrange(1000),
                b * 1000 + pick.randrange(1000),
            )
            assert schedule.count_between(a_ms, b_ms) == inside, (expression, a, b)
            before = bisect.bisect_right(expected, b)
            if before:
                assert schedule.latest_at_or_before(b_ms) == expected[before - 1] * 1000


@pytest.mark.parametrize(
    "expression", ["30 2 * * *", "0 * * * *", "*/7 * * * * *", "0 0-23 * * *"]
)
@pytest.mark.parametrize("tz", ["UTC", BERLIN, NEW_YORK])
def test_ticks_strictly_increase_and_are_found_again(expression: str, tz: str) -> None:
    schedule = CronSchedule.parse(expression, tz)
    for start in (
        ms(2024, 3, 9, tz=tz),
        ms(2024, 10, 26, tz=tz),
        ms(2024, 11, 2, tz=tz),
    ):
        found = ticks(schedule, start, 80 if expression.startswith("*/7") else 60)
        assert all(a < b for a, b in zip(found, found[1:], strict=False))
        for tick in found:
            assert schedule.latest_at_or_before(tick) == tick
            assert schedule.next_after(tick - 1) == tick


# -- catch-up ------------------------------------------------------------------


def test_a_schedule_that_never_ran_is_not_backfilled() -> None:
    schedule = CronSchedule.parse("* * * * * *")
    assert schedule.catch_up(None, ms(2024, 5, 1, 12)) == (None, 0)


def test_nothing_is_due_before_the_next_tick() -> None:
    schedule = CronSchedule.parse("*/5 * * * *")
    last = ms(2024, 5, 1, 12, 5)
    assert schedule.catch_up(last, last) == (None, 0)
    assert schedule.catch_up(last, ms(2024, 5, 1, 12, 10) - 1) == (None, 0)
    assert schedule.catch_up(last, last - 60_000) == (None, 0)  # clock behind


def test_one_due_tick_runs_with_nothing_missed() -> None:
    schedule = CronSchedule.parse("*/5 * * * *")
    last = ms(2024, 5, 1, 12, 5)
    assert schedule.catch_up(last, ms(2024, 5, 1, 12, 10)) == (
        ms(2024, 5, 1, 12, 10),
        0,
    )
    assert schedule.catch_up(last, ms(2024, 5, 1, 12, 14)) == (
        ms(2024, 5, 1, 12, 10),
        0,
    )


def test_three_due_ticks_run_the_latest_and_count_two_missed() -> None:
    schedule = CronSchedule.parse("*/5 * * * *")
    last = ms(2024, 5, 1, 12, 5)
    now = ms(2024, 5, 1, 12, 21, 30)
    assert schedule.catch_up(last, now) == (ms(2024, 5, 1, 12, 20), 2)


def test_catch_up_across_daylight_saving_counts_each_day_once() -> None:
    schedule = CronSchedule.parse("30 2 * * *", BERLIN)
    spring = schedule.catch_up(
        ms(2024, 3, 30, 2, 30, tz=BERLIN), ms(2024, 4, 1, 3, tz=BERLIN)
    )
    assert spring == (ms(2024, 4, 1, 2, 30, tz=BERLIN), 1)
    fall = schedule.catch_up(
        ms(2024, 10, 26, 2, 30, tz=BERLIN), ms(2024, 10, 28, 3, tz=BERLIN)
    )
    assert fall == (ms(2024, 10, 28, 2, 30, tz=BERLIN), 1)


@pytest.mark.parametrize("tz", ["UTC", BERLIN])
def test_a_week_down_with_a_per_second_schedule_is_counted_without_iterating(
    tz: str,
) -> None:
    schedule = CronSchedule.parse("* * * * * *", tz)
    last = ms(2024, 3, 27, 12, tz=tz)  # the week holds Berlin's spring change
    now = last + WEEK_S * 1000 + 250
    started = time.perf_counter()
    tick, missed = schedule.catch_up(last, now)
    elapsed = time.perf_counter() - started
    assert tick == last + WEEK_S * 1000
    # every elapsed second is a tick, in Berlin too (its clock skips an hour)
    assert missed == WEEK_S - 1
    # measured at about 1 ms; one by one, cronsim takes about a second a week
    assert elapsed < 0.25


def test_a_year_down_is_counted_quickly_too() -> None:
    schedule = CronSchedule.parse("*/5 * * * * *", NEW_YORK)
    started = time.perf_counter()
    tick, missed = schedule.catch_up(
        ms(2024, 1, 1, tz=NEW_YORK), ms(2025, 1, 1, tz=NEW_YORK)
    )
    assert time.perf_counter() - started < 0.5
    assert tick == ms(2025, 1, 1, tz=NEW_YORK)
    assert missed == 366 * 86_400 // 5 - 1  # the skipped and the repeated hour cancel


# -- validation ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("", "0 fields"),
        ("* * * *", "4 fields"),
        ("* * * * * * *", "7 fields"),
        ("60 * * * *", "bad minute"),
        ("* 24 * * *", "bad hour"),
        ("0 0 0 * * 8", "bad day-of-week"),
        ("61 * * * * *", "bad second"),
        ("*/0 * * * *", "bad minute"),
        ("5-1 * * * *", "bad minute"),
        ("0 0 31 2 *", "bad day-of-month"),
        ("0 0 * 13 *", "bad month"),
        ("0 0 * * FUNDAY", "bad day-of-week"),
        ("every day", "2 fields"),
        ("0 0 * * * " + "1," * 100 + "2", "limit is 200"),
    ],
)
def test_bad_expressions_raise_config_error(expression: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        CronSchedule.parse(expression)


@pytest.mark.parametrize("expression", [None, 5, b"* * * * *"])
def test_an_expression_must_be_a_string(expression: object) -> None:
    with pytest.raises(ConfigError, match="must be a string"):
        CronSchedule.parse(expression)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "tz",
    ["Mars/Olympus", "", "../../etc/passwd", "/etc/localtime", "Europe/Berlin\0", 3],
)
def test_bad_time_zones_raise_config_error(tz: object) -> None:
    with pytest.raises(ConfigError, match="time zone"):
        CronSchedule.parse("0 3 * * *", tz)  # type: ignore[arg-type]


def test_bad_times_are_refused() -> None:
    schedule = CronSchedule.parse("0 3 * * *")
    with pytest.raises(TypeError):
        schedule.next_after(1.5e12)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="1970"):
        schedule.latest_at_or_before(-1)


# -- the value itself ----------------------------------------------------------


def test_schedules_are_immutable_and_hashable() -> None:
    a = CronSchedule.parse("0  3 * *   *", BERLIN)
    b = CronSchedule.parse("0 3 * * *", BERLIN)
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    assert a.expression == "0 3 * * *" and a.tz == BERLIN
    assert a != CronSchedule.parse("0 3 * * *")
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.expression = "* * * * *"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("expression", "period_ms"),
    [
        ("*/5 * * * * *", 5_000),
        ("*/15 * * * *", 900_000),
        ("0 3 * * *", 86_400_000),
        ("0 9 * * MON-FRI", 86_400_000),
        ("0 0 1 * *", 31 * 86_400_000),
    ],
)
def test_period_hint_is_the_typical_interval(expression: str, period_ms: int) -> None:
    assert CronSchedule.parse(expression, BERLIN).period_hint_ms == period_ms


def test_cron_names_are_checked_like_job_names() -> None:
    assert check_cron_name("nightly-report") == "nightly-report"
    for bad in ("", "a b", "{x}", "x" * 65, None):
        with pytest.raises(InvalidNameError, match="invalid cron name"):
            check_cron_name(bad)
