"""The ledger's ``TransferRepository`` port: transfers and their append-only entries."""

from __future__ import annotations

from typing import Protocol

from domain.ledger import AccountId, Entry, Transfer


class TransferRepository(Protocol):
    """Transfers keyed by idempotency key, and the entries they wrote."""

    async def claim(self, transfer: Transfer) -> Transfer | None:
        """Record ``transfer`` under its idempotency key unless the key is taken.

        Returns ``None`` when this call claimed the key, else the transfer that already holds it
        (committed by another unit of work, which this call waited for if it was in flight).
        """
        ...

    async def add_entries(self, transfer: Transfer) -> None:
        """Append the entries of a claimed transfer."""
        ...

    async def entries_for(self, account_id: AccountId, *, limit: int) -> list[Entry]:
        """The newest ``limit`` entries of an account, newest first."""
        ...

    async def entries_total(self) -> int:
        """The sum of every entry's signed amount (deposits only, since transfers net to zero)."""
        ...
