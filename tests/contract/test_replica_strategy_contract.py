"""The ``ReplicaStrategy`` contract, run against every adapter of the port."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.memory.replica_strategy import (
    LagAwareReplicaStrategy,
    LeastInFlightReplicaStrategy,
    RandomReplicaStrategy,
    RoundRobinReplicaStrategy,
    WeightedReplicaStrategy,
    WriterOnlyReplicaStrategy,
)
from ports.connection_provider import ReplicaView
from ports.replica_strategy import ReplicaStrategy

StrategyFactory = Callable[[], ReplicaStrategy]

ADAPTERS: dict[str, StrategyFactory] = {
    "round_robin": RoundRobinReplicaStrategy,
    "random": lambda: RandomReplicaStrategy(rng=random.Random(7)),
    "weighted": WeightedReplicaStrategy,
    "least_in_flight": LeastInFlightReplicaStrategy,
    "lag_aware": lambda: LagAwareReplicaStrategy(max_lag_s=1.0),
    "writer_only": WriterOnlyReplicaStrategy,
}

each_strategy = pytest.mark.parametrize("make_strategy", ADAPTERS.values(), ids=ADAPTERS.keys())

replica_views = st.builds(
    ReplicaView,
    name=st.text(min_size=1, max_size=12),
    healthy=st.booleans(),
    in_flight=st.integers(0, 1000),
    lag_s=st.none() | st.floats(0.0, 3600.0),
    weight=st.floats(0.0, 10.0),
)


@each_strategy
def test_no_replica_is_chosen_from_an_empty_list(make_strategy: StrategyFactory) -> None:
    assert make_strategy().choose([]) is None


@each_strategy
def test_no_replica_is_chosen_when_none_is_healthy(make_strategy: StrategyFactory) -> None:
    views = [ReplicaView(name=f"replica-{index}", healthy=False, in_flight=0) for index in range(3)]
    assert make_strategy().choose(views) is None


@each_strategy
@given(lists=st.lists(st.lists(replica_views, max_size=6), min_size=1, max_size=10))
def test_a_choice_is_always_one_of_the_healthy_replicas_given_or_none(
    make_strategy: StrategyFactory, lists: list[list[ReplicaView]]
) -> None:
    strategy = make_strategy()
    for views in lists:
        for _ in range(3):
            chosen = strategy.choose(views)
            assert chosen is None or (chosen.healthy and any(chosen is view for view in views))


SERVING = {name: factory for name, factory in ADAPTERS.items() if name != "writer_only"}


@pytest.mark.parametrize("make_strategy", SERVING.values(), ids=SERVING.keys())
@given(views=st.lists(replica_views, min_size=1, max_size=6))
def test_a_strategy_that_is_not_switched_off_serves_when_a_fresh_weighted_healthy_replica_exists(
    make_strategy: StrategyFactory, views: list[ReplicaView]
) -> None:
    usable = ReplicaView(name="usable", healthy=True, in_flight=0, lag_s=0.0, weight=1.0)
    strategy = make_strategy()
    for _ in range(3):
        assert strategy.choose([*views, usable]) is not None
