"""Violations of the ledger's business rules."""

from __future__ import annotations

from domain.errors import DomainError


class InvalidAmountError(DomainError):
    """An amount is not a positive whole number of minor units within the ledger's bound."""


class UnknownAccountError(DomainError):
    """No account has this id."""

    def __init__(self, account_id: object) -> None:
        super().__init__(f"unknown account {account_id}")
        self.account_id = account_id


class InsufficientFundsError(DomainError):
    """A withdrawal or transfer would take a balance below zero."""

    def __init__(self, account_id: object, balance: int, amount: int) -> None:
        super().__init__(f"account {account_id} holds {balance}, cannot debit {amount}")
        self.account_id = account_id
        self.balance = balance
        self.amount = amount


class SameAccountTransferError(DomainError):
    """A transfer names the same account as source and destination."""


class IdempotencyKeyReusedError(DomainError):
    """An idempotency key already applied to a different request."""

    def __init__(self, key: str) -> None:
        super().__init__(f"idempotency key {key!r} was already used for a different request")
        self.key = key
