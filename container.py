"""The composition root: the only module that names concrete adapters.

``KernelContainer`` wires every port to the implementation the settings choose (policies,
connection provider, replica strategy, the unit-of-work factory) and names no example: the
repositories a unit of work hands out are a dependency, given by whoever builds the container
(``create_kernel_container(settings, repositories)``). ``Container`` is the example ledger's
container: the kernel with the ledger's repositories and use cases (``create_container(settings)``).
Stateful policies and the connection provider are singletons; units of work and use cases are
factories; the provider's disposal is a ``Resource`` (``await stop_resources(container)``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from dependency_injector import containers, providers
from opentelemetry import metrics as otel_metrics
from opentelemetry import trace as otel_trace

from adapters.credentials.command import CommandCredentialProvider
from adapters.credentials.file import FileCredentialProvider
from adapters.credentials.static import StaticCredentialProvider
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
from adapters.opentelemetry import (
    METER_NAME,
    OtelPoolObservers,
    PolicySources,
    observe_policies,
    observe_pools,
)
from adapters.redis import (
    GuardedRedis,
    RedisGcraRateLimiter,
    RedisOptions,
    RedisSharedCircuitBreaker,
    create_guarded_redis,
)
from adapters.sqlalchemy.connect_args import TlsOptions, connect_args
from adapters.sqlalchemy.connection_provider import SqlAlchemyConnectionProvider
from adapters.sqlalchemy.ledger.repositories import SqlAlchemyLedgerRepositories, ledger_repositories
from adapters.sqlalchemy.pool_observer import PoolObserver, no_observer
from adapters.sqlalchemy.provider_options import MonitorOptions, PoolOptions, ReplicaOptions, TimeoutOptions
from adapters.sqlalchemy.recovery_probe import RecoveryProber
from adapters.sqlalchemy.unit_of_work import SqlAlchemyUnitOfWork, Transaction
from adapters.structlog.logging import SecretScrubber, configure_logging
from app.ledger.use_cases import AuditLedger, Deposit, GetBalance, GetStatement, OpenAccount, TransferMoney
from app.metrics import Metrics
from app.retry import RetryPolicy
from app.retry_budget import RetryBudget, TokenRetryBudget, UnlimitedRetryBudget
from app.telemetry import UseCaseTelemetry
from ports.circuit_breaker import CircuitBreaker
from ports.concurrency_limit import ConcurrencyLimit
from ports.connection_provider import WRITER
from ports.credential_provider import CredentialProvider
from ports.errors import ConfigurationError
from ports.rate_limiter import RateLimiter
from settings import (
    CircuitBreakerSettings,
    CredentialSettings,
    DatabaseSettings,
    RateLimiterSettings,
    RedisSettings,
    ReplicaSettings,
    Settings,
    TlsSettings,
)


def build_connection_provider(
    database: DatabaseSettings,
    *,
    target_connect_args: Mapping[str, Mapping[str, Any]] | None = None,
    concurrency_limit: Callable[[], ConcurrencyLimit] | None = None,
    replicas: ReplicaSettings | None = None,
    on_stuck: Callable[[str, int], None] | None = None,
    stuck_after_s: float | None = None,
    observe: Callable[[str], PoolObserver] = no_observer,
) -> SqlAlchemyConnectionProvider:
    """The SQLAlchemy provider for the configured writer and replicas; secrets are read only here.

    Requests left unanswered for ``stuck_after_s`` are reported to ``on_stuck`` (the breaker).
    """
    if database.url is None:
        raise ConfigurationError("database.url: not set (set DATABASE_URL or HEX_DATABASE__URL)")
    replicas = replicas or ReplicaSettings()  # their count matches the URLs': checked by the settings
    return SqlAlchemyConnectionProvider(
        writer_url=database.url.get_secret_value(),
        replica_urls=[url.get_secret_value() for url in database.replica_urls],
        pool=PoolOptions(
            pool_size=database.pool_size,
            max_overflow=database.max_overflow,
            max_waiting=database.max_waiting,
            acquire_timeout_s=database.acquire_timeout_s,
            max_lifetime_s=database.max_lifetime_s,
            lifetime_jitter=database.lifetime_jitter,
            pre_ping=database.pre_ping,
            keepalive_s=database.keepalive_s,
            idle_timeout_s=database.idle_timeout_s,
            min_idle=database.min_idle,
            max_concurrent_connects=database.max_concurrent_connects,
            overload_wait_s=database.overload_wait_s,
            overload_window_s=database.overload_window_s,
            pgbouncer=database.pgbouncer,
        ),
        timeouts=TimeoutOptions(
            connect_timeout_s=database.connect_timeout_s,
            statement_timeout_s=database.statement_timeout_s,
            idle_in_transaction_timeout_s=database.idle_in_transaction_timeout_s,
            lock_timeout_s=database.lock_timeout_s,
        ),
        replicas=ReplicaOptions(
            eject_s=database.replica_eject_s,
            weights=replicas.weights,
            probe_interval_s=replicas.probe_interval_s if database.replica_urls else None,
            probe_timeout_s=replicas.probe_timeout_s,
        ),
        monitor=MonitorOptions(
            leak_detection_threshold_s=database.leak_detection_threshold_s,
            reclaim_after_s=database.reclaim_after_s,
            stats_log_interval_s=database.stats_log_interval_s,
            stuck_after_s=stuck_after_s,
        ),
        application_name=database.application_name,
        target_connect_args=target_connect_args,
        on_stuck=on_stuck,
        concurrency_limit=concurrency_limit,
        observe=observe,
    )


def _tls_options(group: TlsSettings) -> TlsOptions:
    password = None if group.key_password is None else group.key_password.get_secret_value()
    return TlsOptions(
        mode=group.mode,
        ca_file=group.ca_file,
        cert_file=group.cert_file,
        key_file=group.key_file,
        key_password=password,
    )


def build_target_connect_args(
    settings: Settings,
    writer_credentials: CredentialProvider | None,
    replica_credentials: CredentialProvider | None,
) -> dict[str, dict[str, Any]]:
    """asyncpg's extra arguments per target: TLS from ``tls`` / ``replica_tls``, and the password source."""
    writer = connect_args(_tls_options(settings.tls), credentials=writer_credentials)
    replica_tls, setting = (
        (settings.tls, "tls") if settings.replica_tls is None else (settings.replica_tls, "replica_tls")
    )
    replica = connect_args(_tls_options(replica_tls), credentials=replica_credentials, setting=setting)
    # The provider names its replicas replica-1, replica-2, ... in the order of replica_urls.
    replicas = {f"replica-{i}": dict(replica) for i in range(1, len(settings.database.replica_urls) + 1)}
    return {WRITER: writer, **replicas}


