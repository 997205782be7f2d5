"""SQLAlchemy Core repositories of the lending library, on the kernel's ``SqlAlchemyRepository``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select

from adapters.sqlalchemy.repository import SqlAlchemyRepository
from adapters.sqlalchemy.unit_of_work import Transaction
from tests.second_domain.domain import Book, BookId, Loan, LoanId, Member, MemberId
from tests.second_domain.ports import BookRepository, LendingRepositories, LoanRepository, MemberRepository
from tests.second_domain.tables import books, loans, members


class SqlAlchemyMemberRepository(SqlAlchemyRepository, MemberRepository):
    async def add(self, member: Member) -> None:
        await self._run(members.insert().values(id=member.id, name=member.name))

    async def get(self, member_id: MemberId) -> Member | None:
        row = (await self._run(select(members).where(members.c.id == member_id))).one_or_none()
        return None if row is None else Member(MemberId(row.id), row.name)

    async def lock(self, member_id: MemberId) -> Member | None:
        statement = select(members).where(members.c.id == member_id).with_for_update()
        row = (await self._run(statement)).one_or_none()
        return None if row is None else Member(MemberId(row.id), row.name)


class SqlAlchemyBookRepository(SqlAlchemyRepository, BookRepository):
    async def add(self, book: Book) -> None:
        await self._run(books.insert().values(id=book.id, title=book.title))

    async def lock(self, book_id: BookId) -> Book | None:
        row = (await self._run(select(books).where(books.c.id == book_id).with_for_update())).one_or_none()
        return None if row is None else Book(BookId(row.id), row.title)


def _loan(row: Any) -> Loan:
    return Loan(LoanId(row.id), BookId(row.book_id), MemberId(row.member_id))


_ACTIVE = loans.c.returned_at.is_(None)


class SqlAlchemyLoanRepository(SqlAlchemyRepository, LoanRepository):
    async def add(self, loan: Loan) -> None:
        await self._run(loans.insert().values(id=loan.id, book_id=loan.book_id, member_id=loan.member_id))

    async def current(self, book_id: BookId) -> Loan | None:
        row = (await self._run(select(loans).where(loans.c.book_id == book_id, _ACTIVE))).one_or_none()
        return None if row is None else _loan(row)

    async def held_by(self, member_id: MemberId) -> list[Loan]:
        statement = (
            select(loans).where(loans.c.member_id == member_id, _ACTIVE).order_by(loans.c.lent_at, loans.c.id)
        )
        return [_loan(row) for row in (await self._run(statement)).all()]

    async def end(self, loan: Loan) -> None:
        await self._run(loans.update().where(loans.c.id == loan.id, _ACTIVE).values(returned_at=func.now()))


@dataclass(frozen=True, slots=True)
class SqlAlchemyLendingRepositories(LendingRepositories):
    members: SqlAlchemyMemberRepository
    books: SqlAlchemyBookRepository
    loans: SqlAlchemyLoanRepository


def lending_repositories(transaction: Transaction) -> SqlAlchemyLendingRepositories:
    """The lending repositories on ``transaction``: the factory given to the unit of work."""
    connection, target = transaction.connection, transaction.target
    return SqlAlchemyLendingRepositories(
        SqlAlchemyMemberRepository(connection, target=target),
        SqlAlchemyBookRepository(connection, target=target),
        SqlAlchemyLoanRepository(connection, target=target),
    )
