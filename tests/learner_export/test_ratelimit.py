"""The per-user sliding window."""

from __future__ import annotations

import pytest

from learner_export.ratelimit import RateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_admits_up_to_the_limit_then_says_when_to_retry() -> None:
    clock = Clock()
    limiter = RateLimiter(3, clock=clock)
    assert [limiter.admit(7) for _ in range(3)] == [None, None, None]
    clock.now += 10.5
    assert limiter.admit(7) == 50  # the first admitted request leaves the window at 1060
    clock.now = 1060.0
    assert limiter.admit(7) is None


def test_refusals_do_not_count() -> None:
    clock = Clock()
    limiter = RateLimiter(1, clock=clock)
    assert limiter.admit(1) is None
    for _ in range(100):
        assert limiter.admit(1) is not None
    clock.now += 60
    assert limiter.admit(1) is None


def test_users_are_counted_apart() -> None:
    limiter = RateLimiter(1, clock=Clock())
    assert limiter.admit(1) is None
    assert limiter.admit(2) is None
    assert limiter.admit(1) is not None


def test_retry_after_is_at_least_one_second() -> None:
    clock = Clock()
    limiter = RateLimiter(1, clock=clock)
    limiter.admit(1)
    clock.now += 59.999
    assert limiter.admit(1) == 1


def test_idle_users_are_forgotten() -> None:
    clock = Clock()
    limiter = RateLimiter(5, clock=clock)
    for user in range(100):
        limiter.admit(user)
    clock.now += 61
    limiter.admit(1000)
    assert list(limiter._admitted) == [1000]


def test_a_limit_below_one_is_refused() -> None:
    with pytest.raises(ValueError):
        RateLimiter(0)
