"""Read-your-writes and lag-aware routing against a replica that applies WAL 50 ms late.

The primary keeps the throwaway servers' synchronous_commit=off: a commit reaches the replica only once
the WAL writer flushes it, the harder case for a causal token taken right after COMMIT.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from container import Container, create_container, start_resources, stop_resources
from domain.ledger import Account, AccountId, new_account_id
from ports.connection_provider import CausalToken, Intent, ReadRoute
from ports.unit_of_work import UnitOptions
from tests.replication import Replicated, eventually, replicated_servers
from tests.support import make_settings

pytestmark = pytest.mark.replication

APPLY_DELAY_MS = 50
PAIRS = 1000
WORKERS = 40


@pytest.fixture(scope="module")
def delayed() -> Iterator[Replicated]:
    with replicated_servers([{"recovery_min_apply_delay": f"{APPLY_DELAY_MS}ms"}]) as servers:
        yield servers


async def _container(servers: Replicated, **replicas: Any) -> Container:
    settings = make_settings(
        servers.primary.dsn(),
        servers.replica_dsns,
        # Generous waits: a loaded machine's slow connects are not what these tests count.
        database={
            "pool_size": WORKERS,
            "max_overflow": 0,
            "acquire_timeout_s": 30.0,
            "connect_timeout_s": 10.0,
        },
        replicas={"probe_interval_s": 0.1, **replicas},
    )
    built = create_container(settings)
    await start_resources(built)
    return built


@pytest.fixture
async def service(delayed: Replicated) -> AsyncIterator[Container]:
    built = await _container(delayed)
    yield built
    await stop_resources(built)


async def _open_accounts(service: Container, count: int) -> list[AccountId]:
    ids = [new_account_id() for _ in range(count)]
    async with service.unit_of_work(intent=Intent.WRITE) as uow:
        for account_id in ids:
            await uow.repos.accounts.add(Account(account_id, "ryw", 0))
        await uow.commit()
    assert await service.connection_provider().wait_for_replay(timeout_s=5)
    return ids


async def _write(service: Container, account_id: AccountId, balance: int) -> CausalToken | None:
    uow = service.unit_of_work(intent=Intent.WRITE, options=UnitOptions(issue_causal_token=True))
    async with uow:
        await uow.repos.accounts.save_balance(Account(account_id, "ryw", balance))
        await uow.commit()
    return uow.causal_token


async def _read(service: Container, account_id: AccountId, token: CausalToken | None) -> int:
    async with service.unit_of_work(intent=Intent.READ, options=UnitOptions(causal_token=token)) as uow:
        account = await uow.repos.accounts.get(account_id)
    assert account is not None
    return account.balance


async def _stale_reads(service: Container, *, with_token: bool) -> int:
    """Write-then-read pairs (``PAIRS`` over ``WORKERS`` accounts); how many reads missed their write."""
    accounts = await _open_accounts(service, WORKERS)
    stale = 0

    async def worker(account_id: AccountId) -> None:
        nonlocal stale
        for balance in range(1, PAIRS // WORKERS + 1):
            token = await _write(service, account_id, balance)
            assert token is not None
            seen = await _read(service, account_id, token if with_token else None)
            stale += seen != balance  # not "stale += await ...": that would read stale before awaiting

    await asyncio.gather(*(worker(account_id) for account_id in accounts))
    return stale


async def test_a_thousand_reads_with_the_causal_token_never_miss_their_write(service: Container) -> None:
    stale_without = await _stale_reads(service, with_token=False)
    stale_with = await _stale_reads(service, with_token=True)

    stats = service.connection_provider().stats()
    mean_wait_ms = stats.causal_wait_total_s / max(stats.causal_waits, 1) * 1000
    print(
        f"\nstale reads of {PAIRS}: {stale_without} without the token, {stale_with} with it "
        f"(mean wait {mean_wait_ms:.0f} ms over {stats.causal_waits} waits); routes {dict(stats.read_routes)}"
    )
    assert stale_with == 0
    assert stale_without > PAIRS // 10, "the delayed replica must make plain reads measurably stale"
    routes = stats.read_routes
    served_by_replica = routes.get(ReadRoute.REPLICA_AFTER_WAIT, 0) + routes.get(
        ReadRoute.REPLICA_CAUGHT_UP, 0
    )
    assert served_by_replica > PAIRS * 0.9, routes
    assert stats.causal_waits > 0
    assert stats.causal_wait_total_s / stats.causal_waits >= APPLY_DELAY_MS / 1000 * 0.5


async def test_a_token_the_replica_has_not_replayed_in_time_is_served_by_the_writer(
    delayed: Replicated,
) -> None:
    service = await _container(delayed, causal_wait_s=0.005)
    try:
        [account_id] = await _open_accounts(service, 1)
        token = await _write(service, account_id, 7)

        uow = service.unit_of_work(intent=Intent.READ, options=UnitOptions(causal_token=token))
        async with uow:
            account = await uow.repos.accounts.get(account_id)
    finally:
        await stop_resources(service)
    assert uow.target == "writer"
    assert account is not None
    assert account.balance == 7
    assert service.connection_provider().stats().read_routes[ReadRoute.FALLBACK_TOKEN_NOT_REPLAYED] == 1


async def test_an_idle_writer_shows_no_lag_however_old_its_last_transaction(service: Container) -> None:
    provider = service.connection_provider()
    await _open_accounts(service, 1)
    await asyncio.sleep(0.5)  # no writes for a while: the last replayed transaction grows old

    await eventually(lambda: provider.stats().replicas[0].probes >= 3)
    await eventually(lambda: provider.stats().replicas[0].lag_s == 0.0)


async def test_a_replica_lagging_past_max_lag_is_skipped_by_the_lag_aware_strategy(
    delayed: Replicated,
) -> None:
    service = await _container(delayed, strategy="lag_aware", max_lag_s=0.02)
    provider = service.connection_provider()
    try:
        [account_id] = await _open_accounts(service, 1)
        writing = asyncio.create_task(_keep_writing(service, account_id))
        try:
            await eventually(
                lambda: (provider.stats().replicas[0].lag_s or 0.0) >= APPLY_DELAY_MS / 1000 * 0.8
            )
            reads = [await service.unit_of_work(intent=Intent.READ).__aenter__() for _ in range(5)]
            for uow in reads:
                await uow.__aexit__(None, None, None)
        finally:
            writing.cancel()
        stats = provider.stats()
    finally:
        await stop_resources(service)
    assert {uow.target for uow in reads} == {"writer"}
    assert stats.read_routes[ReadRoute.FALLBACK_DECLINED] == 5
    assert stats.replicas[0].lag_skips >= 5


async def _keep_writing(service: Container, account_id: AccountId) -> None:
    balance = 0
    while True:
        balance += 1
        await _write(service, account_id, balance)
        await asyncio.sleep(0.005)


async def test_read_your_writes_through_the_use_cases_sees_every_deposit_on_the_delayed_replica(
    service: Container,
) -> None:
    open_account, deposit, get_balance = service.open_account(), service.deposit(), service.get_balance()
    account_id = await open_account("ryw-use-case")
    assert await service.connection_provider().wait_for_replay(timeout_s=5)
    stale_with, stale_without = 0, 0
    for amount in range(1, 41):
        receipt = await deposit(account_id, 1, idempotency_key=f"ryw-{amount}", issue_causal_token=True)
        assert receipt.causal_token is not None
        stale_with += await get_balance(account_id, after=receipt.causal_token) != 2 * amount - 1
        plain = await deposit(account_id, 1, idempotency_key=f"plain-{amount}")
        assert plain.causal_token is None  # not asked for: no round trip after COMMIT
        stale_without += await get_balance(account_id) != 2 * amount
    routes = service.connection_provider().stats().read_routes

    assert stale_with == 0
    assert stale_without > 0, "the delayed replica must make plain reads stale"
    assert routes.get(ReadRoute.REPLICA_AFTER_WAIT, 0) + routes.get(ReadRoute.REPLICA_CAUGHT_UP, 0) >= 30


async def test_the_audit_reads_the_latest_state_on_the_writer_as_a_read_only_unit(service: Container) -> None:
    audit, stats = service.audit_ledger(), service.connection_provider().stats
    account_id = await service.open_account()("audited")
    before = await audit()

    await service.deposit()(account_id, 5, idempotency_key="audit-1")
    after = await audit()  # at once: the replica applies the deposit 50 ms later

    assert after.total_entries == before.total_entries + 5
    assert after.total_balance == before.total_balance + 5
    assert stats().read_routes[ReadRoute.PRIMARY] == 2
