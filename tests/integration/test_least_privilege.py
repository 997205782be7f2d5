"""Least privilege: the schema owner migrates, the service role only reads and writes data, a reader reads."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg
import pytest
from sqlalchemy import exc as sa_exc
from sqlalchemy import text

from adapters.sqlalchemy.errors import translate
from adapters.sqlalchemy.migrations import migrate
from container import Container, create_container, start_resources, stop_resources
from ports.connection_provider import Intent
from ports.errors import HexError, PermissionDeniedError
from tests.support import make_settings

GROUP_ROLES = """
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'hex_service') THEN
        CREATE ROLE hex_service NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'hex_reader') THEN
        CREATE ROLE hex_reader NOLOGIN;
    END IF;
END $$
"""


@dataclass(frozen=True, slots=True)
class Roles:
    """DSNs of one database as its owner, as a member of hex_service and as a member of hex_reader."""

    owner: str
    service: str
    reader: str


def _as(admin_dsn: str, database: str, user: str, password: str) -> str:
    parts = urlsplit(admin_dsn)
    netloc = f"{quote(user)}:{quote(password)}@{parts.hostname}:{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc, path=f"/{database}"))


async def _admin(dsn: str, *statements: str) -> None:
    connection = await asyncpg.connect(dsn)
    try:
        for statement in statements:
            await connection.execute(statement)
    finally:
        await connection.close()


@pytest.fixture(scope="module")
def roles(admin_dsn: str) -> Iterator[Roles]:
    """Fresh login roles and a database owned by the owner role, migrated by it; dropped afterwards."""
    tag = uuid.uuid4().hex[:8]
    owner, service, reader, database = (f"hex_{kind}_{tag}" for kind in ("owner", "app", "ro", "db"))
    password = f"pw-{tag}"
    asyncio.run(
        _admin(
            admin_dsn,
            GROUP_ROLES,
            f"CREATE ROLE {owner} LOGIN PASSWORD '{password}'",
            f"CREATE ROLE {service} LOGIN PASSWORD '{password}' IN ROLE hex_service",
            f"CREATE ROLE {reader} LOGIN PASSWORD '{password}' IN ROLE hex_reader",
            f"CREATE DATABASE {database} OWNER {owner}",
        )
    )
    yield Roles(*(_as(admin_dsn, database, user, password) for user in (owner, service, reader)))
    asyncio.run(
        _admin(
            admin_dsn,
            f"DROP DATABASE IF EXISTS {database} WITH (FORCE)",
            f"DROP ROLE IF EXISTS {service}, {reader}, {owner}",
        )
    )


@pytest.fixture
async def service(roles: Roles) -> AsyncIterator[Container]:
    """The service as its own role, reads on a read endpoint as the reader role, migrations as the owner."""
    settings = make_settings(roles.service, [roles.reader], migration={"url": roles.owner})
    container = create_container(settings)
    await start_resources(container)
    migration = container.migration_provider()
    try:
        await migrate(migration)
    finally:
        await migration.aclose()
    yield container
    await stop_resources(container)


async def test_the_service_role_runs_every_use_case_and_reads_go_to_the_reader_role(
    service: Container,
) -> None:
    alice, bob = await service.open_account()("alice"), await service.open_account()("bob")
    await service.deposit()(alice, 500, idempotency_key=f"seed-{alice}")
    await service.transfer()(alice, bob, 200, idempotency_key=f"pay-{bob}")

    assert await service.get_balance()(bob) == 200
    assert (await service.get_statement()(alice)).balance == 300
    assert (await service.audit_ledger()()).balanced
    assert service.connection_provider().stats().reads_by_target["replica-1"] == 2


@pytest.mark.parametrize(
    "statement",
    [
        "CREATE TABLE sneaky (x int)",
        "ALTER TABLE accounts ADD COLUMN note text",
        "DROP TABLE entries",
        "TRUNCATE accounts CASCADE",
        "DELETE FROM transfers",
        "UPDATE accounts SET owner = 'mallory'",
    ],
)
async def test_the_service_role_cannot_change_the_schema_or_rewrite_history(
    service: Container, statement: str
) -> None:
    with pytest.raises(
        PermissionDeniedError, match=r"permission denied on writer: .*(permission denied|must be owner)"
    ):
        await _execute(service, statement, target="writer")


async def test_the_reader_role_cannot_write_even_outside_a_read_only_transaction(service: Container) -> None:
    with pytest.raises(PermissionDeniedError, match="permission denied for table accounts"):
        await _execute(
            service, "INSERT INTO accounts (id, owner) VALUES (gen_random_uuid(), 'x')", target="replica-1"
        )


async def test_a_migration_as_the_service_role_is_refused_with_a_clear_error(service: Container) -> None:
    with pytest.raises(PermissionDeniedError, match="permission denied on writer"):
        await migrate(service.connection_provider(), revision="base", downgrade=True)
    assert await service.get_statement()(await service.open_account()("still here"))


async def test_the_service_role_can_still_check_that_the_schema_is_at_head(roles: Roles) -> None:
    container = create_container(make_settings(roles.service))
    migration = container.migration_provider()
    try:
        await migrate(migration)  # nothing to do: reading alembic_version is all it takes
    finally:
        await migration.aclose()


async def _execute(container: Container, statement: str, *, target: str) -> None:
    intent = Intent.WRITE if target == "writer" else Intent.READ
    async with container.connection_provider().connection(intent, target=target) as connection:
        try:
            await connection.execute(text(statement))
        except sa_exc.DBAPIError as exc:
            raise translate(exc, target=target) from exc
        finally:
            await connection.rollback()
    raise HexError(f"{statement!r} was allowed")
