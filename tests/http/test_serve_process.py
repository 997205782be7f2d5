"""``alchemy-hex serve`` as a real uvicorn process on a loopback port, talked to over HTTP."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import asyncpg
import httpx

from tests.http.load import HttpLoad, seed_accounts
from tests.http.support import ServerProcess, serve_process

DRAIN_DELAY_S = 1.0


async def _waiting_on_a_lock(dsn: str) -> int:
    connection = await asyncpg.connect(dsn)
    try:
        return int(
            await connection.fetchval(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE wait_event_type = 'Lock' AND datname = current_database()"
            )
        )
    finally:
        await connection.close()


async def _drain_under_load(server: ServerProcess, dsn: str) -> None:
    limits = httpx.Limits(max_connections=16)
    async with httpx.AsyncClient(base_url=server.base_url, timeout=20.0, limits=limits) as client:
        accounts, total_before = await seed_accounts(client, 6)
        # The slow transfer locks both its accounts; the load moves money among the others.
        held, payer, others = accounts[0], accounts[1], accounts[2:]
        blocker = await asyncpg.connect(dsn)
        lock = blocker.transaction()
        await lock.start()
        await blocker.execute("SELECT 1 FROM accounts WHERE id = $1 FOR UPDATE", uuid.UUID(held))
        slow = asyncio.create_task(
            client.post(
                "/transfers",
                json={"source": payer, "destination": held, "amount": 7},
                headers={"Idempotency-Key": '"slow-one"'},
            )
        )
        for _ in range(500):
            if await _waiting_on_a_lock(dsn):
                break
            await asyncio.sleep(0.01)
        load = HttpLoad(client, others, workers=4, read_share=0.2)
        load.start()
        await asyncio.sleep(0.5)
        server.terminate()
        signalled = time.monotonic()
        async with httpx.AsyncClient(base_url=server.base_url, timeout=5.0) as fresh:
            ready = await fresh.get("/readyz")
            refused = await fresh.get(f"/accounts/{others[0]}/balance")
            alive = await fresh.get("/livez")
        assert ready.status_code == 503
        assert ready.json()["status"] == "fail"
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "1"
        assert refused.headers["connection"] == "close"
        assert refused.headers["x-request-id"]
        assert alive.status_code == 200
        # Past the drain delay the listener is closed; the slow request is still in flight.
        await asyncio.sleep(DRAIN_DELAY_S + 0.5 - (time.monotonic() - signalled))
        await lock.rollback()
        await blocker.close()
        done = await slow
        await load.stop()
    assert done.status_code == 201, done.text
    verdict = await load.ledger.verify(dsn, total_before=total_before)
    assert verdict.problems == ()
    assert (verdict.lost, verdict.duplicated, verdict.half_applied) == (0, 0, 0)
    assert verdict.acknowledged > 0
    statuses = load.histogram()
    assert statuses.get("503", 0) > 0, statuses
    print(f"\nSIGTERM under load: statuses {statuses}, acknowledged {verdict.acknowledged}")


def test_sigterm_under_load_drains_and_every_acknowledged_transfer_is_stored_once(
    database_url: str, tmp_path: Path
) -> None:
    env = {"HEX_HTTP__DRAIN_DELAY_S": str(DRAIN_DELAY_S), "HEX_HTTP__SHUTDOWN_TIMEOUT_S": "10"}
    with serve_process(database_url, tmp_path, env=env) as server:
        asyncio.run(_drain_under_load(server, database_url))
        code = server.wait(timeout_s=15)
        log = server.log()
    assert code == 0, log
    assert "Traceback" not in log
    assert "shutdown.draining" in log
