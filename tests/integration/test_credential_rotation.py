"""Rotating the service role's password while the ledger workload runs: no request fails, no restart."""

from __future__ import annotations

import asyncio
import datetime
import os
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from adapters.postgres.cluster import PostgresCluster, find_binaries
from adapters.sqlalchemy.migrations import migrate
from app.ledger.workload import LedgerWorkload, WorkloadPlan, WorkloadReport
from container import Container, create_container, start_resources, stop_resources
from tests.support import make_settings

ADMIN_PASSWORD = "Admin-Rotation-7781"
OLD_PASSWORD = "Old-Service-Password-1234"
NEW_PASSWORD = "New-Service-Password-5678"
ROLE = "ledger_app"


@pytest.fixture(scope="module")
def server() -> Iterator[PostgresCluster]:
    """A server that checks passwords over TCP (scram-sha-256), with the service role owning a database."""
    with PostgresCluster(binaries=find_binaries(), password=ADMIN_PASSWORD) as cluster:
        cluster.query(f"CREATE ROLE {ROLE} LOGIN PASSWORD '{OLD_PASSWORD}'")
        cluster.query(f"CREATE DATABASE ledger OWNER {ROLE}")
        yield cluster


def _write_atomically(path: Path, secret: str) -> None:
    # As a secret mount does it: a new file renamed over the old, so no reader sees half of it.
    staging = path.with_suffix(".new")
    staging.write_text(secret + "\n")
    os.replace(staging, path)


async def _run_workload(container: Container, plan: WorkloadPlan) -> WorkloadReport:
    workload = LedgerWorkload(
        open_account=container.open_account(),
        deposit=container.deposit(),
        transfer=container.transfer(),
        get_balance=container.get_balance(),
        audit=container.audit_ledger(),
        settle=container.connection_provider().wait_for_replay,
    )
    return await workload.run(plan)


async def _rotate(server: PostgresCluster, password_file: Path, after_s: float) -> datetime.datetime:
    """Change the password on the server, then in the file; returns when the server changed it."""
    await asyncio.sleep(after_s)
    admin = await asyncpg.connect(server.dsn(password=ADMIN_PASSWORD))
    try:
        await admin.execute(f"ALTER ROLE {ROLE} PASSWORD '{NEW_PASSWORD}'")
        _write_atomically(password_file, NEW_PASSWORD)
        rotated_at: datetime.datetime = await admin.fetchval("SELECT now()")
    finally:
        await admin.close()
    return rotated_at


async def _sessions_opened_since(server: PostgresCluster, moment: datetime.datetime) -> int:
    admin = await asyncpg.connect(server.dsn(password=ADMIN_PASSWORD))
    try:
        query = "SELECT count(*) FROM pg_stat_activity WHERE usename = $1 AND backend_start > $2"
        count: int = await admin.fetchval(query, ROLE, moment)
    finally:
        await admin.close()
    return count


async def test_a_rotated_password_file_is_picked_up_by_new_connections_without_a_failed_request(
    server: PostgresCluster, tmp_path: Path
) -> None:
    password_file = tmp_path / "password"
    _write_atomically(password_file, OLD_PASSWORD)
    settings = make_settings(
        server.dsn("ledger", user=ROLE),
        database={"max_lifetime_s": 0.2, "pool_size": 4, "max_overflow": 0},
        credentials={"source": "file", "password_file": str(password_file)},
        # A login refused between the two steps of a rotation is retried like any failed acquisition.
        retry={"wait": True, "initial_backoff_s": 0.02, "max_backoff_s": 0.2, "max_attempts": 8},
    )
    container = create_container(settings)
    await start_resources(container)
    try:
        migration = container.migration_provider()
        await migrate(migration)
        await migration.aclose()
        plan = WorkloadPlan(accounts=6, workers=6, duration_s=2.0, seed=7)
        report, rotated_at = await asyncio.gather(
            _run_workload(container, plan), _rotate(server, password_file, after_s=0.8)
        )
        opened_after = await _sessions_opened_since(server, rotated_at)
        served = container.writer_credentials().served()
    finally:
        await stop_resources(container)

    assert set(report.progress.errors) <= {"InsufficientFundsError"}, report.progress.errors
    assert report.progress.ok["transfer"] > 0
    assert report.balance_unchanged
    assert opened_after > 0, "connections opened after the rotation must have logged in with the new password"
    assert served[-2:] == (OLD_PASSWORD, NEW_PASSWORD)
    with pytest.raises(asyncpg.InvalidPasswordError):
        await asyncpg.connect(server.dsn("ledger", user=ROLE, password=OLD_PASSWORD))
