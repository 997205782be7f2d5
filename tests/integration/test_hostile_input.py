"""Hostile strings through every use case: stored verbatim, and nothing else in the database changes."""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from container import Container
from domain.errors import InvalidArgumentError

HOSTILE = [
    "'; DROP TABLE accounts; --",
    "Robert'); DROP TABLE transfers;--",
    "' OR '1'='1",
    '" OR ""="',
    "1; DELETE FROM entries WHERE true; /*",
    "*/ SELECT pg_sleep(5); --",
    "$$; TRUNCATE accounts CASCADE; $$",
    "$1 %s %(owner)s :owner ? {0}",
    "\\'; DROP ROLE postgres; --",
    "E'\\x27' || chr(39) || '",
    "Zoë 💸 Ελληνικά 中文 עברית \u202etxet\u200b",
    "line one\nline two\r\n\ttabbed",
    "-- a comment only",
    "%_%",
]

SNAPSHOT = """
SELECT
    (SELECT string_agg(table_name || '.' || column_name || ':' || data_type, ',' ORDER BY 1)
       FROM information_schema.columns WHERE table_schema = 'public'),
    (SELECT string_agg(tgname, ',' ORDER BY 1) FROM pg_trigger WHERE NOT tgisinternal),
    (SELECT string_agg(rolname, ',' ORDER BY 1) FROM pg_roles),
    (SELECT count(*) FROM accounts), (SELECT count(*) FROM transfers), (SELECT count(*) FROM entries),
    (SELECT owner || ':' || balance FROM accounts WHERE id = $1)
"""


async def _snapshot(dsn: str, bystander: uuid.UUID) -> asyncpg.Record:
    connection = await asyncpg.connect(dsn)
    try:
        row: asyncpg.Record = await connection.fetchrow(SNAPSHOT, bystander)
        return row
    finally:
        await connection.close()


async def _stored(dsn: str, query: str, key: uuid.UUID) -> object:
    connection = await asyncpg.connect(dsn)
    try:
        return await connection.fetchval(query, key)
    finally:
        await connection.close()


@pytest.mark.parametrize("hostile", HOSTILE)
async def test_a_hostile_string_is_stored_verbatim_through_every_use_case_and_changes_nothing_else(
    container: Container, database_url: str, hostile: str
) -> None:
    bystander = await container.open_account()("bystander")
    await container.deposit()(bystander, 1_000, idempotency_key="bystander-seed")
    before = await _snapshot(database_url, bystander)

    account = await container.open_account()(hostile)
    other = await container.open_account()(hostile + " (2)")
    deposit = await container.deposit()(account, 700, idempotency_key=hostile)
    replay = await container.deposit()(account, 700, idempotency_key=hostile)
    payment = await container.transfer()(account, other, 300, idempotency_key="pay " + hostile)
    statement = await container.get_statement()(account)
    with pytest.raises(InvalidArgumentError):
        await container.get_balance()(hostile)
    with pytest.raises(InvalidArgumentError):
        await container.get_statement()(hostile)
    after = await _snapshot(database_url, bystander)

    assert await _stored(database_url, "SELECT owner FROM accounts WHERE id = $1", account) == hostile
    assert (
        await _stored(
            database_url, "SELECT idempotency_key FROM transfers WHERE id = $1", deposit.transfer_id
        )
        == hostile
    )
    assert (
        await _stored(
            database_url, "SELECT idempotency_key FROM transfers WHERE id = $1", payment.transfer_id
        )
        == "pay " + hostile
    )
    assert (replay.replayed, replay.transfer_id) == (True, deposit.transfer_id)
    assert statement.balance == 400
    assert await container.get_balance()(other) == 300
    assert after[:3] == before[:3], "schema, triggers and roles are unchanged"
    assert tuple(after[3:6]) == (before[3] + 2, before[4] + 2, before[5] + 3)
    assert after[6] == before[6] == "bystander:1000"
