"""The lending library's fixtures: a database of its own on the replicated primary, and its service."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import pytest

from adapters.sqlalchemy.connection_provider import SqlAlchemyConnectionProvider
from adapters.sqlalchemy.migrations import migrate
from container import KernelContainer, start_resources, stop_resources
from tests.replication import wait_until_replayed
from tests.second_domain.wiring import Lending, lending_container, lending_use_cases
from tests.support import create_database, drop_database, make_settings, with_database

#: Enough connections for the concurrent loans to contend on the database, not in the pool.
POOL_SIZE = 12


#: The domain's own Alembic scripts, kept beside its tables as an adopter keeps theirs.
MIGRATIONS: Final = Path(__file__).resolve().parent / "migrations"


async def migrate_lending(dsn: str, **kwargs: Any) -> None:
    """Run the lending migrations through the kernel's ``migrate`` (advisory lock, writer adapter)."""
    provider = SqlAlchemyConnectionProvider(writer_url=dsn)
    try:
        await migrate(provider, scripts=MIGRATIONS, **kwargs)
    finally:
        await provider.aclose()


@pytest.fixture(scope="session")
def lending_database(replicated: tuple[str, str]) -> Iterator[tuple[str, str]]:
    """DSNs of the lending database on the primary and on its streaming replica, migrated."""
    primary, replica = replicated
    dsn = create_database(primary, prefix="lending")
    name = urlsplit(dsn).path.lstrip("/")
    try:
        asyncio.run(migrate_lending(dsn))
        wait_until_replayed(replica, f"SELECT count(*) FROM pg_database WHERE datname = '{name}'", 1)
        replica_dsn = with_database(replica, name)
        wait_until_replayed(replica_dsn, "SELECT count(*) FROM pg_tables WHERE tablename = 'loans'", 1)
        yield dsn, replica_dsn
    finally:
        drop_database(primary, dsn)


@pytest.fixture
async def library(lending_database: tuple[str, str]) -> AsyncIterator[KernelContainer]:
    """The kernel's container on the lending database: writes on the primary, reads on the replica."""
    primary, replica = lending_database
    container = lending_container(make_settings(primary, [replica], database={"pool_size": POOL_SIZE}))
    await start_resources(container)
    yield container
    await stop_resources(container)


@pytest.fixture
def lending(library: KernelContainer) -> Lending:
    return lending_use_cases(library)
