"""Client instructions per unit of work: ``python -m tests.benchmarks.callgrind_uow MODE N DSN``.

Runs ``N`` units of work (``SELECT 1``, then ``COMMIT``) one after the other. Run it twice under
``valgrind --tool=callgrind`` (N=600 and N=100) and divide the difference of the instruction
counts by 500: start-up and warm-up cancel out. Modes:

- ``uow``: the bare unit of work, its provider unobserved (``make bench``'s configuration e);
- ``uow-api``: its provider observed through the OpenTelemetry API with no SDK installed;
- ``uow-sdk``: the same with the SDK's meter provider (histograms aggregated);
- ``use-case``: a use case around the unit of work, on the API's global (no-op) providers;
- ``use-case-sdk``: the use case, spans and histograms recorded by the SDK (no exporter).
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from sqlalchemy import text

from adapters.memory.circuit_breaker import InMemoryCircuitBreaker
from adapters.memory.rate_limiter import TokenBucketRateLimiter
from adapters.memory.replica_strategy import RoundRobinReplicaStrategy
from adapters.sqlalchemy.connection_provider import SqlAlchemyConnectionProvider
from adapters.sqlalchemy.ledger.repositories import ledger_repositories
from adapters.sqlalchemy.provider_options import MonitorOptions, PoolOptions
from adapters.sqlalchemy.unit_of_work import SqlAlchemyUnitOfWork
from app.metrics import Metrics
from app.retry import RetryPolicy
from app.retry_budget import UnlimitedRetryBudget
from app.use_case import UseCase
from ports.unit_of_work import UnitOfWork

SELECT_1 = text("SELECT 1")


class SelectOne(UseCase[Any]):
    operation = "select_one"

    async def __call__(self) -> None:
        async def body(uow: UnitOfWork[Any]) -> None:
            await uow.connection.execute(SELECT_1)  # type: ignore[attr-defined]  # the SQLAlchemy unit

        await self.run(body)


async def main(mode: str, count: int, dsn: str) -> None:
    meter_provider: Any = None
    tracer_provider: Any = None
    if mode.endswith("-sdk"):
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.trace import TracerProvider

        meter_provider, tracer_provider = MeterProvider(), TracerProvider()
    observe: dict[str, Any] = {}
    if mode != "uow" and mode != "use-case":
        from opentelemetry import metrics

        from adapters.opentelemetry import OtelPoolObservers

        observe["observe"] = OtelPoolObservers(
            (meter_provider or metrics.get_meter_provider()).get_meter("x")
        )
    provider = SqlAlchemyConnectionProvider(
        writer_url=dsn,
        pool=PoolOptions(pool_size=2, max_overflow=0),
        monitor=MonitorOptions(stats_log_interval_s=None),
        **observe,
    )
    limiter, breaker, strategy = (
        TokenBucketRateLimiter(rate_per_s=1e9, burst=1e6),
        InMemoryCircuitBreaker(),
        RoundRobinReplicaStrategy(),
    )

    def unit(**_: Any) -> SqlAlchemyUnitOfWork[Any]:
        return SqlAlchemyUnitOfWork(
            provider=provider,
            repositories=ledger_repositories,
            rate_limiter=limiter,
            circuit_breaker=breaker,
            replica_strategy=strategy,
        )

    async def bare() -> None:
        async with unit() as uow:
            await uow.connection.execute(SELECT_1)
            await uow.commit()

    op = bare
    if mode.startswith("use-case"):
        extra: dict[str, Any] = {}
        if tracer_provider is not None:
            from app.telemetry import UseCaseTelemetry

            extra["telemetry"] = UseCaseTelemetry(
                tracer_provider=tracer_provider, meter_provider=meter_provider
            )
        use_case = SelectOne(
            uow_factory=unit,
            retry_policy=RetryPolicy(wait=False),
            retry_budget=UnlimitedRetryBudget(),
            metrics=Metrics(),
            **extra,
        )
        op = use_case.__call__
    for _ in range(50):
        await op()
    for _ in range(count):
        await op()
    await provider.aclose()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3]))
