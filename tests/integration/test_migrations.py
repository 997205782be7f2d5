"""Alembic through the writer adapter: the stairway, and two instances migrating at once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest
from alembic.script import ScriptDirectory

from adapters.sqlalchemy.connection_provider import SqlAlchemyConnectionProvider
from adapters.sqlalchemy.migrations import alembic_config, current_revision, migrate
from tests.support import create_database, drop_database, fetch_value


@pytest.fixture
def empty_database(admin_dsn: str) -> Iterator[str]:
    dsn = create_database(admin_dsn)
    yield dsn
    drop_database(admin_dsn, dsn)


@pytest.fixture
async def provider(empty_database: str) -> AsyncIterator[SqlAlchemyConnectionProvider]:
    built = SqlAlchemyConnectionProvider(writer_url=empty_database)
    yield built
    await built.aclose()


def _revisions() -> list[str]:
    script = ScriptDirectory.from_config(alembic_config())
    return [r.revision for r in reversed(list(script.walk_revisions()))]


async def _tables(dsn: str) -> object:
    return await fetch_value(
        dsn, "SELECT string_agg(tablename, ',' ORDER BY tablename) FROM pg_tables WHERE schemaname = 'public'"
    )


async def test_every_revision_goes_up_down_and_up_again(
    provider: SqlAlchemyConnectionProvider, empty_database: str
) -> None:
    revisions = _revisions()
    assert len(revisions) >= 2
    previous = "base"
    for revision in revisions:
        await migrate(provider, revision=revision)
        after_up = await _tables(empty_database)
        await migrate(provider, revision=previous, downgrade=True)
        assert await current_revision(provider) == (None if previous == "base" else previous)
        await migrate(provider, revision=revision)
        assert await _tables(empty_database) == after_up
        previous = revision
    await migrate(provider, revision="base", downgrade=True)
    assert await _tables(empty_database) == "alembic_version"


async def test_two_instances_migrating_at_once_do_not_race(empty_database: str) -> None:
    providers = [SqlAlchemyConnectionProvider(writer_url=empty_database) for _ in range(3)]
    try:
        await asyncio.gather(*(migrate(p) for p in providers))
        assert await current_revision(providers[0]) == _revisions()[-1]
    finally:
        for p in providers:
            await p.aclose()
