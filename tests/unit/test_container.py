"""The container builds for every environment preset and every policy choice, and resolves everything."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from dependency_injector import providers

from adapters.memory.circuit_breaker import AlwaysClosedCircuitBreaker, InMemoryCircuitBreaker
from adapters.memory.concurrency_limit import (
    AimdConcurrencyLimit,
    FixedConcurrencyLimit,
    GradientConcurrencyLimit,
)
from adapters.memory.rate_limiter import (
    SlidingWindowRateLimiter,
    TokenBucketRateLimiter,
    UnlimitedRateLimiter,
)
from adapters.memory.replica_strategy import (
    LagAwareReplicaStrategy,
    LeastInFlightReplicaStrategy,
    RandomReplicaStrategy,
    RoundRobinReplicaStrategy,
    WeightedReplicaStrategy,
    WriterOnlyReplicaStrategy,
)
from adapters.redis import GuardedRedis, RedisGcraRateLimiter, RedisSharedCircuitBreaker
from app.retry_budget import TokenRetryBudget, UnlimitedRetryBudget
from container import create_container, start_resources, stop_resources
from ports.concurrency_limit import ConcurrencyLimit
from ports.errors import ConfigurationError
from settings import load_settings
from tests.fakes import FakeDatabase

URL = "postgresql://app:pw@127.0.0.1:1/ledger"  # never connected to: engines connect lazily
# With the default credentials source ("dsn") there is no password provider: the DSN carries it.
NONE_WHEN_THE_DSN_HAS_THE_PASSWORD = {"writer_credentials", "replica_credentials"}
# Without a policy that asks for Redis there is no Redis client (and nothing to close).
NONE_WITHOUT_REDIS = {"redis", "redis_lifecycle"}
REDIS_URL = "redis://:redis-pw@127.0.0.1:1/0"  # never connected to either: redis-py connects lazily
CHOICES = list(
    itertools.product(
        ("dev", "test", "prod"),
        ("unlimited", "token_bucket", "sliding_window"),
        ("always_closed", "in_memory"),
    )
)
# The choices that no other provider depends on vary together, every value at least once, so the
# product stays small: (retry budget, concurrency limit, breaker window).
INDEPENDENT_CHOICES = [
    ("unlimited", "fixed", "count"),
    ("token", "aimd", "time"),
    ("token", "gradient", "count"),
]


@pytest.mark.parametrize(("environment", "limiter", "breaker"), CHOICES)
@pytest.mark.parametrize(
    "strategy", ["writer_only", "round_robin", "random", "weighted", "least_in_flight", "lag_aware"]
)
@pytest.mark.parametrize(("budget", "concurrency", "window"), INDEPENDENT_CHOICES)
async def test_every_provider_resolves_for_every_preset_and_choice(
    environment: str, limiter: str, breaker: str, strategy: str, budget: str, concurrency: str, window: str
) -> None:
    settings = load_settings(
        environment=environment,
        database={"url": URL, "replica_urls": [URL]},
        rate_limiter={"implementation": limiter},
        circuit_breaker={"implementation": breaker, "window": window},
        replicas={"strategy": strategy},
        retry={"budget": budget},
        concurrency={"implementation": concurrency},
    )
    container = create_container(settings)
    await start_resources(container)
    try:
        for name, provider in container.providers.items():
            resolved = provider()
            may_be_none = NONE_WHEN_THE_DSN_HAS_THE_PASSWORD | NONE_WITHOUT_REDIS
            assert resolved is not None or name in may_be_none, name
            if name == "migration_provider":
                await resolved.aclose()
        expected_limiter: dict[str, type[object]] = {
            "unlimited": UnlimitedRateLimiter,
            "token_bucket": TokenBucketRateLimiter,
            "sliding_window": SlidingWindowRateLimiter,
        }
        expected_breaker = {"always_closed": AlwaysClosedCircuitBreaker, "in_memory": InMemoryCircuitBreaker}[
            breaker
        ]
        expected_strategy: dict[str, type[object]] = {
            "writer_only": WriterOnlyReplicaStrategy,
            "round_robin": RoundRobinReplicaStrategy,
            "random": RandomReplicaStrategy,
            "weighted": WeightedReplicaStrategy,
            "least_in_flight": LeastInFlightReplicaStrategy,
            "lag_aware": LagAwareReplicaStrategy,
        }
        expected_limit: dict[str, type[object]] = {
            "fixed": FixedConcurrencyLimit,
            "aimd": AimdConcurrencyLimit,
            "gradient": GradientConcurrencyLimit,
        }
        expected_budget = {"unlimited": UnlimitedRetryBudget, "token": TokenRetryBudget}[budget]
        assert isinstance(container.rate_limiter(), expected_limiter[limiter])
        assert isinstance(container.circuit_breaker(), expected_breaker)
        assert isinstance(container.replica_strategy(), expected_strategy[strategy])
        assert container.circuit_breaker() is container.circuit_breaker()
        assert isinstance(container.retry_budget(), expected_budget)
        assert container.retry_budget() is container.retry_budget()
        limit: ConcurrencyLimit = container.concurrency_limit()
        assert isinstance(limit, expected_limit[concurrency])
        assert limit is not container.concurrency_limit(), "one limit per target"
        pool = settings.database.pool_size + settings.database.max_overflow
        assert limit.limit == pool
        assert container.unit_of_work() is not container.unit_of_work()
    finally:
        await stop_resources(container)


@pytest.mark.parametrize("environment", ["dev", "test", "prod"])
@pytest.mark.parametrize(("limiter", "breaker"), [("redis", "in_memory"), ("token_bucket", "shared_redis")])
@pytest.mark.parametrize("failure_mode", ["open", "closed", "local"])
async def test_the_redis_policies_resolve_on_one_client_that_shutdown_closes(
    environment: str, limiter: str, breaker: str, failure_mode: str
) -> None:
    settings = load_settings(
        environment=environment,
        database={"url": URL},
        redis={"url": REDIS_URL},
        rate_limiter={"implementation": limiter, "failure_mode": failure_mode},
        circuit_breaker={"implementation": breaker},
    )
    container = create_container(settings)
    await start_resources(container)
    try:
        for name, provider in container.providers.items():
            resolved = provider()
            assert resolved is not None or name in NONE_WHEN_THE_DSN_HAS_THE_PASSWORD, name
            if name == "migration_provider":
                await resolved.aclose()
        redis = container.redis()
        assert isinstance(redis, GuardedRedis)
        lifecycle: Any = container.redis_lifecycle()  # an async Resource resolves to an awaitable
        assert redis is await lifecycle
        if limiter == "redis":
            assert isinstance(container.rate_limiter(), RedisGcraRateLimiter)
        else:
            shared = container.circuit_breaker()
            assert isinstance(shared, RedisSharedCircuitBreaker)
            assert shared._inner is container.local_circuit_breaker()
    finally:
        await stop_resources(container)
    assert redis.client.connection_pool._in_use_connections == set()


def test_a_redis_policy_without_a_redis_url_fails_in_load_settings_naming_the_setting() -> None:
    needing_redis = [
        {"rate_limiter": {"implementation": "redis"}},
        {"circuit_breaker": {"implementation": "shared_redis"}},
    ]
    for groups in needing_redis:
        with pytest.raises(ConfigurationError, match=r"redis\.url") as raised:
            load_settings(environment="test", database={"url": URL}, **groups)
        assert "HEX_REDIS__URL" in str(raised.value)


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


def test_the_concurrency_limit_defaults_to_the_pools_capacity_and_refuses_bounds_that_cross() -> None:
    settings = load_settings(
        environment="test",
        database={"url": URL, "pool_size": 8, "max_overflow": 2},
        concurrency={"implementation": "aimd", "min_limit": 4, "initial_limit": 6},
    )
    limit = create_container(settings).concurrency_limit()
    assert limit.limit == 6
    for _ in range(100):
        limit.on_sample(latency_s=0.001, in_flight=10, dropped=False)
    assert limit.limit == 10
    with pytest.raises(ConfigurationError, match="concurrency: needs min_limit <= initial_limit"):
        load_settings(environment="test", database={"url": URL}, concurrency={"min_limit": 16})


async def test_every_use_case_draws_on_the_one_retry_budget_of_the_process() -> None:
    container = create_container(load_settings(environment="test", database={"url": URL}))
    budget = container.retry_budget()
    assert isinstance(budget, TokenRetryBudget)
    assert container.transfer()._retry_budget is budget
    assert container.get_balance()._retry_budget is budget
