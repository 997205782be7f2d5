"""The ledger's repository ports, run over the fake repositories and the SQL ones on PostgreSQL.

The fakes refuse what the schema refuses (a duplicate id, a negative balance, a transfer naming an
unknown account, entries of an unclaimed transfer), so a use case tested on them cannot rely on
something the database would not allow.
"""

from __future__ import annotations

import pytest

from domain.ledger import Account, AccountId, EntryKind, Transfer, new_account_id, plan_transfer
from ports.connection_provider import Intent
from ports.errors import DataIntegrityError
from tests.contract.ledger_units import LedgerBackend


def _account(balance: int = 0, owner: str = "alice") -> Account:
    return Account(new_account_id(), owner, balance)


async def _seeded(ledger: LedgerBackend, *accounts: Account, transfers: tuple[Transfer, ...] = ()) -> None:
    async with ledger.units() as uow:
        for account in accounts:
            await uow.repos.accounts.add(account)
        for transfer in transfers:
            assert await uow.repos.transfers.claim(transfer) is None
            await uow.repos.transfers.add_entries(transfer)
        await uow.commit()


async def _get(ledger: LedgerBackend, account_id: AccountId) -> Account | None:
    async with ledger.units(intent=Intent.READ) as uow:
        return await uow.repos.accounts.get(account_id)


async def test_an_added_account_is_read_back_as_it_was_added(ledger: LedgerBackend) -> None:
    account = _account(250, owner="Zoë")
    await _seeded(ledger, account)
    assert await _get(ledger, account.id) == account
    assert await _get(ledger, new_account_id()) is None


@pytest.mark.parametrize("clash", ["same id", "negative balance"])
async def test_an_account_the_schema_refuses_is_not_added(ledger: LedgerBackend, clash: str) -> None:
    existing = _account()
    await _seeded(ledger, existing)
    refused = Account(existing.id, "mallory", 0) if clash == "same id" else _account(-1)
    with pytest.raises(DataIntegrityError):
        async with ledger.units() as uow:
            await uow.repos.accounts.add(refused)
    assert await _get(ledger, existing.id) == existing


async def test_lock_returns_the_existing_accounts_by_id_and_leaves_out_unknown_ones(
    ledger: LedgerBackend,
) -> None:
    a, b = _account(1), _account(2)
    await _seeded(ledger, a, b)
    unknown = new_account_id()
    async with ledger.units() as uow:
        locked = await uow.repos.accounts.lock([b.id, unknown, a.id, b.id])
        nothing = await uow.repos.accounts.lock([])
    assert locked == {a.id: a, b.id: b}
    assert nothing == {}


async def test_save_balance_stores_only_the_balance_of_an_existing_account(ledger: LedgerBackend) -> None:
    account, absent = _account(10), _account(5)
    await _seeded(ledger, account)
    async with ledger.units() as uow:
        await uow.repos.accounts.lock([account.id])
        await uow.repos.accounts.save_balance(Account(account.id, "renamed", 42))
        await uow.repos.accounts.save_balance(absent)  # an UPDATE of no row
        await uow.commit()
    assert await _get(ledger, account.id) == Account(account.id, "alice", 42)
    assert await _get(ledger, absent.id) is None


async def test_a_negative_balance_is_refused_by_the_store_itself(ledger: LedgerBackend) -> None:
    account = _account(10)
    await _seeded(ledger, account)
    with pytest.raises(DataIntegrityError):
        async with ledger.units() as uow:
            await uow.repos.accounts.save_balance(Account(account.id, "alice", -1))
    assert await _get(ledger, account.id) == account


async def test_total_balance_sums_every_account(ledger: LedgerBackend) -> None:
    async with ledger.units(intent=Intent.READ_PRIMARY) as uow:
        assert await uow.repos.accounts.total_balance() == 0
    await _seeded(ledger, _account(3), _account(0), _account(39))
    async with ledger.units(intent=Intent.READ_PRIMARY) as uow:
        assert await uow.repos.accounts.total_balance() == 42


async def test_a_key_is_claimed_once_and_a_later_claim_gets_the_holder(ledger: LedgerBackend) -> None:
    source, destination = _account(100), _account()
    await _seeded(ledger, source, destination)
    first = plan_transfer("key-1", source.id, destination.id, 30)
    async with ledger.units() as uow:
        assert await uow.repos.transfers.claim(first) is None
        await uow.commit()

    again = plan_transfer("key-1", destination.id, source.id, 99)
    async with ledger.units() as uow:
        holder = await uow.repos.transfers.claim(again)
    assert holder == first


@pytest.mark.parametrize("unknown", ["source", "destination"])
async def test_a_transfer_naming_an_unknown_account_cannot_be_claimed(
    ledger: LedgerBackend, unknown: str
) -> None:
    known = _account(10)
    await _seeded(ledger, known)
    source, destination = (
        (new_account_id(), known.id) if unknown == "source" else (known.id, new_account_id())
    )
    with pytest.raises(DataIntegrityError):
        async with ledger.units() as uow:
            await uow.repos.transfers.claim(plan_transfer("k", source, destination, 1))


async def test_entries_of_an_unclaimed_transfer_are_refused(ledger: LedgerBackend) -> None:
    account = _account()
    await _seeded(ledger, account)
    with pytest.raises(DataIntegrityError):
        async with ledger.units() as uow:
            await uow.repos.transfers.add_entries(plan_transfer("never-claimed", None, account.id, 5))


async def test_an_accounts_entries_come_newest_first_up_to_the_limit(ledger: LedgerBackend) -> None:
    a, b = _account(), _account()
    deposit = plan_transfer("deposit", None, a.id, 100)
    transfer = plan_transfer("transfer", a.id, b.id, 30)
    await _seeded(ledger, a, b, transfers=(deposit, transfer))

    async with ledger.units(intent=Intent.READ) as uow:
        of_a = await uow.repos.transfers.entries_for(a.id, limit=10)
        newest_of_a = await uow.repos.transfers.entries_for(a.id, limit=1)
        of_b = await uow.repos.transfers.entries_for(b.id, limit=10)
        of_nobody = await uow.repos.transfers.entries_for(new_account_id(), limit=10)
    assert [(e.kind, e.amount, e.transfer_id) for e in of_a] == [
        (EntryKind.TRANSFER_OUT, -30, transfer.id),
        (EntryKind.DEPOSIT, 100, deposit.id),
    ]
    assert newest_of_a == of_a[:1]
    assert [(e.kind, e.amount) for e in of_b] == [(EntryKind.TRANSFER_IN, 30)]
    assert all(e.created_at is not None for e in (*of_a, *of_b))
    assert of_nobody == []


async def test_entries_total_sums_the_signed_amounts(ledger: LedgerBackend) -> None:
    a, b = _account(), _account()
    deposits = (plan_transfer("d1", None, a.id, 100), plan_transfer("d2", None, b.id, 7))
    await _seeded(ledger, a, b, transfers=(*deposits, plan_transfer("t", a.id, b.id, 60)))
    async with ledger.units(intent=Intent.READ_PRIMARY) as uow:
        assert await uow.repos.transfers.entries_total() == 107
