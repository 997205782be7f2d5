"""The sliding-log limiter: the window bound, FIFO waiting, cancellation, key hygiene and long-run rate."""

from __future__ import annotations

import asyncio
import itertools
import math
import random
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.memory.rate_limiter import SlidingWindowRateLimiter
from ports.errors import RateLimitExceededError
from tests.clocks import SimulatedTime, settle

TOLERANCE = 1e-6
TIME_TOLERANCE_S = 1e-9


def limiter_on(
    time: SimulatedTime, *, rate_per_s: float, window_s: float, max_wait_s: float = 0.0
) -> SlidingWindowRateLimiter:
    return SlidingWindowRateLimiter(
        rate_per_s=rate_per_s, window_s=window_s, max_wait_s=max_wait_s, clock=time.clock, sleep=time.sleep
    )


class Callers:
    """Callers of one key started as tasks, and the simulated time at which each was admitted."""

    def __init__(self, limiter: SlidingWindowRateLimiter, time: SimulatedTime) -> None:
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
        ({"rate_per_s": 0.0}, "rate_per_s"),
        ({"rate_per_s": math.inf}, "rate_per_s"),
        ({"rate_per_s": 10.0, "window_s": 0.0}, "window_s"),
        ({"rate_per_s": 10.0, "window_s": math.nan}, "window_s"),
        ({"rate_per_s": 0.5, "window_s": 1.0}, r"rate_per_s \* window_s"),
        ({"rate_per_s": 1.0, "max_wait_s": -1.0}, "max_wait_s"),
    ],
)
def test_invalid_settings_are_refused_with_the_argument_named(settings_: dict[str, Any], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        SlidingWindowRateLimiter(**settings_)


@pytest.mark.parametrize("cost", [0.0, -1.0, 5.001, math.nan])
async def test_a_cost_that_is_not_positive_or_exceeds_a_window_is_refused(cost: float) -> None:
    limiter = SlidingWindowRateLimiter(rate_per_s=10.0, window_s=0.5, max_wait_s=math.inf)
    with pytest.raises(ValueError, match="cost"):
        await limiter.acquire(cost=cost)


async def test_a_whole_window_may_be_spent_at_once_and_the_next_call_waits_for_the_oldest_to_leave() -> None:
    time = SimulatedTime()
    limiter = limiter_on(time, rate_per_s=10.0, window_s=1.0)
    await limiter.acquire(cost=4.0)
    await time.advance(0.3)
    await limiter.acquire(cost=6.0)
    with pytest.raises(RateLimitExceededError) as refused:
        await limiter.acquire(cost=1.0)
    assert refused.value.retry_after_s == pytest.approx(0.7)
    with pytest.raises(RateLimitExceededError) as refused:
        await limiter.acquire(cost=5.0)
    assert refused.value.retry_after_s == pytest.approx(1.0)  # 4 leave at 1.0, 6 more at 1.3
    await time.advance(0.7)
    await limiter.acquire(cost=4.0)
    assert limiter.in_window() == pytest.approx(10.0)
    assert time.sleeps == []


def allowed_by_definition(admitted: Sequence[tuple[float, float]], now: float, window_s: float) -> float:
    """What the window ending at ``now`` holds, from the definition: admitted in (now - window_s, now].

    A nanosecond of slack: a sleeper wakes at ``now + (deadline - now)``, which may miss the
    deadline by the last bit of a float.
    """
    return sum(cost for at, cost in admitted if at <= now + TIME_TOLERANCE_S < at + window_s)


def earliest_fit(
    admitted: Sequence[tuple[float, float]], now: float, cost: float, limit: float, window_s: float
) -> float:
    """The first time from ``now`` at which ``cost`` fits: now, or when some admission leaves the window."""
    candidates = sorted({now} | {at + window_s for at, _ in admitted if at + window_s > now})
    return next(
        t for t in candidates if allowed_by_definition(admitted, t, window_s) + cost <= limit + TOLERANCE
    )


@settings(max_examples=150, deadline=None)
@given(
    limit=st.floats(1.0, 100.0),
    window_s=st.floats(0.1, 3.0),
    calls=st.lists(st.tuples(st.floats(0.0, 2.0), st.floats(0.05, 1.0)), max_size=40),
)
def test_refusing_mode_admits_exactly_what_the_window_definition_allows(
    limit: float, window_s: float, calls: list[tuple[float, float]]
) -> None:
    rate = limit / window_s

    async def scenario() -> None:
        time = SimulatedTime()
        limiter = limiter_on(time, rate_per_s=rate, window_s=window_s)
        admitted: list[tuple[float, float]] = []
        for gap_s, share in calls:
            await time.advance(gap_s)
            cost = max(share * limit, 0.01)
            used = allowed_by_definition(admitted, time.now, window_s)
            refusal: RateLimitExceededError | None = None
            try:
                await limiter.acquire(cost=cost)
            except RateLimitExceededError as refused:
                refusal = refused
            if refusal is None:
                assert used + cost <= limit + TOLERANCE
                admitted.append((time.now, cost))
            else:
                assert used + cost > limit - TOLERANCE
                expected = earliest_fit(admitted, time.now, cost, limit, window_s) - time.now
                assert refusal.retry_after_s == pytest.approx(expected, rel=1e-6, abs=1e-6)
        assert time.sleeps == []

    asyncio.run(scenario())


@settings(max_examples=100, deadline=None)
@given(
    window_s=st.floats(0.1, 2.0),
    calls=st.lists(st.tuples(st.floats(0.0, 1.0), st.floats(0.01, 1.0)), min_size=1, max_size=30),
)
def test_a_refused_caller_that_waits_exactly_the_retry_after_is_admitted(
    window_s: float, calls: list[tuple[float, float]]
) -> None:
    async def scenario() -> None:
        time = SimulatedTime()
        limiter = limiter_on(time, rate_per_s=5.0 / window_s, window_s=window_s)
        for gap_s, share in calls:
            await time.advance(gap_s)
            try:
                await limiter.acquire(cost=share * 5.0)
            except RateLimitExceededError as refused:
                await time.advance(refused.retry_after_s)
                await limiter.acquire(cost=share * 5.0)

    asyncio.run(scenario())


@settings(max_examples=40, deadline=None)
@given(arrivals=st.lists(st.tuples(st.floats(0.0, 1.0), st.floats(0.1, 4.0)), min_size=1, max_size=25))
def test_waiting_callers_never_exceed_the_window_and_none_is_admitted_before_an_earlier_one(
    arrivals: list[tuple[float, float]],
) -> None:
    async def scenario() -> None:
        time = SimulatedTime()
        limiter = limiter_on(time, rate_per_s=2.0, window_s=2.0, max_wait_s=math.inf)
        callers = Callers(limiter, time)
        for index, (gap_s, cost) in enumerate(arrivals):
            await time.advance(gap_s)
            callers.arrive(str(index), cost)
        await time.advance(sum(cost for _, cost in arrivals) + 2.0)
        assert sorted(int(name) for name, _ in callers.admitted) == list(range(len(arrivals)))
        # Waiters due at the same instant may resume in either order; none may be due earlier.
        admitted_at = dict(callers.admitted)
        due = [admitted_at[str(index)] for index in range(len(arrivals))]
        assert all(later >= earlier - TIME_TOLERANCE_S for earlier, later in itertools.pairwise(due))
        admitted = [(at, arrivals[int(name)][1]) for name, at in callers.admitted]
        for end, _ in admitted:
            assert allowed_by_definition(admitted, end, 2.0) <= 4.0 + TOLERANCE

    asyncio.run(scenario())


async def test_waiters_are_admitted_in_arrival_order_whatever_their_cost() -> None:
    time = SimulatedTime()
    limiter = limiter_on(time, rate_per_s=1.0, window_s=3.0, max_wait_s=math.inf)
    await limiter.acquire("tenant", cost=3.0)
    callers = Callers(limiter, time)
    for name, cost in [("big", 3.0), ("small", 1.0), ("medium", 2.0)]:
        callers.arrive(name, cost)
        await settle()
    await time.advance(10.0)
    assert callers.admitted == [("big", 3.0), ("small", 6.0), ("medium", 6.0)]


async def test_a_call_that_would_wait_too_long_is_refused_at_once_without_sleeping() -> None:
    time = SimulatedTime()
    limiter = limiter_on(time, rate_per_s=1.0, window_s=1.0, max_wait_s=2.0)
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


async def test_a_cancelled_waiter_gives_its_reservation_back_and_later_waiters_keep_their_turn() -> None:
    time = SimulatedTime()
    limiter = limiter_on(time, rate_per_s=1.0, window_s=3.0, max_wait_s=math.inf)
    await limiter.acquire("tenant", cost=3.0)
    callers = Callers(limiter, time)
    callers.arrive("ahead", 3.0)
    await settle()
    callers.arrive("behind", 1.0)
    await settle()
    assert limiter.in_window("tenant") == pytest.approx(7.0)
    callers.tasks[0].cancel()
    await settle()
    assert limiter.in_window("tenant") == pytest.approx(4.0)
    callers.arrive("newcomer", 1.0)  # the window alone would fit it at once; the queue does not
    await time.advance(10.0)
    assert callers.admitted == [("behind", 6.0), ("newcomer", 6.0)]


async def test_a_waiter_cancelled_only_after_its_turn_came_never_corrupts_the_log() -> None:
    time = SimulatedTime()

    async def late_cancellation(delay_s: float) -> None:
        # The loop lagged: the sleep was over long ago, but a cancel() got in before the task resumed.
        time.now += delay_s + 4.0
        raise asyncio.CancelledError

    limiter = SlidingWindowRateLimiter(
        rate_per_s=1.0, window_s=1.0, max_wait_s=math.inf, clock=time.clock, sleep=late_cancellation
    )
    await limiter.acquire("tenant")
    with pytest.raises(asyncio.CancelledError):
        await limiter.acquire("tenant")
    assert limiter.in_window("tenant") == 0.0
    await limiter.acquire("tenant")


async def greedy_caller(
    limiter: SlidingWindowRateLimiter, rng: random.Random, costs: list[float], admitted: list[float]
) -> None:
    while True:
        cost = rng.choice(costs)
        await limiter.acquire("tenant", cost=cost)
        admitted.append(cost)


# With mixed costs a gap smaller than the next caller's cost stays unused for a whole window
# (first come, first served forbids filling it with a cheaper later call), so the long-run rate
# falls short by up to the largest cost over the window's allowance: 2% for costs of 1 to 3 in 100.
@pytest.mark.parametrize(
    ("window_s", "costs"), [(0.25, [1.0]), (2.5, [1.0, 2.0, 3.0])], ids=["unit costs", "mixed costs"]
)
async def test_waiting_callers_are_admitted_at_the_configured_rate_in_the_long_run(
    window_s: float, costs: list[float]
) -> None:
    time = SimulatedTime()
    # A burst may fill a whole window at once: the next caller then waits up to a window.
    limiter = limiter_on(time, rate_per_s=40.0, window_s=window_s, max_wait_s=2 * window_s)
    rng = random.Random(7)
    admitted: list[float] = []
    callers = [asyncio.create_task(greedy_caller(limiter, rng, costs, admitted)) for _ in range(5)]
    await time.advance(250.0)
    for caller in callers:
        caller.cancel()
    await asyncio.gather(*callers, return_exceptions=True)
    assert sum(admitted) / 250.0 == pytest.approx(40.0, rel=0.03)
    assert sum(admitted) <= 40.0 * (250.0 + window_s)


async def polling_caller(
    limiter: SlidingWindowRateLimiter, time: SimulatedTime, rng: random.Random, admitted: list[float]
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
    limiter = limiter_on(time, rate_per_s=30.0, window_s=0.2)
    rng = random.Random(11)
    admitted: list[float] = []
    callers = [asyncio.create_task(polling_caller(limiter, time, rng, admitted)) for _ in range(4)]
    await time.advance(200.0)
    for caller in callers:
        caller.cancel()
    await asyncio.gather(*callers, return_exceptions=True)
    assert sum(admitted) / 200.0 == pytest.approx(30.0, rel=0.03)
    assert sum(admitted) <= 30.0 * (200.0 + 0.2)


async def test_idle_keys_are_dropped_as_keys_pile_up_and_busy_ones_are_kept() -> None:
    time = SimulatedTime()
    limiter = limiter_on(time, rate_per_s=1.0, window_s=10.0, max_wait_s=math.inf)
    await limiter.acquire("busy", cost=10.0)
    waiters = [asyncio.create_task(limiter.acquire("busy", cost=10.0)) for _ in range(6)]
    await settle()
    for index in range(5000):
        await limiter.acquire(f"tenant-{index}")
        if index % 1000 == 999:
            time.now += 10.0  # every tenant seen so far has left its window
    assert limiter.key_count < 2100
    assert limiter.in_window("busy") == pytest.approx(20.0)  # the reservations for 50 s and 60 s
    await time.advance(20.0)
    await asyncio.gather(*waiters)
    # A dropped key starts again from an empty log, exactly where it would have been anyway.
    await limiter.acquire("tenant-0", cost=10.0)
