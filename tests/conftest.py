"""Shared fixtures: one PostgreSQL server per session, a migrated template, a fresh clone per test."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from urllib.parse import urlsplit

import pytest

from adapters.postgres.cluster import PostgresCluster, find_binaries
from container import Container, create_container, start_resources, stop_resources
from tests.redis_support import RedisServer, redis_server
from tests.support import (
    create_database,
    drop_database,
    fetch_value,
    make_settings,
    migrate_database,
    postgres_server,
)


@pytest.fixture(scope="session")
def admin_dsn() -> Iterator[str]:
    """A superuser DSN of the session's PostgreSQL server."""
    with postgres_server() as dsn:
        yield dsn


@pytest.fixture(scope="session")
def template_database(admin_dsn: str) -> Iterator[str]:
    """The name of a database migrated to head, cloned by every test that needs the schema."""
    dsn = create_database(admin_dsn, prefix="hex_template")
    migrate_database(dsn)
    yield urlsplit(dsn).path.lstrip("/")
    drop_database(admin_dsn, dsn)


@pytest.fixture
def database_url(admin_dsn: str, template_database: str) -> Iterator[str]:
    """A migrated database of this test's own, dropped afterwards."""
    dsn = create_database(admin_dsn, template=template_database)
    yield dsn
    drop_database(admin_dsn, dsn)


@pytest.fixture
async def container(database_url: str) -> AsyncIterator[Container]:
    """A container for the test preset on this test's database; its resources are shut down after."""
    built = create_container(make_settings(database_url))
    await start_resources(built)
    yield built
    await stop_resources(built)


@pytest.fixture(scope="session")
def replicated() -> Iterator[tuple[str, str]]:
    """A migrated primary and a streaming replica of it, started by the launcher: their DSNs."""
    with PostgresCluster(binaries=find_binaries()) as primary:
        replica = primary.create_replica()
        try:
            migrate_database(primary.dsn())
            _wait_for_replay(replica.dsn())
            yield primary.dsn(), replica.dsn()
        finally:
            replica.destroy()


def _wait_for_replay(replica_dsn: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    query = "SELECT count(*) FROM pg_tables WHERE tablename = 'entries'"
    while asyncio.run(fetch_value(replica_dsn, query)) != 1:
        if time.monotonic() > deadline:
            raise TimeoutError("the replica did not replay the migrations in time")
        time.sleep(0.05)


@pytest.fixture(scope="session")
def shared_redis() -> Iterator[RedisServer]:
    """A throwaway redis-server for the session's tests that neither stop nor pause it."""
    with redis_server() as server:
        yield server


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A throwaway redis-server of this test's own, to kill, restart or pause."""
    with redis_server() as server:
        yield server
