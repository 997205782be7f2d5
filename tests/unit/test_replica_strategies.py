"""Random, weighted, least-in-flight and lag-aware replica choice."""

from __future__ import annotations

import random
from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from adapters.memory.replica_strategy import (
    LagAwareReplicaStrategy,
    LeastInFlightReplicaStrategy,
    RandomReplicaStrategy,
    WeightedReplicaStrategy,
)
from ports.connection_provider import ReplicaView
from ports.replica_strategy import ReplicaStrategy


def view(
    name: str, *, healthy: bool = True, in_flight: int = 0, lag_s: float | None = None, weight: float = 1.0
) -> ReplicaView:
    return ReplicaView(name=name, healthy=healthy, in_flight=in_flight, lag_s=lag_s, weight=weight)


def chosen(strategy: ReplicaStrategy, views: list[ReplicaView], times: int) -> list[str]:
    return [getattr(strategy.choose(views), "name", "none") for _ in range(times)]


def test_random_choice_spreads_reads_evenly_over_the_healthy_replicas_only() -> None:
    strategy = RandomReplicaStrategy(rng=random.Random(1))
    counts = Counter(chosen(strategy, [view("a"), view("b", healthy=False), view("c")], 10_000))
    assert set(counts) == {"a", "c"}
    assert abs(counts["a"] - counts["c"]) < 400


def test_weighted_choice_interleaves_shares_as_smooth_round_robin_does() -> None:
    strategy = WeightedReplicaStrategy()
    views = [view("a", weight=5), view("b", weight=1), view("c", weight=1)]
    assert chosen(strategy, views, 7) == ["a", "a", "b", "a", "c", "a", "a"]


@given(weights=st.lists(st.integers(0, 6), min_size=1, max_size=5), rounds=st.integers(1, 4))
def test_every_replica_gets_exactly_its_weights_share_over_whole_rounds(
    weights: list[int], rounds: int
) -> None:
    strategy = WeightedReplicaStrategy()
    views = [view(f"r{i}", weight=w) for i, w in enumerate(weights)]
    counts = Counter(chosen(strategy, views, rounds * sum(weights)))
    assert counts == {f"r{i}": rounds * w for i, w in enumerate(weights) if w}


def test_a_replica_of_weight_zero_or_unhealthy_gets_no_reads_and_none_left_means_none() -> None:
    strategy = WeightedReplicaStrategy()
    assert set(chosen(strategy, [view("a", weight=0), view("b"), view("c", healthy=False)], 10)) == {"b"}
    assert strategy.choose([view("a", weight=0), view("c", healthy=False)]) is None


def test_a_replica_returning_to_the_rotation_brings_no_burst_of_saved_credit() -> None:
    strategy = WeightedReplicaStrategy()
    chosen(strategy, [view("a"), view("b", weight=3)], 3)
    chosen(strategy, [view("a"), view("b", healthy=False)], 10)
    assert chosen(strategy, [view("a"), view("b", weight=3)], 4).count("b") == 3


def test_least_in_flight_picks_the_least_busy_healthy_replica() -> None:
    strategy = LeastInFlightReplicaStrategy()
    views = [view("a", in_flight=3), view("b", in_flight=1), view("c", in_flight=0, healthy=False)]
    assert chosen(strategy, views, 3) == ["b", "b", "b"]


def test_least_in_flight_takes_turns_among_equally_idle_replicas() -> None:
    strategy = LeastInFlightReplicaStrategy()
    assert Counter(chosen(strategy, [view("a"), view("b"), view("c", in_flight=1)], 100)) == {
        "a": 50,
        "b": 50,
    }


def test_lag_aware_skips_replicas_lagging_past_the_limit_and_reports_each_skip() -> None:
    skipped: list[str] = []
    strategy = LagAwareReplicaStrategy(max_lag_s=0.5, on_skip=skipped.append)
    views = [view("slow", lag_s=2.0), view("fresh", lag_s=0.1), view("unknown", lag_s=None)]
    assert Counter(chosen(strategy, views, 4)) == {"fresh": 2, "unknown": 2}
    assert skipped == ["slow"] * 4


def test_lag_aware_chooses_none_when_every_healthy_replica_lags() -> None:
    skipped: list[str] = []
    strategy = LagAwareReplicaStrategy(max_lag_s=0.5, on_skip=skipped.append)
    views = [view("a", lag_s=0.6), view("b", lag_s=9.0), view("down", lag_s=0.0, healthy=False)]
    assert strategy.choose(views) is None
    assert skipped == ["a", "b"]


def test_lag_aware_delegates_the_choice_among_fresh_replicas_to_its_inner_strategy() -> None:
    strategy = LagAwareReplicaStrategy(max_lag_s=1.0, inner=LeastInFlightReplicaStrategy())
    views = [view("busy", in_flight=5, lag_s=0.0), view("idle", in_flight=0, lag_s=0.9), view("x", lag_s=1.5)]
    assert chosen(strategy, views, 3) == ["idle"] * 3
