"""``make bench`` (third part): HikariCP's spike test, this provider against stock SQLAlchemy.

HikariCP's "Welcome to the Jungle" setup: connection establishment takes 150 ms, a query 2 ms,
the pool's maximum is 50 and its minimum idle 5; everything is quiet, then 50 requests ask at once.
The 150 ms are added to establishment only, by a delayed connect: ``asyncpg.connect`` (which both
pools call, through SQLAlchemy's dialect) first waits 150 ms, as on a slow network, then connects
to the real PostgreSQL; every query after that goes straight to the server, as HikariCP's stub
driver's do. Sampled every millisecond: connections the pool holds, requests waiting, connects
under way. The baseline is plain SQLAlchemy with ``pool_size=5, max_overflow=45``, measured in
the same run with the same delayed connect.

Then a sustained variant: 50 callers, each issuing a query and pausing ``THINK_S`` (seeded
jitter), for 2 s: where the pool settles against Little's law (throughput times the time a
connection is held) and how many connects were ever under way at once. Figures go to the
``spike`` key of ``bench-results.json``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import statistics
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any, Final

import asyncpg
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

import pictures
from adapters.postgres.cluster import PostgresCluster, find_binaries
from adapters.sqlalchemy.connection_provider import SqlAlchemyConnectionProvider, asyncpg_url
from adapters.sqlalchemy.provider_options import MonitorOptions, PoolOptions
from ports.connection_provider import Intent

CONNECT_DELAY_S: Final = 0.150
MAXIMUM, MIN_IDLE, REQUESTS = 50, 5, 50
QUERY = text("SELECT pg_sleep(0.002)")
SUSTAINED_S: Final = 2.0
THINK_S: Final = 0.010
SAMPLE_S: Final = 0.001
SEED: Final = 17


@contextlib.contextmanager
def delayed_connects(delay_s: float) -> Iterator[None]:
    """Every ``asyncpg.connect`` in this process waits ``delay_s`` before it connects."""
    connect = asyncpg.connect

    async def slow_connect(*args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(delay_s)
        return await connect(*args, **kwargs)

    asyncpg.connect = slow_connect
    try:
        yield
    finally:
        asyncpg.connect = connect


class Pool:
    """What the benchmark needs of either pool: a connection, and its counts."""

    def __init__(
        self,
        connection: Callable[[], AbstractAsyncContextManager[AsyncConnection]],
        counts: Callable[[], tuple[int, int, int]],
        opened: Callable[[], int],
        close: Callable[[], Awaitable[None]],
    ) -> None:
        self.connection, self.counts, self.opened, self.close = connection, counts, opened, close


def provider_pool(dsn: str) -> tuple[Pool, SqlAlchemyConnectionProvider]:
    provider = SqlAlchemyConnectionProvider(
        writer_url=dsn,
        pool=PoolOptions(
            pool_size=MIN_IDLE, max_overflow=MAXIMUM - MIN_IDLE, min_idle=MIN_IDLE, acquire_timeout_s=10
        ),
        monitor=MonitorOptions(stats_log_interval_s=None),
    )
    target = provider._target("writer")

    def counts() -> tuple[int, int, int]:  # (connections held, requests waiting, connects under way)
        return target.gate.ceiling, target.gate.waiting, target.grower.connecting

    pool = Pool(
        lambda: provider.connection(Intent.WRITE), counts, lambda: target.opened, lambda: provider.aclose()
    )
    return pool, provider


def sqlalchemy_pool(dsn: str, *, max_overflow: int = MAXIMUM - MIN_IDLE) -> Pool:
    engine = create_async_engine(asyncpg_url(dsn), pool_size=MIN_IDLE, max_overflow=max_overflow)
    sync_pool: Any = engine.sync_engine.pool
    opened, closed = [0], [0]

    @event.listens_for(engine.sync_engine.pool, "connect")
    def _connected(*_args: Any) -> None:
        opened[0] += 1

    @event.listens_for(engine.sync_engine.pool, "close")
    def _closed(*_args: Any) -> None:
        closed[0] += 1

    def counts() -> tuple[int, int, int]:
        # The queue pool counts a connect under way as checked out: held minus open is connecting.
        held = sync_pool.checkedin() + sync_pool.checkedout()
        return held, 0, held - (opened[0] - closed[0])

    return Pool(engine.connect, counts, lambda: opened[0], engine.dispose)


async def _sampled(pool: Pool, work: Awaitable[Any]) -> tuple[Any, list[tuple[float, int, int, int]]]:
    """``work``'s result and samples ``(ms since it began, held, waiting, connecting)`` every ``SAMPLE_S``."""
    samples: list[tuple[float, int, int, int]] = []
    done = asyncio.Event()
    began = time.perf_counter()

    async def sample() -> None:
        while not done.is_set():
            samples.append((round((time.perf_counter() - began) * 1e3, 2), *pool.counts()))
            await asyncio.sleep(SAMPLE_S)

    sampler = asyncio.create_task(sample())
    try:
        return await work, samples
    finally:
        done.set()
        await sampler


