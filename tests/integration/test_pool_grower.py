"""The pool grows like HikariCP's: returned connections serve waiters first, one background connect at a time.

Real PostgreSQL behind the loopback fault proxy, which holds every new connection for a while before
it reaches the server (establishment only). The assertions are on counts (connections opened,
connects under way), never on timings: the delays are only made long next to a burst's work.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from urllib.parse import urlsplit

import pytest
from sqlalchemy import text

from adapters.postgres.fault_proxy import FaultProxy
from adapters.sqlalchemy.connection_provider import SqlAlchemyConnectionProvider
from adapters.sqlalchemy.provider_options import MonitorOptions, PoolOptions
from ports.connection_provider import Intent
from ports.errors import DatabaseUnavailableError
from tests.support import fetch_value

APP = "hex-grower-test"
#: Long next to a burst of short queries on a loaded machine, short enough for a test.
SLOW_CONNECT_S = 2.0


@pytest.fixture
def proxy(database_url: str) -> Iterator[FaultProxy]:
    with FaultProxy(upstream_port=urlsplit(database_url).port or 5432) as running:
        yield running


def _provider(proxy: FaultProxy, database_url: str, **pool: int) -> SqlAlchemyConnectionProvider:
    return SqlAlchemyConnectionProvider(
        writer_url=proxy.dsn(database_url),
        application_name=APP,
        pool=PoolOptions(acquire_timeout_s=30.0, **pool),  # type: ignore[arg-type]  # ints only
        monitor=MonitorOptions(stats_log_interval_s=None),
    )


@pytest.fixture
async def closing() -> AsyncIterator[list[SqlAlchemyConnectionProvider]]:
    providers: list[SqlAlchemyConnectionProvider] = []
    yield providers
    for provider in providers:
        await provider.aclose(timeout_s=5)


async def _query(provider: SqlAlchemyConnectionProvider) -> None:
    async with provider.connection(Intent.WRITE) as connection:
        await connection.execute(text("SELECT pg_sleep(0.002)"))


async def _until(condition: object, what: str) -> None:
    for _ in range(600):  # 30 s at most
        if callable(condition) and condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"never happened: {what}")


async def test_min_idle_is_opened_in_the_background_before_any_demand(
    proxy: FaultProxy, database_url: str, closing: list[SqlAlchemyConnectionProvider]
) -> None:
    provider = _provider(proxy, database_url, pool_size=4, max_overflow=6)
    closing.append(provider)
    grower = provider._target("writer").grower

    await _query(provider)
    await _until(lambda: provider.stats().targets[0].size == 4, "four connections open")

    assert grower.opened == 4
    assert grower.connecting_peak <= 4  # opened together, as HikariCP fills its minimum
    assert (
        await fetch_value(
            database_url, f"SELECT count(*) FROM pg_stat_activity WHERE application_name = '{APP}'"
        )
        == 4
    )


async def test_a_burst_is_served_by_returned_connections_while_one_connect_is_under_way(
    proxy: FaultProxy, database_url: str, closing: list[SqlAlchemyConnectionProvider]
) -> None:
    provider = _provider(proxy, database_url, pool_size=2, max_overflow=18)
    closing.append(provider)
    target = provider._target("writer")
    await _query(provider)
    await _until(lambda: target.gate.ceiling == 2, "the two idle connections open")
    proxy.set_connect_delay(SLOW_CONNECT_S)
    target.grower.connecting_peak = 0  # from here on: growth on demand

    await asyncio.gather(*(_query(provider) for _ in range(20)))

    # All twenty were served by the two connections handed back from one to the next; the one
    # connect the queue asked for is still under way, and no other was started.
    assert (target.opened, target.grower.connecting, target.grower.connecting_peak) == (2, 1, 1)
    await _until(lambda: target.grower.connecting == 0, "the connect under way ends")
    # Finished after the demand vanished, its connection is kept (the idle timeout trims it later).
    assert (target.opened, provider.stats().targets[0].size) == (3, 3)


async def test_connects_under_way_never_exceed_the_configured_number(
    proxy: FaultProxy, database_url: str, closing: list[SqlAlchemyConnectionProvider]
) -> None:
    provider = _provider(
        proxy, database_url, pool_size=1, max_overflow=9, min_idle=0, max_concurrent_connects=3
    )
    closing.append(provider)
    target = provider._target("writer")
    proxy.set_connect_delay(0.2)
    release = asyncio.Event()

    async def hold() -> None:
        async with provider.connection(Intent.WRITE):
            await release.wait()

    holders = [asyncio.create_task(hold()) for _ in range(10)]
    await _until(lambda: target.gate.in_use == 10, "ten connections held")
    release.set()
    await asyncio.gather(*holders)

    assert (target.opened, target.grower.connecting_peak) == (10, 3)
    stats = provider.stats().targets[0]
    assert (stats.size, stats.overflow) == (10, 9)  # nine beyond pool_size=1


async def test_an_empty_pool_that_cannot_connect_fails_its_waiters_at_once_and_backs_off(
    proxy: FaultProxy, database_url: str, closing: list[SqlAlchemyConnectionProvider]
) -> None:
    provider = _provider(proxy, database_url, pool_size=1, max_overflow=1)
    closing.append(provider)
    grower = provider._target("writer").grower
    proxy.cut()

    # Not a 30 s pool timeout: the connect's own error, as when each request connected itself.
    with pytest.raises(DatabaseUnavailableError):
        await _query(provider)
    failed = grower.failed
    assert failed >= 1

    proxy.restore()
    await _until(lambda: provider.stats().targets[0].size == 1, "the grower's retry after its backoff")
    await _query(provider)
    assert provider.stats().targets[0].connect_failures == grower.failed
