"""The example ledger's repository ports, and the set a ledger unit of work hands out."""

from __future__ import annotations

from typing import Protocol

from ports.ledger.accounts import AccountRepository
from ports.ledger.transfers import TransferRepository

__all__ = ["AccountRepository", "LedgerRepositories", "TransferRepository"]


class LedgerRepositories(Protocol):
    """What ``uow.repos`` holds in a ledger unit of work: both repositories, on its transaction."""

    @property
    def accounts(self) -> AccountRepository: ...

    @property
    def transfers(self) -> TransferRepository: ...
