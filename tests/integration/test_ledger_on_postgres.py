"""The ledger's use cases through the real unit of work on a real PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from sqlalchemy import text

from container import Container
from domain.ledger import AccountId
from domain.ledger.errors import (
    IdempotencyKeyReusedError,
    InsufficientFundsError,
    InvalidAmountError,
    UnknownAccountError,
)
from ports.connection_provider import Intent
from ports.errors import DataIntegrityError, ReadOnlyViolationError


async def _funded_account(container: Container, amount: int) -> AccountId:
    account = await container.open_account()("alice")
    await container.deposit()(account, amount, idempotency_key=f"seed-{account}")
    return account


async def test_a_transfer_moves_money_and_writes_one_entry_per_account(container: Container) -> None:
    source = await _funded_account(container, 1_000)
    destination = await container.open_account()("bob")

    receipt = await container.transfer()(source, destination, 300, idempotency_key="t-1")

    assert not receipt.replayed
    assert await container.get_balance()(source) == 700
    assert await container.get_balance()(destination) == 300
    statement = await container.get_statement()(source)
    assert [(e.kind.value, e.amount) for e in statement.entries] == [
        ("transfer_out", -300),
        ("deposit", 1_000),
    ]


async def test_a_transfer_repeated_with_the_same_key_is_applied_once(container: Container) -> None:
    source = await _funded_account(container, 1_000)
    destination = await container.open_account()("bob")

    first = await container.transfer()(source, destination, 100, idempotency_key="same-key")
    second = await container.transfer()(source, destination, 100, idempotency_key="same-key")

    assert second.transfer_id == first.transfer_id
    assert second.replayed
    assert await container.get_balance()(source) == 900


async def test_concurrent_repeats_of_one_transfer_are_applied_exactly_once(container: Container) -> None:
    source = await _funded_account(container, 1_000)
    destination = await container.open_account()("bob")
    transfer = container.transfer()

    receipts = await asyncio.gather(
        *(transfer(source, destination, 10, idempotency_key="racing-key") for _ in range(8))
    )

    assert len({r.transfer_id for r in receipts}) == 1
    assert sum(not r.replayed for r in receipts) == 1
    assert await container.get_balance()(destination) == 10


async def test_a_key_reused_for_a_different_request_is_refused(container: Container) -> None:
    source = await _funded_account(container, 1_000)
    destination = await container.open_account()("bob")
    await container.transfer()(source, destination, 100, idempotency_key="k")

    with pytest.raises(IdempotencyKeyReusedError):
        await container.transfer()(source, destination, 999, idempotency_key="k")


async def test_a_balance_never_goes_below_zero(container: Container) -> None:
    source = await _funded_account(container, 50)
    destination = await container.open_account()("bob")

    with pytest.raises(InsufficientFundsError):
        await container.transfer()(source, destination, 51, idempotency_key="too-much")

    assert await container.get_balance()(source) == 50
    assert (await container.get_statement()(destination)).entries == ()


async def test_unknown_accounts_and_bad_amounts_are_domain_errors(container: Container) -> None:
    known = await _funded_account(container, 10)
    with pytest.raises(UnknownAccountError):
        await container.transfer()(known, uuid.uuid4(), 1, idempotency_key="ghost")
    with pytest.raises(InvalidAmountError):
        await container.transfer()(known, uuid.uuid4(), -5, idempotency_key="negative")


async def test_a_write_inside_a_read_unit_of_work_fails_loudly(container: Container) -> None:
    account = await _funded_account(container, 10)
    uow = container.unit_of_work(intent=Intent.READ)

    with pytest.raises(ReadOnlyViolationError, match="read-only"):
        async with uow:
            await uow.repos.accounts.save_balance((await uow.repos.accounts.get(account)).debited(1))  # type: ignore[union-attr]  # None would fail the test anyway

    assert await container.get_balance()(account) == 10


async def test_leaving_a_unit_of_work_without_commit_rolls_back(container: Container) -> None:
    account = await _funded_account(container, 10)
    async with container.unit_of_work() as uow:
        locked = await uow.repos.accounts.lock([account])
        await uow.repos.accounts.save_balance(locked[account].credited(5))

    assert await container.get_balance()(account) == 10
    assert container.connection_provider().checked_out == 0


async def test_entries_are_append_only_at_the_database(container: Container) -> None:
    await _funded_account(container, 10)
    provider = container.connection_provider()
    async with provider.connection(Intent.WRITE) as connection:
        with pytest.raises(Exception, match="append-only"):
            await connection.execute(text("UPDATE entries SET amount = 0"))


async def test_the_audit_balances_after_mixed_work(container: Container) -> None:
    a = await _funded_account(container, 500)
    b = await _funded_account(container, 500)
    await asyncio.gather(*(container.transfer()(a, b, 7, idempotency_key=f"m-{i}") for i in range(20)))

    report = await container.audit_ledger()()

    assert report.balanced
    assert report.total_balance == 1_000


async def test_constraint_violations_surface_as_data_integrity_errors(container: Container) -> None:
    account = await _funded_account(container, 10)
    async with container.unit_of_work() as uow:
        existing = await uow.repos.accounts.get(account)
        assert existing is not None
        with pytest.raises(DataIntegrityError, match="SQLSTATE 23"):
            await uow.repos.accounts.add(existing)
