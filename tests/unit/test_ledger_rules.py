"""The ledger's arithmetic and validation, property-tested."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.errors import InvalidArgumentError
from domain.ledger import MAX_AMOUNT, Account, AccountId, parse_account_id, plan_transfer
from domain.ledger.errors import InsufficientFundsError, InvalidAmountError, SameAccountTransferError

amounts = st.integers(min_value=1, max_value=MAX_AMOUNT)


def _account(balance: int) -> Account:
    return Account(AccountId(uuid.uuid4()), "owner", balance)


@given(balance=st.integers(min_value=0, max_value=MAX_AMOUNT), amount=amounts)
def test_a_debit_never_leaves_a_negative_balance(balance: int, amount: int) -> None:
    account = _account(balance)
    if amount > balance:
        with pytest.raises(InsufficientFundsError):
            account.debited(amount)
    else:
        assert account.debited(amount).balance == balance - amount >= 0


@given(balance=st.integers(min_value=0, max_value=MAX_AMOUNT), amount=amounts)
def test_a_transfer_conserves_money(balance: int, amount: int) -> None:
    source, destination = _account(balance), _account(0)
    if amount > balance:
        return
    after = (source.debited(amount), destination.credited(amount))
    assert sum(a.balance for a in after) == balance
    transfer = plan_transfer("key", source.id, destination.id, amount)
    assert sum(e.amount for e in transfer.entries()) == 0


@pytest.mark.parametrize("amount", [0, -1, MAX_AMOUNT + 1, 1.5, "10", True, None])
def test_amounts_must_be_positive_whole_minor_units_within_the_bound(amount: object) -> None:
    with pytest.raises(InvalidAmountError):
        plan_transfer("key", None, AccountId(uuid.uuid4()), amount)


@pytest.mark.parametrize("key", ["", "   ", "x" * 201, "nul\x00byte", 42])
def test_idempotency_keys_must_be_short_printable_text(key: object) -> None:
    with pytest.raises(InvalidArgumentError, match="idempotency_key"):
        plan_transfer(key, None, AccountId(uuid.uuid4()), 1)


def test_hostile_text_is_just_text() -> None:
    key = "'; DROP TABLE accounts; --"
    assert plan_transfer(key, None, AccountId(uuid.uuid4()), 1).idempotency_key == key


def test_an_account_cannot_pay_itself() -> None:
    same = AccountId(uuid.uuid4())
    with pytest.raises(SameAccountTransferError):
        plan_transfer("key", same, same, 1)


@pytest.mark.parametrize("value", ["not-a-uuid", 12, None, "x" * 100])
def test_account_ids_must_be_uuids(value: object) -> None:
    with pytest.raises(InvalidArgumentError):
        parse_account_id(value)


def test_a_balance_cannot_exceed_the_bound() -> None:
    with pytest.raises(InvalidAmountError):
        _account(MAX_AMOUNT).credited(1)
