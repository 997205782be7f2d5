"""The ``RateLimiter`` contract, run against every adapter of the port."""

from __future__ import annotations

import asyncio
import math
import uuid
from collections.abc import AsyncIterator, Callable

import pytest

from adapters.memory.rate_limiter import (
    SlidingWindowRateLimiter,
    TokenBucketRateLimiter,
    UnlimitedRateLimiter,
)
from adapters.redis import GuardedRedis, RedisGcraRateLimiter, RedisOptions, create_guarded_redis
from ports.errors import RateLimitExceededError
from ports.rate_limiter import RateLimiter
from tests.redis_support import RedisServer


class FakeTime:
    """A clock, and a sleep that moves it to the sleeper's wake-up time (never backwards).

    With ``real`` set the sleep also passes in real time: a limiter timed by another clock (Redis's)
    sees the time go by that the test tells it has.
    """

    def __init__(self) -> None:
        self.now = 0.0
        self.real = False

    def clock(self) -> float:
        return self.now

    async def sleep(self, delay_s: float) -> None:
        wake_at = self.now + delay_s
        await asyncio.sleep(delay_s if self.real else 0)
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

RedisLimiterFactory = Callable[[FakeTime, GuardedRedis, str], RedisGcraRateLimiter]

# Faster than the in-memory ones: their waits pass in real time. Failure mode ``closed``, and the
# fixture checks afterwards that Redis decided every call: a failure mode never answers for it.
REDIS_ADAPTERS: dict[str, RedisLimiterFactory] = {
    "redis_gcra_refusing": lambda time, redis, prefix: RedisGcraRateLimiter(
        redis=redis, rate_per_s=100.0, burst=5.0, key_prefix=prefix, failure_mode="closed", sleep=time.sleep
    ),
    "redis_gcra_waiting": lambda time, redis, prefix: RedisGcraRateLimiter(
        redis=redis,
        rate_per_s=100.0,
        burst=5.0,
        max_wait_s=0.5,
        key_prefix=prefix,
        failure_mode="closed",
        sleep=time.sleep,
    ),
}


@pytest.fixture(params=[*ADAPTERS, *REDIS_ADAPTERS])
async def make_limiter(request: pytest.FixtureRequest) -> AsyncIterator[LimiterFactory]:
    """Each adapter in turn; the Redis ones on the session's throwaway server, keys of their own."""
    name: str = request.param
    if name in ADAPTERS:
        yield ADAPTERS[name]
        return
    server: RedisServer = request.getfixturevalue("shared_redis")
    # A generous deadline: this suite is about semantics; the failure tests are about time.
    redis = create_guarded_redis(RedisOptions(url=server.url(), call_timeout_s=2.0, connect_timeout_s=2.0))
    made: list[RedisGcraRateLimiter] = []

    def make(time: FakeTime) -> RateLimiter:
        time.real = True
        made.append(REDIS_ADAPTERS[name](time, redis, f"contract-{uuid.uuid4().hex}:"))
        return made[-1]

    yield make
    await redis.aclose()
    for limiter in made:
        assert sum(limiter.failures.values()) == 0, limiter.failures


async def test_a_call_within_capacity_is_admitted_at_once(make_limiter: LimiterFactory) -> None:
    time = FakeTime()
    limiter = make_limiter(time)
    await limiter.acquire()
    await limiter.acquire("tenant-a", cost=1.0)
    assert time.now == 0.0


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


async def test_one_key_using_up_its_allowance_leaves_another_key_untouched(
    make_limiter: LimiterFactory,
) -> None:
    time = FakeTime()
    limiter = make_limiter(time)
    await exhaust(limiter, "tenant-a")
    before = time.now
    await limiter.acquire("tenant-b")
    assert time.now == before


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
