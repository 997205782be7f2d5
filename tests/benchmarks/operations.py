"""The operations both benchmarks compare, (b) to (g), on one writer: wall clock and instructions.

``make bench`` (:mod:`.provider_bench`) times them at several concurrency levels and
``make bench-instructions`` (:mod:`.instructions`) counts their instructions under callgrind;
both build them here, so that the two figures are about the same code:

- (b) ``engine.connect()`` and ``SELECT 1``; (c) an ``AsyncSession`` transaction around it;
- (d) the provider with the rate limiter and the breaker; (e) the unit of work (``SELECT 1``,
  ``COMMIT``);
- (f) an ORM read-modify-write (load one mapped author by key, change it, commit) on a plain
  ``AsyncSession``; (g) the same on the unit of work's session. Both walk the same keys in the
  same order.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from adapters.memory.circuit_breaker import InMemoryCircuitBreaker
from adapters.memory.rate_limiter import TokenBucketRateLimiter
from adapters.memory.replica_strategy import RoundRobinReplicaStrategy
from adapters.sqlalchemy.connection_provider import SqlAlchemyConnectionProvider, asyncpg_url
from adapters.sqlalchemy.ledger.repositories import ledger_repositories
from adapters.sqlalchemy.provider_options import MonitorOptions, PoolOptions
from adapters.sqlalchemy.unit_of_work import SqlAlchemyUnitOfWork, Transaction
from ports.connection_provider import Intent
from ports.rate_limiter import RateLimiter
from tests.orm_model import Author, authors, metadata, orm_repositories

#: How many authors the benchmarks' ORM tables hold.
ORM_ROWS = 1000
Op = Callable[[], Awaitable[None]]
R = TypeVar("R")
SELECT_1 = text("SELECT 1")


@dataclass
class Operations:
    """Plain SQLAlchemy and alchemy-hex on the same writer, pool sizes alike, policies that never refuse."""

    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    provider: SqlAlchemyConnectionProvider
    limiter: RateLimiter
    breaker: InMemoryCircuitBreaker
    strategy: RoundRobinReplicaStrategy
    orm_rows: int

    def unit(
        self, repositories: Callable[[Transaction], R], rate_limiter: RateLimiter | None = None
    ) -> SqlAlchemyUnitOfWork[R]:
        return SqlAlchemyUnitOfWork(
            provider=self.provider,
            repositories=repositories,
            rate_limiter=self.limiter if rate_limiter is None else rate_limiter,
            circuit_breaker=self.breaker,
            replica_strategy=self.strategy,
        )

    def unit_of_work(self, rate_limiter: RateLimiter | None = None) -> Op:
        """(e), with another rate limiter when given."""

        async def e_hex_unit_of_work() -> None:
            async with self.unit(ledger_repositories, rate_limiter) as uow:
                await uow.connection.execute(SELECT_1)
                await uow.commit()

        return e_hex_unit_of_work

    def compared(self) -> dict[str, Op]:
        """(b) to (g), by their names in the benchmarks' figures."""
        engine, sessions, provider, limiter, breaker = (
            self.engine,
            self.sessions,
            self.provider,
            self.limiter,
            self.breaker,
        )
        keys = {"f": iter(range(10**9)), "g": iter(range(10**9))}

        async def sqlalchemy_connect() -> None:
            async with engine.connect() as connection:
                await connection.execute(SELECT_1)

        async def sqlalchemy_session() -> None:
            async with sessions() as session, session.begin():
                await session.execute(SELECT_1)

        async def hex_provider() -> None:
            await limiter.acquire()
            with breaker.guard("writer"):
                async with provider.connection(Intent.WRITE) as connection:
                    await connection.execute(SELECT_1)

        async def sqlalchemy_orm() -> None:
            async with sessions() as session, session.begin():
                author = await session.get(Author, next(keys["f"]) % self.orm_rows + 1)
                assert author is not None
                author.visits += 1

        async def hex_orm_unit_of_work() -> None:
            async with self.unit(orm_repositories) as uow:
                author = await uow.repos.get(next(keys["g"]) % self.orm_rows + 1)
                assert author is not None
                author.visits += 1
                await uow.commit()

        return {
            "b_sqlalchemy_connect": sqlalchemy_connect,
            "c_sqlalchemy_session": sqlalchemy_session,
            "d_hex_provider": hex_provider,
            "e_hex_unit_of_work": self.unit_of_work(),
            "f_sqlalchemy_orm_session": sqlalchemy_orm,
            "g_hex_orm_unit_of_work": hex_orm_unit_of_work,
        }

    async def aclose(self) -> None:
        await self.engine.dispose()
        await self.provider.aclose()


def operations(dsn: str, *, pool_size: int, orm_rows: int, **provider_options: Any) -> Operations:
    """The operations on ``dsn``, both pools of ``pool_size`` (the ORM keys cycle over ``orm_rows``)."""
    engine = create_async_engine(asyncpg_url(dsn), pool_size=pool_size, max_overflow=0)
    provider = SqlAlchemyConnectionProvider(
        writer_url=dsn,
        pool=PoolOptions(pool_size=pool_size, max_overflow=0),
        monitor=MonitorOptions(stats_log_interval_s=None),
        **provider_options,
    )
    return Operations(
        engine=engine,
        sessions=async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False),
        provider=provider,
        limiter=TokenBucketRateLimiter(rate_per_s=1e9, burst=1e6),
        breaker=InMemoryCircuitBreaker(),
        strategy=RoundRobinReplicaStrategy(),
        orm_rows=orm_rows,
    )


async def seed_orm_rows(engine: Any, rows: int = ORM_ROWS) -> None:
    """``rows`` authors in fresh ORM tables, the rows (f) and (g) read and change."""
    async with engine.begin() as connection:
        await connection.run_sync(metadata.drop_all)
        await connection.run_sync(metadata.create_all)
        await connection.execute(authors.insert(), [{"name": f"author-{i}"} for i in range(rows)])
