"""The ledger's use cases, on the kernel's :class:`UseCase`: each knows its repositories' ports, no adapter.

Every call takes an optional ``rate_limit_key`` (a tenant, an API client: each has its own budget
at the rate limiter). Deposits and transfers return a :class:`TransferReceipt` whose
``causal_token``, when asked for with ``issue_causal_token=True``, given to ``GetBalance`` or
``GetStatement`` as ``after=``, makes that read see the write even on a replica (read-your-writes).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from app.use_case import UseCase
from domain.errors import InvalidArgumentError
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
from domain.ledger.errors import IdempotencyKeyReusedError, UnknownAccountError
from ports.connection_provider import CausalToken, Intent, Priority
from ports.ledger import LedgerRepositories
from ports.unit_of_work import UnitOfWork, UnitOptions

LedgerUnit = UnitOfWork[LedgerRepositories]


@dataclass(frozen=True, slots=True)
class TransferReceipt:
    """The transfer that holds the request's idempotency key; ``replayed`` when it was already applied."""

    transfer_id: TransferId
    replayed: bool
    #: The writer's position after the commit, when the call asked for it (``issue_causal_token``).
    causal_token: CausalToken | None = None


@dataclass(frozen=True, slots=True)
class Statement:
    """An account's balance and its newest entries, newest first."""

    account_id: AccountId
    balance: int
    entries: tuple[Entry, ...]


class OpenAccount(UseCase[LedgerRepositories]):
    """Open an account with a zero balance for a named owner; returns its new id."""

    operation = "open_account"

    async def __call__(
        self, owner: str, *, correlation_id: str | None = None, rate_limit_key: str = "default"
    ) -> AccountId:
        account = Account(new_account_id(), validate_text(owner, field="owner", max_length=MAX_OWNER_LENGTH))

        async def body(uow: LedgerUnit) -> AccountId:
            await uow.repos.accounts.add(account)
            return account.id

        options = UnitOptions(rate_limit_key=rate_limit_key)
        return await self.run(body, correlation_id=correlation_id, options=options)


def _plan(source: object, destination: object, amount: object, key: object) -> Transfer:
    """Validate a request before any connection is taken."""
    source_id = None if source is None else parse_account_id(source)
    return plan_transfer(key, source_id, parse_account_id(destination), amount)


async def _apply(uow: LedgerUnit, planned: Transfer) -> TransferReceipt:
    """Move money once per idempotency key: lock the accounts, claim the key, then debit and credit."""
    source_id, destination_id = planned.source, planned.destination
    involved = [destination_id] if source_id is None else [source_id, destination_id]
    locked = await uow.repos.accounts.lock(involved)
    for account_id in involved:
        if account_id not in locked:
            raise UnknownAccountError(account_id)
    existing = await uow.repos.transfers.claim(planned)
    if existing is not None:
        if not existing.same_request_as(planned):
            raise IdempotencyKeyReusedError(planned.idempotency_key)
        return TransferReceipt(existing.id, replayed=True)
    if source_id is not None:
        await uow.repos.accounts.save_balance(locked[source_id].debited(planned.amount))
    await uow.repos.accounts.save_balance(locked[destination_id].credited(planned.amount))
    await uow.repos.transfers.add_entries(planned)
    return TransferReceipt(planned.id, replayed=False)


async def _applied(
    use_case: UseCase[LedgerRepositories], planned: Transfer, correlation_id: str | None, options: UnitOptions
) -> TransferReceipt:
    receipt, token = await use_case.run_with_token(
        lambda uow: _apply(uow, planned), correlation_id=correlation_id, options=options
    )
    return receipt if token is None else replace(receipt, causal_token=token)


class Deposit(UseCase[LedgerRepositories]):
    """Credit an account from outside the ledger, once per idempotency key."""

    operation = "deposit"
    idempotent = True

    async def __call__(
        self,
        account_id: object,
        amount: int,
        *,
        idempotency_key: str,
        correlation_id: str | None = None,
        rate_limit_key: str = "default",
        issue_causal_token: bool = False,
    ) -> TransferReceipt:
        planned = _plan(None, account_id, amount, idempotency_key)
        options = UnitOptions(rate_limit_key=rate_limit_key, issue_causal_token=issue_causal_token)
        return await _applied(self, planned, correlation_id, options)


class TransferMoney(UseCase[LedgerRepositories]):
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
        rate_limit_key: str = "default",
        issue_causal_token: bool = False,
    ) -> TransferReceipt:
        planned = _plan(source, destination, amount, idempotency_key)
        options = UnitOptions(rate_limit_key=rate_limit_key, issue_causal_token=issue_causal_token)
        return await _applied(self, planned, correlation_id, options)


class GetBalance(UseCase[LedgerRepositories]):
    """Read an account's balance (from a replica when one is configured and healthy)."""

    operation = "get_balance"
    intent = Intent.READ

    async def __call__(
        self,
        account_id: object,
        *,
        after: CausalToken | None = None,
        correlation_id: str | None = None,
        rate_limit_key: str = "default",
    ) -> int:
        wanted = parse_account_id(account_id)

        async def body(uow: LedgerUnit) -> int:
            account = await uow.repos.accounts.get(wanted)
            if account is None:
                raise UnknownAccountError(wanted)
            return account.balance

        options = UnitOptions(rate_limit_key=rate_limit_key, causal_token=after)
        return await self.run(body, correlation_id=correlation_id, options=options)


class GetStatement(UseCase[LedgerRepositories]):
    """Read an account's balance and its newest entries (at most ``limit``, 1 to 1000)."""

    operation = "get_statement"
    intent = Intent.READ

    async def __call__(
        self,
        account_id: object,
        *,
        limit: int = 50,
        after: CausalToken | None = None,
        correlation_id: str | None = None,
        rate_limit_key: str = "default",
    ) -> Statement:
        wanted = parse_account_id(account_id)
        if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= 1000:
            raise InvalidArgumentError(f"limit must be a whole number from 1 to 1000, got {limit!r}")

        async def body(uow: LedgerUnit) -> Statement:
            account = await uow.repos.accounts.get(wanted)
            if account is None:
                raise UnknownAccountError(wanted)
            entries = await uow.repos.transfers.entries_for(wanted, limit=limit)
            return Statement(wanted, account.balance, tuple(entries))

        options = UnitOptions(rate_limit_key=rate_limit_key, causal_token=after)
        return await self.run(body, correlation_id=correlation_id, options=options)


@dataclass(frozen=True, slots=True)
class AuditReport:
    """The ledger's invariant: money only enters by deposit, so balances sum to the entries' sum."""

    total_balance: int
    total_entries: int

    @property
    def balanced(self) -> bool:
        return self.total_balance == self.total_entries


class AuditLedger(UseCase[LedgerRepositories]):
    """Check that the sum of all balances equals the sum of all entries.

    A read that must see the latest state, not a replica that may lag: it runs as a ``READ ONLY``
    transaction on the writer.
    """

    operation = "audit_ledger"
    intent = Intent.READ_PRIMARY
    # Bulk work: it scans every account, so it must never crowd out transfers.
    default_priority = Priority.LOW

    async def __call__(self, *, correlation_id: str | None = None) -> AuditReport:
        async def body(uow: LedgerUnit) -> AuditReport:
            return AuditReport(
                await uow.repos.accounts.total_balance(), await uow.repos.transfers.entries_total()
            )

        return await self.run(body, correlation_id=correlation_id)
