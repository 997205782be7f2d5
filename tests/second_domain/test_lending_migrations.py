"""The lending library keeps its own migrations and runs them through the kernel's ``migrate``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import Connection

from adapters.sqlalchemy.connection_provider import SqlAlchemyConnectionProvider
from adapters.sqlalchemy.migrations import alembic_config, current_revision
from ports.connection_provider import Intent
from tests.second_domain.conftest import MIGRATIONS, migrate_lending
from tests.second_domain.tables import metadata
from tests.support import create_database, drop_database


@pytest.fixture
def empty_database(admin_dsn: str) -> Iterator[str]:
    dsn = create_database(admin_dsn, prefix="lending_migrations")
    yield dsn
    drop_database(admin_dsn, dsn)


def _differences(connection: Connection) -> list[object]:
    return list(compare_metadata(MigrationContext.configure(connection), metadata))


async def test_the_revisions_build_exactly_the_domains_tables_and_walk_down_and_up(
    empty_database: str,
) -> None:
    head = ScriptDirectory.from_config(alembic_config(MIGRATIONS)).get_current_head()
    provider = SqlAlchemyConnectionProvider(writer_url=empty_database)
    try:
        await migrate_lending(empty_database)
        assert await current_revision(provider) == head == "l0001_members_books_loans"
        async with provider.connection(Intent.WRITE) as connection:
            # What autogenerate would write next: nothing, so the revisions and the tables agree.
            assert await connection.run_sync(_differences) == []

        await migrate_lending(empty_database, revision="base", downgrade=True)
        assert await current_revision(provider) is None
        async with provider.connection(Intent.WRITE) as connection:
            tables = await connection.scalar(
                text("SELECT count(*) FROM pg_tables WHERE tablename IN ('members', 'books', 'loans')")
            )
        assert tables == 0

        await migrate_lending(empty_database)
        assert await current_revision(provider) == head
    finally:
        await provider.aclose()
