"""Recording test doubles of the ports, for fast unit tests of the use cases.

The fake unit of work behaves like ``SqlAlchemyUnitOfWork`` wherever a use case could tell the
difference, and ``tests/contract/test_unit_of_work_contract.py`` runs both through one suite: it
is used once, inside ``async with``; leaving without ``commit()`` drops its writes; a read unit
refuses writes (and ``lock``, a ``SELECT ... FOR UPDATE``) with ``ReadOnlyViolationError``; the
repositories refuse what the schema refuses (duplicate ids, negative balances, unknown accounts
or transfers) with ``DataIntegrityError``; and, as in PostgreSQL, a failed statement aborts the
transaction. Where the fake is deliberately stricter than the real unit it says so.

Not modelled: concurrency. A unit works on a copy of the state taken when it is entered and its
commit replaces the whole state, so two interleaved write units lose one's writes; the use-case
tests run one unit at a time.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from types import TracebackType
from typing import Self

from domain.ledger import Account, AccountId, Entry, Transfer
from ports.connection_provider import WRITER, CausalToken, Intent, Priority, ReadRoute
from ports.errors import (
    CommitOutcomeUnknownError,
    DataIntegrityError,
    HexError,
    ReadOnlyViolationError,
    TransactionAbortedError,
)
from ports.ledger import LedgerRepositories
from ports.unit_of_work import DEFAULT_OPTIONS, UnitOfWork, UnitOptions


@dataclass
class LedgerState:
    """What a fake database holds; units of work copy it and write back on commit."""

    accounts: dict[AccountId, Account] = field(default_factory=dict)
    transfers: dict[str, Transfer] = field(default_factory=dict)
    entries: list[Entry] = field(default_factory=list)

    def copy(self) -> LedgerState:
        return LedgerState(dict(self.accounts), dict(self.transfers), list(self.entries))

    def replace_with(self, other: LedgerState) -> None:
        """Take ``other``'s contents in place, so that repositories holding this state see them."""
        self.accounts, self.transfers, self.entries = (
            dict(other.accounts),
            dict(other.transfers),
            list(other.entries),
        )


def _refused(constraint: str, detail: str) -> DataIntegrityError:
    return DataIntegrityError(f"constraint violated on {WRITER}: {detail} ({constraint})")


class FakeTransaction:
    """One fake unit's transaction: a private copy of the state, read-only or not, aborted by a failure."""

    def __init__(self, state: LedgerState, *, read_only: bool) -> None:
        self.state = state
        self.read_only = read_only
        self.open = True
        #: A statement failed: like PostgreSQL, every later statement fails until the unit ends.
        self.aborted = False

    @contextmanager
    def statement(self, *, writes: bool) -> Iterator[LedgerState]:
        """The state for one statement; any contract error it raises aborts the transaction."""
        if not self.open:
            raise HexError("the unit of work is not open; use it as 'async with uow:'")
        if self.aborted:
            raise HexError("current transaction is aborted, commands ignored until end of transaction block")
        try:
            if writes and self.read_only:
                raise ReadOnlyViolationError(f"write attempted in a read-only unit of work on {WRITER}")
            yield self.state
        except HexError:
            self.aborted = True
            raise


def _check_balance(account: Account) -> None:
    if account.balance < 0:
        raise _refused("accounts_balance_non_negative", f"balance {account.balance} of {account.id}")


class FakeAccounts:
    def __init__(self, transaction: FakeTransaction) -> None:
        self._transaction = transaction

    async def add(self, account: Account) -> None:
        with self._transaction.statement(writes=True) as state:
            if account.id in state.accounts:
                raise _refused("accounts_pkey", f"account {account.id} exists")
            _check_balance(account)
            state.accounts[account.id] = account

    async def get(self, account_id: AccountId) -> Account | None:
        with self._transaction.statement(writes=False) as state:
            return state.accounts.get(account_id)

    async def lock(self, account_ids: Sequence[AccountId]) -> dict[AccountId, Account]:
        # SELECT ... FOR UPDATE: PostgreSQL refuses it in a read-only transaction.
        with self._transaction.statement(writes=True) as state:
            return {i: state.accounts[i] for i in sorted(set(account_ids)) if i in state.accounts}

    async def save_balance(self, account: Account) -> None:
        with self._transaction.statement(writes=True) as state:
            stored = state.accounts.get(account.id)
            if stored is not None:  # an UPDATE of no row changes nothing
                _check_balance(account)
                state.accounts[account.id] = replace(stored, balance=account.balance)

    async def total_balance(self) -> int:
        with self._transaction.statement(writes=False) as state:
            return sum(a.balance for a in state.accounts.values())


