"""The ledger's ``AccountRepository`` port: accounts inside a unit of work."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from domain.ledger import Account, AccountId


class AccountRepository(Protocol):
    """Accounts seen through the unit of work's transaction; changes apply on commit."""

    async def add(self, account: Account) -> None:
        """Insert a new account."""
        ...

    async def get(self, account_id: AccountId) -> Account | None:
        """The account, or ``None`` if there is none with this id."""
        ...

    async def lock(self, account_ids: Sequence[AccountId]) -> dict[AccountId, Account]:
        """Lock the accounts for update, in a fixed order so that concurrent transfers cannot deadlock.

        Accounts that do not exist are absent from the result.
        """
        ...

    async def save_balance(self, account: Account) -> None:
        """Store the account's new balance (the row must be locked by ``lock`` first)."""
        ...

    async def total_balance(self) -> int:
        """The sum of all balances, for the ledger's invariant check."""
        ...
