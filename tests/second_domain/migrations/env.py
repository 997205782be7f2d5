"""The lending library's Alembic environment: it runs on the connection ``migrate`` hands it.

The kernel's ``migrate(provider, scripts=...)`` takes the migration lock on a writer connection
and passes that connection in ``config.attributes["connection"]``; this environment only names
the domain's metadata (for ``alembic revision --autogenerate``) and runs the revisions on it.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from tests.second_domain.tables import metadata


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=metadata, transaction_per_migration=True)
    with context.begin_transaction():
        context.run_migrations()


given = context.config.attributes.get("connection")
if given is None or context.is_offline_mode():
    raise SystemExit("the lending migrations run through the kernel's migrate(), on its locked connection")
_run(given)
