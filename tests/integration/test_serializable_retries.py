"""Concurrent transfers on a few hot accounts under SERIALIZABLE: conflicts are retried, money is kept."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import AsyncIterator

import pytest

from container import Container, create_container, start_resources, stop_resources
from domain.ledger import AccountId
from domain.ledger.errors import InsufficientFundsError
from ports.errors import HexError
from tests.support import make_settings

TRANSFERS = 200
WORKERS = 20
OPENING_BALANCE = 1_000


@pytest.fixture
async def serializable(database_url: str) -> AsyncIterator[Container]:
    """A container on this test's database with SERIALIZABLE transactions and patient retries."""
    settings = make_settings(
        database_url,
        database={"isolation_level": "SERIALIZABLE"},
        # Short jittered waits spread the retries out; the budget is the production default.
        retry={"wait": True, "max_attempts": 20, "initial_backoff_s": 0.002, "max_backoff_s": 0.05},
    )
    built = create_container(settings)
    await start_resources(built)
    yield built
    await stop_resources(built)


async def test_hot_account_transfers_all_end_cleanly_and_conflicts_are_retried(
    serializable: Container,
) -> None:
    container = serializable
    accounts: list[AccountId] = []
    for owner in ("hot-1", "hot-2", "hot-3"):
        account = await container.open_account()(owner)
        await container.deposit()(account, OPENING_BALANCE, idempotency_key=f"seed-{owner}")
        accounts.append(account)
    rng = random.Random(4)
    queue: asyncio.Queue[tuple[AccountId, AccountId, int, str]] = asyncio.Queue()
    for number in range(TRANSFERS):
        source, destination = rng.sample(accounts, 2)
        queue.put_nowait((source, destination, rng.randint(1, 300), f"t-{number}"))
    outcomes: Counter[str] = Counter()

    async def worker() -> None:
        transfer = container.transfer()
        while not queue.empty():
            source, destination, amount, key = queue.get_nowait()
            try:
                await transfer(source, destination, amount, idempotency_key=key)
            except (InsufficientFundsError, HexError) as error:  # a clean refusal, named by its type
                outcomes[type(error).__name__] += 1
            else:
                outcomes["committed"] += 1

    await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(WORKERS))), timeout=60)

    assert sum(outcomes.values()) == TRANSFERS
    assert outcomes["committed"] > TRANSFERS / 2, outcomes
    balances = [await container.get_balance()(account) for account in accounts]
    assert sum(balances) == 3 * OPENING_BALANCE
    assert all(balance >= 0 for balance in balances)
    report = await container.audit_ledger()()
    assert report.balanced
    assert report.total_balance == 3 * OPENING_BALANCE
    metrics = container.metrics()
    # 40001 really happened (READ COMMITTED would have queued on the row locks instead), and
    # every conflict was run again in a fresh transaction rather than reaching the caller at once.
    retried = {
        error: count
        for (operation, error), count in metrics.retried_errors.items()
        if operation == "transfer"
    }
    assert retried.get("TransactionConflictError", 0) > 0, retried
    assert sum(retried.values()) == metrics.retries["transfer"]
    assert metrics.succeeded["transfer"] == outcomes["committed"]
    failed = {error: count for (operation, error), count in metrics.failed.items() if operation == "transfer"}
    assert failed == {name: count for name, count in outcomes.items() if name != "committed"}
