"""Idempotency-Key through HTTP on a real PostgreSQL, counted in the ledger's own rows."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg

from tests.http.support import InProcess
from tests.http.test_ledger_endpoints import deposit, open_account


async def count(dsn: str, query: str, *args: object) -> int:
    connection = await asyncpg.connect(dsn)
    try:
        return int(await connection.fetchval(query, *args))
    finally:
        await connection.close()


async def test_a_repeated_deposit_returns_the_stored_result_and_is_applied_once(
    service: InProcess, database_url: str
) -> None:
    account = await open_account(service.client)
    responses = [await deposit(service.client, account, 250, key="once") for _ in range(3)]
    assert {r.status_code for r in responses} == {201}
    assert len({r.json()["transfer_id"] for r in responses}) == 1
    assert [r.headers.get("idempotent-replayed") for r in responses] == [None, "true", "true"]
    assert await count(database_url, "SELECT count(*) FROM transfers WHERE idempotency_key = 'once'") == 1
    assert await count(database_url, "SELECT count(*) FROM entries") == 1
    balance = await service.client.get(f"/accounts/{account}/balance")
    assert balance.json()["balance"] == 250


async def test_the_same_key_with_another_body_is_a_422_and_changes_nothing(
    service: InProcess, database_url: str
) -> None:
    account = await open_account(service.client)
    assert (await deposit(service.client, account, 100, key="k")).status_code == 201
    other = await deposit(service.client, account, 101, key="k")
    assert other.status_code == 422
    assert other.json()["type"].endswith("idempotency-key-reused")
    second = await open_account(service.client, "bob")
    as_transfer = await service.client.post(
        "/transfers",
        json={"source": account, "destination": second, "amount": 100},
        headers={"Idempotency-Key": '"k"'},
    )
    assert as_transfer.status_code == 422
    assert await count(database_url, "SELECT count(*) FROM entries") == 1


async def test_a_missing_repeated_or_malformed_key_is_a_400_before_any_work(
    service: InProcess, database_url: str
) -> None:
    account = await open_account(service.client)
    url = f"/accounts/{account}/deposits"
    cases = [
        [],
        [("Idempotency-Key", '"a"'), ("Idempotency-Key", '"b"')],
        [("Idempotency-Key", '"unterminated')],
        [("Idempotency-Key", '""')],
    ]
    for headers in cases:
        response = await service.client.post(url, json={"amount": 5}, headers=headers)
        assert response.status_code == 400, headers
        assert response.headers["content-type"] == "application/problem+json"
    assert await count(database_url, "SELECT count(*) FROM transfers") == 0


async def test_the_same_key_while_the_first_runs_is_a_409_then_the_stored_result(
    service: InProcess, database_url: str
) -> None:
    account = await open_account(service.client)
    blocker = await asyncpg.connect(database_url)
    try:
        # Hold the account's row lock, so the first deposit waits inside its transaction.
        transaction = blocker.transaction()
        await transaction.start()
        await blocker.execute("SELECT 1 FROM accounts WHERE id = $1 FOR UPDATE", uuid.UUID(account))
        first = asyncio.create_task(deposit(service.client, account, 70, key="slow"))
        in_flight = service.state["services"].in_flight
        for _ in range(500):
            if len(in_flight):
                break
            await asyncio.sleep(0.01)
        assert len(in_flight) == 1
        repeat = await deposit(service.client, account, 70, key="slow")
        assert repeat.status_code == 409
        assert repeat.headers["retry-after"] == "1"
        changed = await deposit(service.client, account, 71, key="slow")
        assert changed.status_code == 422
        await transaction.rollback()
    finally:
        await blocker.close()
    done = await first
    assert done.status_code == 201
    after = await deposit(service.client, account, 70, key="slow")
    assert after.status_code == 201
    assert after.json()["transfer_id"] == done.json()["transfer_id"]
    assert await count(database_url, "SELECT count(*) FROM entries") == 1
