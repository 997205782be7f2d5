"""``make bench`` (second part): fixed vs adaptive admission limits while the database slows down.

A loopback fault proxy adds latency to every round trip for the middle phase of the run; 50
clients keep asking. For each limit: throughput, p99 time holding a connection (the admitted
calls' latency), p99 end-to-end latency of successes, pool timeouts, and the gate's capacity at
the end of each phase. Also measures both rate limiters' admitted rate in real time.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import text

import pictures
from adapters.memory.concurrency_limit import AimdConcurrencyLimit, GradientConcurrencyLimit
from adapters.memory.rate_limiter import SlidingWindowRateLimiter, TokenBucketRateLimiter
from adapters.postgres.cluster import PostgresCluster, find_binaries
from adapters.postgres.fault_proxy import FaultProxy
from adapters.sqlalchemy.connection_provider import SqlAlchemyConnectionProvider
from adapters.sqlalchemy.provider_options import MonitorOptions, PoolOptions
from ports.concurrency_limit import ConcurrencyLimit
from ports.connection_provider import Intent
from ports.errors import HexError
from ports.rate_limiter import RateLimiter
from tests.benchmarks import saturation

CLIENTS = 50
POOL = 20
PHASES = (("normal", 0.0, 2.0), ("slow", 0.05, 3.0), ("recovered", 0.0, 2.0))
QUERY = text("SELECT pg_sleep(0.002)")


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98] * 1e3 if len(values) >= 2 else float("nan")


async def phase(provider: SqlAlchemyConnectionProvider, seconds: float) -> dict[str, float]:
    held: list[float] = []
    total: list[float] = []
    failures = 0
    deadline = time.perf_counter() + seconds

    async def client() -> None:
        nonlocal failures
        while (start := time.perf_counter()) < deadline:
            try:
                async with provider.connection(Intent.WRITE) as connection:
                    admitted = time.perf_counter()
                    await connection.execute(QUERY)
                held.append(time.perf_counter() - admitted)
                total.append(time.perf_counter() - start)
            except HexError:
                failures += 1

    await asyncio.gather(*(client() for _ in range(CLIENTS)))
    capacity = provider._target("writer").gate.capacity
    return {
        "ops_per_s": len(total) / seconds,
        "p99_held_ms": p99(held),
        "p99_total_ms": p99(total),
        "failures": failures,
        "capacity_at_end": capacity,
    }


async def run_limit(
    dsn: str, proxy: FaultProxy, make_limit: Callable[[], ConcurrencyLimit] | None
) -> dict[str, Any]:
    provider = SqlAlchemyConnectionProvider(
        writer_url=dsn,
        concurrency_limit=make_limit,
        pool=PoolOptions(pool_size=POOL, max_overflow=0, acquire_timeout_s=1.0),
        monitor=MonitorOptions(stats_log_interval_s=None),
    )
    results: dict[str, Any] = {}
    try:
        for name, latency_s, seconds in PHASES:
            proxy.set_latency(latency_s)
            results[name] = await phase(provider, seconds)
    finally:
        proxy.set_latency(0.0)
        await provider.aclose()
    return results


async def rate_check(limiter: RateLimiter, rate_per_s: float, seconds: float = 3.0) -> float:
    admitted = 0
    deadline = time.perf_counter() + seconds

    async def client() -> None:
        nonlocal admitted
        while time.perf_counter() < deadline:
            await limiter.acquire("bench")
            admitted += 1

    started = time.perf_counter()
    await asyncio.wait_for(asyncio.gather(*(client() for _ in range(20))), seconds + 5)
    return admitted / (time.perf_counter() - started) / rate_per_s


async def run_saturating(dsn: str) -> dict[str, Any]:
    """Fixed low and high, AIMD and gradient against a database that saturates (see :mod:`.saturation`)."""
    capacity, unloaded_s = await saturation.calibrate(dsn)
    high = saturation.POOL_MAX
    limits: dict[str, tuple[Callable[[], ConcurrencyLimit] | None, int]] = {
        "fixed_low": (None, 2),
        "fixed_high": (None, high),
        # Tuned for this model (a server of capacity one, a short gate queue): a sample slower
        # than twice the unloaded latency is congestion; the gradient tolerates 1.1x (default
        # 1.5) with 1 call of headroom (default 4). Both keep at least 2 in flight, so that the
        # server never idles between one request's COMMIT and the next one's lock.
        "aimd": (
            lambda: AimdConcurrencyLimit(
                initial_limit=10,
                min_limit=2,
                max_limit=high,
                backoff_ratio=0.9,
                slow_latency_s=2 * unloaded_s,
            ),
            high,
        ),
        "gradient": (
            lambda: GradientConcurrencyLimit(
                initial_limit=10, min_limit=2, max_limit=high, rtt_tolerance=1.1, queue_size=1
            ),
            high,
        ),
    }
    results: dict[str, Any] = {
        "capacity_per_s": capacity,
        "unloaded_p50_ms": unloaded_s * 1e3,
        "deadline_ms": saturation.DEADLINE_S * 1e3,
        "phase_s": saturation.PHASE_S,
        "phases": {name: share for name, share in saturation.PHASES},
    }
    # The same gate for every limit: a wait of two unloaded latencies, cut to half of one while
    # requests keep timing out in the queue (the gate's overload wait, within 20 of them).
    wait_s, overload_wait_s, overload_window_s = 2 * unloaded_s, unloaded_s / 2, 20 * unloaded_s
    results["gate_wait_ms"] = wait_s * 1e3
    results["gate_overload_wait_ms"] = overload_wait_s * 1e3
    results["gate_overload_window_ms"] = overload_window_s * 1e3
    for name, (make, fixed) in limits.items():
        results[name] = await saturation.drive(
            dsn, make, fixed, capacity, wait_s, overload_wait_s, overload_window_s
        )
    results["goals"] = {name: saturation.goals(results, name) for name in ("aimd", "gradient")}
    return results


def _print_saturating(results: dict[str, Any]) -> None:
    print(
        f"saturating database: capacity {results['capacity_per_s']:.0f}/s, unloaded p50 "
        f"{results['unloaded_p50_ms']:.1f} ms, deadline {results['deadline_ms']:.0f} ms"
    )
    head = (
        "limit",
        "phase",
        "offered",
        "goodput",
        "share",
        "p50 ms",
        "p99 ms",
        "refused",
        "timeouts",
        "late",
    )
    print(f"{head[0]:<11}{head[1]:<10}" + "".join(f"{h:>9}" for h in head[2:]))
    for name in ("fixed_low", "fixed_high", "aimd", "gradient"):
        for phase in results["phases"]:
            r = results[name][phase]
            print(
                f"{name:<11}{phase:<10}{r['offered_per_s']:>9.0f}{r['goodput_per_s']:>9.1f}"
                f"{r['goodput_share_of_capacity']:>9.2f}{r['p50_ms']:>9.1f}{r['p99_ms']:>9.1f}"
                f"{r['refused']:>9}{r['timed_out']:>9}{r['late']:>9}"
            )
        print(f"{'':<11}recovery after the overload: {results[name]['recovery_s']} s")
    for name, goals in results["goals"].items():
        verdict = ", ".join(f"{goal} {'met' if met else 'MISSED'}" for goal, met in goals.items())
        print(f"goals for {name}: {verdict}")


def main() -> None:
    limits: dict[str, Callable[[], ConcurrencyLimit] | None] = {
        "fixed": None,
        "aimd": lambda: AimdConcurrencyLimit(
            initial_limit=POOL, min_limit=2, max_limit=POOL, backoff_ratio=0.9, slow_latency_s=0.03
        ),
        "gradient": lambda: GradientConcurrencyLimit(initial_limit=POOL, min_limit=2, max_limit=POOL),
    }
    results: dict[str, Any] = {"clients": CLIENTS, "pool": POOL, "phases": [p[0] for p in PHASES]}
    with (
        PostgresCluster(binaries=find_binaries()) as cluster,
        FaultProxy(upstream_port=cluster.port) as proxy,
    ):
        dsn = proxy.dsn(cluster.dsn())
        for name, make in limits.items():
            results[name] = asyncio.run(run_limit(dsn, proxy, make))
        saturating = asyncio.run(run_saturating(cluster.dsn()))
    results["rate_limiters_admitted_vs_configured"] = {
        "token_bucket": asyncio.run(
            rate_check(TokenBucketRateLimiter(rate_per_s=1000, burst=10, max_wait_s=5), 1000)
        ),
        "sliding_window": asyncio.run(
            rate_check(SlidingWindowRateLimiter(rate_per_s=1000, window_s=0.1, max_wait_s=5), 1000)
        ),
    }
    header = ("limit", "phase", "ops/s", "p99 held ms", "p99 total ms", "failures", "capacity")
    print(
        f"{header[0]:<10}{header[1]:<11}{header[2]:>8}{header[3]:>13}{header[4]:>14}{header[5]:>10}{header[6]:>10}"
    )
    for name in limits:
        for phase_name in results["phases"]:
            r = results[name][phase_name]
            print(
                f"{name:<10}{phase_name:<11}{r['ops_per_s']:>8.0f}{r['p99_held_ms']:>13.1f}{r['p99_total_ms']:>14.1f}"
                f"{r['failures']:>10}{r['capacity_at_end']:>10}"
            )
    for name, ratio in results["rate_limiters_admitted_vs_configured"].items():
        print(f"rate limiter {name}: admitted {ratio:.3f} of the configured rate over 3 s")
    existing = (
        json.loads(Path("bench-results.json").read_text()) if Path("bench-results.json").exists() else {}
    )
    existing["adaptive_concurrency"] = results
    existing["adaptive_saturating"] = saturating
    _print_saturating(saturating)
    if pictures.available():
        names = ("fixed_low", "fixed_high", "aimd", "gradient")
        chart = pictures.saturation_chart(
            Path("saturation-chart.png"),
            {name: saturating[name]["limit_over_time"] for name in ("aimd", "gradient")},
            {
                n: {p: saturating[n][p]["goodput_share_of_capacity"] for p in saturating["phases"]}
                for n in names
            },
            list(saturating["phases"].items()),
            saturating["phase_s"],
        )
        print(f"chart drawn in {chart}")
    Path("bench-results.json").write_text(json.dumps(existing, indent=2))


if __name__ == "__main__":
    main()
