"""Write-ahead log positions: reading them from a server and waiting for a replica to replay one.

Positions are PostgreSQL's ``pg_lsn`` (``16/B374D848``) as integers, so they compare and subtract
in Python. The queries run on the asyncpg connection under SQLAlchemy's, outside any transaction:
one round trip each, and no snapshot taken that a following transaction could be stuck with.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, Final

from sqlalchemy.ext.asyncio import AsyncConnection

from adapters.sqlalchemy.errors import translate

#: How often a replica is asked again while it catches up; the wait's resolution.
POLL_INTERVAL_S: Final = 0.005

# The insert position, not pg_current_wal_lsn() (the write position): after COMMIT returns with
# synchronous_commit off, the commit record may be inserted but not written yet, and a token
# below it would let a replica that has not replayed the commit pass.
INSERT_POSITION: Final = "SELECT pg_current_wal_insert_lsn()::text"
REPLAY_POSITION: Final = "SELECT pg_last_wal_replay_lsn()::text"


def parse_lsn(text: str) -> int:
    """``'16/B374D848'`` as the integer position it names."""
    high, _, low = text.partition("/")
    return (int(high, 16) << 32) | int(low, 16)


def format_lsn(position: int) -> str:
    """The integer ``position`` in PostgreSQL's ``X/Y`` notation."""
    return f"{position >> 32:X}/{position & 0xFFFFFFFF:X}"


async def driver_connection(connection: AsyncConnection) -> Any:
    """The asyncpg connection under ``connection`` (checked out already: no I/O)."""
    raw = await connection.get_raw_connection()
    return raw.driver_connection


async def insert_position(connection: AsyncConnection, *, target: str) -> int:
    """The writer's WAL insert position now; any later read is at or past every earlier commit."""
    try:
        text = await (await driver_connection(connection)).fetchval(INSERT_POSITION)
    except Exception as exc:  # asyncpg's own errors, on the driver's connection: contract errors out
        raise translate(exc, target=target) from exc
    return parse_lsn(text)


async def wait_for_replay(
    connection: AsyncConnection,
    position: int,
    *,
    target: str,
    timeout_s: float,
    clock: Callable[[], float] = time.monotonic,
) -> tuple[bool, int | None]:
    """Poll a replica until it has replayed ``position`` or ``timeout_s`` passes.

    Returns whether it got there and the last replay position seen (``None`` when the server is not
    replaying: a primary, which never will). A newer snapshot taken afterwards sees every
    transaction committed up to ``position``: PostgreSQL updates a standby's snapshots while
    replaying a commit record, before it advances the replay position past it.
    """
    driver = await driver_connection(connection)
    deadline = clock() + timeout_s
    while True:
        try:
            text = await driver.fetchval(REPLAY_POSITION)
        except Exception as exc:  # as in insert_position
            raise translate(exc, target=target) from exc
        if text is None:
            return False, None
        replayed = parse_lsn(text)
        if replayed >= position:
            return True, replayed
        if clock() >= deadline:
            return False, replayed
        await asyncio.sleep(POLL_INTERVAL_S)
