"""Reads routed to a real streaming replica by strategy and health; writes on a read path refused."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from sqlalchemy import text

from adapters.postgres.cluster import free_port
from container import Container, create_container, start_resources, stop_resources
from ports.connection_provider import Intent, ReadRoute
from ports.errors import NoHealthyReplicaError, ReadOnlyViolationError
from tests.replication import eventually
from tests.support import make_settings

pytestmark = pytest.mark.replication


@pytest.fixture
async def routed(replicated: tuple[str, str]) -> AsyncIterator[Container]:
    primary, replica = replicated
    built = create_container(make_settings(primary, [replica]))
    await start_resources(built)
    yield built
    await stop_resources(built)


async def _eventually_balance(container: Container, account: object, expected: int) -> None:
    for _ in range(200):
        try:
            if await container.get_balance()(account) == expected:
                return
        except Exception:  # noqa: S110 -- the replica may not have replayed the account yet
            pass
        await asyncio.sleep(0.02)
    raise AssertionError("the replica never showed the written balance")


async def test_reads_are_served_by_a_server_in_recovery(routed: Container) -> None:
    account = await routed.open_account()("reader")
    await routed.deposit()(account, 42, idempotency_key=f"r-{account}")

    await _eventually_balance(routed, account, 42)

    uow = routed.unit_of_work(intent=Intent.READ)
    async with uow:
        in_recovery = await uow.accounts._connection.scalar(text("SELECT pg_is_in_recovery()"))
    assert uow.target == "replica-1"
    assert in_recovery is True
    stats = routed.connection_provider().stats()
    assert stats.reads_by_target["replica-1"] >= 1
    assert stats.reads_in_recovery >= 1


async def test_writes_go_to_the_primary(routed: Container) -> None:
    uow = routed.unit_of_work(intent=Intent.WRITE)
    async with uow:
        in_recovery = await uow.accounts._connection.scalar(text("SELECT pg_is_in_recovery()"))
    assert uow.target == "writer"
    assert in_recovery is False


async def test_a_write_in_a_read_unit_of_work_fails_on_the_replica(routed: Container) -> None:
    account = await routed.open_account()("victim")
    await _eventually_balance(routed, account, 0)
    uow = routed.unit_of_work(intent=Intent.READ)

    with pytest.raises(ReadOnlyViolationError):
        async with uow:
            await uow.accounts.add(await uow.accounts.get(account))  # type: ignore[arg-type]


async def _routed(primary: str, replica_urls: list[str], **groups: Any) -> Container:
    built = create_container(make_settings(primary, replica_urls, **groups))
    await start_resources(built)
    return built


async def _read_targets(container: Container, reads: int) -> Counter[str]:
    targets: Counter[str] = Counter()
    for _ in range(reads):
        uow = container.unit_of_work(intent=Intent.READ)
        async with uow:
            pass
        targets[uow.target] += 1
    return targets


async def test_reads_are_shared_across_replicas_by_their_weights(replicated: tuple[str, str]) -> None:
    primary, replica = replicated
    weighted = await _routed(
        primary, [replica, replica], replicas={"strategy": "weighted", "weights": [3, 1]}
    )
    try:
        targets = await _read_targets(weighted, 400)
    finally:
        await stop_resources(weighted)
    assert targets == {"replica-1": 300, "replica-2": 100}


async def test_an_unreachable_replica_is_ejected_and_its_reads_go_to_the_other_one(
    replicated: tuple[str, str],
) -> None:
    primary, replica = replicated
    container = await _routed(primary, [_closed_port_dsn(replica), replica])
    provider = container.connection_provider()
    try:
        targets = await _read_targets(container, 20)
        await eventually(lambda: provider.stats().replicas[0].ejected == "unreachable")
        # The live replica's first probe counts itself when it starts: wait for its answer too.
        await eventually(lambda: provider.stats().replicas[1].in_recovery is not None)
        stats = provider.stats()
    finally:
        await stop_resources(container)
    assert targets == {"replica-2": 20}, "no read is lost or sent to the writer while a replica is left"
    dead, alive = stats.replicas
    assert (dead.healthy, dead.ejections, dead.reads) == (False, 1, 0)
    assert alive.healthy
    assert alive.in_recovery is True
    assert stats.read_routes == {ReadRoute.REPLICA: 20}


async def test_without_a_usable_replica_reads_fall_back_to_the_writer_and_say_why(
    replicated: tuple[str, str],
) -> None:
    primary, replica = replicated
    container = await _routed(primary, [_closed_port_dsn(replica)])
    try:
        targets = await _read_targets(container, 3)
        stats = container.connection_provider().stats()
    finally:
        await stop_resources(container)
    assert targets == {"writer": 3}
    assert stats.read_routes == {
        ReadRoute.FALLBACK_REPLICA_FAILED: 1,
        ReadRoute.FALLBACK_NO_HEALTHY_REPLICA: 2,
    }
    assert stats.writer_fallbacks == 3


async def test_with_writer_fallback_off_a_read_without_a_usable_replica_fails_clearly(
    replicated: tuple[str, str],
) -> None:
    primary, replica = replicated
    container = await _routed(primary, [_closed_port_dsn(replica)], replicas={"fallback_to_writer": False})
    try:
        for _ in range(2):
            with pytest.raises(NoHealthyReplicaError, match="writer fallback is off"):
                async with container.unit_of_work(intent=Intent.READ):
                    pass
    finally:
        await stop_resources(container)


async def test_the_probe_reports_each_replica_in_recovery_and_an_idle_writer_as_no_lag(
    replicated: tuple[str, str],
) -> None:
    primary, replica = replicated
    container = await _routed(primary, [replica], replicas={"probe_interval_s": 0.05})
    provider = container.connection_provider()
    try:
        await _read_targets(container, 1)  # the provider starts its probes on first use
        await eventually(lambda: provider.stats().replicas[0].probes >= 3)
        [seen] = provider.stats().replicas
    finally:
        await stop_resources(container)
    assert (seen.healthy, seen.in_recovery, seen.ejected, seen.probe_failures) == (True, True, None, 0)
    assert seen.lag_s == 0.0


def _closed_port_dsn(dsn: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(netloc=f"{parts.username}@127.0.0.1:{free_port()}"))
