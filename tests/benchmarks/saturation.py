"""A PostgreSQL that saturates, driven open-loop: where adaptive concurrency limits should pay off.

Every request takes one transaction-level advisory lock, the same for all, and sleeps 10 ms
holding it (``SELECT pg_advisory_xact_lock(..), pg_sleep(0.01)``): the server does one request at
a time, so its capacity is about 1 / 10 ms and every request beyond that waits in PostgreSQL's
lock queue, its latency growing with the concurrency (the model of Netflix concurrency-limits'
``TestServer``, on a real server, using almost no CPU). The capacity and the unloaded latency are
measured first. Arrivals are Poisson (seeded) at 50 %, 90 %, 200 % and again 50 % of capacity;
each caller has a deadline (``DEADLINE_S``): the server's ``statement_timeout`` and the gate's
acquire timeout are set to it, and a request past it counts as a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from sqlalchemy import text

from adapters.sqlalchemy.connection_provider import SqlAlchemyConnectionProvider
from adapters.sqlalchemy.provider_options import MonitorOptions, PoolOptions, TimeoutOptions
from ports.concurrency_limit import ConcurrencyLimit
from ports.connection_provider import Intent
from ports.errors import HexError, QueryTimeoutError, SaturationError

LOCKED = text("SELECT pg_advisory_xact_lock(4242), pg_sleep(0.01)")
DEADLINE_S: Final = 0.25
PHASE_S: Final = 4.0
#: Offered load per phase, as a share of the measured capacity.
PHASES: Final = (("below", 0.5), ("near", 0.9), ("overload", 2.0), ("after", 0.5))
POOL_MAX: Final = 50
SEED: Final = 23
LIMIT_SAMPLE_S: Final = 0.25


@dataclass(slots=True)
class Phase:
    name: str
    rate_per_s: float
    successes: list[float] = field(default_factory=list)
    late: int = 0
    refused: int = 0
    timed_out: int = 0
    failed: int = 0
    #: (seconds since the phase began, latency) of each success, for the recovery time.
    timeline: list[tuple[float, float]] = field(default_factory=list)
    #: When each request arrived, in seconds since the phase began.
    arrivals: list[float] = field(default_factory=list)


def _provider(
    dsn: str,
    limit: Callable[[], ConcurrencyLimit] | None,
    fixed: int,
    wait_s: float = DEADLINE_S,
    overload_wait_s: float | None = None,
    overload_window_s: float = 0.1,
) -> SqlAlchemyConnectionProvider:
    # A request waits in the gate at most ``wait_s``: under overload a FIFO queue that may hold a
    # request for its whole deadline serves every request late, whatever the limit behind it.
    return SqlAlchemyConnectionProvider(
        writer_url=dsn,
        concurrency_limit=limit,
        pool=PoolOptions(
            pool_size=min(fixed, 10),
            max_overflow=fixed - min(fixed, 10),
            acquire_timeout_s=wait_s,
            max_waiting=200,
            overload_wait_s=overload_wait_s,
            overload_window_s=overload_window_s,
        ),
        timeouts=TimeoutOptions(statement_timeout_s=DEADLINE_S),
        monitor=MonitorOptions(stats_log_interval_s=None),
    )


async def _request(provider: SqlAlchemyConnectionProvider) -> None:
    async with provider.connection(Intent.WRITE) as connection:
        await connection.execute(LOCKED)
        await connection.commit()


async def calibrate(dsn: str) -> tuple[float, float]:
    """(capacity in requests/s with 4 callers, unloaded p50 latency in s with one)."""
    provider = _provider(dsn, None, 8)
    try:
        latencies = []
        for _ in range(60):
            started = time.perf_counter()
            await _request(provider)
            latencies.append(time.perf_counter() - started)
        done = 0
        deadline = time.perf_counter() + 2.0

        async def caller() -> None:
            nonlocal done
            while time.perf_counter() < deadline:
                await _request(provider)
                done += 1

        started = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(4)))
        return done / (time.perf_counter() - started), statistics.median(latencies[10:])
    finally:
        await provider.aclose()


async def drive(
    dsn: str,
    limit: Callable[[], ConcurrencyLimit] | None,
    fixed: int,
    capacity: float,
    wait_s: float,
    overload_wait_s: float | None = None,
    overload_window_s: float = 0.1,
) -> dict[str, Any]:
    provider = _provider(dsn, limit, fixed, wait_s, overload_wait_s, overload_window_s)
    gate = provider._target("writer").gate
    rng = random.Random(SEED)
    phases = [Phase(name, share * capacity) for name, share in PHASES]
    trajectory: list[tuple[float, int]] = []
    tasks: set[asyncio.Task[None]] = set()
    for _ in range(200):  # the grower opens the pool's first connections meanwhile
        if provider.stats().targets[0].size >= min(fixed, 10):
            break
        with contextlib.suppress(SaturationError):
            await _request(provider)
        await asyncio.sleep(0.02)
    began = time.perf_counter()

    async def one(phase: Phase, phase_start: float) -> None:
        started = time.perf_counter()
        try:
            async with asyncio.timeout(DEADLINE_S * 2):  # a backstop: the server's timeout comes first
                await _request(provider)
        except SaturationError:
            phase.refused += 1
            return
        except (QueryTimeoutError, TimeoutError):
            phase.timed_out += 1
            return
        except HexError:
            phase.failed += 1
            return
        latency = time.perf_counter() - started
        if latency > DEADLINE_S:
            phase.late += 1
            return
        phase.successes.append(latency)
        phase.timeline.append((started - phase_start, latency))

    async def sample_limit() -> None:
        while True:
            trajectory.append((round(time.perf_counter() - began, 2), gate.capacity))
            await asyncio.sleep(LIMIT_SAMPLE_S)

    sampler = asyncio.create_task(sample_limit())
    try:
        for phase in phases:
            phase_start = time.perf_counter()
            at = 0.0
            while True:
                at += rng.expovariate(phase.rate_per_s)
                if at >= PHASE_S:
                    break
                delay = phase_start + at - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                phase.arrivals.append(at)
                task = asyncio.create_task(one(phase, phase_start))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            await asyncio.sleep(max(phase_start + PHASE_S - time.perf_counter(), 0))
        await asyncio.gather(*tasks)
    finally:
        sampler.cancel()
        await asyncio.gather(sampler, return_exceptions=True)
        await provider.aclose()
    return {
        **{p.name: _summary(p, capacity) for p in phases},
        "recovery_s": _recovery_s(phases[-1]),
        "limit_over_time": trajectory,
    }


def _summary(phase: Phase, capacity: float) -> dict[str, Any]:
    good = phase.successes
    quantiles = statistics.quantiles(good, n=100) if len(good) >= 2 else [float("nan")] * 99
    goodput = len(good) / PHASE_S
    return {
        "offered_per_s": phase.rate_per_s,
        "goodput_per_s": goodput,
        "goodput_share_of_capacity": goodput / capacity,
        "p50_ms": quantiles[49] * 1e3,
        "p99_ms": quantiles[98] * 1e3,
        "refused": phase.refused,
        "timed_out": phase.timed_out,
        "late": phase.late,
        "failed": phase.failed,
    }


def _recovery_s(phase: Phase) -> float | None:
    """When, after the overload, the requests arriving in a half-second window first got 95 % served."""
    window = 0.5
    for k in range(int(PHASE_S / window)):
        served = sum(1 for at, _ in phase.timeline if k * window <= at < (k + 1) * window)
        arrived = sum(1 for at in phase.arrivals if k * window <= at < (k + 1) * window)
        if arrived and served >= 0.95 * arrived:
            return k * window
    return None


def goals(results: dict[str, Any], name: str) -> dict[str, bool]:
    """The issue's goals for the adaptive limit ``name``, from :func:`drive`'s figures of every limit."""
    mine, high = results[name], results["fixed_high"]
    overload = mine["overload"]
    bound_ms = 4 * results["unloaded_p50_ms"]
    recovery = mine["recovery_s"]
    return {
        "goodput at 2x >= 85% of capacity": overload["goodput_share_of_capacity"] >= 0.85,
        "goodput at 2x >= 2x fixed high": overload["goodput_per_s"] >= 2 * high["overload"]["goodput_per_s"],
        f"p99 at 2x <= 4x unloaded ({bound_ms:.0f} ms)": overload["p99_ms"] <= bound_ms,
        "below capacity within 5% of fixed high": all(
            mine[phase]["goodput_per_s"] >= 0.95 * high[phase]["goodput_per_s"] for phase in ("below", "near")
        ),
        "recovered within 5 s": recovery is not None and recovery <= 5.0,
    }
