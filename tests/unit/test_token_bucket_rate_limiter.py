"""The token bucket: its arithmetic, FIFO waiting, cancellation, key hygiene and long-run rate."""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.memory.rate_limiter import TokenBucketRateLimiter
from ports.errors import RateLimitExceededError
from tests.clocks import SimulatedTime, settle

TOLERANCE = 1e-6


def limiter_on(
    time: SimulatedTime, *, rate_per_s: float, burst: float, max_wait_s: float = 0.0
) -> TokenBucketRateLimiter:
    return TokenBucketRateLimiter(
        rate_per_s=rate_per_s, burst=burst, max_wait_s=max_wait_s, clock=time.clock, sleep=time.sleep
    )


class Callers:
    """Callers of one key started as tasks, and the simulated time at which each was admitted."""

    def __init__(self, limiter: TokenBucketRateLimiter, time: SimulatedTime) -> None:
        self.admitted: list[tuple[str, float]] = []
        self.tasks: list[asyncio.Task[None]] = []
        self._limiter = limiter
        self._time = time

    def arrive(self, name: str, cost: float) -> None:
        self.tasks.append(asyncio.create_task(self._call(name, cost)))

    async def _call(self, name: str, cost: float) -> None:
        await self._limiter.acquire("tenant", cost=cost)
        self.admitted.append((name, self._time.now))


