"""A failed statement aborts the unit's transaction: commit() says so, unless a savepoint took the failure."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from container import Container
from ports.errors import TransactionAbortedError
from tests.support import fetch_value


async def _prepare(container: Container) -> None:
    async with container.unit_of_work() as uow:
        await uow.connection.execute(text("CREATE TABLE kept (x int PRIMARY KEY)"))
        await uow.commit()


async def test_a_failure_taken_by_a_savepoint_leaves_the_rest_of_the_unit_to_commit(
    container: Container, database_url: str
) -> None:
    await _prepare(container)
    async with container.unit_of_work() as uow:
        await uow.connection.execute(text("INSERT INTO kept VALUES (1)"))
        savepoint = await uow.connection.begin_nested()
        with pytest.raises(Exception, match="duplicate key"):
            await uow.connection.execute(text("INSERT INTO kept VALUES (1)"))
        await savepoint.rollback()
        await uow.connection.execute(text("INSERT INTO kept VALUES (2)"))
        await uow.commit()

    assert await fetch_value(database_url, "SELECT array_agg(x ORDER BY x) FROM kept") == [1, 2]


async def test_a_failure_outside_any_savepoint_makes_commit_refuse_and_nothing_is_kept(
    container: Container, database_url: str
) -> None:
    await _prepare(container)

    async def insert_twice_then_commit() -> None:
        async with container.unit_of_work() as uow:
            await uow.connection.execute(text("INSERT INTO kept VALUES (1)"))
            with pytest.raises(Exception, match="duplicate key"):
                await uow.connection.execute(text("INSERT INTO kept VALUES (1)"))
            await uow.commit()

    with pytest.raises(TransactionAbortedError, match="nothing was committed"):
        await insert_twice_then_commit()
    assert await fetch_value(database_url, "SELECT count(*) FROM kept") == 0
