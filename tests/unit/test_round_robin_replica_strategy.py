"""Round robin over replicas: even turns, unhealthy ones skipped, nothing to choose from."""

from __future__ import annotations

from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from adapters.memory.replica_strategy import RoundRobinReplicaStrategy, WriterOnlyReplicaStrategy
from ports.connection_provider import ReplicaView


def replicas(*health: bool) -> tuple[ReplicaView, ...]:
    return tuple(
        ReplicaView(name=f"replica-{index}", healthy=healthy, in_flight=0)
        for index, healthy in enumerate(health)
    )


def names_chosen(
    strategy: RoundRobinReplicaStrategy, views: tuple[ReplicaView, ...], times: int
) -> list[str]:
    chosen = [strategy.choose(views) for _ in range(times)]
    return [view.name if view is not None else "none" for view in chosen]


def test_healthy_replicas_take_strict_turns_in_the_order_given() -> None:
    strategy = RoundRobinReplicaStrategy()
    assert names_chosen(strategy, replicas(True, True, True), 6) == [
        "replica-0",
        "replica-1",
        "replica-2",
        "replica-0",
        "replica-1",
        "replica-2",
    ]


def test_unhealthy_replicas_are_skipped_and_the_others_still_alternate() -> None:
    strategy = RoundRobinReplicaStrategy()
    chosen = names_chosen(strategy, replicas(False, True, False, True, False), 6)
    assert chosen == ["replica-1", "replica-3"] * 3


def test_no_replica_is_chosen_from_an_empty_list_or_when_all_are_unhealthy() -> None:
    strategy = RoundRobinReplicaStrategy()
    assert strategy.choose(()) is None
    assert strategy.choose(replicas(False, False)) is None


def test_a_replica_that_recovers_gets_its_turns_back() -> None:
    strategy = RoundRobinReplicaStrategy()
    names_chosen(strategy, replicas(True, False, True), 5)
    chosen = names_chosen(strategy, replicas(True, True, True), 300)
    assert Counter(chosen) == {"replica-0": 100, "replica-1": 100, "replica-2": 100}


def test_a_list_that_shrinks_between_calls_is_handled() -> None:
    strategy = RoundRobinReplicaStrategy()
    names_chosen(strategy, replicas(True, True, True, True), 3)
    assert names_chosen(strategy, replicas(True, True), 4) == [
        "replica-1",
        "replica-0",
        "replica-1",
        "replica-0",
    ]


@given(health=st.lists(st.booleans(), max_size=8), rounds=st.integers(1, 5))
def test_every_healthy_replica_gets_the_same_share_and_no_unhealthy_one_any(
    health: list[bool], rounds: int
) -> None:
    strategy = RoundRobinReplicaStrategy()
    views = replicas(*health)
    healthy = [view.name for view in views if view.healthy]
    chosen = names_chosen(strategy, views, rounds * max(len(healthy), 1))
    if healthy:
        assert Counter(chosen) == dict.fromkeys(healthy, rounds)
    else:
        assert set(chosen) == {"none"}


def test_the_writer_only_strategy_never_chooses_a_replica() -> None:
    assert WriterOnlyReplicaStrategy().choose(replicas(True, True)) is None
