"""Requests and tokens per minute as token buckets, on a hand-driven clock; usage counters."""

from __future__ import annotations

import pytest

from corral.auth.errors import RateLimitedError
from corral.auth.limits import Limiter, Usage, retry_after


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("seconds, header", [(0.0, 1), (0.2, 1), (1.0, 1), (1.01, 2), (59.5, 60)])
def test_retry_after_rounds_up_to_whole_seconds(seconds, header):
    assert retry_after(seconds) == header


def test_a_minute_of_requests_then_429_until_one_refills():
    clock = Clock()
    limiter = Limiter(clock)
    for _ in range(3):
        limiter.admit("a", rpm=3, tpm=None)
    with pytest.raises(RateLimitedError, match="'a' made its 3 requests per minute") as error:
        limiter.admit("a", rpm=3, tpm=None)
    assert error.value.retry_after == 20  # one request refills in 60/3 s
    clock.now += 19.5
    with pytest.raises(RateLimitedError) as error:
        limiter.admit("a", rpm=3, tpm=None)
    assert error.value.retry_after == 1
    clock.now += 0.5
    limiter.admit("a", rpm=3, tpm=None)
    assert limiter.usage["a"] == Usage(requests=4)


def test_keys_have_their_own_budgets():
    limiter = Limiter(Clock())
    limiter.admit("a", rpm=1, tpm=None)
    limiter.admit("b", rpm=1, tpm=None)
    with pytest.raises(RateLimitedError):
        limiter.admit("a", rpm=1, tpm=None)


def test_tokens_are_spent_after_the_request_and_refuse_the_next_one():
    clock = Clock()
    limiter = Limiter(clock)
    limiter.admit("a", rpm=None, tpm=100)
    limiter.spend("a", 100, prompt_tokens=30, generated_tokens=60)  # 10 left
    limiter.admit("a", rpm=None, tpm=100)  # still above zero: admitted
    limiter.spend("a", 100, prompt_tokens=30, generated_tokens=30)  # -50: overspent
    with pytest.raises(RateLimitedError, match="'a' used its 100 tokens per minute") as error:
        limiter.admit("a", rpm=None, tpm=100)
    assert error.value.retry_after == 30  # 50 tokens at 100/60 per second
    clock.now += 30.01
    limiter.admit("a", rpm=None, tpm=100)
    assert limiter.usage["a"] == Usage(requests=3, prompt_tokens=60, generated_tokens=90)


def test_a_refused_request_is_not_counted_nor_does_it_spend_a_request():
    clock = Clock()
    limiter = Limiter(clock)
    limiter.admit("a", rpm=2, tpm=10)
    limiter.spend("a", 10, 10, 5)
    with pytest.raises(RateLimitedError):
        limiter.admit("a", rpm=2, tpm=10)
    assert limiter.usage["a"].requests == 1
    clock.now += 60
    limiter.admit("a", rpm=2, tpm=10)
    limiter.admit("a", rpm=2, tpm=None)


def test_no_limits_count_usage_only():
    limiter = Limiter(Clock())
    for _ in range(1000):
        limiter.admit("a", rpm=None, tpm=None)
        limiter.spend("a", None, 1, 2)
    assert limiter.usage["a"] == Usage(1000, 1000, 2000)
