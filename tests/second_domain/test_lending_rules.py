"""The lending rules as plain values, and the use cases refusing bad arguments before any unit of work."""

from __future__ import annotations

import uuid
from typing import NoReturn, TypeVar

import pytest

from app.metrics import Metrics
from app.retry import RetryPolicy
from app.retry_budget import UnlimitedRetryBudget
from app.use_case import UseCase
from domain.errors import InvalidArgumentError
from ports.connection_provider import Intent, Priority
from ports.unit_of_work import DEFAULT_OPTIONS, UnitOptions
from tests.second_domain.domain import (
    MAX_LOANS_PER_MEMBER,
    BookOnLoanError,
    Loan,
    LoanId,
    LoanLimitError,
    Member,
    new_book,
    new_member,
    parse_book_id,
    plan_loan,
)
from tests.second_domain.ports import LendingRepositories
from tests.second_domain.use_cases import AddBook, LendBook, MemberLoans, RegisterMember, ReturnBook

BOOK, MEMBER, OTHER = new_book("Middlemarch"), new_member("Dorothea"), new_member("Will")


def _loan_to(member: Member) -> Loan:
    return Loan(LoanId(uuid.uuid4()), BOOK.id, member.id)


def test_a_book_on_the_shelf_is_lent_to_a_member_under_the_limit() -> None:
    loan = plan_loan(BOOK, MEMBER, current=None, held=[_loan_to(MEMBER)] * (MAX_LOANS_PER_MEMBER - 1))
    assert (loan.book_id, loan.member_id) == (BOOK.id, MEMBER.id)


@pytest.mark.parametrize("holder", [MEMBER, OTHER], ids=["the same member", "another member"])
def test_a_book_on_loan_is_not_lent_again_to_anyone(holder: Member) -> None:
    current = _loan_to(holder)
    with pytest.raises(BookOnLoanError) as refused:
        plan_loan(BOOK, MEMBER, current=current, held=[])
    assert refused.value.holder == current.member_id


def test_a_member_at_the_limit_borrows_nothing_more() -> None:
    with pytest.raises(LoanLimitError, match=f"the limit is {MAX_LOANS_PER_MEMBER}"):
        plan_loan(BOOK, MEMBER, current=None, held=[_loan_to(MEMBER)] * MAX_LOANS_PER_MEMBER)


@pytest.mark.parametrize("bad", ["", "   ", "x" * 201, "nul\x00", 42, None])
def test_names_and_titles_are_non_blank_bounded_text(bad: object) -> None:
    with pytest.raises(InvalidArgumentError):
        new_member(bad)
    with pytest.raises(InvalidArgumentError):
        new_book(bad)


def test_ids_are_uuids_or_their_text() -> None:
    book_id = uuid.uuid4()
    assert parse_book_id(str(book_id)) == parse_book_id(book_id) == book_id
    with pytest.raises(InvalidArgumentError):
        parse_book_id("'; DROP TABLE loans; --")


class NoUnits:
    """A unit-of-work factory that fails the test if a use case asks it for a unit."""

    def __call__(
        self,
        *,
        intent: Intent = Intent.WRITE,
        priority: Priority = Priority.NORMAL,
        options: UnitOptions = DEFAULT_OPTIONS,
    ) -> NoReturn:
        raise AssertionError("a unit of work was made for a request that should have been refused")


U = TypeVar("U", bound=UseCase[LendingRepositories])


def _refusing(use_case: type[U]) -> U:
    return use_case(
        uow_factory=NoUnits(),
        retry_policy=RetryPolicy(wait=False),
        retry_budget=UnlimitedRetryBudget(),
        metrics=Metrics(),
    )


async def test_bad_arguments_are_refused_before_any_unit_of_work() -> None:
    with pytest.raises(InvalidArgumentError):
        await _refusing(RegisterMember)(" ")
    with pytest.raises(InvalidArgumentError):
        await _refusing(AddBook)("")
    with pytest.raises(InvalidArgumentError):
        await _refusing(LendBook)("not-a-uuid", uuid.uuid4())
    with pytest.raises(InvalidArgumentError):
        await _refusing(ReturnBook)(12)
    with pytest.raises(InvalidArgumentError):
        await _refusing(MemberLoans)(None)
