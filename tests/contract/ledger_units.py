"""The units of work the ledger's contract suites run on: the fake, and the SQL adapter on PostgreSQL.

Each backend can also provoke the two ways a commit fails, by its own means: a lost connection
(the outcome is unknown) and a ``COMMIT`` the server refuses (nothing was applied).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters.sqlalchemy.unit_of_work import SqlAlchemyUnitOfWork
from container import Container
from ports.errors import CommitOutcomeUnknownError, DataIntegrityError
from ports.ledger import LedgerRepositories
from ports.unit_of_work import UnitOfWork, UnitOfWorkFactory
from tests.fakes import FakeDatabase
from tests.support import fetch_value

LedgerUnit = UnitOfWork[LedgerRepositories]
Provocation = Callable[[LedgerUnit], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class LedgerBackend:
    """A unit-of-work factory, and how to make an open write unit's next ``commit()`` fail."""

    name: str
    units: UnitOfWorkFactory[LedgerRepositories]
    #: The connection is lost before COMMIT gets its answer: ``CommitOutcomeUnknownError``.
    lose_connection_at_commit: Provocation
    #: The server refuses the COMMIT (a deferred constraint): a known failure, nothing applied.
    refuse_commit: Provocation


def fake_backend() -> LedgerBackend:
    database = FakeDatabase()

    async def lose(_uow: LedgerUnit) -> None:
        database.fail_commits.append(
            CommitOutcomeUnknownError(
                "connection to 'writer' failed during COMMIT; the transaction may have applied"
            )
        )

    async def refuse(_uow: LedgerUnit) -> None:
        database.fail_commits.append(
            DataIntegrityError("constraint violated on writer: a deferred unique key")
        )

    return LedgerBackend("fake", database, lose, refuse)


def _connection(uow: LedgerUnit) -> AsyncConnection:
    assert isinstance(uow, SqlAlchemyUnitOfWork)
    return uow.connection


def sql_backend(container: Container, database_url: str) -> LedgerBackend:
    async def lose(uow: LedgerUnit) -> None:
        pid = await _connection(uow).scalar(text("SELECT pg_backend_pid()"))
        # With a timeout, pg_terminate_backend returns once the backend has exited, so the COMMIT
        # that follows meets a closed connection rather than racing the signal.
        assert await fetch_value(database_url, f"SELECT pg_terminate_backend({int(pid)}, 5000)") is True

    async def refuse(uow: LedgerUnit) -> None:
        # A deferred unique constraint is checked at COMMIT: the server answers it with an error.
        # The table is the unit's own and goes with its transaction.
        connection = _connection(uow)
        await connection.execute(
            text("CREATE TEMP TABLE commit_check (k int UNIQUE DEFERRABLE INITIALLY DEFERRED) ON COMMIT DROP")
        )
        await connection.execute(text("INSERT INTO commit_check VALUES (1), (1)"))

    return LedgerBackend("sql", container.unit_of_work, lose, refuse)