def build_migration_provider(
    settings: Settings, service_credentials: CredentialProvider | None
) -> SqlAlchemyConnectionProvider:
    """A one-connection provider for migrations; the caller closes it.

    It logs in as the schema owner of ``migration.url`` when that is set (with that DSN's
    password), else as the service's own role; TLS is the writer's either way.
    """
    url = settings.migration.url or settings.database.url
    if url is None:
        raise ConfigurationError("database.url: not set (set DATABASE_URL or HEX_DATABASE__URL)")
    credentials = service_credentials if settings.migration.url is None else None
    return SqlAlchemyConnectionProvider(
        writer_url=url.get_secret_value(),
        application_name=settings.database.application_name,
        target_connect_args={WRITER: connect_args(_tls_options(settings.tls), credentials=credentials)},
        pool=PoolOptions(pool_size=1, max_overflow=0),
        timeouts=TimeoutOptions(connect_timeout_s=settings.database.connect_timeout_s),
        monitor=MonitorOptions(stats_log_interval_s=None),
    )


def build_guarded_redis(group: RedisSettings) -> GuardedRedis:
    """The policies' Redis client (nothing connects yet); the URL's password is read only here."""
    if group.url is None:
        raise ConfigurationError("redis.url: not set (set HEX_REDIS__URL)")
    key_password = None if group.tls_key_password is None else group.tls_key_password.get_secret_value()
    return create_guarded_redis(
        RedisOptions(
            url=group.url.get_secret_value(),
            call_timeout_s=group.call_timeout_s,
            connect_timeout_s=group.connect_timeout_s,
            max_connections=group.max_connections,
            tls_mode=group.tls_mode,
            tls_ca_file=group.tls_ca_file,
            tls_cert_file=group.tls_cert_file,
            tls_key_file=group.tls_key_file,
            tls_key_password=key_password,
            breaker_failures=group.breaker_failures,
            breaker_open_s=group.breaker_open_s,
        )
    )


