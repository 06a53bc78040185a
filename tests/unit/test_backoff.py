"""Retry backoff: exponential from 1 s, doubling, capped at 5 min, jittered."""

from __future__ import annotations

from datetime import timedelta

import pytest

from stackshift.errors import ConfigError
from stackshift.registry import make_backoff


def test_default_backoff_doubles_from_one_second_with_jitter() -> None:
    policy = make_backoff(None)
    for failures, step in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0)]:
        delays = [policy(failures) for _ in range(200)]
        assert all(step / 2 <= d <= step for d in delays)
        assert len(set(delays)) > 1  # jittered


def test_default_backoff_is_capped_at_five_minutes() -> None:
    assert all(150.0 <= make_backoff(None)(30) <= 300.0 for _ in range(50))


def test_backoff_accepts_a_first_delay() -> None:
    policy = make_backoff(timedelta(milliseconds=100))
    assert 0.05 <= policy(1) <= 0.1 and 0.2 <= policy(3) <= 0.4


def test_backoff_accepts_a_function_of_the_failure_count() -> None:
    policy = make_backoff(lambda failures: failures * 10)
    assert policy(3) == 30.0


def test_negative_backoff_is_refused() -> None:
    with pytest.raises(ConfigError):
        make_backoff(lambda failures: -1)(1)
