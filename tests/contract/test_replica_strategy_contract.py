"""The ``ReplicaStrategy`` contract, run against every adapter of the port."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.memory.replica_strategy import RoundRobinReplicaStrategy, WriterOnlyReplicaStrategy
from ports.connection_provider import ReplicaView
from ports.replica_strategy import ReplicaStrategy

StrategyFactory = Callable[[], ReplicaStrategy]

ADAPTERS: dict[str, StrategyFactory] = {
    "round_robin": RoundRobinReplicaStrategy,
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