async def _warm(pool: Pool) -> None:
    """Five connections open and idle, then quiet, as in HikariCP's test."""
    async with asyncio.timeout(30):
        holders = [pool.connection() for _ in range(MIN_IDLE)]
        connections = [await holder.__aenter__() for holder in holders]
        for connection in connections:
            await connection.execute(QUERY)
        for holder in holders:
            await holder.__aexit__(None, None, None)
    await asyncio.sleep(0.5)


async def spike(pool: Pool) -> dict[str, Any]:
    await _warm(pool)
    before = pool.opened()
    latencies: list[float] = []

    async def one() -> None:
        started = time.perf_counter()
        async with pool.connection() as connection:
            await connection.execute(QUERY)
        latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    _, samples = await _sampled(pool, asyncio.gather(*(one() for _ in range(REQUESTS))))
    elapsed = time.perf_counter() - started
    await asyncio.sleep(CONNECT_DELAY_S * 2)  # a connect still under way ends, and is kept or not
    held_after = pool.counts()[0]
    return {
        "requests": REQUESTS,
        "all_done_ms": elapsed * 1e3,
        "p50_ms": statistics.median(latencies) * 1e3,
        "p99_ms": statistics.quantiles(latencies, n=100)[98] * 1e3,
        "opened_during_spike": pool.opened() - before,
        "connections_ever_opened": pool.opened(),
        "peak_connections": max(s[1] for s in samples),
        "peak_waiting": max(s[2] for s in samples),
        "peak_connects_in_flight": max(s[3] for s in samples),
        "connections_after": held_after,
        "samples": samples,
    }


