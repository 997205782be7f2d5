"""A replica stopped in the middle of a read workload, and started again: what reads see."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from container import Container, create_container, start_resources, stop_resources
from domain.ledger import Account, AccountId, new_account_id
from ports.connection_provider import Intent
from tests.replication import Replicated, eventually, replicated_servers
from tests.support import make_settings

pytestmark = pytest.mark.replication

WORKERS = 12


@pytest.fixture(scope="module")
def servers() -> Iterator[Replicated]:
    with replicated_servers([{}, {}]) as started:
        yield started


@dataclass(frozen=True, slots=True)
class Read:
    target: str | None
    started: float
    error: str | None


async def _reads_until(container: Container, account: AccountId, stop: asyncio.Event) -> list[Read]:
    """Read units without any retry, each holding its transaction a moment, until ``stop`` is set."""
    done: list[Read] = []
    while not stop.is_set():
        started, uow = time.monotonic(), container.unit_of_work(intent=Intent.READ)
        try:
            async with uow:
                await uow.repos.accounts.get(account)
                await asyncio.sleep(0.002)  # reads in flight when the replica goes down
                await uow.repos.accounts.get(account)
        except Exception as error:
            done.append(Read(getattr(uow, "target", None), started, type(error).__name__))
        else:
            done.append(Read(uow.target, started, None))
    return done


async def test_a_replica_stopped_mid_workload_fails_only_the_reads_in_flight_on_it(
    servers: Replicated,
) -> None:
    settings = make_settings(servers.primary.dsn(), servers.replica_dsns, database={"pool_size": WORKERS})
    container = create_container(settings)
    await start_resources(container)
    provider = container.connection_provider()
    account = new_account_id()
    try:
        async with container.unit_of_work() as uow:
            await uow.repos.accounts.add(Account(account, "reader", 0))
            await uow.commit()
        assert await provider.wait_for_replay()
        stop = asyncio.Event()
        workers = [asyncio.create_task(_reads_until(container, account, stop)) for _ in range(WORKERS)]
        await asyncio.sleep(0.5)
        in_flight_before = provider.stats().replicas[0].in_flight
        await asyncio.to_thread(servers.replicas[0].stop, "fast")
        stopped_at = time.monotonic()
        await asyncio.sleep(1.0)
        stop.set()
        reads = [read for batch in await asyncio.gather(*workers) for read in batch]
        stats = provider.stats()

        await asyncio.to_thread(servers.replicas[0].start)
        await eventually(lambda: provider.stats().replicas[0].healthy, timeout_s=10)
        back = Counter(uow_target for uow_target in await _targets_of(container, 40))
    finally:
        await stop_resources(container)
        servers.replicas[0].start()

    failed = [read for read in reads if read.error is not None]
    after = [read for read in reads if read.started > stopped_at]
    print(
        f"\n{len(reads)} reads, {len(failed)} failed ({in_flight_before} in flight on replica-1 at the stop)"
    )
    assert all(read.started < stopped_at for read in failed), "a read that started after the stop failed"
    assert len(failed) <= WORKERS, "no more failures than reads that can be in flight at once"
    assert after, "the workload went on after the stop"
    assert {read.target for read in after} == {"replica-2"}, "the other replica took over, not the writer"
    assert stats.replicas[0].ejected in {"unreachable", "connect_failed"}
    assert stats.replicas[0].ejections == 1
    assert back["replica-1"] > 0, "the restarted replica was readmitted"
    assert provider.stats().replicas[0].readmissions == 1


async def _targets_of(container: Container, reads: int) -> list[str]:
    targets = []
    for _ in range(reads):
        uow = container.unit_of_work(intent=Intent.READ)
        async with uow:
            pass
        targets.append(uow.target)
    return targets
