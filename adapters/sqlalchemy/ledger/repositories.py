"""SQLAlchemy Core repositories of the ledger, bound to one unit of work's connection."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import bindparam, func, select
from sqlalchemy.dialects.postgresql import insert

from adapters.sqlalchemy.ledger.tables import accounts, entries, transfers
from adapters.sqlalchemy.repository import SqlAlchemyRepository
from adapters.sqlalchemy.unit_of_work import Transaction
from domain.ledger import Account, AccountId, Entry, EntryKind, Transfer, TransferId
from ports.ledger import AccountRepository, LedgerRepositories, TransferRepository

# Built once: each call only binds its values (see SqlAlchemyRepository).
_ACCOUNT_COLUMNS = (accounts.c.id, accounts.c.owner, accounts.c.balance)
_ADD_ACCOUNT = accounts.insert()
_GET_ACCOUNT = select(*_ACCOUNT_COLUMNS).where(accounts.c.id == bindparam("account_id"))
# Locking in id order is what keeps two opposite transfers from deadlocking.
_LOCK_ACCOUNTS = (
    select(*_ACCOUNT_COLUMNS)
    .where(accounts.c.id.in_(bindparam("account_ids", expanding=True)))
    .order_by(accounts.c.id)
    .with_for_update()
)
_SAVE_BALANCE = (
    accounts.update().where(accounts.c.id == bindparam("account_id")).values(balance=bindparam("new_balance"))
)
_TOTAL_BALANCE = select(func.coalesce(func.sum(accounts.c.balance), 0))
# ON CONFLICT DO NOTHING waits for a concurrent holder of the key to finish, so a duplicate
# request arriving mid-flight sees the winner's committed row afterwards.
_CLAIM_TRANSFER = (
    insert(transfers)
    .on_conflict_do_nothing(index_elements=[transfers.c.idempotency_key])
    .returning(transfers.c.id)
)
_TRANSFER_BY_KEY = select(transfers).where(transfers.c.idempotency_key == bindparam("key"))
_ADD_ENTRIES = entries.insert()
_TOTAL_ENTRIES = select(func.coalesce(func.sum(entries.c.amount), 0))


class SqlAlchemyAccountRepository(SqlAlchemyRepository, AccountRepository):
    """Accounts in the ``accounts`` table; locking is ``SELECT ... ORDER BY id FOR UPDATE``."""

    async def add(self, account: Account) -> None:
        await self._run(_ADD_ACCOUNT, {"id": account.id, "owner": account.owner, "balance": account.balance})

    async def get(self, account_id: AccountId) -> Account | None:
        result = await self._run(_GET_ACCOUNT, {"account_id": account_id})
        row = result.one_or_none()
        return None if row is None else Account(AccountId(row.id), row.owner, row.balance)

    async def lock(self, account_ids: Sequence[AccountId]) -> dict[AccountId, Account]:
        rows = (await self._run(_LOCK_ACCOUNTS, {"account_ids": sorted(set(account_ids))})).all()
        return {AccountId(r.id): Account(AccountId(r.id), r.owner, r.balance) for r in rows}

    async def save_balance(self, account: Account) -> None:
        await self._run(_SAVE_BALANCE, {"account_id": account.id, "new_balance": account.balance})

    async def total_balance(self) -> int:
        result = await self._run(_TOTAL_BALANCE)
        return int(result.scalar_one())


class SqlAlchemyTransferRepository(SqlAlchemyRepository, TransferRepository):
    """Transfers keyed by a unique idempotency key, and the append-only ``entries`` table."""

    async def claim(self, transfer: Transfer) -> Transfer | None:
        claimed = await self._run(
            _CLAIM_TRANSFER,
            {
                "id": transfer.id,
                "idempotency_key": transfer.idempotency_key,
                "source_id": transfer.source,
                "destination_id": transfer.destination,
                "amount": transfer.amount,
            },
        )
        if claimed.first() is not None:
            return None
        row = (await self._run(_TRANSFER_BY_KEY, {"key": transfer.idempotency_key})).one()
        return Transfer(
            TransferId(row.id),
            row.idempotency_key,
            None if row.source_id is None else AccountId(row.source_id),
            AccountId(row.destination_id),
            row.amount,
        )

    async def add_entries(self, transfer: Transfer) -> None:
        rows = [
            {
                "account_id": e.account_id,
                "transfer_id": e.transfer_id,
                "kind": e.kind.value,
                "amount": e.amount,
            }
            for e in transfer.entries()
        ]
        await self._run(_ADD_ENTRIES, rows)

    async def entries_for(self, account_id: AccountId, *, limit: int) -> list[Entry]:
        statement = (
            select(
                entries.c.account_id,
                entries.c.transfer_id,
                entries.c.kind,
                entries.c.amount,
                entries.c.created_at,
            )
            .where(entries.c.account_id == account_id)
            .order_by(entries.c.id.desc())
            .limit(limit)
        )
        rows = (await self._run(statement)).all()
        return [
            Entry(
                AccountId(r.account_id), TransferId(r.transfer_id), EntryKind(r.kind), r.amount, r.created_at
            )
            for r in rows
        ]

    async def entries_total(self) -> int:
        result = await self._run(_TOTAL_ENTRIES)
        return int(result.scalar_one())


@dataclass(frozen=True, slots=True)
class SqlAlchemyLedgerRepositories(LedgerRepositories):
    """Both ledger repositories on one unit of work's connection."""

    accounts: SqlAlchemyAccountRepository
    transfers: SqlAlchemyTransferRepository


def ledger_repositories(transaction: Transaction) -> SqlAlchemyLedgerRepositories:
    """The ledger's repositories on ``transaction``: the factory the container gives the unit of work."""
    return SqlAlchemyLedgerRepositories(
        SqlAlchemyAccountRepository(transaction.connection, target=transaction.target),
        SqlAlchemyTransferRepository(transaction.connection, target=transaction.target),
    )
