"""The lending library's use cases, on the kernel's :class:`UseCase`: they know their ports, no adapter."""

from __future__ import annotations

from dataclasses import dataclass

from app.use_case import UseCase
from ports.connection_provider import CausalToken, Intent
from ports.unit_of_work import UnitOfWork, UnitOptions
from tests.second_domain.domain import (
    BookId,
    BookNotOnLoanError,
    Loan,
    LoanId,
    MemberId,
    UnknownBookError,
    UnknownMemberError,
    new_book,
    new_member,
    parse_book_id,
    parse_member_id,
    plan_loan,
)
from tests.second_domain.ports import LendingRepositories

LendingUnit = UnitOfWork[LendingRepositories]


@dataclass(frozen=True, slots=True)
class LoanReceipt:
    """The loan made; ``causal_token`` (when asked for) lets a read on a replica see it."""

    loan_id: LoanId
    causal_token: CausalToken | None = None


class RegisterMember(UseCase[LendingRepositories]):
    """Register a member who may borrow books; returns the new id."""

    operation = "lending.register_member"

    async def __call__(self, name: str) -> MemberId:
        member = new_member(name)

        async def body(uow: LendingUnit) -> MemberId:
            await uow.repos.members.add(member)
            return member.id

        return await self.run(body)


class AddBook(UseCase[LendingRepositories]):
    """Put a new book on the shelves; returns its id."""

    operation = "lending.add_book"

    async def __call__(self, title: str) -> BookId:
        book = new_book(title)

        async def body(uow: LendingUnit) -> BookId:
            await uow.repos.books.add(book)
            return book.id

        return await self.run(body)


class LendBook(UseCase[LendingRepositories]):
    """Lend a book to a member: never a book to two members at once, never a fourth book to one member.

    The member's row is locked, then the book's, always in that order, so that concurrent loans of
    one book or to one member are decided one after the other and two loans cannot deadlock.
    """

    operation = "lending.lend_book"

    async def __call__(
        self, book_id: object, member_id: object, *, issue_causal_token: bool = False
    ) -> LoanReceipt:
        wanted_book, wanted_member = parse_book_id(book_id), parse_member_id(member_id)

        async def body(uow: LendingUnit) -> LoanId:
            member = await uow.repos.members.lock(wanted_member)
            if member is None:
                raise UnknownMemberError(wanted_member)
            book = await uow.repos.books.lock(wanted_book)
            if book is None:
                raise UnknownBookError(wanted_book)
            current = await uow.repos.loans.current(book.id)
            loan = plan_loan(book, member, current=current, held=await uow.repos.loans.held_by(member.id))
            await uow.repos.loans.add(loan)
            return loan.id

        options = UnitOptions(issue_causal_token=issue_causal_token)
        loan_id, token = await self.run_with_token(body, options=options)
        return LoanReceipt(loan_id, token)


class ReturnBook(UseCase[LendingRepositories]):
    """Take a book back from whoever holds it; returns the writer's position when asked for one."""

    operation = "lending.return_book"

    async def __call__(self, book_id: object, *, issue_causal_token: bool = False) -> CausalToken | None:
        wanted = parse_book_id(book_id)

        async def body(uow: LendingUnit) -> None:
            book = await uow.repos.books.lock(wanted)
            if book is None:
                raise UnknownBookError(wanted)
            loan = await uow.repos.loans.current(book.id)
            if loan is None:
                raise BookNotOnLoanError(book.id)
            await uow.repos.loans.end(loan)

        _, token = await self.run_with_token(body, options=UnitOptions(issue_causal_token=issue_causal_token))
        return token


class MemberLoans(UseCase[LendingRepositories]):
    """The books a member holds, oldest loan first; a replica may serve it (one that has seen ``after``)."""

    operation = "lending.member_loans"
    intent = Intent.READ

    async def __call__(self, member_id: object, *, after: CausalToken | None = None) -> tuple[Loan, ...]:
        wanted = parse_member_id(member_id)

        async def body(uow: LendingUnit) -> tuple[Loan, ...]:
            if await uow.repos.members.get(wanted) is None:
                raise UnknownMemberError(wanted)
            return tuple(await uow.repos.loans.held_by(wanted))

        return await self.run(body, options=UnitOptions(causal_token=after))
