"""Durations given to stackshift: ``config.to_seconds`` and ``config.to_ms``."""

from __future__ import annotations

import math
from datetime import timedelta
from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest

from stackshift import JobContext, Stackshift
from stackshift.config import redacted_url, to_ms, to_seconds
from stackshift.errors import ConfigError


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (timedelta(minutes=5), 300.0),
        (timedelta(0), 0.0),
        (2, 2.0),
        (0.25, 0.25),
        (Fraction(1, 4), 0.25),
        (Decimal("1.5"), 1.5),
    ],
)
def test_a_timedelta_or_a_real_number_is_a_number_of_seconds(
    value: Any, seconds: float
) -> None:
    assert to_seconds(value) == seconds
    assert to_ms(value) == int(seconds * 1000)


@pytest.mark.parametrize(
    "value",
    ["5s", "5", b"5", None, True, False, [1], {"seconds": 1}, object(), 1j],
)
def test_anything_else_is_a_config_error_naming_the_setting_and_the_value(
    value: Any,
) -> None:
    for convert in (to_seconds, to_ms):
        with pytest.raises(ConfigError) as caught:
            convert(value, name="delay")
        message = str(caught.value)
        assert message.startswith("delay must be a timedelta or a number of seconds")
        assert repr(value) in message and type(value).__name__ in message


@pytest.mark.parametrize(
    "value",
    [-1, -0.001, timedelta(seconds=-1), math.nan, math.inf, -math.inf, Decimal("NaN")],
)  # fmt: skip
def test_negative_and_non_finite_durations_are_refused(value: Any) -> None:
    for convert in (to_seconds, to_ms):
        with pytest.raises(
            ConfigError, match=r"^backoff must be a finite, non-negative"
        ):
            convert(value, name="backoff")


def test_the_message_names_the_duration_when_no_name_is_given() -> None:
    with pytest.raises(ConfigError, match=r"^duration must be"):
        to_seconds("soon")  # type: ignore[arg-type]


async def test_a_delay_or_backoff_given_as_text_is_a_config_error() -> None:
    """What a user who writes ``delay="5s"`` sees, before anything is sent."""
    async with Stackshift("memory://config-test") as app:
        with pytest.raises(ConfigError, match=r"^backoff must be .* got '1s' \(str\)"):

            @app.job("retried", backoff="1s")  # type: ignore[arg-type]
            async def retried(ctx: JobContext[Any]) -> None: ...

        with pytest.raises(ConfigError, match=r"^delay must be .* got '5s' \(str\)"):
            await app.queue("later").enqueue("retried", {}, delay="5s")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://localhost:6379/0", "redis://localhost:6379/0"),
        ("redis://:s3cret@cache:6379/0", "redis://:***@cache:6379/0"),
        ("rediss://app:s3cret@cache.example:6380/2", "rediss://app:***@cache.example:6380/2"),
        ("redis://app:p%40ss@cache/0", "redis://app:***@cache/0"),
        ("redis://app@cache/0", "redis://app@cache/0"),
        ("redis://cache/0?password=s3cret&db=1", "redis://cache/0?password=***&db=1"),
        ("unix:///run/redis.sock?db=0&password=s3cret", "unix:///run/redis.sock?db=0&password=***"),
        ("memory://demo", "memory://demo"),
        ("app:s3cret@cache", "***@cache"),
    ],
)  # fmt: skip
def test_a_url_is_shown_without_its_password(url: str, shown: str) -> None:
    assert redacted_url(url) == shown
