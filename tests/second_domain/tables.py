"""The lending library's tables: its own metadata, created by its own revisions (``migrations/``)."""

from __future__ import annotations

from sqlalchemy import Column, DateTime, ForeignKey, Index, MetaData, String, Table, Uuid, func, text

metadata = MetaData()

members = Table(
    "members",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("name", String(200), nullable=False),
)

books = Table(
    "books",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("title", String(200), nullable=False),
)

loans = Table(
    "loans",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("book_id", Uuid, ForeignKey("books.id"), nullable=False),
    Column("member_id", Uuid, ForeignKey("members.id"), nullable=False),
    Column("lent_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("returned_at", DateTime(timezone=True), nullable=True),
    # The database's own guard of the rule the use case enforces with row locks.
    Index("loans_one_active_per_book", "book_id", unique=True, postgresql_where=text("returned_at IS NULL")),
    Index("loans_active_by_member", "member_id", "lent_at", postgresql_where=text("returned_at IS NULL")),
)
