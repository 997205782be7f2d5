"""``make bench``: SELECT 1 through raw asyncpg, plain SQLAlchemy and alchemy-hex, on one server.

Prints throughput and p50/p99 latency at concurrency 1, 10 and 50 with pool size 10, the ratios
provider/engine.connect() and unit-of-work/AsyncSession, the same for an ORM read-modify-write
(load one mapped object by key, change it, commit) through the unit of work's session against a
plain ``AsyncSession`` (g/f), the unit of work with the Redis rate limiter instead of the in-memory
one (h/e), the decision latency of both limiters, and the memory growth over 100,000 checkouts;
writes every figure to ``bench-results.json`` in the working directory. PostgreSQL and Redis are
throwaway servers on loopback unless ``BENCH_DATABASE_URL`` / ``BENCH_REDIS_URL`` name others.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import asyncpg

import pictures
from adapters.postgres.cluster import PostgresCluster, find_binaries
from adapters.redis import RedisGcraRateLimiter, RedisOptions, create_guarded_redis
from adapters.sqlalchemy.connection_provider import SqlAlchemyConnectionProvider
from adapters.sqlalchemy.provider_options import MonitorOptions, PoolOptions
from ports.connection_provider import Intent
from ports.rate_limiter import RateLimiter
from tests.benchmarks.operations import ORM_ROWS, Op, operations, seed_orm_rows
from tests.redis_support import RedisServer

POOL_SIZE = 10
LEVELS = (1, 10, 50)
SECONDS = float(os.environ.get("BENCH_SECONDS", "1.0"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))


async def measure(op: Op, concurrency: int, seconds: float) -> dict[str, float]:
    latencies: list[float] = []

    async def worker() -> None:
        while (start := time.perf_counter()) < deadline:
            await op()
            latencies.append(time.perf_counter() - start)

    for _ in range(50):  # warm the pool and the statement caches
        await op()
    gc.collect()  # start each run with no garbage of the one before to collect
    started = time.perf_counter()
    deadline = started + seconds  # after the warm-up, or a slow operation would get no run at all
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    quantiles = statistics.quantiles(latencies, n=100)
    return {
        "ops_per_s": len(latencies) / elapsed,
        "p50_ms": quantiles[49] * 1e3,
        "p99_ms": quantiles[98] * 1e3,
    }


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def run(dsn: str, redis_url: str) -> dict[str, Any]:
    raw_pool = await asyncpg.create_pool(dsn, min_size=POOL_SIZE, max_size=POOL_SIZE)
    compared = operations(dsn, pool_size=POOL_SIZE, orm_rows=ORM_ROWS)
    limiter = compared.limiter
    # The production defaults: a 20 ms call deadline, no retries; a budget no call exhausts.
    redis = create_guarded_redis(RedisOptions(url=redis_url))
    redis_limiter = RedisGcraRateLimiter(redis=redis, rate_per_s=1e9, burst=1e6, key_prefix="bench:")
    await seed_orm_rows(compared.engine, ORM_ROWS)

    async def raw() -> None:
        async with raw_pool.acquire() as connection:
            await connection.fetchval("SELECT 1")

    ops: dict[str, Op] = {
        "a_raw_asyncpg_pool": raw,
        **compared.compared(),
        "h_hex_unit_of_work_redis_limiter": compared.unit_of_work(redis_limiter),
    }
    results: dict[str, Any] = {
        "seconds_per_run": SECONDS,
        "rounds": ROUNDS,
        "pool_size": POOL_SIZE,
        "runs": {},
    }
    names = list(ops)
    for level in LEVELS:
        # Rounds interleave the configurations so that a burst of noise on this 2-core machine
        # hits them all alike, and rotate their order so that none always runs after the same one;
        # each figure is the round with the median throughput.
        rounds: dict[str, list[dict[str, float]]] = {name: [] for name in ops}
        for round_number in range(ROUNDS):
            shift = round_number % len(names)
            for name in names[shift:] + names[:shift]:
                rounds[name].append(await measure(ops[name], level, SECONDS))
        for name, measured in rounds.items():
            median = sorted(measured, key=lambda r: r["ops_per_s"])[len(measured) // 2]
            results["runs"].setdefault(name, {})[str(level)] = median
    # Decisions the failure mode made (Redis slower than the call timeout, or its breaker open)
    # are not Redis decisions: how many there were is part of each figure.
    results["redis_limiter_uow_decisions"] = _decision_counts(redis_limiter, {})
    before = _decision_counts(redis_limiter, {})
    results["limiter_decisions"] = await limiter_decisions(limiter, redis_limiter)
    results["redis_limiter_acquire_decisions"] = _decision_counts(redis_limiter, before)
    await redis.aclose()
    # Memory is measured on a pool with overflow in play: 20 concurrent checkouts, 10 + 10 slots.
    overflowing = SqlAlchemyConnectionProvider(
        writer_url=dsn,
        pool=PoolOptions(pool_size=POOL_SIZE, max_overflow=POOL_SIZE),
        monitor=MonitorOptions(stats_log_interval_s=None),
    )
    results["memory"] = await memory_growth(overflowing)
    await overflowing.aclose()
    await raw_pool.close()
    await compared.aclose()
    return results


def _decision_counts(limiter: RedisGcraRateLimiter, since: dict[str, int]) -> dict[str, int]:
    counts = {"by_redis": limiter.redis_decisions, "without_redis": sum(limiter.failures.values())}
    return {name: value - since.get(name, 0) for name, value in counts.items()}


async def limiter_decisions(memory: RateLimiter, redis: RateLimiter) -> dict[str, dict[str, Any]]:
    """One ``acquire`` of each limiter alone, at concurrency 1 and 10, in interleaved rounds (median)."""
    ops: dict[str, Op] = {"in_memory_token_bucket": memory.acquire, "redis_gcra": redis.acquire}
    figures: dict[str, dict[str, Any]] = {name: {} for name in ops}
    for level in (1, 10):
        rounds: dict[str, list[dict[str, float]]] = {name: [] for name in ops}
        for round_number in range(ROUNDS):
            for name in list(ops)[:: 1 if round_number % 2 == 0 else -1]:
                rounds[name].append(await measure(ops[name], level, SECONDS))
        for name, measured in rounds.items():
            figures[name][str(level)] = sorted(measured, key=lambda r: r["ops_per_s"])[len(measured) // 2]
    return figures


async def memory_growth(provider: SqlAlchemyConnectionProvider, checkouts: int = 100_000) -> dict[str, float]:
    """Resident memory before and after 100,000 checkouts, 20 at a time (overflow connections in play)."""

    async def checkout() -> None:
        async with provider.connection(Intent.WRITE):
            pass

    for _ in range(1000):
        await checkout()
    gc.collect()
    before = rss_kib()
    for _ in range(checkouts // 20):
        await asyncio.gather(*(checkout() for _ in range(20)))
    gc.collect()
    after = rss_kib()
    return {
        "checkouts": checkouts,
        "rss_before_kib": before,
        "rss_after_kib": after,
        "growth_kib": after - before,
    }


def ratios(results: dict[str, Any]) -> None:
    runs = results["runs"]

    def ratio(ours: str, theirs: str) -> dict[str, float]:
        per_level = {lvl: runs[ours][lvl]["ops_per_s"] / runs[theirs][lvl]["ops_per_s"] for lvl in runs[ours]}
        per_level["geometric_mean"] = statistics.geometric_mean(per_level.values())
        return per_level

    results["provider_vs_sqlalchemy_by_concurrency"] = ratio("d_hex_provider", "b_sqlalchemy_connect")
    results["uow_vs_session_by_concurrency"] = ratio("e_hex_unit_of_work", "c_sqlalchemy_session")
    results["provider_vs_sqlalchemy"] = results["provider_vs_sqlalchemy_by_concurrency"]["geometric_mean"]
    results["uow_vs_session"] = results["uow_vs_session_by_concurrency"]["geometric_mean"]
    results["orm_uow_vs_session_by_concurrency"] = ratio("g_hex_orm_unit_of_work", "f_sqlalchemy_orm_session")
    results["orm_uow_vs_session"] = results["orm_uow_vs_session_by_concurrency"]["geometric_mean"]
    results["redis_limiter_uow_vs_uow_by_concurrency"] = ratio(
        "h_hex_unit_of_work_redis_limiter", "e_hex_unit_of_work"
    )
    results["redis_limiter_uow_vs_uow"] = results["redis_limiter_uow_vs_uow_by_concurrency"]["geometric_mean"]


def report(results: dict[str, Any]) -> None:
    print(f"{'configuration':<24}" + "".join(f"{'c=' + str(lvl):>30}" for lvl in LEVELS))
    for name, by_level in results["runs"].items():
        cells = "".join(
            f"{r['ops_per_s']:>10.0f}/s p50 {r['p50_ms']:5.2f} p99 {r['p99_ms']:6.2f}"
            for r in by_level.values()
        )
        print(f"{name:<24}{cells}")
    comparisons = (
        ("provider_vs_sqlalchemy", "d/b"),
        ("uow_vs_session", "e/c"),
        ("orm_uow_vs_session", "g/f"),
    )
    for key, target in comparisons:
        levels = results[f"{key}_by_concurrency"]
        detail = "  ".join(
            f"c={lvl}: {value:.3f}" for lvl, value in levels.items() if lvl != "geometric_mean"
        )
        verdict = "meets" if results[key] >= 0.95 else "MISSES"
        print(f"{key} ({target}) = {results[key]:.3f} (geometric mean; {detail}) {verdict} the 0.95 target")
    levels = results["redis_limiter_uow_vs_uow_by_concurrency"]
    detail = "  ".join(f"c={lvl}: {value:.3f}" for lvl, value in levels.items() if lvl != "geometric_mean")
    print(f"redis_limiter_uow_vs_uow (h/e) = {results['redis_limiter_uow_vs_uow']:.3f} ({detail})")
    print("limiter decision (acquire alone):")
    for name, by_level in results["limiter_decisions"].items():
        cells = "".join(
            f"  c={lvl}: p50 {r['p50_ms']:.3f} ms p99 {r['p99_ms']:.3f} ms" for lvl, r in by_level.items()
        )
        print(f"  {name:<24}{cells}")
    for part in ("uow", "acquire"):
        counts = results[f"redis_limiter_{part}_decisions"]
        by_redis, without = counts["by_redis"], counts["without_redis"]
        print(f"redis limiter, {part} runs: {by_redis} decisions by Redis, {without} without")
    memory = results["memory"]
    print(f"memory: {memory['growth_kib']} KiB resident growth over {memory['checkouts']} checkouts")


@contextmanager
def server() -> Iterator[str]:
    if url := os.environ.get("BENCH_DATABASE_URL"):
        yield url
        return
    with PostgresCluster(binaries=find_binaries()) as cluster:
        yield cluster.dsn()


@contextmanager
def redis_server() -> Iterator[str]:
    if url := os.environ.get("BENCH_REDIS_URL"):
        yield url
        return
    with RedisServer() as redis:
        yield redis.url()


def main() -> None:
    with server() as dsn, redis_server() as redis_url:
        results = asyncio.run(run(dsn, redis_url))
    ratios(results)
    report(results)
    Path("bench-results.json").write_text(json.dumps(results, indent=2))
    print("figures written to bench-results.json", file=sys.stderr)
    if pictures.available():
        ratios_shown = {
            key: results[key] for key in ("provider_vs_sqlalchemy", "uow_vs_session", "orm_uow_vs_session")
        }
        chart = pictures.bench_chart(Path("bench-chart.png"), results["runs"], ratios_shown)
        print(f"chart drawn in {chart}", file=sys.stderr)
    else:
        print("no chart drawn: matplotlib is missing (the pictures extra)", file=sys.stderr)


if __name__ == "__main__":
    main()
