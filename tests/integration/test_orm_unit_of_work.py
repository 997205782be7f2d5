"""ORM repositories on the unit of work: one transaction, the same policies and the same READ ONLY rule."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import func, select

from adapters.sqlalchemy.unit_of_work import SqlAlchemyUnitOfWork
from container import Container, create_container, start_resources, stop_resources
from ports.connection_provider import Intent
from ports.errors import DataIntegrityError, ReadOnlyViolationError
from tests.orm_model import Author, OrmRepositories, Post, metadata, orm_repositories, posts
from tests.support import fetch_value, make_settings

APP = "hex-orm"


@pytest.fixture
async def container(database_url: str) -> AsyncIterator[Container]:
    built = create_container(make_settings(database_url, database={"application_name": APP}))
    await start_resources(built)
    async with built.connection_provider().connection(Intent.WRITE) as connection:
        await connection.run_sync(metadata.create_all)
        await connection.commit()
    yield built
    await stop_resources(built)


def orm_unit(container: Container, intent: Intent = Intent.WRITE) -> SqlAlchemyUnitOfWork[OrmRepositories]:
    return SqlAlchemyUnitOfWork(
        provider=container.connection_provider(),
        repositories=orm_repositories,
        rate_limiter=container.rate_limiter(),
        circuit_breaker=container.circuit_breaker(),
        replica_strategy=container.replica_strategy(),
        intent=intent,
    )


async def _count(database_url: str, table: str) -> Any:
    return await fetch_value(database_url, f"SELECT count(*) FROM {table}")


async def test_a_new_author_and_its_posts_are_flushed_in_dependency_order_at_commit(
    container: Container, database_url: str
) -> None:
    author = Author("ursula")
    author.posts.extend([Post("the dispossessed"), Post("the lathe of heaven")])
    async with orm_unit(container) as uow:
        uow.repos.add(author)  # nothing flushed yet: the unit's commit() sends it, parent first
        await uow.commit()

    assert author.id is not None
    async with orm_unit(container, Intent.READ) as uow:
        loaded = await uow.repos.get(author.id)
        assert loaded is not None
        titles = [post.title for post in loaded.posts]  # loaded with it (selectin): no lazy I/O
    assert titles == ["the dispossessed", "the lathe of heaven"]
    assert await _count(database_url, "orm_posts") == 2


async def test_orm_and_core_statements_of_one_unit_share_its_transaction(
    container: Container, database_url: str
) -> None:
    async with orm_unit(container) as uow:
        uow.repos.add(Author("octavia"))
        await uow.session.flush()
        # The Core statement on the unit's connection sees the ORM's pending insert.
        assert (await uow.connection.execute(select(func.count()).select_from(Author))).scalar() == 1
        # Left without commit: both are rolled back together.

    assert await _count(database_url, "orm_authors") == 0


async def test_a_write_through_the_orm_in_a_read_unit_fails_as_a_read_only_violation(
    container: Container, database_url: str
) -> None:
    async def write_in_read_unit() -> None:
        async with orm_unit(container, Intent.READ) as uow:
            uow.repos.add(Author("iain"))
            await uow.commit()  # the flush before COMMIT sends the INSERT

    with pytest.raises(ReadOnlyViolationError):
        await write_in_read_unit()
    assert await _count(database_url, "orm_authors") == 0
    assert container.connection_provider().checked_out == 0


async def test_a_flush_that_fails_at_commit_is_a_contract_error_and_applies_nothing(
    container: Container, database_url: str
) -> None:
    first = Author("ursula")
    first.id = 7
    async with orm_unit(container) as uow:
        uow.repos.add(first)
        await uow.commit()
    again = Author("le guin")
    again.id = 7  # the same primary key: the INSERT of the flush before COMMIT fails

    async def clash() -> None:
        async with orm_unit(container) as uow:
            uow.repos.add(again)
            uow.repos.add(Author("another, flushed in the same failed transaction"))
            await uow.commit()

    with pytest.raises(DataIntegrityError):
        await clash()

    assert await _count(database_url, "orm_authors") == 1
    assert container.connection_provider().checked_out == 0


async def test_a_cancelled_orm_unit_leaves_no_transaction_open_and_no_connection_out(
    container: Container, database_url: str
) -> None:
    flushed = asyncio.Event()

    async def slow_unit() -> None:
        async with orm_unit(container) as uow:
            uow.repos.add(Author("gene"))
            await uow.session.flush()
            flushed.set()
            await uow.session.execute(select(func.pg_sleep(10)))

    task = asyncio.create_task(slow_unit())
    await flushed.wait()
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert container.connection_provider().checked_out == 0
    open_transactions = await fetch_value(
        database_url,
        f"SELECT count(*) FROM pg_stat_activity WHERE application_name = '{APP}' AND xact_start IS NOT NULL",
    )
    assert open_transactions == 0
    assert await _count(database_url, "orm_authors") == 0


async def test_the_session_is_closed_when_the_unit_ends_and_loaded_objects_stay_readable(
    container: Container,
) -> None:
    async with orm_unit(container) as uow:
        author = Author("samuel")
        uow.repos.add(author)
        await uow.commit()
        session = uow.session

    assert author not in session  # closed: the unit's objects are detached
    assert author.name == "samuel"  # expire_on_commit=False: still readable without a round trip


async def test_a_unit_that_never_touches_the_orm_makes_no_session(container: Container) -> None:
    async with orm_unit(container) as uow:
        await uow.connection.execute(select(posts.c.id))
        await uow.commit()
        transaction = uow._transaction  # private on purpose: the only way to see that none was made

    assert transaction is not None
    assert transaction.opened_session is None
