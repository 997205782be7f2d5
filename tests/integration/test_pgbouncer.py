"""Behind PgBouncer in transaction pooling mode: failures without the setting, none with it."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from adapters.postgres.cluster import PostgresCluster, find_binaries
from container import Container, create_container, start_resources, stop_resources
from domain.errors import DomainError
from ports.errors import HexError
from tests.pgbouncer_support import find_pgbouncer, pgbouncer
from tests.support import make_settings, migrate_database, with_database

FOUND = find_pgbouncer()
pytestmark = pytest.mark.skipif(FOUND is None, reason="no PgBouncer binary (make pgbouncer fetches one)")


@pytest.fixture(scope="module")
def bouncer_dsn() -> Iterator[str]:
    assert FOUND is not None
    binary, env = FOUND
    with PostgresCluster(binaries=find_binaries()) as cluster:
        cluster.query("CREATE DATABASE ledger")
        # Behind PgBouncer the timeouts live on the role, not in startup parameters.
        cluster.query("ALTER ROLE postgres SET statement_timeout = '30s'")
        migrate_database(cluster.dsn("ledger"))
        with pgbouncer(binary, env, server_port=cluster.port) as port:
            yield with_database(cluster.dsn().replace(f":{cluster.port}/", f":{port}/"), "ledger")


async def _workload(dsn: str, *, pgbouncer_mode: bool) -> tuple[int, int, bool]:
    # Generous waits: what is counted is prepared-statement failures, not a loaded machine's queueing.
    settings = make_settings(
        dsn,
        database={
            "pgbouncer": pgbouncer_mode,
            "pool_size": 8,
            "pre_ping": False,
            "acquire_timeout_s": 30.0,
            "connect_timeout_s": 10.0,
        },
    )
    container: Container = create_container(settings)
    await start_resources(container)
    failures = successes = 0
    try:
        accounts = [await container.open_account()(f"owner-{i}") for i in range(4)]
        for account in accounts:
            await container.deposit()(account, 1_000_000, idempotency_key=f"seed-{account}-{pgbouncer_mode}")

        async def one(i: int) -> None:
            nonlocal failures, successes
            try:
                await container.transfer()(
                    accounts[i % 4], accounts[(i + 1) % 4], 1, idempotency_key=f"{pgbouncer_mode}-{i}"
                )
                await container.get_balance()(accounts[i % 4])
                successes += 1
            except (HexError, DomainError):
                failures += 1

        await asyncio.gather(*(one(i) for i in range(200)))
        balanced = (await container.audit_ledger()()).balanced
    except (HexError, DomainError):
        return successes, failures + 1, False
    finally:
        await stop_resources(container)
    return successes, failures, balanced


async def test_without_pgbouncer_mode_prepared_statements_collide(bouncer_dsn: str) -> None:
    successes, failures, _ = await _workload(bouncer_dsn, pgbouncer_mode=False)
    assert failures > 0, f"expected prepared-statement failures behind PgBouncer, got {successes} clean"


async def test_with_pgbouncer_mode_every_operation_succeeds(bouncer_dsn: str) -> None:
    successes, failures, balanced = await _workload(bouncer_dsn, pgbouncer_mode=True)
    assert (successes, failures, balanced) == (200, 0, True)
