"""Test support: finding a PostgreSQL server, cloning migrated databases, small async helpers."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from adapters.postgres.cluster import PostgresCluster, find_binaries
from adapters.sqlalchemy.connection_provider import SqlAlchemyConnectionProvider
from adapters.sqlalchemy.migrations import migrate
from settings import Settings, load_settings

DOCKER_IMAGE: Final = "postgres:16-alpine"
CLI: Final = str(Path(sys.executable).parent / "alchemy-hex")


def make_settings(
    url: str,
    replica_urls: list[str] | None = None,
    *,
    database: dict[str, object] | None = None,
    **groups: object,
) -> Settings:
    """Test-preset settings for a writer at ``url`` (and replicas), with group overrides."""
    merged: dict[str, object] = {"url": url, "replica_urls": replica_urls or [], **(database or {})}
    return load_settings(environment="test", database=merged, **groups)


def with_database(dsn: str, database: str) -> str:
    """``dsn`` pointing at another database of the same server."""
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path=f"/{database}"))


def docker_answers(timeout_s: float = 0.5) -> bool:
    """Whether a Docker engine answers a ping at once (a hung one would block testcontainers for 60 s)."""
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    if not host.startswith("unix://"):
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout_s)
            sock.connect(host.removeprefix("unix://"))
            sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            return b"OK" in sock.recv(1024)
    except OSError:
        return False


@contextmanager
def postgres_server() -> Iterator[str]:
    """An admin DSN: ``TEST_DATABASE_URL``, else Docker via testcontainers, else our own launcher."""
    if url := os.environ.get("TEST_DATABASE_URL"):
        yield url
        return
    if docker_answers():
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer(DOCKER_IMAGE, driver=None) as container:
            yield container.get_connection_url()
        return
    with PostgresCluster(binaries=find_binaries()) as cluster:
        yield cluster.dsn()


async def _admin(dsn: str, *statements: str) -> None:
    connection = await asyncpg.connect(dsn)
    try:
        for statement in statements:
            await connection.execute(statement)
    finally:
        await connection.close()


def create_database(admin_dsn: str, *, template: str | None = None, prefix: str = "hex_test") -> str:
    """Create a fresh database (a clone of ``template`` when given); returns its DSN."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    clause = f" TEMPLATE {template}" if template else ""
    asyncio.run(_admin(admin_dsn, f"CREATE DATABASE {name}{clause}"))
    return with_database(admin_dsn, name)


def drop_database(admin_dsn: str, database_dsn: str) -> None:
    name = urlsplit(database_dsn).path.lstrip("/")
    asyncio.run(_admin(admin_dsn, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


def migrate_database(dsn: str) -> None:
    """Upgrade the database at ``dsn`` to the newest revision through the writer adapter."""

    async def run() -> None:
        provider = SqlAlchemyConnectionProvider(writer_url=dsn)
        try:
            await migrate(provider)
        finally:
            await provider.aclose()

    asyncio.run(run())


async def fetch_value(dsn: str, query: str) -> object:
    """One value from a throwaway asyncpg connection (checks from outside the service)."""
    connection = await asyncpg.connect(dsn)
    try:
        return await connection.fetchval(query)
    finally:
        await connection.close()


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout_s: float = 120.0
) -> subprocess.CompletedProcess[str]:
    """The installed ``alchemy-hex`` with ``args``, its own ``DATABASE_*``/``HEX_*`` variables only."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "HEX_"))}
    return subprocess.run(
        [CLI, *args],
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
