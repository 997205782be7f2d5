"""The composition root: the only module that names concrete adapters.

``create_container(settings)`` wires every port to the implementation the settings choose, so a
unit of work and the use cases consume ports without knowing which adapter they got. Stateful
policies and the connection provider are singletons; units of work and use cases are factories;
the provider's disposal is the one ``Resource`` (``await container.shutdown_resources()``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, ClassVar

from dependency_injector import containers, providers

from adapters.memory.circuit_breaker import AlwaysClosedCircuitBreaker, InMemoryCircuitBreaker
from adapters.memory.rate_limiter import TokenBucketRateLimiter, UnlimitedRateLimiter
from adapters.memory.replica_strategy import RoundRobinReplicaStrategy, WriterOnlyReplicaStrategy
from adapters.sqlalchemy.connection_provider import SqlAlchemyConnectionProvider
from adapters.sqlalchemy.unit_of_work import SqlAlchemyUnitOfWork
from adapters.structlog.logging import SecretScrubber, configure_logging
from app.metrics import Metrics
from app.retry import RetryPolicy
from app.use_cases import AuditLedger, Deposit, GetBalance, GetStatement, OpenAccount, TransferMoney
from ports.errors import ConfigurationError
from settings import DatabaseSettings, Settings


def build_connection_provider(database: DatabaseSettings) -> SqlAlchemyConnectionProvider:
    """The SQLAlchemy provider for the configured writer and replicas; secrets are read only here."""
    if database.url is None:
        raise ConfigurationError("database.url: not set (set DATABASE_URL or HEX_DATABASE__URL)")
    return SqlAlchemyConnectionProvider(
        writer_url=database.url.get_secret_value(),
        replica_urls=[url.get_secret_value() for url in database.replica_urls],
        pool_size=database.pool_size,
        max_overflow=database.max_overflow,
        acquire_timeout_s=database.acquire_timeout_s,
        connect_timeout_s=database.connect_timeout_s,
        statement_timeout_s=database.statement_timeout_s,
        idle_in_transaction_timeout_s=database.idle_in_transaction_timeout_s,
        lock_timeout_s=database.lock_timeout_s,
        max_lifetime_s=database.max_lifetime_s,
        pre_ping=database.pre_ping,
        replica_eject_s=database.replica_eject_s,
        application_name=database.application_name,
        max_waiting=database.max_waiting,
        lifetime_jitter=database.lifetime_jitter,
        pgbouncer=database.pgbouncer,
        leak_detection_threshold_s=database.leak_detection_threshold_s,
        stats_log_interval_s=database.stats_log_interval_s,
    )


async def _provider_lifecycle(
    provider: SqlAlchemyConnectionProvider, teardown_timeout_s: float
) -> AsyncIterator[SqlAlchemyConnectionProvider]:
    yield provider
    await provider.aclose(teardown_timeout_s)


def _pick(path: str) -> Any:
    """A selector reading a dotted settings field, e.g. ``"rate_limiter.implementation"``."""

    def select(settings: Settings) -> Any:
        value: Any = settings
        for part in path.split("."):
            value = getattr(value, part)
        return value

    return select


class Container(containers.DeclarativeContainer):
    """Every provider of the service, keyed by role."""

    settings = providers.Dependency(instance_of=Settings)

    metrics = providers.Singleton(Metrics)

    retry_policy = providers.Singleton(
        RetryPolicy,
        max_attempts=settings.provided.retry.max_attempts,
        initial_backoff_s=settings.provided.retry.initial_backoff_s,
        max_backoff_s=settings.provided.retry.max_backoff_s,
        max_total_s=settings.provided.retry.max_total_s,
        wait=settings.provided.retry.wait,
    )

    rate_limiter = providers.Selector(
        providers.Callable(_pick("rate_limiter.implementation"), settings),
        unlimited=providers.Singleton(UnlimitedRateLimiter),
        token_bucket=providers.Singleton(
            TokenBucketRateLimiter,
            rate_per_s=settings.provided.rate_limiter.rate_per_s,
            burst=settings.provided.rate_limiter.burst,
            max_wait_s=settings.provided.rate_limiter.max_wait_s,
        ),
    )

    circuit_breaker = providers.Selector(
        providers.Callable(_pick("circuit_breaker.implementation"), settings),
        always_closed=providers.Singleton(AlwaysClosedCircuitBreaker),
        in_memory=providers.Singleton(
            InMemoryCircuitBreaker,
            failure_threshold=settings.provided.circuit_breaker.failure_threshold,
            recovery_time_s=settings.provided.circuit_breaker.recovery_time_s,
            half_open_max_calls=settings.provided.circuit_breaker.half_open_max_calls,
        ),
    )

    replica_strategy = providers.Selector(
        providers.Callable(_pick("replicas.strategy"), settings),
        writer_only=providers.Singleton(WriterOnlyReplicaStrategy),
        round_robin=providers.Singleton(RoundRobinReplicaStrategy),
    )

    connection_provider = providers.Singleton(build_connection_provider, settings.provided.database)

    lifecycle = providers.Resource(
        _provider_lifecycle, connection_provider, settings.provided.database.teardown_timeout_s
    )

    unit_of_work = providers.Factory(
        SqlAlchemyUnitOfWork,
        provider=connection_provider,
        rate_limiter=rate_limiter,
        circuit_breaker=circuit_breaker,
        replica_strategy=replica_strategy,
        fallback_to_writer=settings.provided.replicas.fallback_to_writer,
        isolation_level=settings.provided.database.isolation_level,
    )

    _use_case_deps: ClassVar[dict[str, Any]] = {
        "uow_factory": unit_of_work.provider,
        "retry_policy": retry_policy,
        "metrics": metrics,
    }
    open_account = providers.Factory(OpenAccount, **_use_case_deps)
    deposit = providers.Factory(Deposit, **_use_case_deps)
    transfer = providers.Factory(TransferMoney, **_use_case_deps)
    get_balance = providers.Factory(GetBalance, **_use_case_deps)
    get_statement = providers.Factory(GetStatement, **_use_case_deps)
    audit_ledger = providers.Factory(AuditLedger, **_use_case_deps)


def create_container(settings: Settings) -> Container:
    """A container wired for ``settings``; call ``await container.shutdown_resources()`` to dispose."""
    container = Container(settings=providers.Object(settings))
    container.check_dependencies()
    return container


async def start_resources(container: Container) -> None:
    """Initialise the container's resources (dependency-injector returns an awaitable for async ones)."""
    pending = container.init_resources()
    if pending is not None:
        await pending


async def stop_resources(container: Container) -> None:
    """Shut the container's resources down: drain and dispose the connection provider."""
    pending = container.shutdown_resources()
    if pending is not None:
        await pending


def setup_logging(settings: Settings) -> SecretScrubber:
    """Configure structured logs for ``settings``; every configured secret is scrubbed from them."""
    return configure_logging(
        output_format=settings.logging.format, level=settings.logging.level, secrets=settings.secret_values()
    )
