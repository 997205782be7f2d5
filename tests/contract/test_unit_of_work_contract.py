"""The ``UnitOfWork`` contract, run over the fake of ``tests/fakes.py`` and the SQL adapter on PostgreSQL.

What a use case may rely on: a unit is used once, inside ``async with``; it keeps nothing unless
committed; a read unit refuses every write; a commit fails either with its outcome unknown
(``CommitOutcomeUnknownError``: all or nothing was applied) or with a known error (nothing was).
The fake is the use-case tests' stand-in, so it must not allow what the real unit refuses.
"""

from __future__ import annotations

from contextlib import suppress

import pytest

from domain.ledger import Account, AccountId, new_account_id, plan_transfer
from ports.connection_provider import WRITER, CausalToken, Intent
from ports.errors import (
    CommitOutcomeUnknownError,
    DataIntegrityError,
    HexError,
    ReadOnlyViolationError,
    TransactionAbortedError,
)
from ports.unit_of_work import UnitOptions
from tests.contract.ledger_units import LedgerBackend, LedgerUnit, Provocation

READ_INTENTS = pytest.mark.parametrize("intent", [Intent.READ, Intent.READ_PRIMARY])


def _account(balance: int = 0) -> Account:
    return Account(new_account_id(), "alice", balance)


async def _stored(ledger: LedgerBackend, *account_ids: AccountId) -> list[Account | None]:
    """What a later unit sees of the accounts (on the writer: the latest committed state)."""
    async with ledger.units(intent=Intent.READ_PRIMARY) as uow:
        return [await uow.repos.accounts.get(account_id) for account_id in account_ids]


async def _committed(ledger: LedgerBackend, *accounts: Account) -> None:
    async with ledger.units() as uow:
        for account in accounts:
            await uow.repos.accounts.add(account)
        await uow.commit()


async def test_committed_writes_are_seen_by_the_next_unit(ledger: LedgerBackend) -> None:
    account = _account(5)
    await _committed(ledger, account)
    assert await _stored(ledger, account.id) == [account]


async def test_a_unit_left_without_commit_keeps_nothing(ledger: LedgerBackend) -> None:
    account = _account()
    async with ledger.units() as uow:
        await uow.repos.accounts.add(account)
        assert await uow.repos.accounts.get(account.id) == account, "a unit sees its own writes"
    assert await _stored(ledger, account.id) == [None]


async def test_a_unit_left_by_an_error_keeps_nothing(ledger: LedgerBackend) -> None:
    account = _account()

    async def failing_use_case() -> None:
        async with ledger.units() as uow:
            await uow.repos.accounts.add(account)
            raise RuntimeError("use case failed")

    with pytest.raises(RuntimeError, match="use case failed"):
        await failing_use_case()
    assert await _stored(ledger, account.id) == [None]


async def test_an_explicit_rollback_discards_the_writes_so_far(ledger: LedgerBackend) -> None:
    account = _account()
    async with ledger.units() as uow:
        await uow.repos.accounts.add(account)
        await uow.rollback()
        assert await uow.repos.accounts.get(account.id) is None
    assert await _stored(ledger, account.id) == [None]


async def test_a_unit_is_used_once(ledger: LedgerBackend) -> None:
    uow = ledger.units()
    async with uow:
        pass
    with pytest.raises(HexError, match="used once"):
        async with uow:
            pass


async def test_commit_outside_the_block_fails(ledger: LedgerBackend) -> None:
    account = _account()
    uow = ledger.units()
    with pytest.raises(HexError, match="not open"):
        await uow.commit()
    async with uow:
        await uow.repos.accounts.add(account)
    with pytest.raises(HexError, match="not open"):
        await uow.commit()
    assert await _stored(ledger, account.id) == [None]


async def test_the_repositories_are_handed_out_only_once_the_unit_is_open(ledger: LedgerBackend) -> None:
    with pytest.raises(HexError, match="not open"):
        _ = ledger.units().repos


async def test_write_units_and_primary_reads_run_on_the_writer(ledger: LedgerBackend) -> None:
    for intent in (Intent.WRITE, Intent.READ_PRIMARY):
        async with ledger.units(intent=intent) as uow:
            pass
        assert uow.target == WRITER