def build_redis_rate_limiter(
    group: RateLimiterSettings, redis: GuardedRedis, key_prefix: str
) -> RedisGcraRateLimiter:
    """The shared GCRA limiter; with ``failure_mode=local`` its fallback holds this instance's share."""
    fallback: RateLimiter | None = None
    if group.failure_mode == "local":
        fallback = TokenBucketRateLimiter(
            rate_per_s=group.rate_per_s * group.local_share,
            burst=max(1.0, group.burst * group.local_share),
            max_wait_s=group.max_wait_s,
        )
    return RedisGcraRateLimiter(
        redis=redis,
        rate_per_s=group.rate_per_s,
        burst=group.burst,
        max_wait_s=group.max_wait_s,
        key_prefix=key_prefix,
        failure_mode=group.failure_mode,
        local_fallback=fallback,
    )


async def _redis_lifecycle(redis: GuardedRedis | None) -> AsyncIterator[GuardedRedis | None]:
    yield redis
    if redis is not None:
        await redis.aclose()


def _credential_branches(group: Any) -> dict[str, providers.Provider[Any]]:
    """One branch per ``CredentialSettings.source``, reading the (provided) settings ``group``."""
    return {
        # The DSN carries the password: asyncpg is given no password source of ours.
        "dsn": providers.Object(None),
        "static": providers.Singleton(
            StaticCredentialProvider, password=group.password.get_secret_value.call()
        ),
        "file": providers.Singleton(FileCredentialProvider, path=group.password_file),
        "command": providers.Singleton(
            CommandCredentialProvider,
            argv=group.argv,
            timeout_s=group.command_timeout_s,
            token_ttl_s=group.token_ttl_s,
        ),
    }


def _replica_credential_source(settings: Settings) -> str:
    group: CredentialSettings | None = settings.replica_credentials
    return "inherit" if group is None else group.source


def build_recovery_prober(
    provider: SqlAlchemyConnectionProvider,
    breaker: CircuitBreaker,
    group: CircuitBreakerSettings,
    connect_timeout_s: float,
) -> RecoveryProber | None:
    """The probes of open circuits (``None`` when ``probe_interval_s`` is unset), one per target."""
    if group.probe_interval_s is None:
        return None
    # Probing slower than the recovery time is pointless: the breaker half-opens by itself then.
    max_interval_s = min(group.probe_max_interval_s, group.recovery_time_s)
    connect = provider.probe_connector
    return RecoveryProber(
        breaker=breaker,
        connectors={name: connect(name, timeout_s=connect_timeout_s) for name in provider.target_names},
        on_recovered=provider.discard_idle,
        interval_s=min(group.probe_interval_s, max_interval_s),
        max_interval_s=max_interval_s,
        timeout_s=connect_timeout_s,
    )


def _pool_observers(meter_provider: otel_metrics.MeterProvider) -> OtelPoolObservers:
    return OtelPoolObservers(meter_provider.get_meter(METER_NAME))


