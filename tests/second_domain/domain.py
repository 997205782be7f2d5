"""The lending library's values and rules: members, books, loans; plain Python, no adapter."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, NewType

from domain.errors import DomainError, InvalidArgumentError

MemberId = NewType("MemberId", uuid.UUID)
BookId = NewType("BookId", uuid.UUID)
LoanId = NewType("LoanId", uuid.UUID)

#: How many books one member may hold at once.
MAX_LOANS_PER_MEMBER: Final = 3
MAX_NAME_LENGTH: Final = 200


class UnknownMemberError(DomainError):
    """No member has this id."""

    def __init__(self, member_id: MemberId) -> None:
        super().__init__(f"unknown member {member_id}")
        self.member_id = member_id


class UnknownBookError(DomainError):
    """No book has this id."""

    def __init__(self, book_id: BookId) -> None:
        super().__init__(f"unknown book {book_id}")
        self.book_id = book_id


class BookOnLoanError(DomainError):
    """The book is lent to a member already: a book is lent to at most one member at a time."""

    def __init__(self, book_id: BookId, holder: MemberId) -> None:
        super().__init__(f"book {book_id} is on loan to member {holder}")
        self.book_id = book_id
        self.holder = holder


class LoanLimitError(DomainError):
    """The member already holds as many books as a member may."""

    def __init__(self, member_id: MemberId, held: int) -> None:
        super().__init__(f"member {member_id} holds {held} books; the limit is {MAX_LOANS_PER_MEMBER}")
        self.member_id = member_id


class BookNotOnLoanError(DomainError):
    """The book being returned is not on loan."""

    def __init__(self, book_id: BookId) -> None:
        super().__init__(f"book {book_id} is not on loan")
        self.book_id = book_id


@dataclass(frozen=True, slots=True)
class Member:
    """Someone who may borrow books."""

    id: MemberId
    name: str


@dataclass(frozen=True, slots=True)
class Book:
    """One copy of a book on the library's shelves."""

    id: BookId
    title: str


@dataclass(frozen=True, slots=True)
class Loan:
    """A book lent to a member, until it is returned."""

    id: LoanId
    book_id: BookId
    member_id: MemberId


def new_member(name: object) -> Member:
    return Member(MemberId(uuid.uuid4()), _text(name, field="name"))


def new_book(title: object) -> Book:
    return Book(BookId(uuid.uuid4()), _text(title, field="title"))


def plan_loan(book: Book, member: Member, *, current: Loan | None, held: Sequence[Loan]) -> Loan:
    """The loan of ``book`` to ``member``, given the book's current loan and the member's loans.

    Raises :class:`BookOnLoanError` if the book is lent already (to anyone, this member included)
    and :class:`LoanLimitError` if the member holds ``MAX_LOANS_PER_MEMBER`` books.
    """
    if current is not None:
        raise BookOnLoanError(book.id, current.member_id)
    if len(held) >= MAX_LOANS_PER_MEMBER:
        raise LoanLimitError(member.id, len(held))
    return Loan(LoanId(uuid.uuid4()), book.id, member.id)


def parse_member_id(value: object) -> MemberId:
    return MemberId(_uuid(value, field="member id"))


def parse_book_id(value: object) -> BookId:
    return BookId(_uuid(value, field="book id"))


def _uuid(value: object, *, field: str) -> uuid.UUID:
    if isinstance(value, uuid.UUID):
        return value
    if isinstance(value, str) and len(value) <= 64:
        try:
            return uuid.UUID(value)
        except ValueError:
            pass
    raise InvalidArgumentError(f"{field} must be a UUID, got {str(value)[:64]!r}")


def _text(value: object, *, field: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidArgumentError(f"{field} must be a non-blank string")
    if len(value) > MAX_NAME_LENGTH or "\x00" in value:
        raise InvalidArgumentError(f"{field} must be at most {MAX_NAME_LENGTH} characters, without NUL")
    return value
