"""Recording test doubles of the ports, for fast unit tests of the use cases."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self

from domain.ledger import Account, AccountId, Entry, Transfer
from ports.connection_provider import CausalToken, Intent, Priority
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


class FakeAccounts:
    def __init__(self, state: LedgerState) -> None:
        self._state = state

    async def add(self, account: Account) -> None:
        self._state.accounts[account.id] = account

    async def get(self, account_id: AccountId) -> Account | None:
        return self._state.accounts.get(account_id)

    async def lock(self, account_ids: Sequence[AccountId]) -> dict[AccountId, Account]:
        return {i: self._state.accounts[i] for i in account_ids if i in self._state.accounts}

    async def save_balance(self, account: Account) -> None:
        self._state.accounts[account.id] = account

    async def total_balance(self) -> int:
        return sum(a.balance for a in self._state.accounts.values())


class FakeTransfers:
    def __init__(self, state: LedgerState) -> None:
        self._state = state

    async def claim(self, transfer: Transfer) -> Transfer | None:
        existing = self._state.transfers.get(transfer.idempotency_key)
        if existing is None:
            self._state.transfers[transfer.idempotency_key] = transfer
        return existing

    async def add_entries(self, transfer: Transfer) -> None:
        self._state.entries.extend(transfer.entries())

    async def entries_for(self, account_id: AccountId, *, limit: int) -> list[Entry]:
        return [e for e in reversed(self._state.entries) if e.account_id == account_id][:limit]

    async def entries_total(self) -> int:
        return sum(e.amount for e in self._state.entries)


@dataclass(frozen=True, slots=True)
class FakeLedgerRepositories:
    accounts: FakeAccounts
    transfers: FakeTransfers


class FakeUnitOfWork(UnitOfWork[LedgerRepositories]):
    """A unit of work over a :class:`LedgerState`: all-or-nothing like a transaction."""

    def __init__(
        self, database: FakeDatabase, intent: Intent, priority: Priority, options: UnitOptions
    ) -> None:
        self._database = database
        self.intent = intent
        self.priority = priority
        self.options = options
        self._working = database.state.copy()
        self._repos = FakeLedgerRepositories(FakeAccounts(self._working), FakeTransfers(self._working))
        self.committed = False

    @property
    def repos(self) -> FakeLedgerRepositories:
        return self._repos

    @property
    def target(self) -> str:
        return "writer"

    @property
    def causal_token(self) -> CausalToken | None:
        return None

    async def __aenter__(self) -> Self:
        self._database.opened.append(self)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None

    async def commit(self) -> None:
        if self._database.fail_commits:
            error = self._database.fail_commits.pop(0)
            if (
                error.__class__.__name__ == "CommitOutcomeUnknownError"
                and self._database.apply_before_failing
            ):
                self._database.state = self._working
            raise error
        self._database.state = self._working
        self.committed = True

    async def rollback(self) -> None:
        self._working = self._database.state.copy()


@dataclass
class FakeDatabase:
    """A unit-of-work factory that records every unit it made; commits can be made to fail."""

    state: LedgerState = field(default_factory=LedgerState)
    opened: list[FakeUnitOfWork] = field(default_factory=list)
    fail_commits: list[Exception] = field(default_factory=list)
    apply_before_failing: bool = False
    on_open: Callable[[FakeUnitOfWork], None] | None = None

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
