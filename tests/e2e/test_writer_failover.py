"""Writer failover: the primary is stopped and its standby promoted while deposits keep coming."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from container import Container, create_container, start_resources, stop_resources
from domain.ledger import AccountId
from ports.circuit_breaker import BreakerState
from ports.connection_provider import ReadRoute
from ports.errors import CircuitOpenError, InfrastructureError
from tests.replication import Replicated, replicated_servers
from tests.support import fetch_value, make_settings

pytestmark = pytest.mark.replication

WORKERS = 8
FAILOVER_BOUND_S = 5.0


@pytest.fixture
def servers() -> Iterator[Replicated]:
    with replicated_servers([{}]) as started:
        yield started


@dataclass(frozen=True, slots=True)
class Deposit:
    started: float
    ended: float
    error: str | None


async def _deposits_until(
    container: Container, account: AccountId, stop: asyncio.Event, worker: int
) -> list[Deposit]:
    done, deposit = [], container.deposit()
    for attempt in range(1_000_000):
        if stop.is_set():
            break
        started = time.monotonic()
        try:
            await deposit(account, 1, idempotency_key=f"failover-{worker}-{attempt}")
        except (InfrastructureError, CircuitOpenError) as error:
            done.append(Deposit(started, time.monotonic(), type(error).__name__))
            await asyncio.sleep(0.01)  # a client backing off, not spinning on an open circuit
        else:
            done.append(Deposit(started, time.monotonic(), None))
    return done


async def test_after_the_primary_stops_and_its_standby_is_promoted_writes_continue_there(
    servers: Replicated,
) -> None:
    primary, standby = servers.primary, servers.replicas[0]
    # libpq's multi-host form: the provider keeps the first host that accepts read-write sessions.
    writer = f"postgresql://postgres@127.0.0.1:{primary.port},127.0.0.1:{standby.port}/postgres"
    container = create_container(make_settings(writer, [standby.dsn()]))
    await start_resources(container)
    try:
        account = await container.open_account()("failover")
        stop = asyncio.Event()
        workers = [asyncio.create_task(_deposits_until(container, account, stop, w)) for w in range(WORKERS)]
        await asyncio.sleep(1.0)
        down_at = time.monotonic()
        await asyncio.to_thread(primary.stop, "fast")
        await asyncio.to_thread(standby.promote)
        promoted_at = time.monotonic()
        await asyncio.sleep(2.0)
        stop.set()
        deposits = [d for batch in await asyncio.gather(*workers) for d in batch]
        breaker = container.circuit_breaker()
        state, transitions = breaker.state("writer"), dict(breaker.transitions("writer"))
        balance = await container.get_balance()(account)
        stats = container.connection_provider().stats()
    finally:
        await stop_resources(container)

    acknowledged = [d for d in deposits if d.error is None]
    resumed = min(d.ended for d in acknowledged if d.started > down_at)
    errors = Counter(d.error for d in deposits if d.error is not None)
    print(
        f"\nfailover: stop + promote took {promoted_at - down_at:.2f}s, writes resumed "
        f"{resumed - down_at:.2f}s after the stop began; {len(acknowledged)} acknowledged; {dict(errors)}"
    )
    assert resumed - down_at < FAILOVER_BOUND_S
    assert any(d.started > promoted_at + 1.0 for d in acknowledged), "the workload carried on"
    assert state is BreakerState.CLOSED, transitions
    assert balance >= len(acknowledged), "no acknowledged deposit was lost"
    assert await fetch_value(standby.dsn(), "SELECT pg_is_in_recovery()") is False
    assert {t.name: t.in_recovery for t in stats.targets}["writer"] is False
    [replica] = stats.replicas
    assert (replica.healthy, replica.ejected) == (False, "promoted"), "it no longer follows any writer"
    assert stats.read_routes.get(ReadRoute.FALLBACK_NO_HEALTHY_REPLICA, 0) >= 1