class FakeTransfers:
    def __init__(self, transaction: FakeTransaction) -> None:
        self._transaction = transaction

    async def claim(self, transfer: Transfer) -> Transfer | None:
        with self._transaction.statement(writes=True) as state:
            existing = state.transfers.get(transfer.idempotency_key)
            if existing is not None:
                return existing
            for account_id in (transfer.source, transfer.destination):
                if account_id is not None and account_id not in state.accounts:
                    raise _refused("transfers_account_fkey", f"no account {account_id}")
            if transfer.amount <= 0:
                raise _refused("transfers_amount_positive", f"amount {transfer.amount}")
            if any(t.id == transfer.id for t in state.transfers.values()):
                raise _refused("transfers_pkey", f"transfer {transfer.id} exists")
            state.transfers[transfer.idempotency_key] = transfer
            return None

    async def add_entries(self, transfer: Transfer) -> None:
        with self._transaction.statement(writes=True) as state:
            if not any(t.id == transfer.id for t in state.transfers.values()):
                raise _refused("entries_transfer_id_fkey", f"no transfer {transfer.id}")
            now = datetime.now(UTC)
            state.entries.extend(replace(entry, created_at=now) for entry in transfer.entries())

    async def entries_for(self, account_id: AccountId, *, limit: int) -> list[Entry]:
        with self._transaction.statement(writes=False) as state:
            return [e for e in reversed(state.entries) if e.account_id == account_id][:limit]

    async def entries_total(self) -> int:
        with self._transaction.statement(writes=False) as state:
            return sum(e.amount for e in state.entries)


@dataclass(frozen=True, slots=True)
class FakeLedgerRepositories:
    accounts: FakeAccounts
    transfers: FakeTransfers


def _not_open() -> HexError:
    return HexError("the unit of work is not open; use it as 'async with uow:'")


class FakeUnitOfWork(UnitOfWork[LedgerRepositories]):
    """A unit of work over a :class:`LedgerState`: all-or-nothing like a transaction, used once.

    Like ``SqlAlchemyUnitOfWork``, ``commit()`` after a failed statement raises
    ``TransactionAbortedError`` (PostgreSQL itself would answer ``COMMIT`` with a silent ``ROLLBACK``).
    """

    def __init__(
        self, database: FakeDatabase, intent: Intent, priority: Priority, options: UnitOptions
    ) -> None:
        self._database = database
        self.intent = intent
        self.priority = priority
        self.options = options
        self._transaction: FakeTransaction | None = None
        self._repos: FakeLedgerRepositories | None = None
        self._used = False
        self._token: CausalToken | None = None
        self.committed = False

    @property
    def repos(self) -> FakeLedgerRepositories:
        if self._repos is None:
            raise _not_open()
        return self._repos

    @property
    def target(self) -> str:
        return WRITER

    @property
    def causal_token(self) -> CausalToken | None:
        return self._token

    @property
    def read_route(self) -> ReadRoute | None:
        # One database, the writer: reads run there by configuration, as with no replica.
        return None if self.intent is Intent.WRITE else ReadRoute.WRITER

    async def __aenter__(self) -> Self:
        if self._used:
            raise HexError("a unit of work is used once; make a new one for each transaction")
        self._used = True
        self._database.opened.append(self)
        self._transaction = FakeTransaction(self._database.state.copy(), read_only=self.intent.read_only)
        self._repos = FakeLedgerRepositories(
            FakeAccounts(self._transaction), FakeTransfers(self._transaction)
        )
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        # Uncommitted writes go with the private copy; the repositories refuse to run from now on.
        if self._transaction is not None:
            self._transaction.open = False
        self._transaction = None

    def _open_transaction(self) -> FakeTransaction:
        if self._transaction is None:
            raise _not_open()
        return self._transaction

    async def commit(self) -> None:
        transaction = self._open_transaction()
        if self.intent.read_only:
            self.committed = True  # a read unit's transaction ends with ROLLBACK: nothing to keep
            return
        if transaction.aborted:
            raise TransactionAbortedError("a statement of this unit failed, so nothing was committed")
        if self._database.fail_commits:
            error = self._database.fail_commits.pop(0)
            if isinstance(error, CommitOutcomeUnknownError) and self._database.apply_before_failing:
                self._database.state = transaction.state.copy()
            raise error
        self._database.state = transaction.state.copy()
        self.committed = True
        if self.options.issue_causal_token:
            self._database.position += 1
            self._token = CausalToken(self._database.position)

    async def rollback(self) -> None:
        transaction = self._open_transaction()
        transaction.state.replace_with(self._database.state)
        transaction.aborted = False


@dataclass
class FakeDatabase:
    """A unit-of-work factory that records every unit it made; commits can be made to fail.

    ``fail_commits`` are raised by the next commits, one each; with ``apply_before_failing`` a
    ``CommitOutcomeUnknownError`` among them applies the unit's writes first (the commit record
    reached the server, the answer did not). ``position`` is the last causal token issued.
    """

    state: LedgerState = field(default_factory=LedgerState)
    opened: list[FakeUnitOfWork] = field(default_factory=list)
    fail_commits: list[Exception] = field(default_factory=list)
    apply_before_failing: bool = False
    position: int = 0

    def __call__(
        self,
        *,
        intent: Intent = Intent.WRITE,
        priority: Priority = Priority.NORMAL,
        options: UnitOptions = DEFAULT_OPTIONS,
    ) -> FakeUnitOfWork:
        return FakeUnitOfWork(self, intent, priority, options)


@dataclass
class RecordingRetryBudget:
    """A retry budget that grants ``retries`` withdrawals, then refuses; it records every call."""

    retries: int = 1_000_000
    deposits: int = 0
    withdrawals: int = 0
    refusals: int = 0

    def deposit(self) -> None:
        self.deposits += 1

    def try_withdraw(self) -> bool:
        if self.withdrawals >= self.retries:
            self.refusals += 1
            return False
        self.withdrawals += 1
        return True
