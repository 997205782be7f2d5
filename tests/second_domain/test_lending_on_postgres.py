"""The lending library on a real primary and its streaming replica, through the kernel's unit of work."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from sqlalchemy import text

from adapters.sqlalchemy.unit_of_work import SqlAlchemyUnitOfWork
from container import KernelContainer
from ports.connection_provider import WRITER, Intent, ReadRoute
from ports.errors import DataIntegrityError, ReadOnlyViolationError
from ports.unit_of_work import UnitOfWork
from tests.second_domain.domain import (
    BookId,
    BookNotOnLoanError,
    BookOnLoanError,
    Loan,
    LoanId,
    LoanLimitError,
    MemberId,
    UnknownBookError,
    UnknownMemberError,
    new_member,
)
from tests.second_domain.ports import LendingRepositories
from tests.second_domain.use_cases import LoanReceipt
from tests.second_domain.wiring import Lending, lending_units

pytestmark = pytest.mark.replication

REPLICA = "replica-1"


async def _in_recovery(uow: UnitOfWork[LendingRepositories]) -> bool:
    assert isinstance(uow, SqlAlchemyUnitOfWork)
    return bool(await uow.connection.scalar(text("SELECT pg_is_in_recovery()")))


async def test_writes_run_on_the_primary_and_reads_on_the_replica(library: KernelContainer) -> None:
    units, member = lending_units(library), new_member("Ada")
    write = units(intent=Intent.WRITE)
    async with write:
        await write.repos.members.add(member)
        wrote_in_recovery = await _in_recovery(write)
        await write.commit()
    assert await library.connection_provider().wait_for_replay(timeout_s=5)

    read = units(intent=Intent.READ)
    async with read:
        seen = await read.repos.members.get(member.id)
        read_in_recovery = await _in_recovery(read)

    assert (write.target, wrote_in_recovery) == (WRITER, False)
    assert (read.target, read_in_recovery) == (REPLICA, True)
    assert seen == member


async def test_each_read_after_a_loan_or_a_return_sees_it_on_the_replica_by_its_causal_token(
    library: KernelContainer, lending: Lending
) -> None:
    member = await lending.register_member("Grace")
    book = await lending.add_book("The Dispossessed")
    rounds = 10
    for _ in range(rounds):
        lent = await lending.lend_book(book, member, issue_causal_token=True)
        assert [loan.id for loan in await lending.member_loans(member, after=lent.causal_token)] == [
            lent.loan_id
        ]
        returned = await lending.return_book(book, issue_causal_token=True)
        assert await lending.member_loans(member, after=returned) == ()

    stats = library.connection_provider().stats()
    assert (stats.reads_by_target[REPLICA], stats.reads_by_target.get(WRITER, 0)) == (2 * rounds, 0)
    on_replica = stats.read_routes.get(ReadRoute.REPLICA_CAUGHT_UP, 0) + stats.read_routes.get(
        ReadRoute.REPLICA_AFTER_WAIT, 0
    )
    assert on_replica == 2 * rounds, stats.read_routes
    assert stats.writer_fallbacks == 0


async def test_a_write_in_a_read_unit_is_refused_by_the_replica(library: KernelContainer) -> None:
    read = lending_units(library)(intent=Intent.READ)
    with pytest.raises(ReadOnlyViolationError, match=REPLICA):
        async with read:
            await read.repos.members.add(new_member("Mallory"))


async def test_a_book_is_lent_to_one_member_however_many_ask_for_it_at_once(
    library: KernelContainer, lending: Lending
) -> None:
    book = await lending.add_book("Dune")
    members = [await lending.register_member(f"reader {i}") for i in range(8)]

    results = await asyncio.gather(*(lending.lend_book(book, m) for m in members), return_exceptions=True)

    winners = [m for m, r in zip(members, results, strict=True) if isinstance(r, LoanReceipt)]
    refusals = [r for r in results if isinstance(r, BookOnLoanError)]
    assert len(winners) == 1
    assert len(refusals) == len(members) - 1
    assert {r.holder for r in refusals} == set(winners)
    assert [loan.book_id for loan in await _held_on_the_writer(library, winners[0])] == [book]


async def test_a_member_never_holds_more_than_three_books_however_fast_they_borrow(
    library: KernelContainer, lending: Lending
) -> None:
    member = await lending.register_member("Hasty")
    books = [await lending.add_book(f"volume {i}") for i in range(6)]

    results = await asyncio.gather(*(lending.lend_book(b, member) for b in books), return_exceptions=True)

    assert sum(isinstance(r, LoanReceipt) for r in results) == 3
    assert sum(isinstance(r, LoanLimitError) for r in results) == 3
    assert len(await _held_on_the_writer(library, member)) == 3


async def _held_on_the_writer(library: KernelContainer, member: MemberId) -> tuple[Loan, ...]:
    # The replica may not have replayed the loans just made (a gathered batch has no one causal
    # token to wait for), so this reads on the writer.
    async with lending_units(library)(intent=Intent.READ_PRIMARY) as uow:
        return tuple(await uow.repos.loans.held_by(member))


async def test_the_database_refuses_a_second_active_loan_of_a_book_even_past_the_rule(
    library: KernelContainer, lending: Lending
) -> None:
    book = await lending.add_book("Solaris")
    first_member, second_member = (
        await lending.register_member("first"),
        await lending.register_member("second"),
    )
    units = lending_units(library)
    first, second = units(), units()
    async with first, second:
        # Neither unit locked the book, so both find it on the shelf: only the unique index is left.
        assert await first.repos.loans.current(book) is None
        assert await second.repos.loans.current(book) is None
        await first.repos.loans.add(_loan(book, first_member))
        await first.commit()
        with pytest.raises(DataIntegrityError, match="loans_one_active_per_book"):
            await second.repos.loans.add(_loan(book, second_member))


def _loan(book: BookId, member: MemberId) -> Loan:
    return Loan(LoanId(uuid.uuid4()), book, member)


async def test_a_returned_book_may_be_lent_again_and_a_book_on_the_shelf_cannot_be_returned(
    lending: Lending,
) -> None:
    book = await lending.add_book("Kindred")
    first, second = await lending.register_member("first"), await lending.register_member("second")

    await lending.lend_book(book, first)
    with pytest.raises(BookOnLoanError):
        await lending.lend_book(book, first)
    await lending.return_book(book)
    await lending.lend_book(book, second)
    await lending.return_book(book)

    with pytest.raises(BookNotOnLoanError):
        await lending.return_book(book)


async def test_unknown_books_and_members_are_refused_as_such(lending: Lending) -> None:
    book, member = await lending.add_book("Neuromancer"), await lending.register_member("Case")
    nobody = uuid.uuid4()
    with pytest.raises(UnknownBookError):
        await lending.lend_book(nobody, member)
    with pytest.raises(UnknownMemberError):
        await lending.lend_book(book, nobody)
    with pytest.raises(UnknownMemberError):
        await lending.member_loans(nobody)
