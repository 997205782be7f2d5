"""The ledger's endpoints in process, with the lifespan run, on a real PostgreSQL."""

from __future__ import annotations

import uuid

import httpx


async def open_account(client: httpx.AsyncClient, owner: str = "ada") -> str:
    response = await client.post("/accounts", json={"owner": owner})
    assert response.status_code == 201, response.text
    account_id: str = response.json()["account_id"]
    return account_id


async def deposit(
    client: httpx.AsyncClient, account: str, amount: int, key: str | None = None
) -> httpx.Response:
    return await client.post(
        f"/accounts/{account}/deposits",
        json={"amount": amount},
        headers={"Idempotency-Key": f'"{key or uuid.uuid4()}"'},
    )


async def test_an_account_opened_funded_and_paid_from_shows_its_balance_and_statement(
    client: httpx.AsyncClient,
) -> None:
    ada, bob = await open_account(client, "ada"), await open_account(client, "bob")
    assert (await deposit(client, ada, 500)).status_code == 201
    moved = await client.post(
        "/transfers",
        json={"source": ada, "destination": bob, "amount": 200},
        headers={"Idempotency-Key": '"t-1"'},
    )
    assert moved.status_code == 201, moved.text
    assert (moved.json()["source"], moved.json()["amount"]) == (ada, 200)

    balance = await client.get(f"/accounts/{ada}/balance")
    assert balance.json() == {"account_id": ada, "balance": 300}
    statement = await client.get(f"/accounts/{ada}/statement", params={"limit": 1})
    assert statement.status_code == 200
    body = statement.json()
    assert body["balance"] == 300
    assert [(e["kind"], e["amount"]) for e in body["entries"]] == [("transfer_out", -200)]
