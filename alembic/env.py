"""Alembic environment: migrations run on a connection from the container's writer adapter.

``cli.py migrate`` passes its own connection (holding the migration advisory lock) in
``config.attributes["connection"]``; a plain ``alembic upgrade head`` builds the container from
the environment's settings and borrows a connection from its migration provider (the schema owner).
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

from adapters.sqlalchemy.ledger.tables import metadata
from container import create_container
from ports.connection_provider import Intent
from settings import load_settings


def _run_migrations(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=metadata, transaction_per_migration=True)
    with context.begin_transaction():
        context.run_migrations()


async def _run_with_container() -> None:
    container = create_container(load_settings())
    # The schema owner's credentials (migration.url) when configured, else the service's.
    provider = container.migration_provider()
    try:
        async with provider.connection(Intent.WRITE) as connection:
            await connection.run_sync(_run_migrations)
            await connection.commit()
    finally:
        await provider.aclose()


def main() -> None:
    if context.is_offline_mode():
        raise SystemExit(
            "offline (--sql) migrations are not supported: migrations run through the writer adapter"
        )
    given = context.config.attributes.get("connection")
    if given is not None:
        _run_migrations(given)
    else:
        asyncio.run(_run_with_container())


main()
