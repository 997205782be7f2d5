"""The demo's concurrent ledger workload: transfers and balance reads through the use cases.

Business rule it checks: money only enters the ledger by deposit, so however transfers
interleave, fail or repeat, the sum of all balances after the run equals the sum before it.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from app.ledger.use_cases import AuditLedger, Deposit, GetBalance, OpenAccount, TransferMoney
from domain.errors import DomainError
from domain.ledger import AccountId
from ports.errors import HexError

T = TypeVar("T")

#: Told of every call as it ends: its kind (``read``, ``transfer``, ``replay``), when it started and
#: ended on the workload's clock, and the error's type name (``None`` when it succeeded).
CallObserver = Callable[[str, float, float, str | None], None]


@dataclass(frozen=True, slots=True)
class WorkloadPlan:
    """How big and how long: accounts, concurrent workers, seconds, and the share of reads.

    ``failure_pause_s`` is how long a worker waits after a failed call, as a real client backs
    off: without it a worker whose calls an open circuit refuses in microseconds spins.
    """

    accounts: int = 20
    workers: int = 16
    duration_s: float = 5.0
    read_share: float = 0.4
    initial_balance: int = 100_000
    replay_share: float = 0.05
    seed: int | None = None
    failure_pause_s: float = 0.0


@dataclass(slots=True)
class WorkloadProgress:
    """Live counts while the workload runs; the demo's progress line reads them."""

    ok: Counter[str] = field(default_factory=Counter)
    failed: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    replays_applied_once: int = 0
    acknowledged: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.ok.values()) + sum(self.failed.values())


@dataclass(frozen=True, slots=True)
class WorkloadReport:
    """What happened: counts per kind, the balance sums before and after, and the audit."""

    progress: WorkloadProgress
    elapsed_s: float
    total_before: int
    total_after: int
    entries_total: int

    @property
    def balance_unchanged(self) -> bool:
        return self.total_before == self.total_after == self.entries_total


class LedgerWorkload:
    """Runs a :class:`WorkloadPlan` against injected use cases."""

    def __init__(
        self,
        *,
        open_account: OpenAccount,
        deposit: Deposit,
        transfer: TransferMoney,
        get_balance: GetBalance,
        audit: AuditLedger,
        settle: Callable[[], Awaitable[object]],
        stop: asyncio.Event | None = None,
        clock: Callable[[], float] = time.monotonic,
        on_call: CallObserver | None = None,
    ) -> None:
        self._open_account = open_account
        self._deposit = deposit
        self._transfer = transfer
        self._get_balance = get_balance
        self._audit = audit
        self._settle = settle
        self._stop = stop or asyncio.Event()
        self._clock = clock
        self._on_call = on_call
        self._failure_pause_s = 0.0
        self.progress = WorkloadProgress()

    async def run(self, plan: WorkloadPlan) -> WorkloadReport:
        accounts = [await self._open_account(f"demo-owner-{i}") for i in range(plan.accounts)]
        for account in accounts:
            await self._deposit(account, plan.initial_balance, idempotency_key=f"seed-{account}")
        before = await self._audit()
        # The seeded accounts must be visible on the replicas before reads go there.
        await self._settle()
        rng = random.Random(plan.seed)
        self._failure_pause_s = plan.failure_pause_s
        started = self._clock()
        deadline = started + plan.duration_s
        workers = (
            self._worker(accounts, plan, deadline, random.Random(rng.random())) for _ in range(plan.workers)
        )
        await asyncio.gather(*workers)
        elapsed = self._clock() - started
        after = await self._audit()
        return WorkloadReport(
            self.progress, elapsed, before.total_balance, after.total_balance, after.total_entries
        )

    async def _worker(
        self, accounts: list[AccountId], plan: WorkloadPlan, deadline: float, rng: random.Random
    ) -> None:
        last_key: tuple[str, AccountId, AccountId, int] | None = None
        # A stop request (SIGTERM) ends the loop after the operation in flight, never inside one.
        while self._clock() < deadline and not self._stop.is_set():
            if rng.random() < plan.read_share:
                await self._count("read", self._get_balance(rng.choice(accounts)))
                continue
            if last_key is not None and rng.random() < plan.replay_share:
                key, source, destination, amount = last_key
                receipt = await self._count(
                    "replay", self._transfer(source, destination, amount, idempotency_key=key)
                )
                self.progress.replays_applied_once += bool(receipt is not None and receipt.replayed)
                continue
            source, destination = rng.sample(accounts, 2)
            amount = rng.randint(1, plan.initial_balance // 10)
            key = f"demo-{uuid.uuid4().hex}"
            if await self._count(
                "transfer", self._transfer(source, destination, amount, idempotency_key=key)
            ):
                self.progress.acknowledged.append(key)
                last_key = (key, source, destination, amount)

    async def _count(self, kind: str, call: Awaitable[T]) -> T | None:
        started = self._clock()
        try:
            result = await call
        except (DomainError, HexError) as error:
            self.progress.failed[kind] += 1
            self.progress.errors[type(error).__name__] += 1
            if self._on_call is not None:
                self._on_call(kind, started, self._clock(), type(error).__name__)
            if self._failure_pause_s:
                await asyncio.sleep(self._failure_pause_s)
            return None
        self.progress.ok[kind] += 1
        if self._on_call is not None:
            self._on_call(kind, started, self._clock(), None)
        return result
