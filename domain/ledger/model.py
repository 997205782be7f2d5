"""A small money ledger: accounts that never go negative, idempotent transfers, append-only entries.

Amounts are whole numbers of minor units (cents), never floats. The domain imports nothing of
alchemy-hex: it is plain values and rules.
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Final, NewType

from domain.errors import InvalidArgumentError
from domain.ledger.errors import InsufficientFundsError, InvalidAmountError, SameAccountTransferError

AccountId = NewType("AccountId", uuid.UUID)
TransferId = NewType("TransferId", uuid.UUID)

#: The largest amount one operation may move, and the largest balance, in minor units.
#: Well inside PostgreSQL's bigint so that no sum of two balances can overflow.
MAX_AMOUNT: Final = 10**15
MAX_OWNER_LENGTH: Final = 200
MAX_KEY_LENGTH: Final = 200


class EntryKind(enum.StrEnum):
    """Why an entry moved money."""

    DEPOSIT = "deposit"
    TRANSFER_OUT = "transfer_out"
    TRANSFER_IN = "transfer_in"


def new_account_id() -> AccountId:
    return AccountId(uuid.uuid4())


def new_transfer_id() -> TransferId:
    return TransferId(uuid.uuid4())


def validate_amount(amount: object) -> int:
    """Return ``amount`` if it is a positive ``int`` of at most ``MAX_AMOUNT`` minor units."""
    # bool is an int subclass; True must not move one cent.
    if not isinstance(amount, int) or isinstance(amount, bool):
        raise InvalidAmountError(f"amount must be a whole number of minor units, got {type(amount).__name__}")
    if amount <= 0:
        raise InvalidAmountError(f"amount must be positive, got {amount}")
    if amount > MAX_AMOUNT:
        raise InvalidAmountError(f"amount {amount} exceeds the maximum of {MAX_AMOUNT}")
    return amount


def validate_text(value: object, *, field: str, max_length: int) -> str:
    """Return ``value`` if it is a non-blank string of printable characters within ``max_length``."""
    if not isinstance(value, str):
        raise InvalidArgumentError(f"{field} must be a string, got {type(value).__name__}")
    if not value.strip():
        raise InvalidArgumentError(f"{field} must not be blank")
    if len(value) > max_length:
        raise InvalidArgumentError(f"{field} is {len(value)} characters long; the maximum is {max_length}")
    if "\x00" in value:
        raise InvalidArgumentError(f"{field} must not contain NUL characters")
    return value


@dataclass(frozen=True, slots=True)
class Account:
    """An account and its balance in minor units; the balance never goes below zero."""

    id: AccountId
    owner: str
    balance: int = 0

    def credited(self, amount: int) -> Account:
        amount = validate_amount(amount)
        if self.balance + amount > MAX_AMOUNT:
            raise InvalidAmountError(f"balance of account {self.id} would exceed {MAX_AMOUNT}")
        return replace(self, balance=self.balance + amount)

    def debited(self, amount: int) -> Account:
        amount = validate_amount(amount)
        if amount > self.balance:
            raise InsufficientFundsError(self.id, self.balance, amount)
        return replace(self, balance=self.balance - amount)


@dataclass(frozen=True, slots=True)
class Transfer:
    """Money moved once per idempotency key; ``source`` is ``None`` for a deposit."""

    id: TransferId
    idempotency_key: str
    source: AccountId | None
    destination: AccountId
    amount: int

    def same_request_as(self, other: Transfer) -> bool:
        """Whether ``other`` asks for exactly this movement (so a repeat may return this one)."""
        return (self.source, self.destination, self.amount) == (other.source, other.destination, other.amount)

    def entries(self) -> tuple[Entry, ...]:
        """The append-only entries this transfer writes: one per account it touches."""
        if self.source is None:
            return (Entry(self.destination, self.id, EntryKind.DEPOSIT, self.amount),)
        return (
            Entry(self.source, self.id, EntryKind.TRANSFER_OUT, -self.amount),
            Entry(self.destination, self.id, EntryKind.TRANSFER_IN, self.amount),
        )


def plan_transfer(
    idempotency_key: object, source: AccountId | None, destination: AccountId, amount: object
) -> Transfer:
    """Validate a request and return the transfer it would apply."""
    key = validate_text(idempotency_key, field="idempotency_key", max_length=MAX_KEY_LENGTH)
    if source == destination:
        raise SameAccountTransferError(f"cannot transfer from account {source} to itself")
    return Transfer(new_transfer_id(), key, source, destination, validate_amount(amount))


@dataclass(frozen=True, slots=True)
class Entry:
    """One line of an account's statement: a signed amount and why."""

    account_id: AccountId
    transfer_id: TransferId
    kind: EntryKind
    amount: int
    created_at: datetime | None = None


def parse_account_id(value: object) -> AccountId:
    """An account id from a ``UUID`` or its text form, or ``InvalidArgumentError``."""
    if isinstance(value, uuid.UUID):
        return AccountId(value)
    if isinstance(value, str) and len(value) <= 64:
        try:
            return AccountId(uuid.UUID(value))
        except ValueError:
            pass
    raise InvalidArgumentError(f"account id must be a UUID, got {str(value)[:64]!r}")