async def _metrics_lifecycle(
    meter_provider: otel_metrics.MeterProvider,
    provider: SqlAlchemyConnectionProvider,
    circuit_breaker: CircuitBreaker,
    rate_limiter: RateLimiter,
    retry_budget: RetryBudget,
    metrics: Metrics,
) -> AsyncIterator[None]:
    """The observable instruments of the pools and policies, for as long as the container runs.

    Registered on the container's meter provider (the API's global one unless an entry point gave
    an SDK's): with the API alone they are no-ops. One container per meter provider: an SDK keeps
    the callbacks of an instrument's first registration only.
    """
    meter = meter_provider.get_meter(METER_NAME)
    options = provider.pool_options
    idle_min = options.pool_size if options.min_idle is None else options.min_idle
    stop_pools = observe_pools(
        meter,
        provider.stats,
        limits=(options.capacity, options.pool_size, idle_min),
        queued=provider.queued_by_priority,
    )
    stop_policies = observe_policies(
        meter, PolicySources(provider.target_names, circuit_breaker, rate_limiter, retry_budget, metrics)
    )
    yield
    stop_pools()
    stop_policies()


def _sql_spans(
    enabled: bool, provider: SqlAlchemyConnectionProvider, tracer_provider: otel_trace.TracerProvider
) -> int:
    """A ``CLIENT`` span per statement on every engine of ``provider`` when ``telemetry.sql_spans``.

    The writer's engine and each replica's, recorded by the container's tracer provider, so the
    SQL spans sit under the unit of work's span. The instrumentation belongs to the ``telemetry``
    extra and is wired by the entry points' module (``telemetry.trace_sql``: why not the
    instrumentor, nor the asyncpg instrumentation, is said there); it is imported only when
    switched on (the settings checked it is installed). Returns how many engines are traced.
    """
    if not enabled:
        return 0
    from telemetry import trace_sql

    engines = [provider.engine(name).sync_engine for name in provider.target_names]
    trace_sql(engines, tracer_provider)
    return len(engines)


async def _provider_lifecycle(
    provider: SqlAlchemyConnectionProvider, teardown_timeout_s: float, prober: RecoveryProber | None
) -> AsyncIterator[SqlAlchemyConnectionProvider]:
    if prober is not None:
        prober.start()
    yield provider
    if prober is not None:
        await prober.aclose()
    await provider.aclose(teardown_timeout_s)


def _pick(path: str) -> Any:
    """A selector reading a dotted settings field, e.g. ``"rate_limiter.implementation"``."""

    def select(settings: Settings) -> Any:
        value: Any = settings
        for part in path.split("."):
            value = getattr(value, part)
        return value

    return select


@dataclass(frozen=True, slots=True)
class ConcurrencyBounds:
    """The admission limit's bounds per target, with the pool's capacity filled in for the defaults."""

    min_limit: int
    initial_limit: int
    max_limit: int


def concurrency_bounds(settings: Settings) -> ConcurrencyBounds:
    """The ``concurrency`` bounds: ``max_limit`` defaults to the pool's capacity, ``initial_limit`` to it."""
    return ConcurrencyBounds(*settings.concurrency_bounds())


