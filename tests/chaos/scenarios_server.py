"""Scenarios where the server itself fails: restarts, killed backends, a replica going away."""

from __future__ import annotations

import asyncio
import time
from typing import Final

import asyncpg

from adapters.postgres.cluster import PostgresCluster, StopMode
from ports.circuit_breaker import BreakerState
from tests.chaos.harness import (
    ChaosLab,
    Scale,
    ScenarioReport,
    admin_dsn_of,
    capacity_of,
    leaked_after_shutdown,
    leaked_while_running,
    report,
    running_service,
    settings_for,
)
from tests.chaos.ledger import AckLedger
from tests.chaos.load import Load, wait_until
from tests.support import with_database

#: A call refused by an open circuit does not touch the network: most take a millisecond. The
#: bound is on the 95th percentile, since a refusal may follow a failed attempt within one call.
FAST_FAILURE_S: Final = 0.05
#: The service must find its way back on its own within this long after the server is back.
RECOVERY_BOUND_S: Final = 5.0


async def writer_restart(lab: ChaosLab, scale: Scale, mode: StopMode) -> ScenarioReport:
    """1. The writer restarted (pg_ctl -m fast / immediate) under load.

    The circuit opens while the server is down, calls fail fast while it is open, and the
    service recovers by itself; recovery is the time from the server accepting connections to the
    first successful transfer.
    """
    dsn = await asyncio.to_thread(lab.fresh_database)
    app = f"chaos-restart-{mode}"
    settings = settings_for(dsn, app=app, database={"pool_size": 5, "max_overflow": 2})
    ledger, notes, problems = AckLedger(), [], []
    async with running_service(settings) as service:
        load = Load(service, ledger, workers=6)
        load.start()
        await asyncio.sleep(scale.pick(0.5, 2.0))
        down_at = time.monotonic()
        await asyncio.to_thread(lab.cluster.stop, mode)
        await asyncio.sleep(scale.pick(1.5, 4.0))
        await asyncio.to_thread(lab.cluster.start)
        up_at = time.monotonic()
        recovery = await load.recovery_after(up_at, timeout_s=RECOVERY_BOUND_S)
        await asyncio.sleep(scale.pick(0.5, 2.0))
        await load.stop()
        transitions = service.breaker_transitions()
        state = service.container.circuit_breaker().state("writer")
        leaked, _ = await leaked_while_running(admin_dsn_of(dsn), app, capacity_of(settings))
        total_before = service.total_before
    leaked += await leaked_after_shutdown(admin_dsn_of(dsn), app)
    verdict = await ledger.verify(dsn, total_before=total_before)

    refused = sorted(c.duration_s for c in load.calls if c.error == "CircuitOpenError")
    p95 = refused[int(len(refused) * 0.95)] if refused else 0.0
    notes += [
        f"down {up_at - down_at:.1f}s",
        f"circuit opened {transitions['opened']}x",
        f"{len(refused)} refused by the open circuit (p95 {p95 * 1000:.0f} ms)",
        f"errors {load.errors()}",
    ]
    if transitions["opened"] < 1 or not refused:
        problems.append("the circuit never opened while the writer was down")
    if p95 > FAST_FAILURE_S:
        problems.append(f"calls refused by the open circuit were slow: p95 {p95:.3f}s")
    if recovery is None:
        problems.append(f"no transfer succeeded within {RECOVERY_BOUND_S}s of the writer accepting again")
    if state is not BreakerState.CLOSED:
        problems.append(f"the writer's circuit is {state} after recovery")
    return report(
        f"writer-restart-{mode}",
        loads=[load],
        verdict=verdict,
        leaked_sessions=leaked,
        recovery_s=recovery,
        notes=notes,
        problems=problems,
        faults=[(down_at, up_at)],
        recovered_at=None if recovery is None else up_at + recovery,
    )


async def _terminate_backends(admin_dsn: str, app: str) -> int:
    connection = await asyncpg.connect(admin_dsn)
    try:
        killed = await connection.fetchval(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name = $1",
            app,
        )
    finally:
        await connection.close()
    return int(killed)


