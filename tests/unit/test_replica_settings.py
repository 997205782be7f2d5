"""Replica settings: weights per replica, and the lag-aware strategy wired to the provider's stats."""

from __future__ import annotations

import pytest

from container import create_container
from ports.connection_provider import ReplicaView
from ports.errors import ConfigurationError
from settings import load_settings

URL = "postgresql://app:pw@127.0.0.1:1/ledger"  # never connected to: engines connect lazily


def test_weights_must_name_every_replica_or_none_and_are_refused_at_start_up() -> None:
    with pytest.raises(ConfigurationError, match=r"replicas\.weights: 1 given for 2"):
        load_settings(
            environment="test", database={"url": URL, "replica_urls": [URL, URL]}, replicas={"weights": [1]}
        )


def test_a_negative_weight_is_refused_at_start_up_naming_the_field() -> None:
    with pytest.raises(ConfigurationError, match=r"replicas\.weights\.0"):
        load_settings(environment="test", database={"url": URL}, replicas={"weights": [-1]})


def test_the_views_carry_the_configured_weights_in_replica_order() -> None:
    settings = load_settings(
        environment="test", database={"url": URL, "replica_urls": [URL, URL]}, replicas={"weights": [3, 0]}
    )
    views = create_container(settings).connection_provider().replica_views()
    assert [(v.name, v.weight) for v in views] == [("replica-1", 3.0), ("replica-2", 0.0)]


def test_replicas_the_lag_aware_strategy_skips_are_counted_in_the_providers_stats() -> None:
    settings = load_settings(
        environment="test",
        database={"url": URL, "replica_urls": [URL]},
        replicas={"strategy": "lag_aware", "max_lag_s": 0.5},
    )
    container = create_container(settings)
    lagging = ReplicaView(name="replica-1", healthy=True, in_flight=0, lag_s=2.0)

    assert container.replica_strategy().choose([lagging]) is None
    assert container.connection_provider().stats().replicas[0].lag_skips == 1
