"""The lending library's repository ports, and the set its units of work hand out as ``uow.repos``."""

from __future__ import annotations

from typing import Protocol

from tests.second_domain.domain import Book, BookId, Loan, Member, MemberId


class MemberRepository(Protocol):
    """Members seen through the unit of work's transaction."""

    async def add(self, member: Member) -> None:
        """Insert a new member."""
        ...

    async def get(self, member_id: MemberId) -> Member | None:
        """The member, or ``None``."""
        ...

    async def lock(self, member_id: MemberId) -> Member | None:
        """The member, its row locked until the unit ends: one member's loans are decided one at a time."""
        ...


class BookRepository(Protocol):
    """Books seen through the unit of work's transaction."""

    async def add(self, book: Book) -> None:
        """Insert a new book."""
        ...

    async def lock(self, book_id: BookId) -> Book | None:
        """The book, its row locked until the unit ends: one book's loans are decided one at a time."""
        ...


class LoanRepository(Protocol):
    """Loans; only the active ones (not returned) are seen."""

    async def add(self, loan: Loan) -> None:
        """Record an active loan; a second active loan of one book is refused (``DataIntegrityError``)."""
        ...

    async def current(self, book_id: BookId) -> Loan | None:
        """The book's active loan, or ``None`` when it is on the shelf."""
        ...

    async def held_by(self, member_id: MemberId) -> list[Loan]:
        """The member's active loans, oldest first."""
        ...

    async def end(self, loan: Loan) -> None:
        """Mark the loan returned."""
        ...


class LendingRepositories(Protocol):
    """What ``uow.repos`` holds in a lending unit of work."""

    @property
    def members(self) -> MemberRepository: ...

    @property
    def books(self) -> BookRepository: ...

    @property
    def loans(self) -> LoanRepository: ...
