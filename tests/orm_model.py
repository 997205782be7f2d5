"""A small ORM model for the tests and the benchmark: plain classes, mapped imperatively (cosmicpython style).

``Author`` and ``Post`` know nothing of SQLAlchemy; the mapping below attaches them to tables of
their own, with a relationship (an author's posts) whose foreign key makes the flush order matter:
a new author's row must be inserted before its posts' rows.
"""

from __future__ import annotations

from typing import Final

from sqlalchemy import Column, ForeignKey, Integer, MetaData, String, Table
from sqlalchemy.orm import registry, relationship

from adapters.sqlalchemy.unit_of_work import Transaction


class Author:
    def __init__(self, name: str, visits: int = 0) -> None:
        self.name = name
        self.visits = visits
        self.posts: list[Post] = []
        self.id: int | None = None


class Post:
    def __init__(self, title: str) -> None:
        self.title = title
        self.id: int | None = None
        self.author: Author | None = None


metadata: Final = MetaData()
authors: Final = Table(
    "orm_authors",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(100), nullable=False),
    Column("visits", Integer, nullable=False, server_default="0"),
)
posts: Final = Table(
    "orm_posts",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("author_id", ForeignKey("orm_authors.id"), nullable=False),
    Column("title", String(200), nullable=False),
)

mapper_registry: Final = registry(metadata=metadata)
mapper_registry.map_imperatively(
    Author,
    authors,
    properties={"posts": relationship(Post, back_populates="author", order_by=posts.c.id, lazy="selectin")},
)
mapper_registry.map_imperatively(
    Post, posts, properties={"author": relationship(Author, back_populates="posts")}
)


class OrmRepositories:
    """ORM repositories on a unit of work's transaction: the session is made only when one is used."""

    def __init__(self, transaction: Transaction) -> None:
        self._transaction = transaction

    def add(self, author: Author) -> None:
        self._transaction.session.add(author)

    async def get(self, author_id: int) -> Author | None:
        return await self._transaction.session.get(Author, author_id)


def orm_repositories(transaction: Transaction) -> OrmRepositories:
    return OrmRepositories(transaction)