class KernelContainer(containers.DeclarativeContainer):
    """Every provider of the kernel, keyed by role; besides the settings, it depends on the repositories."""

    settings = providers.Dependency(instance_of=Settings)
    #: Builds the repositories of one transaction: ``Callable[[Transaction], R]``.
    repositories: providers.Dependency[Callable[..., Any]] = providers.Dependency()

    metrics = providers.Singleton(Metrics)

    # The OpenTelemetry providers: the API's global ones (no-ops until an SDK is installed), unless
    # an entry point or a test overrides them with an SDK's (see telemetry.py).
    meter_provider = providers.Callable(otel_metrics.get_meter_provider)
    tracer_provider = providers.Callable(otel_trace.get_tracer_provider)
    telemetry = providers.Singleton(
        UseCaseTelemetry, tracer_provider=tracer_provider, meter_provider=meter_provider
    )
    pool_observers = providers.Singleton(_pool_observers, meter_provider)

    retry_policy = providers.Singleton(
        RetryPolicy,
        max_attempts=settings.provided.retry.max_attempts,
        initial_backoff_s=settings.provided.retry.initial_backoff_s,
        max_backoff_s=settings.provided.retry.max_backoff_s,
        max_total_s=settings.provided.retry.max_total_s,
        wait=settings.provided.retry.wait,
    )

    # One budget per process, shared by every use case: retries of all callers count together.
    retry_budget = providers.Selector(
        providers.Callable(_pick("retry.budget"), settings),
        unlimited=providers.Singleton(UnlimitedRetryBudget),
        token=providers.Singleton(
            TokenRetryBudget,
            ratio=settings.provided.retry.budget_ratio,
            min_retries_per_s=settings.provided.retry.budget_min_retries_per_s,
            ttl_s=settings.provided.retry.budget_ttl_s,
        ),
    )

    # Built only when a policy asks for Redis (None otherwise); its own Resource closes it, since a
    # Resource inside a Selector branch would be started whatever the settings choose.
    redis = providers.Selector(
        providers.Callable(lambda settings: "yes" if settings.uses_redis else "no", settings),
        yes=providers.Singleton(build_guarded_redis, settings.provided.redis),
        no=providers.Object(None),
    )
    redis_lifecycle = providers.Resource(_redis_lifecycle, redis)

    rate_limiter = providers.Selector(
        providers.Callable(_pick("rate_limiter.implementation"), settings),
        unlimited=providers.Singleton(UnlimitedRateLimiter),
        token_bucket=providers.Singleton(
            TokenBucketRateLimiter,
            rate_per_s=settings.provided.rate_limiter.rate_per_s,
            burst=settings.provided.rate_limiter.burst,
            max_wait_s=settings.provided.rate_limiter.max_wait_s,
        ),
        sliding_window=providers.Singleton(
            SlidingWindowRateLimiter,
            rate_per_s=settings.provided.rate_limiter.rate_per_s,
            window_s=settings.provided.rate_limiter.window_s,
            max_wait_s=settings.provided.rate_limiter.max_wait_s,
        ),
        redis=providers.Singleton(
            build_redis_rate_limiter,
            settings.provided.rate_limiter,
            redis,
            settings.provided.redis.key_prefix,
        ),
    )

    local_circuit_breaker = providers.Singleton(
        InMemoryCircuitBreaker,
        window=settings.provided.circuit_breaker.window,
        window_size=settings.provided.circuit_breaker.window_size,
        minimum_calls=settings.provided.circuit_breaker.minimum_calls,
        failure_rate_threshold=settings.provided.circuit_breaker.failure_rate_threshold,
        slow_call_rate_threshold=settings.provided.circuit_breaker.slow_call_rate_threshold,
        slow_call_duration_s=settings.provided.circuit_breaker.slow_call_duration_s,
        recovery_time_s=settings.provided.circuit_breaker.recovery_time_s,
        half_open_max_calls=settings.provided.circuit_breaker.half_open_max_calls,
    )
    circuit_breaker = providers.Selector(
        providers.Callable(_pick("circuit_breaker.implementation"), settings),
        always_closed=providers.Singleton(AlwaysClosedCircuitBreaker),
        in_memory=local_circuit_breaker,
        # Counting stays local; only the OPEN flag (and the one probe after it) is shared.
        shared_redis=providers.Singleton(
            RedisSharedCircuitBreaker,
            inner=local_circuit_breaker,
            redis=redis,
            open_s=settings.provided.circuit_breaker.recovery_time_s,
            key_prefix=settings.provided.redis.key_prefix,
            quorum=settings.provided.circuit_breaker.shared_quorum,
            quorum_window_s=settings.provided.circuit_breaker.shared_quorum_window_s,
            refresh_interval_s=settings.provided.circuit_breaker.shared_refresh_s,
            probe_ttl_s=settings.provided.circuit_breaker.shared_probe_ttl_s,
            trial_calls=settings.provided.circuit_breaker.half_open_max_calls,
        ),
    )

    # A Factory, not a Singleton: each target's admission gate learns its own limit, so whoever
    # builds the gates calls this once per target (or takes ``concurrency_limit.provider``).
    concurrency_bounds = providers.Callable(concurrency_bounds, settings)
    concurrency_limit = providers.Selector(
        providers.Callable(_pick("concurrency.implementation"), settings),
        fixed=providers.Factory(FixedConcurrencyLimit, limit=concurrency_bounds.provided.initial_limit),
        aimd=providers.Factory(
            AimdConcurrencyLimit,
            initial_limit=concurrency_bounds.provided.initial_limit,
            min_limit=concurrency_bounds.provided.min_limit,
            max_limit=concurrency_bounds.provided.max_limit,
            backoff_ratio=settings.provided.concurrency.backoff_ratio,
            slow_latency_s=settings.provided.concurrency.slow_latency_s,
        ),
        gradient=providers.Factory(
            GradientConcurrencyLimit,
            initial_limit=concurrency_bounds.provided.initial_limit,
            min_limit=concurrency_bounds.provided.min_limit,
            max_limit=concurrency_bounds.provided.max_limit,
            smoothing=settings.provided.concurrency.smoothing,
            rtt_tolerance=settings.provided.concurrency.rtt_tolerance,
            long_window=settings.provided.concurrency.long_window,
            queue_size=settings.provided.concurrency.queue_size,
        ),
    )

    writer_credentials = providers.Selector(
        providers.Callable(_pick("credentials.source"), settings),
        **_credential_branches(settings.provided.credentials),
    )
    # Replicas share the writer's provider (and a command's cached token) unless configured apart.
    replica_credentials = providers.Selector(
        providers.Callable(_replica_credential_source, settings),
        inherit=writer_credentials,
        **_credential_branches(settings.provided.replica_credentials),
    )
    target_connect_args = providers.Singleton(
        build_target_connect_args, settings, writer_credentials, replica_credentials
    )

    connection_provider = providers.Singleton(
        build_connection_provider,
        settings.provided.database,
        target_connect_args=target_connect_args,
        concurrency_limit=concurrency_limit.provider,
        replicas=settings.provided.replicas,
        # A request the server leaves unanswered for the slow-call duration counts while it runs.
        on_stuck=circuit_breaker.provided.record_stuck,
        stuck_after_s=settings.provided.circuit_breaker.slow_call_duration_s,
        observe=pool_observers,
    )
    recovery_prober = providers.Singleton(
        build_recovery_prober,
        connection_provider,
        circuit_breaker,
        settings.provided.circuit_breaker,
        settings.provided.database.connect_timeout_s,
    )
    migration_provider = providers.Factory(build_migration_provider, settings, writer_credentials)

    lifecycle = providers.Resource(
        _provider_lifecycle,
        connection_provider,
        settings.provided.database.teardown_timeout_s,
        recovery_prober,
    )
    # A Resource so that start_resources() wires it before the first statement; nothing to undo:
    # the listeners go with the engines.
    sql_spans = providers.Resource(
        _sql_spans, settings.provided.telemetry.sql_spans, connection_provider, tracer_provider
    )
    metrics_lifecycle = providers.Resource(
        _metrics_lifecycle,
        meter_provider,
        connection_provider,
        circuit_breaker,
        rate_limiter,
        retry_budget,
        metrics,
    )

    replica_strategy = providers.Selector(
        providers.Callable(_pick("replicas.strategy"), settings),
        writer_only=providers.Singleton(WriterOnlyReplicaStrategy),
        round_robin=providers.Singleton(RoundRobinReplicaStrategy),
        random=providers.Singleton(RandomReplicaStrategy),
        weighted=providers.Singleton(WeightedReplicaStrategy),
        least_in_flight=providers.Singleton(LeastInFlightReplicaStrategy),
        # The strategy reports each replica it skips, so the provider's stats say why reads moved.
        lag_aware=providers.Singleton(
            LagAwareReplicaStrategy,
            max_lag_s=settings.provided.replicas.max_lag_s,
            on_skip=connection_provider.provided.record_lag_skip,
        ),
    )

    unit_of_work: providers.Factory[SqlAlchemyUnitOfWork[Any]] = providers.Factory(
        SqlAlchemyUnitOfWork,
        provider=connection_provider,
        repositories=repositories,
        rate_limiter=rate_limiter,
        circuit_breaker=circuit_breaker,
        replica_strategy=replica_strategy,
        fallback_to_writer=settings.provided.replicas.fallback_to_writer,
        isolation_level=settings.provided.database.isolation_level,
        causal_wait_s=settings.provided.replicas.causal_wait_s,
    )

    #: What every ``UseCase`` takes: ``providers.Factory(MyUseCase, **KernelContainer.use_case_deps)``.
    use_case_deps: ClassVar[dict[str, Any]] = {
        "uow_factory": unit_of_work.provider,
        "retry_policy": retry_policy,
        "retry_budget": retry_budget,
        "metrics": metrics,
        "telemetry": telemetry,
    }


