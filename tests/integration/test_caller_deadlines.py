"""Caller deadlines on real PostgreSQL: each stage ends at the deadline and says which stage it was."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from urllib.parse import urlsplit

import pytest
from sqlalchemy import text

from adapters.memory.circuit_breaker import InMemoryCircuitBreaker
from adapters.memory.rate_limiter import TokenBucketRateLimiter, UnlimitedRateLimiter
from adapters.memory.replica_strategy import RoundRobinReplicaStrategy
from adapters.postgres.fault_proxy import FaultProxy
from adapters.sqlalchemy.connection_provider import SqlAlchemyConnectionProvider
from adapters.sqlalchemy.ledger.repositories import ledger_repositories
from adapters.sqlalchemy.provider_options import MonitorOptions, PoolOptions, TimeoutOptions
from adapters.sqlalchemy.unit_of_work import DEADLINE_GRACE_S, SqlAlchemyUnitOfWork
from ports.connection_provider import Intent
from ports.deadline import deadline_scope
from ports.errors import DeadlineExceededError
from ports.rate_limiter import RateLimiter
from tests.support import fetch_value

APP = "hex-deadline-test"
# The bound is 200 +- 50 ms; the upper side gets more room for a loaded 2-core machine.
EARLIEST_S, LATEST_S = 0.15, 0.4


def _provider(
    url: str, *, pool_size: int = 2, acquire_timeout_s: float = 5.0
) -> SqlAlchemyConnectionProvider:
    return SqlAlchemyConnectionProvider(
        writer_url=url,
        pool=PoolOptions(pool_size=pool_size, max_overflow=0, acquire_timeout_s=acquire_timeout_s),
        timeouts=TimeoutOptions(statement_timeout_s=30.0),
        monitor=MonitorOptions(stats_log_interval_s=None),
        application_name=APP,
    )


def _unit(
    provider: SqlAlchemyConnectionProvider, limiter: RateLimiter | None = None
) -> SqlAlchemyUnitOfWork[object]:
    return SqlAlchemyUnitOfWork(
        provider=provider,
        repositories=ledger_repositories,
        rate_limiter=limiter or UnlimitedRateLimiter(),
        circuit_breaker=InMemoryCircuitBreaker(),
        replica_strategy=RoundRobinReplicaStrategy(),
        intent=Intent.WRITE,
    )


@pytest.fixture
async def provider(database_url: str) -> AsyncIterator[SqlAlchemyConnectionProvider]:
    built = _provider(database_url)
    yield built
    await built.aclose(timeout_s=5)


async def _active_sleeps(admin_dsn: str) -> object:
    return await fetch_value(
        admin_dsn,
        f"SELECT count(*) FROM pg_stat_activity WHERE application_name = '{APP}' "
        "AND state = 'active' AND query LIKE '%pg_sleep%'",
    )


async def test_a_one_second_sleep_under_a_200_ms_deadline_is_cancelled_by_the_server_at_the_deadline(
    provider: SqlAlchemyConnectionProvider, admin_dsn: str
) -> None:
    started = time.monotonic()
    with deadline_scope(0.2), pytest.raises(DeadlineExceededError) as raised:
        async with _unit(provider) as uow:
            await uow.connection.execute(text("SELECT pg_sleep(1)"))
    took = time.monotonic() - started

    assert raised.value.stage == "statement"
    assert not raised.value.server_unresponsive  # the server answered: it cancelled the statement
    assert EARLIEST_S <= took <= LATEST_S, took
    await asyncio.sleep(0.2)
    assert await _active_sleeps(admin_dsn) == 0
    # Reusable: the pooled connections serve the next unit; nothing was discarded or replaced
    # (the pool holds its two, the fill to min_idle, and opened no other).
    async with _unit(provider) as uow:
        assert (await uow.connection.execute(text("SELECT 1"))).scalar_one() == 1
    writer = provider.stats().targets[0]
    assert (writer.opened, writer.lost) == (2, 0)
    assert provider.checked_out == 0


async def test_the_server_side_timeout_is_sent_only_when_the_deadline_is_the_shorter(
    provider: SqlAlchemyConnectionProvider,
) -> None:
    with deadline_scope(5.0):
        async with _unit(provider) as uow:
            short = (await uow.connection.execute(text("SHOW statement_timeout"))).scalar_one()
    with deadline_scope(60.0):
        async with _unit(provider) as uow:
            long = (await uow.connection.execute(text("SHOW statement_timeout"))).scalar_one()
    # A budget as long as the configured timeout (give or take the grace): that timeout serves.
    with deadline_scope(30.0 - DEADLINE_GRACE_S / 2):
        async with _unit(provider) as uow:
            matching = (await uow.connection.execute(text("SHOW statement_timeout"))).scalar_one()
    async with _unit(provider) as uow:
        none = (await uow.connection.execute(text("SHOW statement_timeout"))).scalar_one()

    assert short.endswith("ms")
    assert 4000 < int(short.removesuffix("ms")) <= 5000
    assert long == matching == none == "30s"  # SET LOCAL ended with its transaction; the pool's own value


async def test_an_expired_deadline_costs_no_checkout_and_no_round_trip(
    provider: SqlAlchemyConnectionProvider,
) -> None:
    with deadline_scope(0), pytest.raises(DeadlineExceededError) as raised:
        async with _unit(provider):
            pass

    assert raised.value.stage == "start"
    writer = provider.stats().targets[0]
    assert (writer.served, writer.opened) == (0, 0)


async def test_a_deadline_shorter_than_the_pool_wait_ends_the_wait_at_the_deadline(database_url: str) -> None:
    provider = _provider(database_url, pool_size=1, acquire_timeout_s=5.0)
    try:
        async with provider.connection(Intent.WRITE):
            started = time.monotonic()
            with deadline_scope(0.3), pytest.raises(DeadlineExceededError) as raised:
                async with _unit(provider):
                    pass
            took = time.monotonic() - started
    finally:
        await provider.aclose(timeout_s=5)

    assert raised.value.stage == "admission"
    assert 0.25 <= took < 1.0, took  # the deadline's 0.3 s, not the acquire timeout's 5 s


async def test_a_rate_limiter_wait_longer_than_the_time_left_ends_at_the_deadline(
    provider: SqlAlchemyConnectionProvider,
) -> None:
    limiter = TokenBucketRateLimiter(rate_per_s=1.0, burst=1.0, max_wait_s=10.0)
    await limiter.acquire()  # the next token comes in a second
    with deadline_scope(0.1), pytest.raises(DeadlineExceededError) as raised:
        async with _unit(provider, limiter):
            pass

    assert raised.value.stage == "rate_limiter"
    assert provider.stats().targets[0].served == 0
    assert limiter.tokens() < 1.0  # the abandoned reservation was handed back: only refill counts


@pytest.fixture
def proxy(database_url: str) -> Iterator[FaultProxy]:
    with FaultProxy(upstream_port=urlsplit(database_url).port or 5432) as running:
        yield running


async def test_a_request_left_unanswered_is_cut_just_after_the_deadline_and_its_connection_discarded(
    proxy: FaultProxy, database_url: str
) -> None:
    provider = _provider(proxy.dsn(database_url))
    try:
        started = time.monotonic()

        async def query_in_the_black_hole() -> None:
            async with _unit(provider) as uow:
                await uow.connection.execute(text("SELECT 1"))
                proxy.black_hole()
                await uow.connection.execute(text("SELECT 2"))

        with deadline_scope(0.3), pytest.raises(DeadlineExceededError) as raised:
            await query_in_the_black_hole()
        took = time.monotonic() - started
        proxy.black_hole(False)

        assert raised.value.stage == "statement"
        assert raised.value.server_unresponsive
        assert 0.3 <= took < 0.9, took  # the deadline plus the 0.1 s grace, and slack
        assert provider.stats().targets[0].lost == 1
        async with _unit(provider) as uow:  # a fresh connection serves the next unit
            assert (await uow.connection.execute(text("SELECT 3"))).scalar_one() == 3
    finally:
        proxy.black_hole(False)
        await provider.aclose(timeout_s=5)
