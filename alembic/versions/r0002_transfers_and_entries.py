"""transfers with idempotency keys, and append-only entries

Revision ID: 0002_transfers_and_entries
Revises: 0001_accounts
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002_transfers_and_entries"
down_revision: str | None = "0001_accounts"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "transfers",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("idempotency_key", sa.String(200), nullable=False),
        sa.Column("source_id", sa.Uuid(), sa.ForeignKey("accounts.id"), nullable=True),
        sa.Column("destination_id", sa.Uuid(), sa.ForeignKey("accounts.id"), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint("amount > 0", name="transfers_amount_positive"),
        sa.UniqueConstraint("idempotency_key", name="transfers_idempotency_key_key"),
    )
    op.create_table(
        "entries",
        sa.Column("id", sa.BigInteger(), sa.Identity(), primary_key=True),
        sa.Column("account_id", sa.Uuid(), sa.ForeignKey("accounts.id"), nullable=False),
        sa.Column("transfer_id", sa.Uuid(), sa.ForeignKey("transfers.id"), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    )
    op.create_index("entries_account_id_id", "entries", ["account_id", "id"])
    # Entries are append-only: the service never needs to change or remove one, so the
    # database refuses it outright rather than trusting every code path to behave.
    op.execute(
        """
        CREATE FUNCTION entries_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'entries are append-only' USING ERRCODE = '23000';
        END $$
        """
    )
    op.execute(
        "CREATE TRIGGER entries_append_only BEFORE UPDATE OR DELETE ON entries "
        "FOR EACH ROW EXECUTE FUNCTION entries_append_only()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER entries_append_only ON entries")
    op.execute("DROP FUNCTION entries_append_only()")
    op.drop_table("entries")
    op.drop_table("transfers")
