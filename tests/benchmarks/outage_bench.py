"""``make bench`` (third part): plain SQLAlchemy and this project side by side while PostgreSQL misbehaves.

One throwaway server, one run, three outages, for (a) plain SQLAlchemy (``AsyncSession`` on an
engine with ``pool_pre_ping=True``, its defaults otherwise) and (b) this project's container with
its default settings (a use-case caller giving a ``CALLER_DEADLINE_S`` deadline):

1. **frozen** (postmaster and backends stopped with SIGSTOP) under load: how long a call in flight
   takes to end, and how long a new call made ``NEW_CALL_AT_S`` into the freeze takes to be
   refused. A call still hanging at the cap is reported as ``>cap``;
2. **down** (``pg_ctl stop -m fast``): the median time per refused call;
3. **restart** after ``DOWN_S`` seconds: the time from the server accepting connections to the
   first successful call.

Run as ``python -m tests.benchmarks.outage_bench``; prints a table and writes ``outage-results.json``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import statistics
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Final

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

from adapters.postgres.cluster import PostgresCluster, find_binaries
from container import Container, create_container, start_resources, stop_resources
from ports.deadline import deadline_scope
from settings import load_settings
from tests.chaos.load import wait_until
from tests.freezing import frozen
from tests.support import create_database

RESULTS_FILE: Final = Path("outage-results.json")
CALLER_DEADLINE_S: Final = 2.0
LOAD_WORKERS: Final = 15  # the default pool's capacity (10 + 5): every connection busy
NEW_CALL_AT_S: Final = 6.0  # past the default slow-call duration (5 s) and a watchdog tick
FREEZE_CAP_S: Final = 15.0
DOWN_S: Final = 3.0
QUERY: Final = text("SELECT 1")

Call = Callable[[], Awaitable[object]]


def project_call(container: Container) -> Call:
    async def call() -> object:
        with deadline_scope(CALLER_DEADLINE_S):
            async with container.unit_of_work() as uow:
                result = (await uow.connection.execute(QUERY)).scalar_one()
                await uow.commit()
                return result

    return call


def plain_call(engine: AsyncEngine) -> Call:
    sessions = async_sessionmaker(engine)

    async def call() -> object:
        async with sessions() as session:
            return (await session.execute(QUERY)).scalar_one()

    return call


async def timed(call: Call, cap_s: float) -> tuple[float, str]:
    """Seconds the call took (``cap_s`` if it was still going then) and how it ended."""
    started = time.perf_counter()
    try:
        async with asyncio.timeout(cap_s):
            await call()
        outcome = "ok"
    except TimeoutError:
        outcome = "hung"
    except Exception as error:
        outcome = type(error).__name__
    return time.perf_counter() - started, outcome


async def load(call: Call, stop: asyncio.Event) -> None:
    while not stop.is_set():
        with contextlib.suppress(Exception):
            async with asyncio.timeout(FREEZE_CAP_S + 5):
                await call()
        await asyncio.sleep(0.001)


async def frozen_phase(cluster: PostgresCluster, calls: dict[str, Call]) -> dict[str, Any]:
    stop = asyncio.Event()
    workers = [asyncio.create_task(load(call, stop)) for call in calls.values() for _ in range(LOAD_WORKERS)]
    await asyncio.sleep(1.0)  # a window full of quick successes first
    results: dict[str, Any] = {}
    with frozen(cluster):
        in_flight = {name: asyncio.create_task(timed(call, FREEZE_CAP_S)) for name, call in calls.items()}
        await asyncio.sleep(NEW_CALL_AT_S)
        new = {
            name: asyncio.create_task(timed(call, FREEZE_CAP_S - NEW_CALL_AT_S))
            for name, call in calls.items()
        }
        for name in calls:
            results[name] = {"in_flight": await in_flight[name], "new_call": await new[name]}
    stop.set()
    for task in workers:
        task.cancel()
    await asyncio.gather(*workers, return_exceptions=True)
    return results


async def down_and_restart(cluster: PostgresCluster, calls: dict[str, Call]) -> dict[str, Any]:
    stop = asyncio.Event()
    successes: dict[str, list[float]] = {name: [] for name in calls}

    async def worker(name: str, call: Call) -> None:
        while not stop.is_set():
            with contextlib.suppress(Exception):
                await call()
                successes[name].append(time.monotonic())
            await asyncio.sleep(0.005)

    workers = [asyncio.create_task(worker(name, call)) for name, call in calls.items() for _ in range(4)]
    await asyncio.sleep(1.0)
    await asyncio.to_thread(cluster.stop, "fast")
    await asyncio.sleep(1.0)  # time for the project's circuit to open
    refused: dict[str, float] = {}
    for name, call in calls.items():
        durations = [(await timed(call, 5.0))[0] for _ in range(20)]
        refused[name] = statistics.median(durations)
    await asyncio.sleep(max(DOWN_S - 1.0 - sum(refused.values()) * 20, 0.0))
    await asyncio.to_thread(cluster.start)
    up_at = time.monotonic()
    await wait_until(
        lambda: all(any(t >= up_at for t in s) for s in successes.values()), timeout_s=15.0, interval_s=0.002
    )
    stop.set()
    await asyncio.gather(*workers, return_exceptions=True)
    first = {name: min((t - up_at for t in s if t >= up_at), default=None) for name, s in successes.items()}
    return {name: {"refused_call_s": refused[name], "first_success_s": first[name]} for name in calls}


async def run(dsn: str, cluster: PostgresCluster) -> dict[str, Any]:
    settings = load_settings(
        database={"url": dsn, "application_name": "outage-bench"}, logging={"level": "error"}
    )
    container = create_container(settings)
    await start_resources(container)
    engine = create_async_engine(dsn.replace("postgresql://", "postgresql+asyncpg://"), pool_pre_ping=True)
    calls = {"plain SQLAlchemy": plain_call(engine), "alchemy-hex": project_call(container)}
    try:
        for call in calls.values():
            await call()
        freeze = await frozen_phase(cluster, calls)
        await asyncio.sleep(1.0)
        outage = await down_and_restart(cluster, calls)
    finally:
        await stop_resources(container)
        with contextlib.suppress(Exception):
            async with asyncio.timeout(10):
                await engine.dispose()
    return {name: {**freeze[name], **outage[name]} for name in calls}


def _duration(value: tuple[float, str], cap_s: float) -> str:
    seconds, outcome = value
    if outcome == "hung":
        return f">{cap_s:.0f} s (still hanging)"
    return f"{seconds * 1e3:.1f} ms, {outcome}" if seconds < 1 else f"{seconds:.2f} s, {outcome}"


def table(results: dict[str, Any]) -> str:
    lines = [
        "| | frozen: in-flight call ends | frozen: new call refused | down: per refused call "
        "| restart: first success |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, r in results.items():
        first = r["first_success_s"]
        lines.append(
            f"| {name} | {_duration(r['in_flight'], FREEZE_CAP_S)} | "
            f"{_duration(r['new_call'], FREEZE_CAP_S - NEW_CALL_AT_S)} | "
            f"{r['refused_call_s'] * 1e3:.2f} ms | {'never' if first is None else f'{first:.3f} s'} |"
        )
    return "\n".join(lines)


def main() -> None:
    with PostgresCluster(binaries=find_binaries()) as cluster:
        dsn = create_database(cluster.dsn(), prefix="outage_bench")
        results = asyncio.run(run(dsn, cluster))
    RESULTS_FILE.write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))
    print(
        f"(in-flight calls capped at {FREEZE_CAP_S:.0f} s; "
        f"this project's caller deadline {CALLER_DEADLINE_S} s)"
    )


if __name__ == "__main__":
    main()