@READ_INTENTS
@pytest.mark.parametrize("write", ["add", "save_balance", "lock", "claim"])
async def test_a_read_unit_refuses_every_write(ledger: LedgerBackend, intent: Intent, write: str) -> None:
    existing, new = _account(10), _account()
    await _committed(ledger, existing)

    with pytest.raises(ReadOnlyViolationError):
        async with ledger.units(intent=intent) as uow:
            await _write(uow, write, existing, new)
    assert await _stored(ledger, existing.id, new.id) == [existing, None]


async def _write(uow: LedgerUnit, write: str, existing: Account, new: Account) -> None:
    if write == "add":
        await uow.repos.accounts.add(new)
    elif write == "save_balance":
        await uow.repos.accounts.save_balance(existing.credited(1))
    elif write == "lock":  # SELECT ... FOR UPDATE takes row locks: a read-only transaction may not
        await uow.repos.accounts.lock([existing.id])
    else:
        await uow.repos.transfers.claim(plan_transfer("read-only", None, existing.id, 1))


@READ_INTENTS
async def test_a_read_unit_commits_nothing_and_stays_read_only_after_a_rollback(
    ledger: LedgerBackend, intent: Intent
) -> None:
    async with ledger.units(intent=intent) as uow:
        await uow.rollback()
        with pytest.raises(ReadOnlyViolationError):
            await uow.repos.accounts.add(_account())
    async with ledger.units(intent=intent) as uow:
        await uow.commit()  # a read unit's commit ends its transaction; there is nothing to keep


async def _commit_provoked(provoke: Provocation, ledger: LedgerBackend, *accounts: Account) -> None:
    async with ledger.units() as uow:
        for account in accounts:
            await uow.repos.accounts.add(account)
        await provoke(uow)
        await uow.commit()


async def test_a_commit_that_loses_its_connection_has_an_unknown_outcome_all_or_nothing(
    ledger: LedgerBackend,
) -> None:
    first, second = _account(1), _account(2)
    with pytest.raises(CommitOutcomeUnknownError) as raised:
        await _commit_provoked(ledger.lose_connection_at_commit, ledger, first, second)
    assert not raised.value.retryable, "only an idempotency key makes repeating such a commit safe"
    assert await _stored(ledger, first.id, second.id) in ([first, second], [None, None])


async def test_a_commit_the_server_refuses_raises_its_error_and_applies_nothing(
    ledger: LedgerBackend,
) -> None:
    account = _account()
    with pytest.raises(DataIntegrityError):
        await _commit_provoked(ledger.refuse_commit, ledger, account)
    assert await _stored(ledger, account.id) == [None]


async def test_after_a_failed_statement_nothing_of_the_unit_is_applied(ledger: LedgerBackend) -> None:
    account = _account()
    async with ledger.units() as uow:
        await uow.repos.accounts.add(account)
        with pytest.raises(DataIntegrityError):
            await uow.repos.accounts.add(account)
        with pytest.raises(HexError):  # PostgreSQL: "current transaction is aborted"
            await uow.repos.accounts.get(account.id)
        with suppress(HexError):
            await uow.commit()
    assert await _stored(ledger, account.id) == [None]


async def test_commit_after_a_failed_statement_says_that_nothing_was_committed(ledger: LedgerBackend) -> None:
    account = _account()
    async with ledger.units() as uow:
        await uow.repos.accounts.add(account)
        with pytest.raises(DataIntegrityError):
            await uow.repos.accounts.add(account)
        with pytest.raises(TransactionAbortedError, match="nothing was committed"):
            await uow.commit()
    assert await _stored(ledger, account.id) == [None]


async def test_a_write_unit_asked_for_a_causal_token_has_one_once_committed(ledger: LedgerBackend) -> None:
    tokens: list[CausalToken | None] = []
    for _ in range(2):
        uow = ledger.units(options=UnitOptions(issue_causal_token=True))
        async with uow:
            await uow.repos.accounts.add(_account())
            assert uow.causal_token is None
            await uow.commit()
        tokens.append(uow.causal_token)
    first, second = tokens
    assert first is not None
    assert second is not None
    assert second > first, "a later commit's token covers the earlier one"


async def test_units_not_asked_for_a_causal_token_have_none(ledger: LedgerBackend) -> None:
    for intent in Intent:
        async with ledger.units(intent=intent) as uow:
            await uow.commit()
        assert uow.causal_token is None
