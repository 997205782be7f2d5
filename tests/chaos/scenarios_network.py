"""Scenarios where the network between the service and the server fails, through the fault proxy."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Final

import asyncpg

from adapters.postgres.fault_proxy import FaultProxy
from settings import Settings
from tests.chaos.harness import (
    ChaosLab,
    Scale,
    ScenarioReport,
    Service,
    admin_dsn_of,
    capacity_of,
    leaked_after_shutdown,
    leaked_while_running,
    report,
    running_service,
    settings_for,
)
from tests.chaos.ledger import AckLedger, Request
from tests.chaos.load import Load

#: Scheduling and the last round trips of a call on a loaded 2-core machine.
SLACK_S: Final = 0.5
BURST: Final = 50
SPIKE_LATENCY_S: Final = 0.15


def call_bound_s(settings: Settings) -> float:
    """The longest a call may take by its configuration.

    One attempt waits at most for a free connection, a new connection, and the statement in flight
    when the network failed; retries stop once ``retry.max_total_s`` has passed, after an attempt.
    """
    database = settings.database
    attempt = database.acquire_timeout_s + database.connect_timeout_s + database.statement_timeout_s
    return settings.retry.max_total_s + attempt + SLACK_S


async def black_hole(lab: ChaosLab, scale: Scale) -> ScenarioReport:
    """3. The network black-holes every packet for several seconds under load.

    No call may last longer than its configured bounds (acquire + connect + statement timeouts,
    within the retry policy's total); afterwards the service recovers fully. Recovery is the time
    from the network healing to the first successful transfer.
    """
    dsn = await asyncio.to_thread(lab.fresh_database)
    app = "chaos-black-hole"
    timeouts = {"acquire_timeout_s": 0.5, "connect_timeout_s": 0.5, "statement_timeout_s": 0.5}
    with FaultProxy(upstream_port=lab.cluster.port) as proxy:
        settings = settings_for(
            proxy.dsn(dsn),
            app=app,
            database={"pool_size": 4, "max_overflow": 2, **timeouts},
            retry={"max_total_s": 1.0},
        )
        bound = call_bound_s(settings)
        ledger, notes, problems = AckLedger(), [], []
        async with running_service(settings) as service:
            load = Load(service, ledger, workers=6)
            load.start()
            await asyncio.sleep(scale.pick(0.5, 2.0))
            hole_at = time.monotonic()
            proxy.black_hole()
            await asyncio.sleep(scale.pick(4.0, 8.0))
            proxy.black_hole(False)
            healed_at = time.monotonic()
            recovery = await load.recovery_after(healed_at, timeout_s=10.0)
            await asyncio.sleep(scale.pick(0.5, 2.0))
            stuck = await load.stop(timeout_s=bound)
            leaked, _ = await leaked_while_running(admin_dsn_of(dsn), app, capacity_of(settings))
            total_before = service.total_before
    leaked += await leaked_after_shutdown(admin_dsn_of(dsn), app)
    verdict = await ledger.verify(dsn, total_before=total_before)

    longest = max((c.duration_s for c in load.calls if c.ended >= hole_at), default=0.0)
    notes += [
        f"hole {healed_at - hole_at:.1f}s",
        f"longest call {longest:.2f}s (bound {bound:.2f}s)",
        f"errors {load.errors()}",
        *(f"{name}: {message}" for name, message in load.messages.items()),
    ]
    if longest > bound:
        problems.append(f"a call took {longest:.2f}s in the black hole, beyond its bound of {bound:.2f}s")
    if stuck:
        problems.append(f"{stuck} calls were still hanging after the black hole was lifted")
    if recovery is None:
        problems.append("no transfer succeeded after the black hole was lifted")
    return report(
        "black-hole",
        loads=[load],
        verdict=verdict,
        leaked_sessions=leaked,
        recovery_s=recovery,
        notes=notes,
        problems=problems,
        faults=[(hole_at, healed_at)],
        recovered_at=None if recovery is None else healed_at + recovery,
    )


async def _count_backends(admin_dsn: str, app: str, peak: list[int], stop: asyncio.Event) -> None:
    """Sample the service's server backends every 20 ms until ``stop``; the highest count goes in ``peak``."""
    connection = await asyncpg.connect(admin_dsn)
    try:
        while not stop.is_set():
            count = await connection.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", app
            )
            peak[0] = max(peak[0], int(count))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.02)
    finally:
        await connection.close()


async def _burst(service: Service, load: Load, index: int) -> None:
    """``BURST`` requests at once: four reads for every transfer, on distinct accounts where possible."""
    container, accounts = service.container, service.accounts
    transfer, read = container.transfer(), container.get_balance()
    calls = []
    for i in range(BURST):
        if i % 5:
            calls.append(load.timed("read", read(accounts[i % len(accounts)])))
            continue
        source, destination = accounts[i % len(accounts)], accounts[(i + 1) % len(accounts)]
        request = Request(f"chaos-burst-{index}-{i}", str(source), str(destination), 1)
        calls.append(
            load.timed("transfer", transfer(source, destination, 1, idempotency_key=request.key), request)
        )
    await asyncio.gather(*calls)


async def latency_spike(lab: ChaosLab, scale: Scale) -> ScenarioReport:
    """4. 150 ms added to every round trip, then a burst of 50 concurrent requests.

    The pool must not balloon: never more connections than ``pool_size + max_overflow``. (HikariCP's
    published spike test ends with 5 to 6 connections where other pools reach 40 to 45.)
    """
    dsn = await asyncio.to_thread(lab.fresh_database)
    app = "chaos-latency"
    with FaultProxy(upstream_port=lab.cluster.port) as proxy:
        # A wait long enough for the whole burst: what is measured is the pool, not the queue.
        settings = settings_for(proxy.dsn(dsn), app=app, database={"acquire_timeout_s": 15.0})
        capacity = capacity_of(settings)
        ledger, notes, problems = AckLedger(), [], []
        peak, durations = [0], []
        async with running_service(settings, accounts=BURST) as service:
            load = Load(service, ledger, workers=0)
            proxy.set_latency(SPIKE_LATENCY_S)
            slow_from = time.monotonic()
            stop = asyncio.Event()
            sampler = asyncio.create_task(_count_backends(admin_dsn_of(dsn), app, peak, stop))
            for index in range(scale.count(1, 3)):
                started = time.monotonic()
                await _burst(service, load, index)
                durations.append(time.monotonic() - started)
            stop.set()
            await sampler
            proxy.set_latency(0)
            slow_until = time.monotonic()
            pool_after = service.container.connection_provider().stats().targets[0].size
            leaked, _ = await leaked_while_running(admin_dsn_of(dsn), app, capacity)
            total_before = service.total_before
    leaked += await leaked_after_shutdown(admin_dsn_of(dsn), app)
    verdict = await ledger.verify(dsn, total_before=total_before)

    notes += [
        f"peak {peak[0]} server connections for {BURST} concurrent requests (capacity {capacity})",
        f"pool holds {pool_after} after the burst",
        "bursts took " + ", ".join(f"{d:.1f}s" for d in durations),
        f"errors {load.errors()}",
    ]
    if peak[0] > capacity:
        problems.append(f"the pool ballooned to {peak[0]} connections, beyond its capacity of {capacity}")
    return report(
        "latency-spike",
        loads=[load],
        verdict=verdict,
        leaked_sessions=leaked,
        recovery_s=None,
        notes=notes,
        problems=problems,
        faults=[(slow_from, slow_until)],
    )
