"""Alembic migrations through the writer adapter, serialised by a PostgreSQL advisory lock."""

from __future__ import annotations

import importlib.resources
from pathlib import Path
from typing import Final

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import exc as sa_exc
from sqlalchemy import text
from sqlalchemy.engine import Connection

from adapters.sqlalchemy.connection_provider import SqlAlchemyConnectionProvider
from adapters.sqlalchemy.errors import translate
from ports.connection_provider import WRITER, Intent

#: Arbitrary but fixed: every instance of the service must agree on it.
MIGRATION_LOCK_KEY: Final = 0x68657821  # "hex!"
#: The installed name of the repository's top-level ``alembic/`` folder (see pyproject.toml).
SCRIPTS_PACKAGE: Final = "_alchemy_hex_migrations"


def script_location() -> Path:
    """The directory of the Alembic scripts (``env.py``, ``versions/``), found as package data.

    The lookup goes through ``versions``, a regular package: the scripts' own directory is a
    namespace package, whose resources Python 3.11 cannot open in an editable install.
    """
    versions = importlib.resources.files(f"{SCRIPTS_PACKAGE}.versions")
    # Alembic loads the scripts by file name, so they must be files on disk (no zipped install).
    if not isinstance(versions, Path):
        raise RuntimeError(f"the migration scripts are not files on disk: {versions!r}")
    return versions.parent


def alembic_config(scripts: Path | None = None) -> Config:
    """The Alembic configuration the service runs with; it needs no ``alembic.ini``.

    ``scripts`` is a directory of Alembic scripts (``env.py``, ``versions/``): a service's own,
    or, when ``None``, the ones shipped in the package (the repository's ``alembic/``). The
    repository's ``alembic.ini`` is for the ``alembic`` command in a checkout (``alembic
    revision``); it names the same scripts and no other setting that a migration uses.
    """
    config = Config()
    config.set_main_option("script_location", str(scripts or script_location()))
    return config


async def migrate(
    provider: SqlAlchemyConnectionProvider,
    *,
    revision: str = "head",
    downgrade: bool = False,
    scripts: Path | None = None,
) -> None:
    """Upgrade (or downgrade) the writer's schema to ``revision`` while holding the migration lock.

    ``scripts`` is the directory of the Alembic scripts to run (see :func:`alembic_config`); its
    ``env.py`` finds the locked connection in ``config.attributes["connection"]``.

    Two instances starting at once both call this; the second waits for the first and then finds
    nothing left to do. Statement and lock timeouts are lifted for the session, since a migration
    may legitimately run long, and restored before the connection returns to the pool. A refused
    statement raises the contract error (``PermissionDeniedError`` for a role that may not run DDL).
    """
    config = alembic_config(scripts)

    def run(connection: Connection) -> None:
        config.attributes["connection"] = connection
        if downgrade:
            command.downgrade(config, revision)
        else:
            command.upgrade(config, revision)

    async with provider.connection(Intent.WRITE) as connection:
        await connection.execute(text("SET lock_timeout = 0"))
        await connection.execute(text("SET statement_timeout = 0"))
        await connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
        await connection.commit()
        try:
            await connection.run_sync(run)
            await connection.commit()
        except sa_exc.DBAPIError as exc:
            raise translate(exc, target=WRITER) from exc
        finally:
            await connection.rollback()
            await connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK_KEY})
            await connection.execute(text("RESET ALL"))
            await connection.commit()


async def current_revision(provider: SqlAlchemyConnectionProvider) -> str | None:
    """The revision the writer's schema is at, or ``None`` before the first migration."""
    async with provider.connection(Intent.WRITE) as connection:
        return await connection.run_sync(lambda sync: MigrationContext.configure(sync).get_current_revision())