async def terminated_backends(lab: ChaosLab, scale: Scale) -> ScenarioReport:
    """2. pg_terminate_backend of every pooled connection, several times under load.

    Recovery is transparent: at most the units of work in flight at each kill fail, with a clean
    error; recovery is the longest time from a kill to the next successful transfer.
    """
    dsn = await asyncio.to_thread(lab.fresh_database)
    app = "chaos-terminate"
    admin = admin_dsn_of(dsn)
    settings = settings_for(dsn, app=app, database={"pool_size": 5, "max_overflow": 2})
    ledger, notes, problems = AckLedger(), [], []
    recoveries: list[float] = []
    kill_times: list[float] = []
    kills = scale.count(2, 6)
    async with running_service(settings) as service:
        load = Load(service, ledger, workers=6)
        load.start()
        await asyncio.sleep(0.5)
        allowed = killed = 0
        for _ in range(kills):
            allowed += load.in_flight
            at = time.monotonic()
            kill_times.append(at)
            killed += await _terminate_backends(admin, app)
            recovered = await load.recovery_after(at, timeout_s=RECOVERY_BOUND_S)
            recoveries.append(RECOVERY_BOUND_S if recovered is None else recovered)
            await asyncio.sleep(scale.pick(0.7, 1.5))
        await load.stop()
        leaked, _ = await leaked_while_running(admin, app, capacity_of(settings))
        total_before = service.total_before
    leaked += await leaked_after_shutdown(admin, app)
    verdict = await ledger.verify(dsn, total_before=total_before)

    failed = len([c for c in load.calls if not c.ok])
    notes += [f"{kills} kills, {killed} backends terminated", f"errors {load.errors()}"]
    if failed > allowed:
        problems.append(f"{failed} calls failed, more than the {allowed} in flight at the kills")
    return report(
        "terminate-backends",
        loads=[load],
        verdict=verdict,
        leaked_sessions=leaked,
        recovery_s=max(recoveries, default=None),
        notes=notes,
        problems=problems,
        faults=[(at, at) for at in kill_times],
    )


async def replica_restart(lab: ChaosLab, scale: Scale) -> ScenarioReport:
    """8. A streaming replica stopped and started again under a read-heavy load: reads go on.

    While it is down, reads fall back to the writer; at most the reads in flight on it when it
    stopped may fail. Recovery is the time from the replica accepting connections to the first
    read served by it again.
    """
    dsn = await asyncio.to_thread(lab.fresh_database)
    replica = await asyncio.to_thread(lab.cluster.create_replica)
    try:
        return await _replica_restart(scale, dsn, replica)
    finally:
        await asyncio.to_thread(replica.destroy)


async def _replica_restart(scale: Scale, dsn: str, replica: PostgresCluster) -> ScenarioReport:
    app = "chaos-replica"
    replica_dsn = with_database(replica.dsn(), dsn.rsplit("/", 1)[1])
    settings = settings_for(dsn, [replica_dsn], app=app, database={"pool_size": 5, "max_overflow": 2})
    ledger, notes, problems = AckLedger(), [], []
    async with running_service(settings) as service:
        provider = service.container.connection_provider()

        def replica_reads() -> int:
            return int(provider.stats().reads_by_target.get("replica-1", 0))

        load = Load(service, ledger, workers=6, read_share=0.8)
        load.start()
        await asyncio.sleep(scale.pick(0.5, 2.0))
        before_stop = replica_reads()
        allowed = load.in_flight
        down_at = time.monotonic()
        await asyncio.to_thread(replica.stop, "fast")
        await asyncio.sleep(scale.pick(1.5, 4.0))
        fallbacks = provider.stats().writer_fallbacks
        await asyncio.to_thread(replica.start)
        up_at = time.monotonic()
        at_start = replica_reads()
        back = await wait_until(lambda: replica_reads() > at_start, timeout_s=scale.pick(4.0, 8.0))
        recovery = time.monotonic() - up_at if back else None
        await asyncio.sleep(0.3)
        await load.stop()
        leaked = 0
        for server in (dsn, replica_dsn):
            leaked += (await leaked_while_running(admin_dsn_of(server), app, capacity_of(settings)))[0]
        total_before = service.total_before
    for server in (dsn, replica_dsn):
        leaked += await leaked_after_shutdown(admin_dsn_of(server), app)
    verdict = await ledger.verify(dsn, total_before=total_before)

    down_reads = [c for c in load.calls if c.kind == "read" and down_at <= c.ended <= up_at]
    failed_reads = [c for c in down_reads if not c.ok]
    notes += [
        f"replica served {before_stop} reads before the stop",
        f"{len(down_reads) - len(failed_reads)} reads ok while it was down ({fallbacks} writer fallbacks)",
        f"errors {load.errors()}",
    ]
    if before_stop == 0:
        problems.append("no read reached the replica before it was stopped")
    if len(failed_reads) > allowed:
        problems.append(f"{len(failed_reads)} reads failed while the replica was down (in flight: {allowed})")
    if len(down_reads) == len(failed_reads):
        problems.append("no read succeeded while the replica was down")
    if recovery is None:
        problems.append("reads never went back to the replica after it restarted")
    return report(
        "replica-restart",
        loads=[load],
        verdict=verdict,
        leaked_sessions=leaked,
        recovery_s=recovery,
        notes=notes,
        problems=problems,
        faults=[(down_at, up_at)],
        recovered_at=None if recovery is None else up_at + recovery,
    )
