"""Read-only enforcement holds on every connection, and no unit's SQL escapes its transaction or session."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from sqlalchemy import text

from container import Container, create_container, start_resources, stop_resources
from ports.connection_provider import Intent
from ports.errors import ReadOnlyViolationError, TransactionControlError
from tests.support import fetch_value, make_settings

ISOLATION_LEVELS = ["READ COMMITTED", "REPEATABLE READ", "SERIALIZABLE"]
STATEMENT_TIMEOUT_MS = 7000
APP = "hex-read-only"


@asynccontextmanager
async def running(database_url: str, **database: Any) -> AsyncIterator[Container]:
    options = {"statement_timeout_s": STATEMENT_TIMEOUT_MS / 1000, "application_name": APP, **database}
    container = create_container(make_settings(database_url, database=options))
    await start_resources(container)
    try:
        async with container.unit_of_work() as uow:
            await uow.connection.execute(text("CREATE TABLE IF NOT EXISTS t (x int)"))
            await uow.commit()
        yield container
    finally:
        await stop_resources(container)


async def _rows(database_url: str) -> object:
    return await fetch_value(database_url, "SELECT count(*) FROM t")


async def _show_mode_then_insert(container: Container, gathered: asyncio.Barrier, modes: list[str]) -> None:
    async with container.unit_of_work(intent=Intent.READ) as uow:
        await gathered.wait()  # every unit holds its connection at once: the pool must open them all
        modes.append(str((await uow.connection.execute(text("SHOW transaction_read_only"))).scalar()))
        await uow.connection.execute(text("INSERT INTO t VALUES (1)"))


async def _read_unit_refuses_to_write(container: Container, gathered: asyncio.Barrier) -> str:
    modes: list[str] = []
    with pytest.raises(ReadOnlyViolationError):
        await _show_mode_then_insert(container, gathered, modes)
    return modes[0]


@pytest.mark.parametrize("isolation_level", ISOLATION_LEVELS)
async def test_every_read_unit_on_a_freshly_opened_connection_refuses_writes(
    database_url: str, isolation_level: str
) -> None:
    async with running(
        database_url, pool_size=2, max_overflow=3, isolation_level=isolation_level
    ) as container:
        provider = container.connection_provider()
        opened_before = provider.stats().targets[0].opened
        for _ in range(3):
            # The first burst runs on connections the grower opens; after a disposal the requests
            # open the pool's slots again themselves: both ways, every connection is a fresh one.
            await provider.engine().dispose()
            barrier = asyncio.Barrier(5)
            modes = await asyncio.gather(*(_read_unit_refuses_to_write(container, barrier) for _ in range(5)))
            assert modes == ["on"] * 5
        opened = provider.stats().targets[0].opened - opened_before

    assert opened >= 3 * 5  # each burst ran on five connections opened for it
    assert await _rows(database_url) == 0


async def test_a_newly_opened_connection_is_handed_out_with_no_transaction_open(database_url: str) -> None:
    async with running(database_url, pool_size=1, max_overflow=1) as container:
        provider = container.connection_provider()
        async with provider.connection(Intent.WRITE), provider.connection(Intent.WRITE):
            # The second is new from connect: before the fix its connect hook had begun a transaction.
            states = await fetch_value(
                database_url,
                "SELECT array_agg(state ORDER BY state) FROM pg_stat_activity "
                f"WHERE application_name = '{APP}'",
            )

    assert states == ["idle", "idle"]


ESCAPES = [
    "COMMIT",
    "ROLLBACK",
    "END",
    "BEGIN",
    "SET TRANSACTION READ WRITE",
    "SET transaction_read_only = off",
    "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE",
]


@pytest.mark.parametrize("statement", ESCAPES)
async def test_a_read_unit_refuses_sql_that_would_leave_read_only_and_goes_on_refusing_writes(
    database_url: str, statement: str
) -> None:
    async def escape_then_insert(container: Container) -> None:
        async with container.unit_of_work(intent=Intent.READ) as uow:
            with pytest.raises(TransactionControlError, match="use the unit's commit"):
                await uow.connection.execute(text(statement))
            await uow.connection.execute(text("INSERT INTO t VALUES (1)"))
            await uow.commit()

    async with running(database_url) as container:
        with pytest.raises(ReadOnlyViolationError):
            await escape_then_insert(container)

    assert await _rows(database_url) == 0


async def test_a_write_unit_that_sends_commit_as_sql_stays_one_transaction(database_url: str) -> None:
    async with running(database_url) as container, container.unit_of_work() as uow:
        await uow.connection.execute(text("INSERT INTO t VALUES (1)"))
        with pytest.raises(TransactionControlError):
            await uow.connection.execute(text("COMMIT"))
            # Left without the unit's commit(): the INSERT is rolled back with everything else.

    assert await _rows(database_url) == 0


async def _next_units_session(container: Container) -> tuple[str, int]:
    """The statement timeout the next unit sees, and how many connections the writer opened so far."""
    async with container.unit_of_work(intent=Intent.READ) as uow:
        timeout = str((await uow.connection.execute(text("SHOW statement_timeout"))).scalar())
    return timeout, container.connection_provider().stats().targets[0].opened


SESSION_CHANGES = [
    "SET statement_timeout = 0",
    "SET SESSION statement_timeout = 0",
    "SELECT set_config('statement_timeout', '0', false)",
]


@pytest.mark.parametrize("intent", list(Intent))
@pytest.mark.parametrize("statement", SESSION_CHANGES)
async def test_a_unit_that_changed_its_session_hands_the_next_unit_a_fresh_one(
    database_url: str, intent: Intent, statement: str
) -> None:
    async with running(database_url, pool_size=1, max_overflow=0) as container:
        _, opened = await _next_units_session(container)
        async with container.unit_of_work(intent=intent) as uow:
            await uow.connection.execute(text(statement))
            await uow.commit()
        timeout, opened_after = await _next_units_session(container)

    assert timeout == f"{STATEMENT_TIMEOUT_MS // 1000}s"
    assert opened_after == opened + 1


async def test_a_unit_that_leaves_its_session_alone_keeps_its_connection(database_url: str) -> None:
    async with running(database_url, pool_size=1, max_overflow=0) as container:
        _, opened = await _next_units_session(container)
        async with container.unit_of_work() as uow:
            await uow.connection.execute(text("SET LOCAL statement_timeout = 100"))
            await uow.connection.execute(text("INSERT INTO t VALUES (1)"))
            await uow.commit()
        timeout, opened_after = await _next_units_session(container)

    assert (timeout, opened_after) == (f"{STATEMENT_TIMEOUT_MS // 1000}s", opened)
    assert await _rows(database_url) == 1


async def test_a_read_unit_ends_with_rollback_so_server_code_cannot_change_the_next_units_session(
    database_url: str,
) -> None:
    async with running(database_url, pool_size=1, max_overflow=0) as container:
        async with container.unit_of_work() as uow:
            # The guard reads SQL text, not the bodies of functions it calls: this one it cannot see.
            await uow.connection.execute(
                text(
                    "CREATE FUNCTION quietly_unbounded() RETURNS text LANGUAGE sql "
                    "AS $$ SELECT set_config('statement_timeout', '0', false) $$"
                )
            )
            await uow.commit()
        _, opened = await _next_units_session(container)
        async with container.unit_of_work(intent=Intent.READ) as uow:
            assert (await uow.connection.execute(text("SELECT quietly_unbounded()"))).scalar() == "0"
            await uow.commit()
        timeout, opened_after = await _next_units_session(container)

    assert (timeout, opened_after) == (f"{STATEMENT_TIMEOUT_MS // 1000}s", opened)
