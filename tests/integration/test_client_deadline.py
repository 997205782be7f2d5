"""The client-side deadline: a request whose answer never comes back ends, nothing else is touched.

The server sits behind the loopback fault proxy; its black hole swallows every byte, as a dropped
network or a frozen server would, so the server's own ``statement_timeout`` can never end the wait.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Iterator
from urllib.parse import urlsplit

import pytest
from sqlalchemy import text
from structlog.testing import capture_logs

from adapters.memory.circuit_breaker import InMemoryCircuitBreaker
from adapters.memory.rate_limiter import UnlimitedRateLimiter
from adapters.memory.replica_strategy import RoundRobinReplicaStrategy
from adapters.postgres.fault_proxy import FaultProxy
from adapters.sqlalchemy.connection_provider import SqlAlchemyConnectionProvider
from adapters.sqlalchemy.ledger.repositories import ledger_repositories
from adapters.sqlalchemy.provider_options import MonitorOptions, PoolOptions, TimeoutOptions
from adapters.sqlalchemy.targets import EngineOptions, _url_and_connect_args
from adapters.sqlalchemy.unit_of_work import SqlAlchemyUnitOfWork
from ports.connection_provider import Intent
from ports.errors import CommitOutcomeUnknownError, DatabaseUnavailableError

STATEMENT_TIMEOUT_S = 0.3
CONNECT_TIMEOUT_S = 0.2
DEADLINE_S = STATEMENT_TIMEOUT_S + CONNECT_TIMEOUT_S
# The watchdog ends a dead request between 1 and 1.25 deadlines after it began; the rest is slack
# for a loaded 2-core machine.
BOUND_S = DEADLINE_S * 1.25 + 1.0


@pytest.fixture
def proxy(database_url: str) -> Iterator[FaultProxy]:
    port = urlsplit(database_url).port or 5432
    with FaultProxy(upstream_port=port) as running:
        yield running


@pytest.fixture
async def provider(proxy: FaultProxy, database_url: str) -> AsyncIterator[SqlAlchemyConnectionProvider]:
    built = SqlAlchemyConnectionProvider(
        writer_url=proxy.dsn(database_url),
        pool=PoolOptions(pool_size=2, max_overflow=0, acquire_timeout_s=2.0),
        timeouts=TimeoutOptions(statement_timeout_s=STATEMENT_TIMEOUT_S, connect_timeout_s=CONNECT_TIMEOUT_S),
        monitor=MonitorOptions(stats_log_interval_s=None),
    )
    yield built
    await built.aclose(timeout_s=5)


async def test_a_request_with_no_answer_ends_within_the_deadline_and_the_next_one_works(
    provider: SqlAlchemyConnectionProvider, proxy: FaultProxy
) -> None:
    started = time.monotonic()

    async def query_in_the_black_hole() -> None:
        nonlocal started
        async with provider.connection(Intent.WRITE) as connection:
            await connection.execute(text("SELECT 1"))
            proxy.black_hole()
            started = time.monotonic()
            await connection.execute(text("SELECT 2"))

    with capture_logs() as logs, pytest.raises(DatabaseUnavailableError):
        await query_in_the_black_hole()
    waited = time.monotonic() - started
    proxy.black_hole(False)
    assert DEADLINE_S <= waited < BOUND_S
    assert [e["target"] for e in logs if e["event"] == "connection.unresponsive"] == ["writer"]
    writer = provider.stats().targets[0]
    assert (writer.unresponsive, writer.lost) == (1, 1)
    async with provider.connection(Intent.WRITE) as connection:
        assert (await connection.execute(text("SELECT 3"))).scalar_one() == 3
    assert provider.checked_out == 0


async def test_a_commit_with_no_answer_reports_an_unknown_outcome(
    provider: SqlAlchemyConnectionProvider, proxy: FaultProxy
) -> None:
    uow = SqlAlchemyUnitOfWork(
        provider=provider,
        repositories=ledger_repositories,
        rate_limiter=UnlimitedRateLimiter(),
        circuit_breaker=InMemoryCircuitBreaker(),
        replica_strategy=RoundRobinReplicaStrategy(),
    )
    started = time.monotonic()

    async def commit_in_the_black_hole() -> None:
        nonlocal started
        async with uow:
            await uow.connection.execute(text("SELECT 1"))
            proxy.black_hole()
            started = time.monotonic()
            await uow.commit()

    with pytest.raises(CommitOutcomeUnknownError):
        await commit_in_the_black_hole()
    assert time.monotonic() - started < 2 * BOUND_S  # the COMMIT, then the ROLLBACK-free release
    proxy.black_hole(False)
    assert provider.checked_out == 0


async def test_a_return_to_the_pool_with_no_answer_ends_within_the_deadline(
    provider: SqlAlchemyConnectionProvider, proxy: FaultProxy
) -> None:
    started = time.monotonic()

    async def return_in_the_black_hole() -> None:
        nonlocal started
        async with provider.connection(Intent.WRITE) as connection:
            await connection.execute(text("SELECT 1"))  # leaves a transaction open: returning rolls back
            proxy.black_hole()
            started = time.monotonic()

    with pytest.raises(DatabaseUnavailableError):
        await return_in_the_black_hole()
    assert time.monotonic() - started < BOUND_S
    proxy.black_hole(False)
    assert provider.stats().targets[0].in_use == 0
    async with provider.connection(Intent.WRITE) as connection:
        assert (await connection.execute(text("SELECT 1"))).scalar_one() == 1


async def test_a_connection_held_without_a_request_is_never_cut_however_long(
    provider: SqlAlchemyConnectionProvider,
) -> None:
    async with provider.connection(Intent.WRITE) as connection:
        await connection.execute(text("SELECT 1"))
        time_held = 3 * DEADLINE_S
        await asyncio.sleep(time_held)
        assert (await connection.execute(text("SELECT 2"))).scalar_one() == 2
    assert provider.stats().targets[0].unresponsive == 0


async def test_a_request_answered_within_the_deadline_is_left_alone(
    provider: SqlAlchemyConnectionProvider, proxy: FaultProxy
) -> None:
    async with provider.connection(Intent.WRITE) as connection:
        proxy.set_latency(DEADLINE_S / 2)  # every round trip slow, but answered
        for _ in range(3):
            assert (await connection.execute(text("SELECT 1"))).scalar_one() == 1
    assert provider.stats().targets[0].unresponsive == 0


def test_asyncpg_keeps_the_deadline_only_where_the_watchdog_cannot() -> None:
    options = EngineOptions(
        pool_size=1,
        max_overflow=0,
        connect_timeout_s=1.0,
        server_settings={},
        max_lifetime_s=60.0,
        lifetime_jitter=0.0,
        pre_ping=False,
        pgbouncer=False,
    )
    url = "postgresql://u@127.0.0.1:5432/db"
    _, with_watchdog = _url_and_connect_args(url, options, {}, "writer")
    fallback_options = dataclasses.replace(options, command_timeout_s=2.5)
    _, fallback = _url_and_connect_args(url, fallback_options, {}, "writer")
    assert "command_timeout" not in with_watchdog
    assert fallback["command_timeout"] == 2.5