class Container(KernelContainer):
    """The example ledger's container: the kernel, plus the ledger's use cases.

    An adopter writes one like it for their own use cases (or uses ``KernelContainer`` directly),
    and gives their repositories to ``create_kernel_container``; nothing in the kernel changes.
    """

    # The kernel's factory, typed for the repositories create_container gives it.
    unit_of_work: providers.Factory[SqlAlchemyUnitOfWork[SqlAlchemyLedgerRepositories]]

    open_account = providers.Factory(OpenAccount, **KernelContainer.use_case_deps)
    deposit = providers.Factory(Deposit, **KernelContainer.use_case_deps)
    transfer = providers.Factory(TransferMoney, **KernelContainer.use_case_deps)
    get_balance = providers.Factory(GetBalance, **KernelContainer.use_case_deps)
    get_statement = providers.Factory(GetStatement, **KernelContainer.use_case_deps)
    audit_ledger = providers.Factory(AuditLedger, **KernelContainer.use_case_deps)


K = TypeVar("K", bound=KernelContainer)


def create_kernel_container(
    settings: Settings,
    repositories: Callable[[Transaction], Any],
    *,
    kind: type[K] = KernelContainer,  # type: ignore[assignment]
) -> K:
    """A ``kind`` container for ``settings``; each unit of work hands out ``repositories(transaction)``."""
    container = kind(settings=providers.Object(settings), repositories=providers.Object(repositories))
    container.check_dependencies()
    return container


def create_container(settings: Settings) -> Container:
    """The example ledger's container for ``settings``; ``await stop_resources(container)`` disposes it."""
    return create_kernel_container(settings, ledger_repositories, kind=Container)


async def start_resources(container: KernelContainer) -> None:
    """Initialise the container's resources (dependency-injector returns an awaitable for async ones)."""
    pending = container.init_resources()
    if pending is not None:
        await pending


async def stop_resources(container: KernelContainer) -> None:
    """Shut the container's resources down: drain and dispose the connection provider."""
    pending = container.shutdown_resources()
    if pending is not None:
        await pending


def watch_served_secrets(container: KernelContainer, scrubber: SecretScrubber) -> None:
    """Make ``scrubber`` mask every secret the credential providers hand out from now on."""
    sources = {container.writer_credentials(), container.replica_credentials()}
    for source in sources:
        if source is not None:
            scrubber.watch(source.served)


def setup_logging(settings: Settings) -> SecretScrubber:
    """Configure structured logs for ``settings``; every configured secret is scrubbed from them."""
    return configure_logging(
        output_format=settings.logging.format, level=settings.logging.level, secrets=settings.secret_values()
    )