async def sustained(pool: Pool) -> dict[str, Any]:
    await _warm(pool)
    rng = random.Random(SEED)
    held: list[float] = []
    deadline = time.perf_counter() + SUSTAINED_S

    async def caller(pause: list[float]) -> None:
        for think in pause:
            if time.perf_counter() >= deadline:
                return
            async with pool.connection() as connection:
                admitted = time.perf_counter()
                await connection.execute(QUERY)
            held.append(time.perf_counter() - admitted)
            await asyncio.sleep(think)

    pauses = [[rng.uniform(0.5, 1.5) * THINK_S for _ in range(10_000)] for _ in range(REQUESTS)]
    started = time.perf_counter()
    _, samples = await _sampled(pool, asyncio.gather(*(caller(p) for p in pauses)))
    elapsed = time.perf_counter() - started
    throughput = len(held) / elapsed
    tail = samples[len(samples) // 2 :]  # the second second: settled
    return {
        "callers": REQUESTS,
        "seconds": elapsed,
        "ops_per_s": throughput,
        "mean_held_ms": statistics.fmean(held) * 1e3,
        "littles_law_connections": throughput * statistics.fmean(held),
        "connections_at_end": samples[-1][1],
        "mean_connections_second_half": statistics.fmean(s[1] for s in tail),
        "peak_connections": max(s[1] for s in samples),
        "connections_ever_opened": pool.opened(),
        "peak_connects_in_flight": max(s[3] for s in samples),
    }


async def run_all(dsn: str) -> dict[str, Any]:
    results: dict[str, Any] = {}
    makers: dict[str, Callable[[], Pool]] = {
        "alchemy_hex": lambda: provider_pool(dsn)[0],
        "sqlalchemy": lambda: sqlalchemy_pool(dsn),
    }
    for name, make in makers.items():
        row: dict[str, Any] = {}
        for variant, measure in (("spike", spike), ("sustained", sustained)):
            pool = make()
            try:
                row[variant] = await measure(pool)
            finally:
                await pool.close()
        results[name] = row
    # The floor: the same 50 requests on exactly the 5 warm connections, none opened (stock pool,
    # no overflow). No pool that opens nothing can finish sooner on this machine and driver, so
    # this is what "all done" is to be read against (HikariCP's 60 ms comes from a stub driver).
    floor = sqlalchemy_pool(dsn, max_overflow=0)
    try:
        results["floor_five_connections"] = {"spike": await spike(floor)}
    finally:
        await floor.close()
    return results


def main() -> None:
    with PostgresCluster(binaries=find_binaries()) as cluster, delayed_connects(CONNECT_DELAY_S):
        results = asyncio.run(run_all(cluster.dsn()))
    results["setup"] = {
        "connect_delay_ms": CONNECT_DELAY_S * 1e3,
        "connect_delay_by": "a delayed asyncpg.connect (queries go straight to the server)",
        "query": "SELECT pg_sleep(0.002)",
        "maximum": MAXIMUM,
        "min_idle": MIN_IDLE,
        "requests": REQUESTS,
        "sample_ms": SAMPLE_S * 1e3,
        "think_ms": THINK_S * 1e3,
    }
    _print(results)
    if pictures.available():
        series = {name: results[name]["spike"]["samples"] for name in ("alchemy_hex", "sqlalchemy")}
        print(f"chart drawn in {pictures.spike_chart(Path('spike-chart.png'), series)}")
    path = Path(os.environ.get("BENCH_RESULTS", "bench-results.json"))
    existing = json.loads(path.read_text()) if path.exists() else {}
    existing["spike"] = results
    path.write_text(json.dumps(existing, indent=2))


def _print(results: dict[str, Any]) -> None:
    print("spike: 50 requests at once, connect 150 ms, query 2 ms, max 50, min idle 5")
    head = ("pool", "all done", "p50", "p99", "opened", "peak", "after", "connecting")
    print(
        f"{head[0]:<13}{head[1]:>10}{head[2]:>8}{head[3]:>8}{head[4]:>8}{head[5]:>6}{head[6]:>7}{head[7]:>12}"
    )
    for name in ("alchemy_hex", "sqlalchemy"):
        r = results[name]["spike"]
        print(
            f"{name:<13}{r['all_done_ms']:>8.1f}ms{r['p50_ms']:>6.1f}ms{r['p99_ms']:>6.1f}ms"
            f"{r['connections_ever_opened']:>8}{r['peak_connections']:>6}{r['connections_after']:>7}"
            f"{r['peak_connects_in_flight']:>12}"
        )
    floor = results["floor_five_connections"]["spike"]
    print(
        f"floor: the same 50 on the 5 warm connections only (stock pool, no overflow): all done "
        f"{floor['all_done_ms']:.1f} ms, p50 {floor['p50_ms']:.1f} ms, p99 {floor['p99_ms']:.1f} ms"
    )
    print(f"sustained: 50 callers for {SUSTAINED_S:g} s, {THINK_S * 1e3:g} ms think time (±50%)")
    head = ("pool", "ops/s", "held ms", "L=λW", "end", "mean 2nd s", "opened", "connecting")
    print(
        f"{head[0]:<13}{head[1]:>8}{head[2]:>9}{head[3]:>7}{head[4]:>5}{head[5]:>11}{head[6]:>8}{head[7]:>12}"
    )
    for name in ("alchemy_hex", "sqlalchemy"):
        r = results[name]["sustained"]
        print(
            f"{name:<13}{r['ops_per_s']:>8.0f}{r['mean_held_ms']:>9.2f}{r['littles_law_connections']:>7.1f}"
            f"{r['connections_at_end']:>5}{r['mean_connections_second_half']:>11.1f}"
            f"{r['connections_ever_opened']:>8}{r['peak_connects_in_flight']:>12}"
        )


if __name__ == "__main__":
    main()