@pytest.mark.parametrize(
    ("settings_", "named"),
    [
        ({"rate_per_s": 0.0, "burst": 1.0}, "rate_per_s"),
        ({"rate_per_s": -1.0, "burst": 1.0}, "rate_per_s"),
        ({"rate_per_s": math.nan, "burst": 1.0}, "rate_per_s"),
        ({"rate_per_s": math.inf, "burst": 1.0}, "rate_per_s"),
        ({"rate_per_s": 1.0, "burst": 0.5}, "burst"),
        ({"rate_per_s": 1.0, "burst": math.nan}, "burst"),
        ({"rate_per_s": 1.0, "burst": math.inf}, "burst"),
        ({"rate_per_s": 1.0, "burst": 1.0, "max_wait_s": -0.1}, "max_wait_s"),
        ({"rate_per_s": 1.0, "burst": 1.0, "max_wait_s": math.nan}, "max_wait_s"),
    ],
)
def test_invalid_settings_are_refused_with_the_argument_named(settings_: dict[str, Any], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        TokenBucketRateLimiter(**settings_)


@pytest.mark.parametrize("cost", [0.0, -1.0, 5.001, math.nan])
async def test_a_cost_that_is_not_positive_or_exceeds_the_burst_is_refused(cost: float) -> None:
    limiter = TokenBucketRateLimiter(rate_per_s=1.0, burst=5.0, max_wait_s=math.inf)
    with pytest.raises(ValueError, match="cost"):
        await limiter.acquire(cost=cost)


async def test_a_full_bucket_admits_a_whole_burst_at_once_and_then_refuses() -> None:
    time = SimulatedTime()
    limiter = limiter_on(time, rate_per_s=10.0, burst=5.0)
    for _ in range(5):
        await limiter.acquire("tenant")
    with pytest.raises(RateLimitExceededError) as refused:
        await limiter.acquire("tenant")
    assert refused.value.key == "tenant"
    assert time.sleeps == []


async def test_a_refusal_says_exactly_when_the_tokens_will_be_there() -> None:
    time = SimulatedTime()
    limiter = limiter_on(time, rate_per_s=10.0, burst=5.0)
    await limiter.acquire(cost=5.0)
    with pytest.raises(RateLimitExceededError) as refused:
        await limiter.acquire()
    assert refused.value.retry_after_s == pytest.approx(0.1)
    await time.advance(0.04)
    with pytest.raises(RateLimitExceededError) as refused:
        await limiter.acquire(cost=3.0)
    assert refused.value.retry_after_s == pytest.approx(0.26)
    await time.advance(0.26)
    await limiter.acquire(cost=3.0)


async def test_keys_have_separate_buckets() -> None:
    time = SimulatedTime()
    limiter = limiter_on(time, rate_per_s=1.0, burst=2.0)
    await limiter.acquire("a", cost=2.0)
    await limiter.acquire("b", cost=2.0)
    with pytest.raises(RateLimitExceededError):
        await limiter.acquire("a")
    assert limiter.tokens("never-seen") == 2.0


def available_by_history(
    admitted: Sequence[tuple[float, float]], now: float, rate: float, burst: float
) -> float:
    """Tokens left at ``now`` by definition: a window [s, now] admits at most ``burst + rate * (now - s)``.

    Only windows starting at an admission matter; this is independent of the bucket's own bookkeeping.
    """
    available = burst
    for start, _ in admitted:
        in_window = sum(cost for at, cost in admitted if at >= start)
        available = min(available, burst + rate * (now - start) - in_window)
    return available


@settings(max_examples=150, deadline=None)
@given(
    rate=st.floats(0.5, 100.0),
    burst=st.floats(1.0, 20.0),
    calls=st.lists(st.tuples(st.floats(0.0, 2.0), st.floats(0.05, 1.0)), max_size=40),
)
def test_refusing_mode_admits_exactly_what_the_bucket_definition_allows(
    rate: float, burst: float, calls: list[tuple[float, float]]
) -> None:
    async def scenario() -> None:
        time = SimulatedTime()
        limiter = limiter_on(time, rate_per_s=rate, burst=burst)
        admitted: list[tuple[float, float]] = []
        for gap_s, share in calls:
            await time.advance(gap_s)
            cost = max(share * burst, 0.01)
            available = available_by_history(admitted, time.now, rate, burst)
            refusal: RateLimitExceededError | None = None
            try:
                await limiter.acquire(cost=cost)
            except RateLimitExceededError as refused:
                refusal = refused
            if refusal is None:
                assert available > cost - TOLERANCE
                admitted.append((time.now, cost))
            else:
                assert available < cost + TOLERANCE
                assert refusal.retry_after_s == pytest.approx((cost - available) / rate, rel=1e-6, abs=1e-6)
        assert time.sleeps == []

    asyncio.run(scenario())


@settings(max_examples=150, deadline=None)
@given(
    rate=st.floats(0.1, 1000.0),
    burst=st.floats(1.0, 50.0),
    calls=st.lists(st.tuples(st.floats(0.0, 1.0), st.floats(0.01, 1.0)), min_size=1, max_size=30),
)
def test_a_refused_caller_that_waits_exactly_the_retry_after_is_admitted(
    rate: float, burst: float, calls: list[tuple[float, float]]
) -> None:
    async def scenario() -> None:
        time = SimulatedTime()
        limiter = limiter_on(time, rate_per_s=rate, burst=burst)
        for gap_s, share in calls:
            await time.advance(gap_s)
            try:
                await limiter.acquire(cost=share * burst)
            except RateLimitExceededError as refused:
                await time.advance(refused.retry_after_s)
                await limiter.acquire(cost=share * burst)

    asyncio.run(scenario())


async def test_waiters_are_admitted_in_arrival_order_whatever_their_cost() -> None:
    time = SimulatedTime()
    limiter = limiter_on(time, rate_per_s=1.0, burst=3.0, max_wait_s=math.inf)
    await limiter.acquire("tenant", cost=3.0)
    callers = Callers(limiter, time)
    for name, cost in [("big", 3.0), ("small", 1.0), ("medium", 2.0)]:
        callers.arrive(name, cost)
        await settle()
    await time.advance(10.0)
    assert callers.admitted == [("big", 3.0), ("small", 4.0), ("medium", 6.0)]


@settings(max_examples=60, deadline=None)
@given(arrivals=st.lists(st.tuples(st.floats(0.0, 1.0), st.floats(0.1, 4.0)), min_size=1, max_size=25))
def test_no_waiter_is_ever_admitted_before_an_earlier_one(arrivals: list[tuple[float, float]]) -> None:
    async def scenario() -> None:
        time = SimulatedTime()
        limiter = limiter_on(time, rate_per_s=2.0, burst=4.0, max_wait_s=math.inf)
        callers = Callers(limiter, time)
        for index, (gap_s, cost) in enumerate(arrivals):
            await time.advance(gap_s)
            callers.arrive(str(index), cost)
        await time.advance(sum(cost for _, cost in arrivals))
        assert [name for name, _ in callers.admitted] == [str(index) for index in range(len(arrivals))]

    asyncio.run(scenario())


async def test_a_call_that_would_wait_too_long_is_refused_at_once_without_sleeping() -> None:
    time = SimulatedTime()
    limiter = limiter_on(time, rate_per_s=1.0, burst=1.0, max_wait_s=2.0)
    await limiter.acquire("tenant")
    callers = Callers(limiter, time)
    for name in ("first", "second"):
        callers.arrive(name, 1.0)
        await settle()
    with pytest.raises(RateLimitExceededError) as refused:
        await limiter.acquire("tenant")
    assert refused.value.retry_after_s == pytest.approx(3.0)
    assert time.sleeps == [1.0, 2.0]
    await time.advance(2.0)
    assert callers.admitted == [("first", 1.0), ("second", 2.0)]


async def test_a_cancelled_waiter_gives_its_tokens_back() -> None:
    time = SimulatedTime()
    limiter = limiter_on(time, rate_per_s=1.0, burst=2.0, max_wait_s=math.inf)
    await limiter.acquire("tenant", cost=2.0)
    waiter = asyncio.create_task(limiter.acquire("tenant", cost=2.0))
    await time.advance(0.5)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert limiter.tokens("tenant") == pytest.approx(0.5)
    callers = Callers(limiter, time)
    callers.arrive("next", 1.0)
    await time.advance(5.0)
    assert callers.admitted == [("next", 1.0)]
    assert limiter.tokens("tenant") == pytest.approx(2.0)


async def test_a_waiter_cancelled_only_after_its_turn_came_never_overfills_the_bucket() -> None:
    time = SimulatedTime()

    async def late_cancellation(delay_s: float) -> None:
        # The loop lagged: the sleep was over long ago, but a cancel() got in before the task resumed.
        time.now += delay_s + 4.0
        raise asyncio.CancelledError

    limiter = TokenBucketRateLimiter(
        rate_per_s=1.0, burst=1.0, max_wait_s=math.inf, clock=time.clock, sleep=late_cancellation
    )
    await limiter.acquire("tenant")
    with pytest.raises(asyncio.CancelledError):
        await limiter.acquire("tenant")
    assert limiter.tokens("tenant") == 1.0


async def test_a_newcomer_never_overtakes_a_waiter_after_someone_ahead_was_cancelled() -> None:
    time = SimulatedTime()
    limiter = limiter_on(time, rate_per_s=1.0, burst=3.0, max_wait_s=math.inf)
    await limiter.acquire("tenant", cost=3.0)
    callers = Callers(limiter, time)
    callers.arrive("ahead", 3.0)
    await settle()
    callers.arrive("behind", 1.0)
    await settle()
    callers.tasks[0].cancel()
    await settle()
    # Three tokens came back, so the count alone would admit a newcomer at once.
    callers.arrive("newcomer", 1.0)
    await time.advance(10.0)
    assert callers.admitted == [("behind", 4.0), ("newcomer", 4.0)]


@settings(max_examples=60, deadline=None)
@given(
    waiters=st.lists(st.tuples(st.floats(0.1, 3.0), st.booleans()), min_size=1, max_size=20),
    cancel_after_s=st.floats(0.0, 5.0),
)
def test_cancelled_waiters_leak_no_tokens(waiters: list[tuple[float, bool]], cancel_after_s: float) -> None:
    async def scenario() -> None:
        time = SimulatedTime()
        limiter = limiter_on(time, rate_per_s=1.0, burst=3.0, max_wait_s=math.inf)
        tasks = [asyncio.create_task(limiter.acquire("tenant", cost=cost)) for cost, _ in waiters]
        await time.advance(cancel_after_s)
        for task, (_, cancel) in zip(tasks, waiters, strict=True):
            if cancel:
                task.cancel()
        await settle()
        admitted = sum(cost for (cost, _), task in zip(waiters, tasks, strict=True) if not task.cancelled())
        assert limiter.tokens("tenant") == pytest.approx(min(3.0, 3.0 + time.now - admitted), abs=TOLERANCE)
        await time.advance(sum(cost for cost, _ in waiters) + 3.0)
        assert limiter.tokens("tenant") == pytest.approx(3.0)

    asyncio.run(scenario())


async def greedy_caller(limiter: TokenBucketRateLimiter, rng: random.Random, admitted: list[float]) -> None:
    while True:
        cost = rng.choice([1.0, 2.0, 3.0])
        await limiter.acquire("tenant", cost=cost)
        admitted.append(cost)


async def test_waiting_callers_are_admitted_at_the_configured_rate_in_the_long_run() -> None:
    time = SimulatedTime()
    limiter = limiter_on(time, rate_per_s=40.0, burst=10.0, max_wait_s=1.0)
    rng = random.Random(7)
    admitted: list[float] = []
    callers = [asyncio.create_task(greedy_caller(limiter, rng, admitted)) for _ in range(5)]
    await time.advance(250.0)
    for caller in callers:
        caller.cancel()
    await asyncio.gather(*callers, return_exceptions=True)
    assert sum(admitted) / 250.0 == pytest.approx(40.0, rel=0.03)
    assert sum(admitted) <= 10.0 + 40.0 * 250.0


async def polling_caller(
    limiter: TokenBucketRateLimiter, time: SimulatedTime, rng: random.Random, admitted: list[float]
) -> None:
    while True:
        try:
            await limiter.acquire("tenant", cost=1.0)
        except RateLimitExceededError as refused:
            await time.sleep(refused.retry_after_s + rng.uniform(0.0, 0.005))
        else:
            admitted.append(1.0)
            await time.sleep(rng.uniform(0.0, 0.05))


async def test_refused_callers_that_retry_when_told_get_the_configured_rate_in_the_long_run() -> None:
    time = SimulatedTime()
    limiter = limiter_on(time, rate_per_s=30.0, burst=5.0)
    rng = random.Random(11)
    admitted: list[float] = []
    callers = [asyncio.create_task(polling_caller(limiter, time, rng, admitted)) for _ in range(4)]
    await time.advance(200.0)
    for caller in callers:
        caller.cancel()
    await asyncio.gather(*callers, return_exceptions=True)
    assert sum(admitted) / 200.0 == pytest.approx(30.0, rel=0.03)
    assert sum(admitted) <= 5.0 + 30.0 * 200.0


async def test_idle_full_buckets_are_dropped_as_keys_pile_up_and_busy_ones_are_kept() -> None:
    time = SimulatedTime()
    limiter = limiter_on(time, rate_per_s=1.0, burst=10.0, max_wait_s=math.inf)
    await limiter.acquire("busy", cost=10.0)
    waiter = asyncio.create_task(limiter.acquire("busy", cost=10.0))
    await limiter.acquire("drained", cost=10.0)
    await settle()
    for index in range(5000):
        await limiter.acquire(f"tenant-{index}")
        if index % 1000 == 999:
            time.now += 1.0  # every tenant seen so far has refilled its one token
    assert limiter.bucket_count < 2100
    assert limiter.tokens("busy") == pytest.approx(-5.0)
    assert limiter.tokens("drained") == pytest.approx(5.0)
    await time.advance(5.0)
    await waiter
    # A dropped key starts again from a full bucket, exactly where it would have been anyway.
    await limiter.acquire("tenant-0", cost=10.0)
