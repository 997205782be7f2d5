"""The container builds for every environment preset and every policy choice, and resolves everything."""

from __future__ import annotations

import itertools

import pytest
from dependency_injector import providers

from adapters.memory.circuit_breaker import AlwaysClosedCircuitBreaker, InMemoryCircuitBreaker
from adapters.memory.rate_limiter import TokenBucketRateLimiter, UnlimitedRateLimiter
from adapters.memory.replica_strategy import RoundRobinReplicaStrategy, WriterOnlyReplicaStrategy
from container import create_container, start_resources, stop_resources
from ports.errors import ConfigurationError
from settings import load_settings
from tests.fakes import FakeDatabase

URL = "postgresql://app:pw@127.0.0.1:1/ledger"  # never connected to: engines connect lazily
CHOICES = list(
    itertools.product(("dev", "test", "prod"), ("unlimited", "token_bucket"), ("always_closed", "in_memory"))
)


@pytest.mark.parametrize(("environment", "limiter", "breaker"), CHOICES)
@pytest.mark.parametrize("strategy", ["writer_only", "round_robin"])
async def test_every_provider_resolves_for_every_preset_and_choice(
    environment: str, limiter: str, breaker: str, strategy: str
) -> None:
    settings = load_settings(
        environment=environment,
        database={"url": URL, "replica_urls": [URL]},
        rate_limiter={"implementation": limiter},
        circuit_breaker={"implementation": breaker},
        replicas={"strategy": strategy},
    )
    container = create_container(settings)
    await start_resources(container)
    try:
        for name, provider in container.providers.items():
            assert provider() is not None, name
        expected_limiter = {"unlimited": UnlimitedRateLimiter, "token_bucket": TokenBucketRateLimiter}[
            limiter
        ]
        expected_breaker = {"always_closed": AlwaysClosedCircuitBreaker, "in_memory": InMemoryCircuitBreaker}[
            breaker
        ]
        expected_strategy: dict[str, type[object]] = {
            "writer_only": WriterOnlyReplicaStrategy,
            "round_robin": RoundRobinReplicaStrategy,
        }
        assert isinstance(container.rate_limiter(), expected_limiter)
        assert isinstance(container.circuit_breaker(), expected_breaker)
        assert isinstance(container.replica_strategy(), expected_strategy[strategy])
        assert container.circuit_breaker() is container.circuit_breaker()
        assert container.unit_of_work() is not container.unit_of_work()
    finally:
        await stop_resources(container)


def test_a_missing_writer_url_fails_at_start_up_naming_the_setting() -> None:
    container = create_container(load_settings(environment="test"))
    with pytest.raises(ConfigurationError, match=r"database\.url"):
        container.connection_provider()


async def test_a_use_case_provider_can_be_overridden_with_a_fake_unit_of_work() -> None:
    container = create_container(load_settings(environment="test", database={"url": URL}))
    fake = FakeDatabase()
    with container.unit_of_work.override(providers.Callable(fake)):
        open_account = container.open_account()
        account = await open_account("owner")
    assert account in fake.state.accounts
