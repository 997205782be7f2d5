"""Cancellation while the provider opens a connection: no error escapes to the event loop, nothing leaks.

asyncpg (0.32, sslmode ``prefer`` and above) leaves a future failed with "unexpected
connection_lost() call" and never retrieved when a connect is cancelled while asyncio sets up its
socket; the provider lets such a connect finish and closes it instead (``targets.make_engine``).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import random
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import anyio
import pytest
from sqlalchemy import text

from adapters.sqlalchemy.connection_provider import SqlAlchemyConnectionProvider
from adapters.sqlalchemy.provider_options import PoolOptions
from ports.connection_provider import Intent
from tests.support import fetch_value

APP = "hex-cancelled-connects"
POOL_SIZE, MAX_OVERFLOW = 2, 1


@pytest.fixture
async def provider(database_url: str) -> AsyncIterator[SqlAlchemyConnectionProvider]:
    built = SqlAlchemyConnectionProvider(
        writer_url=database_url,
        application_name=APP,
        pool=PoolOptions(pool_size=POOL_SIZE, max_overflow=MAX_OVERFLOW),
    )
    yield built
    await built.aclose(timeout_s=5)


@contextmanager
def escaped_errors() -> Iterator[list[str]]:
    """Every error that reaches the event loop's exception handler in the block (after a collection)."""
    loop = asyncio.get_running_loop()
    seen: list[str] = []

    def record(_loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        seen.append(f"{context.get('message')}: {context.get('exception')!r}")

    previous = loop.get_exception_handler()
    loop.set_exception_handler(record)
    try:
        yield seen
        gc.collect()  # "never retrieved" is reported when the orphan is collected
    finally:
        loop.set_exception_handler(previous)


async def _settled(provider: SqlAlchemyConnectionProvider, database_url: str) -> tuple[int, int, int]:
    """Once every connect left behind has ended: (slots in use, registered checkouts, server sessions)."""
    target = provider._target("writer")
    await target.connects.wait(timeout_s=5)
    await asyncio.sleep(0.05)  # the done callbacks, and the server noticing the closed sessions
    sessions = await fetch_value(
        database_url, f"SELECT count(*) FROM pg_stat_activity WHERE application_name = '{APP}'"
    )
    assert isinstance(sessions, int)
    return target.gate.in_use, provider.checked_out, sessions


async def _select_one(provider: SqlAlchemyConnectionProvider) -> None:
    async with provider.connection(Intent.WRITE) as connection:
        await connection.execute(text("SELECT 1"))


async def test_a_connect_cancelled_at_any_turn_of_the_event_loop_lets_no_error_escape_and_leaks_nothing(
    provider: SqlAlchemyConnectionProvider, database_url: str
) -> None:
    # Requests never open a pool's connections (its grower does), but after a disposal the pool
    # the engine starts afresh holds no connection: its slots are reconnected by the requests.
    await _select_one(provider)
    with escaped_errors() as seen:
        for turns in range(40):  # from before the socket exists to after the login
            await provider.engine().dispose()  # an empty pool: the request must connect
            request = asyncio.create_task(_select_one(provider))
            for _ in range(turns):
                await asyncio.sleep(0)
            request.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await request
            del request
        in_use, checked_out, _ = await _settled(provider, database_url)

    assert seen == []
    assert (in_use, checked_out) == (0, 0)
    assert provider._target("writer").connects.detached > 0, "no connect was ever cancelled mid-way"


async def test_an_anyio_cancellation_storm_lets_no_error_escape_to_the_event_loop(
    provider: SqlAlchemyConnectionProvider, database_url: str
) -> None:
    rng = random.Random(13)

    async def transaction() -> None:
        async with provider.connection(Intent.WRITE) as connection, connection.begin():
            await connection.execute(text("SELECT pg_sleep(0.001)"))
            await connection.execute(text("SELECT 1"))

    with escaped_errors() as seen:
        for _ in range(20):  # 1,000 tasks, most cancelled at a random point
            async with anyio.create_task_group() as group:
                for _ in range(50):
                    group.start_soon(transaction)
                await anyio.sleep(rng.random() * 0.04)
                group.cancel_scope.cancel()
        in_use, checked_out, sessions = await _settled(provider, database_url)

    assert seen == []
    assert (in_use, checked_out) == (0, 0)
    assert sessions <= POOL_SIZE + MAX_OVERFLOW
    await _select_one(provider)
