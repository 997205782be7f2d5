"""The ``RateLimiter`` contract, run against every adapter of the port."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable

import pytest

from adapters.memory.rate_limiter import (
    SlidingWindowRateLimiter,
    TokenBucketRateLimiter,
    UnlimitedRateLimiter,
)
from ports.errors import RateLimitExceededError
from ports.rate_limiter import RateLimiter


class FakeTime:
    """A clock, and a sleep that moves it to the sleeper's wake-up time (never backwards)."""

    def __init__(self) -> None:
        self.now = 0.0

    def clock(self) -> float:
        return self.now

    async def sleep(self, delay_s: float) -> None:
        wake_at = self.now + delay_s
        await asyncio.sleep(0)
        self.now = max(self.now, wake_at)


LimiterFactory = Callable[[FakeTime], RateLimiter]

ADAPTERS: dict[str, LimiterFactory] = {
    "unlimited": lambda _time: UnlimitedRateLimiter(),
    "token_bucket_refusing": lambda time: TokenBucketRateLimiter(
        rate_per_s=10.0, burst=5.0, clock=time.clock, sleep=time.sleep
    ),
    "token_bucket_waiting": lambda time: TokenBucketRateLimiter(
        rate_per_s=10.0, burst=5.0, max_wait_s=0.5, clock=time.clock, sleep=time.sleep
    ),
    "sliding_window_refusing": lambda time: SlidingWindowRateLimiter(
        rate_per_s=10.0, window_s=0.5, clock=time.clock, sleep=time.sleep
    ),
    "sliding_window_waiting": lambda time: SlidingWindowRateLimiter(
        rate_per_s=10.0, window_s=0.5, max_wait_s=0.5, clock=time.clock, sleep=time.sleep
    ),
}

each_limiter = pytest.mark.parametrize("make_limiter", ADAPTERS.values(), ids=ADAPTERS.keys())


@each_limiter
async def test_a_call_within_capacity_is_admitted_at_once(make_limiter: LimiterFactory) -> None:
    time = FakeTime()
    limiter = make_limiter(time)
    await limiter.acquire()
    await limiter.acquire("tenant-a", cost=1.0)
    assert time.now == 0.0


@each_limiter
@pytest.mark.parametrize("cost", [0.0, -1.0, math.nan])
async def test_a_cost_that_is_not_positive_is_a_value_error(
    make_limiter: LimiterFactory, cost: float
) -> None:
    limiter = make_limiter(FakeTime())
    with pytest.raises(ValueError, match="cost"):
        await limiter.acquire(cost=cost)


async def exhaust(limiter: RateLimiter, key: str) -> None:
    """Call until refused (or plainly unlimited); waiting calls are fine too."""
    for _ in range(100):
        try:
            await limiter.acquire(key)
        except RateLimitExceededError:
            return


@each_limiter
async def test_one_key_using_up_its_allowance_leaves_another_key_untouched(
    make_limiter: LimiterFactory,
) -> None:
    time = FakeTime()
    limiter = make_limiter(time)
    await exhaust(limiter, "tenant-a")
    before = time.now
    await limiter.acquire("tenant-b")
    assert time.now == before


@each_limiter
async def test_concurrent_callers_are_each_admitted_or_refused_with_a_positive_retry_after(
    make_limiter: LimiterFactory,
) -> None:
    limiter = make_limiter(FakeTime())
    results = await asyncio.gather(*(limiter.acquire("tenant") for _ in range(200)), return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            assert isinstance(result, RateLimitExceededError)
            assert result.key == "tenant"
            assert 0 < result.retry_after_s < math.inf


@each_limiter
async def test_a_refused_call_is_admitted_once_it_waited_as_long_as_it_was_told(
    make_limiter: LimiterFactory,
) -> None:
    time = FakeTime()
    limiter = make_limiter(time)
    for _ in range(50):
        try:
            await limiter.acquire("tenant", cost=2.0)
        except RateLimitExceededError as refused:
            await time.sleep(refused.retry_after_s)
            await limiter.acquire("tenant", cost=2.0)
