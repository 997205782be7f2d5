"""The ledger's use cases. Each receives a unit-of-work factory by injection and knows no adapter."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from app.correlation import correlation_scope
from app.metrics import Metrics
from app.retry import RetryPolicy, run_with_retries
from app.retry_budget import RetryBudget
from domain.errors import IdempotencyKeyReusedError, InvalidArgumentError, UnknownAccountError
from domain.ledger import (
    MAX_OWNER_LENGTH,
    Account,
    AccountId,
    Entry,
    Transfer,
    TransferId,
    new_account_id,
    parse_account_id,
    plan_transfer,
    validate_text,
)
from ports.connection_provider import Intent, Priority
from ports.unit_of_work import UnitOfWork, UnitOfWorkFactory

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class TransferReceipt:
    """The transfer that holds the request's idempotency key; ``replayed`` when it was already applied."""

    transfer_id: TransferId
    replayed: bool


@dataclass(frozen=True, slots=True)
class Statement:
    """An account's balance and its newest entries, newest first."""

    account_id: AccountId
    balance: int
    entries: tuple[Entry, ...]


class _UseCase:
    """Runs a body in a fresh unit of work per attempt, with retries of what is safe to repeat."""

    operation: str = "use_case"
    intent: Intent = Intent.WRITE
    idempotent: bool = False
    default_priority: Priority = Priority.NORMAL

    def __init__(
        self,
        *,
        uow_factory: UnitOfWorkFactory,
        retry_policy: RetryPolicy,
        retry_budget: RetryBudget,
        metrics: Metrics,
        priority: Priority | None = None,
    ) -> None:
        self._uow_factory = uow_factory
        self._retry_policy = retry_policy
        self._retry_budget = retry_budget
        self._metrics = metrics
        # Each use case declares its admission class; a deployment may override it per instance.
        self._priority = self.default_priority if priority is None else priority

    async def _run(self, body: Callable[[UnitOfWork], Awaitable[T]], correlation_id: str | None) -> T:
        with correlation_scope(correlation_id):
            try:
                result = await run_with_retries(
                    lambda: self._attempt(body),
                    policy=self._retry_policy,
                    budget=self._retry_budget,
                    metrics=self._metrics,
                    operation=self.operation,
                    idempotent=self.idempotent,
                )
            except Exception as error:
                self._metrics.count_failure(self.operation, error)
                raise
            self._metrics.count_success(self.operation)
            return result

    async def _attempt(self, body: Callable[[UnitOfWork], Awaitable[T]]) -> T:
        async with self._uow_factory(intent=self.intent, priority=self._priority) as uow:
            result = await body(uow)
            if self.intent is Intent.WRITE:
                await uow.commit()
            return result


class OpenAccount(_UseCase):
    """Open an account with a zero balance for a named owner; returns its new id."""

    operation = "open_account"

    async def __call__(self, owner: str, *, correlation_id: str | None = None) -> AccountId:
        account = Account(new_account_id(), validate_text(owner, field="owner", max_length=MAX_OWNER_LENGTH))

        async def body(uow: UnitOfWork) -> AccountId:
            await uow.accounts.add(account)
            return account.id

        return await self._run(body, correlation_id)


def _plan(source: object, destination: object, amount: object, key: object) -> Transfer:
    """Validate a request before any connection is taken."""
    source_id = None if source is None else parse_account_id(source)
    return plan_transfer(key, source_id, parse_account_id(destination), amount)


async def _apply(uow: UnitOfWork, planned: Transfer) -> TransferReceipt:
    """Move money once per idempotency key: lock the accounts, claim the key, then debit and credit."""
    source_id, destination_id = planned.source, planned.destination
    involved = [destination_id] if source_id is None else [source_id, destination_id]
    locked = await uow.accounts.lock(involved)
    for account_id in involved:
        if account_id not in locked:
            raise UnknownAccountError(account_id)
    existing = await uow.transfers.claim(planned)
    if existing is not None:
        if not existing.same_request_as(planned):
            raise IdempotencyKeyReusedError(planned.idempotency_key)
        return TransferReceipt(existing.id, replayed=True)
    if source_id is not None:
        await uow.accounts.save_balance(locked[source_id].debited(planned.amount))
    await uow.accounts.save_balance(locked[destination_id].credited(planned.amount))
    await uow.transfers.add_entries(planned)
    return TransferReceipt(planned.id, replayed=False)


class Deposit(_UseCase):
    """Credit an account from outside the ledger, once per idempotency key."""

    operation = "deposit"
    idempotent = True

    async def __call__(
        self, account_id: object, amount: int, *, idempotency_key: str, correlation_id: str | None = None
    ) -> TransferReceipt:
        planned = _plan(None, account_id, amount, idempotency_key)
        return await self._run(lambda uow: _apply(uow, planned), correlation_id)


class TransferMoney(_UseCase):
    """Move an amount between two accounts, once per idempotency key; never below zero.

    A repeated request with the same key and the same accounts and amount returns the first
    transfer without applying it again; the same key with a different request is refused.
    """

    operation = "transfer"
    idempotent = True

    async def __call__(
        self,
        source: object,
        destination: object,
        amount: int,
        *,
        idempotency_key: str,
        correlation_id: str | None = None,
    ) -> TransferReceipt:
        planned = _plan(source, destination, amount, idempotency_key)
        return await self._run(lambda uow: _apply(uow, planned), correlation_id)


class GetBalance(_UseCase):
    """Read an account's balance (from a replica when one is configured and healthy)."""

    operation = "get_balance"
    intent = Intent.READ

    async def __call__(self, account_id: object, *, correlation_id: str | None = None) -> int:
        wanted = parse_account_id(account_id)

        async def body(uow: UnitOfWork) -> int:
            account = await uow.accounts.get(wanted)
            if account is None:
                raise UnknownAccountError(wanted)
            return account.balance

        return await self._run(body, correlation_id)


class GetStatement(_UseCase):
    """Read an account's balance and its newest entries (at most ``limit``, 1 to 1000)."""

    operation = "get_statement"
    intent = Intent.READ

    async def __call__(
        self, account_id: object, *, limit: int = 50, correlation_id: str | None = None
    ) -> Statement:
        wanted = parse_account_id(account_id)
        if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= 1000:
            raise InvalidArgumentError(f"limit must be a whole number from 1 to 1000, got {limit!r}")

        async def body(uow: UnitOfWork) -> Statement:
            account = await uow.accounts.get(wanted)
            if account is None:
                raise UnknownAccountError(wanted)
            entries = await uow.transfers.entries_for(wanted, limit=limit)
            return Statement(wanted, account.balance, tuple(entries))

        return await self._run(body, correlation_id)


@dataclass(frozen=True, slots=True)
class AuditReport:
    """The ledger's invariant: money only enters by deposit, so balances sum to the entries' sum."""

    total_balance: int
    total_entries: int

    @property
    def balanced(self) -> bool:
        return self.total_balance == self.total_entries


class AuditLedger(_UseCase):
    """Check that the sum of all balances equals the sum of all entries.

    It runs on the writer (declared as write intent, committing nothing) because an audit must
    see the latest state, not a replica that may lag.
    """

    operation = "audit_ledger"
    # Bulk work: it scans every account, so it must never crowd out transfers.
    default_priority = Priority.LOW

    async def __call__(self, *, correlation_id: str | None = None) -> AuditReport:
        async def body(uow: UnitOfWork) -> AuditReport:
            return AuditReport(await uow.accounts.total_balance(), await uow.transfers.entries_total())

        return await self._run(body, correlation_id)
