"""Concurrency limits against simulated databases: they fall when latency rises and recover when it falls."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.memory.concurrency_limit import (
    AimdConcurrencyLimit,
    FixedConcurrencyLimit,
    GradientConcurrencyLimit,
)
from ports.concurrency_limit import ConcurrencyLimit

Latency = Callable[[int], float]


def database(*, base_s: float, capacity: int) -> Latency:
    """A database serving ``capacity`` calls at ``base_s`` each; beyond that they share it (latency grows)."""
    return lambda in_flight: base_s * max(1.0, in_flight / capacity)


def saturate(limit: ConcurrencyLimit, latency_of: Latency, samples: int) -> list[int]:
    """Demand always exceeds the limit: every sample finishes with the gate full. The limits seen."""
    seen = []
    for _ in range(samples):
        in_flight = limit.limit
        limit.on_sample(latency_s=latency_of(in_flight), in_flight=in_flight, dropped=False)
        seen.append(limit.limit)
    return seen


HEALTHY = database(base_s=0.010, capacity=20)
DEGRADED = database(base_s=0.010, capacity=5)  # a quarter of the capacity: a failover, a vacuum
SLOWED = database(base_s=0.050, capacity=20)  # five times slower whatever the load: injected latency


def aimd(**overrides: Any) -> AimdConcurrencyLimit:
    arguments: dict[str, Any] = {
        "initial_limit": 20,
        "min_limit": 2,
        "max_limit": 100,
        "slow_latency_s": 0.025,
    }
    return AimdConcurrencyLimit(**(arguments | overrides))


def gradient(**overrides: Any) -> GradientConcurrencyLimit:
    arguments: dict[str, Any] = {"initial_limit": 20, "min_limit": 2, "max_limit": 100}
    return GradientConcurrencyLimit(**(arguments | overrides))


@pytest.mark.parametrize(
    ("make", "named"),
    [
        (lambda: FixedConcurrencyLimit(limit=0), "limit"),
        (lambda: aimd(min_limit=0), "min_limit"),
        (lambda: aimd(initial_limit=101), "initial_limit"),
        (lambda: aimd(backoff_ratio=1.0), "backoff_ratio"),
        (lambda: aimd(slow_latency_s=0.0), "slow_latency_s"),
        (lambda: gradient(min_limit=30), "min_limit"),
        (lambda: gradient(smoothing=0.0), "smoothing"),
        (lambda: gradient(rtt_tolerance=0.9), "rtt_tolerance"),
        (lambda: gradient(long_window=0), "long_window"),
    ],
)
def test_invalid_settings_are_refused_with_the_argument_named(make: Callable[[], object], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        make()


def test_a_fixed_limit_ignores_every_sample() -> None:
    limit = FixedConcurrencyLimit(limit=15)
    saturate(limit, SLOWED, 100)
    limit.on_sample(latency_s=30.0, in_flight=15, dropped=True)
    assert limit.limit == 15


def test_aimd_settles_near_the_load_that_keeps_latency_under_its_threshold() -> None:
    seen = saturate(aimd(), HEALTHY, 1000)
    # Latency passes 25 ms above 50 in flight: the limit saws just under that.
    assert min(seen[-200:]) >= 40
    assert max(seen[-200:]) <= 51


def test_aimd_falls_when_the_database_loses_capacity_and_recovers_when_it_comes_back() -> None:
    limit = aimd()
    healthy = saturate(limit, HEALTHY, 1000)[-200:]
    degraded = saturate(limit, DEGRADED, 1000)[-200:]
    recovered = saturate(limit, HEALTHY, 1000)[-200:]
    assert statistics.mean(degraded) < statistics.mean(healthy) / 3
    assert max(degraded) <= 13  # 5 * 25 ms / 10 ms, plus one step
    assert statistics.mean(recovered) == pytest.approx(statistics.mean(healthy), rel=0.05)


def test_aimd_falls_to_its_minimum_when_every_call_is_slow_and_climbs_back_when_they_are_fast() -> None:
    limit = aimd()
    saturate(limit, HEALTHY, 500)
    assert saturate(limit, SLOWED, 500)[-1] == 2
    assert saturate(limit, HEALTHY, 500)[-1] >= 40


def test_aimd_decreases_once_per_flight_not_once_per_slow_call_of_the_same_flight() -> None:
    limit = aimd(initial_limit=50)
    for _ in range(50):  # the fifty calls in flight when the database slowed down
        limit.on_sample(latency_s=0.1, in_flight=50, dropped=False)
    assert limit.limit == 45
    limit.on_sample(latency_s=0.1, in_flight=45, dropped=False)  # a call of the next flight
    assert limit.limit == 40


def test_aimd_treats_a_dropped_call_as_congestion_however_fast_it_failed() -> None:
    limit = aimd(initial_limit=50)
    limit.on_sample(latency_s=0.001, in_flight=50, dropped=True)
    assert limit.limit == 45


@pytest.mark.parametrize("make", [aimd, gradient], ids=["aimd", "gradient"])
def test_a_limit_that_is_not_in_use_does_not_grow(make: Callable[[], ConcurrencyLimit]) -> None:
    limit = make()
    for _ in range(500):
        limit.on_sample(latency_s=0.010, in_flight=5, dropped=False)
    assert limit.limit == 20


def test_gradient_grows_while_latency_is_steady() -> None:
    assert saturate(gradient(), database(base_s=0.010, capacity=1000), 200)[-1] == 100


@pytest.mark.parametrize("slowdown", [DEGRADED, SLOWED], ids=["less capacity", "injected latency"])
def test_gradient_falls_when_latency_rises_and_recovers_when_it_falls(slowdown: Latency) -> None:
    limit = gradient()
    before = saturate(limit, HEALTHY, 2000)[-1]
    during = saturate(limit, slowdown, 30)
    assert min(during) <= before * 0.6
    after = saturate(limit, HEALTHY, 200)
    assert after[-1] >= before * 0.95


def test_gradient_takes_a_dropped_call_as_the_steepest_gradient() -> None:
    limit = gradient(initial_limit=100, queue_size=0, smoothing=1.0)
    limit.on_sample(latency_s=0.010, in_flight=100, dropped=True)
    assert limit.limit == 50


samples = st.lists(
    st.tuples(st.floats(0.0, 60.0), st.integers(0, 300), st.booleans()), min_size=1, max_size=200
)


@settings(max_examples=100, deadline=None)
@given(
    samples=samples,
    bounds=st.tuples(st.integers(1, 20), st.integers(0, 20), st.integers(0, 50)),
    kind=st.sampled_from(["fixed", "aimd", "gradient"]),
)
def test_every_limit_stays_a_whole_number_within_its_bounds_whatever_the_samples(
    samples: list[tuple[float, int, bool]], bounds: tuple[int, int, int], kind: str
) -> None:
    low, above_low, above_initial = bounds
    initial, high = low + above_low, low + above_low + above_initial
    makers: dict[str, Callable[[], ConcurrencyLimit]] = {
        "fixed": lambda: FixedConcurrencyLimit(limit=initial),
        "aimd": lambda: aimd(min_limit=low, initial_limit=initial, max_limit=high),
        "gradient": lambda: gradient(min_limit=low, initial_limit=initial, max_limit=high),
    }
    limit = makers[kind]()
    for latency_s, in_flight, dropped in samples:
        limit.on_sample(latency_s=latency_s, in_flight=in_flight, dropped=dropped)
        assert isinstance(limit.limit, int)
        assert low <= limit.limit <= high
