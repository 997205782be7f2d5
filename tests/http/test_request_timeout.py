"""``Request-Timeout`` carries the caller's budget into every stage below the route."""

from __future__ import annotations

import uuid

import asyncpg
import httpx
import pytest

from http_api.middleware import MAX_TIMEOUT_S, timeout_from
from tests.http.test_errors_and_request_ids import assert_problem
from tests.http.test_ledger_endpoints import deposit, open_account


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("2", 2.0),
        ("2.5", 2.5),
        ("2s", 2.0),
        ("250ms", 0.25),
        ("250MS", 0.25),
        ("0", 0.0),
        ("9" * 400, MAX_TIMEOUT_S),
    ],
)
def test_the_header_is_seconds_or_milliseconds(value: str, seconds: float) -> None:
    assert timeout_from([(b"request-timeout", value.encode())]) == seconds
    assert timeout_from([(b"x-request-timeout", value.encode())]) == seconds


def test_no_header_is_no_deadline() -> None:
    assert timeout_from([(b"x-request-id", b"abc")]) is None


@pytest.mark.parametrize("value", ["soon", "-1", "1h", "", "1e3", "nan", "inf"])
async def test_a_malformed_timeout_is_a_400_naming_the_header(client: httpx.AsyncClient, value: str) -> None:
    response = await client.get(f"/accounts/{uuid.uuid4()}/balance", headers={"Request-Timeout": value})
    body = assert_problem(response, 400, "bad-request-timeout")
    assert "Request-Timeout" in str(body["detail"])


async def test_a_spent_budget_is_a_504_before_any_database_work_and_applies_nothing(
    client: httpx.AsyncClient,
) -> None:
    account = await open_account(client)
    key = f'"{uuid.uuid4()}"'

    refused = await client.post(
        f"/accounts/{account}/deposits",
        json={"amount": 5},
        headers={"Idempotency-Key": key, "Request-Timeout": "0"},
    )

    assert assert_problem(refused, 504, "deadline-exceeded")["stage"] == "start"
    balance = await client.get(f"/accounts/{account}/balance")
    assert balance.json()["balance"] == 0
    # Nothing was stored under the key: the same request without the deadline is applied, once.
    again = await client.post(
        f"/accounts/{account}/deposits", json={"amount": 5}, headers={"Idempotency-Key": key}
    )
    assert again.status_code == 201, again.text
    assert (await client.get(f"/accounts/{account}/balance")).json()["balance"] == 5


async def test_a_deposit_stuck_behind_a_row_lock_ends_at_its_deadline_and_applies_nothing(
    client: httpx.AsyncClient, database_url: str
) -> None:
    account = await open_account(client)
    assert (await deposit(client, account, 10)).status_code == 201
    holder = await asyncpg.connect(database_url)
    try:
        transaction = holder.transaction()
        await transaction.start()
        await holder.execute("SELECT 1 FROM accounts WHERE id = $1 FOR UPDATE", uuid.UUID(account))

        refused = await client.post(
            f"/accounts/{account}/deposits",
            json={"amount": 5},
            headers={"Idempotency-Key": f'"{uuid.uuid4()}"', "Request-Timeout": "300ms"},
        )

        # The server cancelled the waiting statement at the deadline (SET LOCAL statement_timeout).
        assert assert_problem(refused, 504, "deadline-exceeded")["stage"] == "statement"
        waiting = await holder.fetchval(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE wait_event_type = 'Lock' AND datname = current_database()"
        )
        assert waiting == 0
        await transaction.rollback()
    finally:
        await holder.close()
    assert (await client.get(f"/accounts/{account}/balance")).json()["balance"] == 10
