"""Reads routed to a real streaming replica; writes on a read path refused."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text

from container import Container, create_container, start_resources, stop_resources
from ports.connection_provider import Intent
from ports.errors import ReadOnlyViolationError
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
