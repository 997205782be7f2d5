"""Chaos through HTTP: a real ``alchemy-hex serve`` under load while its database misbehaves.

Each scenario runs a load of transfers (and reads) through HTTP against a server process on a
throwaway cluster (the chaos lab's, with ``synchronous_commit=on``), breaks something, and then
checks the client's ledger of acknowledged transfers against the database: lost 0, duplicated 0,
none half-applied. The status histogram is printed (``pytest -s``), never asserted on timings.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import httpx
import pytest

from adapters.postgres.fault_proxy import FaultProxy
from tests.chaos.harness import ChaosLab, chaos_lab
from tests.http.load import HttpLoad, seed_accounts
from tests.http.support import serve_process
from tests.support import with_database

SMALL_POOL = {"HEX_DATABASE__POOL_SIZE": "5", "HEX_DATABASE__MAX_OVERFLOW": "2"}


@pytest.fixture(scope="module")
def lab() -> Iterator[ChaosLab]:
    with chaos_lab() as started:
        yield started


Fault = Callable[[], Awaitable[None]]


async def _under_load(
    base_url: str, dsn: str, fault: Fault, *, read_share: float = 0.2, after_s: float = 1.0
) -> tuple[HttpLoad, float, bool]:
    """Load, the fault, load again; the load, when the fault ended, whether /livez answered meanwhile."""
    async with httpx.AsyncClient(base_url=base_url, timeout=10.0) as client:
        accounts, total_before = await seed_accounts(client, 6)
        load = HttpLoad(client, accounts, workers=6, read_share=read_share)
        load.start()
        await asyncio.sleep(0.7)
        watch = asyncio.create_task(_live_throughout(base_url))
        await fault()
        ended = time.monotonic()
        for _ in range(int(10 / 0.05)):
            if load.first_success_after(ended) is not None:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(after_s)
        live = await watch
        await load.stop()
    verdict = await load.ledger.verify(dsn, total_before=total_before)
    print(
        f"\n  statuses {load.histogram()}  acknowledged {verdict.acknowledged}  lost {verdict.lost}  "
        f"duplicated {verdict.duplicated}  half-applied {verdict.half_applied}  "
        f"back after {load.first_success_after(ended)}"
    )
    assert verdict.problems == ()
    assert (verdict.lost, verdict.duplicated, verdict.half_applied) == (0, 0, 0)
    return load, ended, live


async def _live_throughout(base_url: str, seconds: float = 1.0) -> bool:
    """Whether /livez answered 200 every time over ``seconds`` (the event loop kept serving)."""
    async with httpx.AsyncClient(base_url=base_url, timeout=5.0) as client:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if (await client.get("/livez")).status_code != 200:
                return False
            await asyncio.sleep(0.1)
    return True


def test_writer_restarted_under_load(lab: ChaosLab, tmp_path: Path) -> None:
    dsn = lab.fresh_database()

    async def restart() -> None:
        await asyncio.to_thread(lab.cluster.stop, "fast")
        await asyncio.sleep(1.5)
        await asyncio.to_thread(lab.cluster.start)

    with serve_process(dsn, tmp_path, env=SMALL_POOL) as server:
        load, ended, live = asyncio.run(_under_load(server.base_url, dsn, restart))
    statuses = load.histogram()
    assert statuses.get("503", 0) > 0, statuses
    assert load.first_success_after(ended) is not None
    assert live


def test_replica_stopped_under_load(lab: ChaosLab, tmp_path: Path) -> None:
    dsn = lab.fresh_database()
    replica = lab.cluster.create_replica()
    try:
        replica_dsn = with_database(replica.dsn(), dsn.rsplit("/", 1)[1])

        async def stop_replica() -> None:
            await asyncio.to_thread(replica.stop, "fast")
            await asyncio.sleep(1.5)

        env = {**SMALL_POOL, "DATABASE_REPLICA_URLS": replica_dsn}
        with serve_process(dsn, tmp_path, env=env) as server:
            load, ended, live = asyncio.run(_under_load(server.base_url, dsn, stop_replica, read_share=0.7))
    finally:
        replica.destroy()
    statuses = load.histogram()
    # Reads fall back to the writer: the service goes on answering.
    assert statuses.get("200", 0) > 0, statuses
    assert load.first_success_after(ended) is not None
    assert live


def test_network_black_hole_under_load(lab: ChaosLab, tmp_path: Path) -> None:
    dsn = lab.fresh_database()
    with FaultProxy(upstream_port=lab.cluster.port) as proxy:

        async def black_hole() -> None:
            proxy.black_hole()
            # Longer than the client deadline (statement + connect timeout, 2 s): calls must end by it.
            await asyncio.sleep(4.0)
            proxy.black_hole(False)

        # A short statement timeout bounds how long a call waits on a silent network.
        env = {**SMALL_POOL, "HEX_DATABASE__STATEMENT_TIMEOUT_S": "1", "HEX_DATABASE__CONNECT_TIMEOUT_S": "1"}
        with serve_process(proxy.dsn(dsn), tmp_path, env=env) as server:
            load, ended, live = asyncio.run(_under_load(server.base_url, dsn, black_hole))
    statuses = load.histogram()
    assert any(status.startswith("5") for status in statuses), statuses
    assert load.first_success_after(ended) is not None
    assert live
