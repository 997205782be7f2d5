"""least-privilege grants for the service and reader group roles

Revision ID: 0003_service_role_grants
Revises: 0002_transfers_and_entries
Create Date: 2026-11-25

The schema owner (the role that runs migrations) grants the running service only the data
rights it needs, to two group roles that a DBA creates once per cluster (README, "Security"):
``hex_service`` (the service's login roles are members) and ``hex_reader`` (read-only logins,
e.g. for replicas). A role that does not exist yet is skipped, so a development database without
them migrates as before; create the roles before the first migration. A later revision that adds
a table grants on it the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from alembic import op

revision: str = "0003_service_role_grants"
down_revision: str | None = "0002_transfers_and_entries"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SERVICE_ROLE: Final = "hex_service"
READER_ROLE: Final = "hex_reader"

# What the ledger's use cases do, and no more: accounts change only their balance; transfers
# and entries are only ever added; nothing is deleted. alembic_version is readable so that a
# service started with its own role can check that the schema is at head.
_PRIVILEGES: Final[dict[str, tuple[str, ...]]] = {
    SERVICE_ROLE: (
        "SELECT, INSERT, UPDATE (balance) ON accounts",
        "SELECT, INSERT ON transfers",
        "SELECT, INSERT ON entries",
        "SELECT ON alembic_version",
    ),
    READER_ROLE: ("SELECT ON accounts, transfers, entries, alembic_version",),
}


def _for_existing_role(role: str, statements: list[str]) -> str:
    body = "\n".join(f"        {statement};" for statement in statements)
    return f"""
    DO $$
    BEGIN
        IF EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}') THEN
{body}
        END IF;
    END $$
    """


def upgrade() -> None:
    for role, privileges in _PRIVILEGES.items():
        op.execute(_for_existing_role(role, [f"GRANT {p} TO {role}" for p in privileges]))


def downgrade() -> None:
    for role, privileges in _PRIVILEGES.items():
        op.execute(_for_existing_role(role, [f"REVOKE {p} FROM {role}" for p in privileges]))
