"""The demo: a throwaway PostgreSQL when no ``DATABASE_URL`` is set, the ledger workload, its summary.

Demo and test tooling, not part of a service: ``embedded_database`` starts servers from local
binaries or those of the ``demo`` extra (``adapters/postgres``, imported only when needed).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import structlog

from app.ledger.workload import LedgerWorkload, WorkloadPlan, WorkloadReport
from container import Container
from ports.circuit_breaker import CircuitBreaker
from ports.connection_provider import ProviderStats
from settings import Settings, load_settings

if TYPE_CHECKING:
    from adapters.postgres.cluster import PostgresCluster

log = structlog.get_logger("demo")

#: Prints one line of the demo's story (``demo --faults``' steps) above the live progress line.
Say = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class EmbeddedServers:
    """A started throwaway primary and its streaming replicas (``replica-1``, ... in that order)."""

    primary: PostgresCluster
    replicas: tuple[PostgresCluster, ...]


@contextlib.contextmanager
def embedded_servers(*, replicas: int) -> Iterator[EmbeddedServers]:
    """A throwaway primary and ``replicas`` streaming replicas, destroyed on exit."""
    # Demo tooling: imported only here, so that a service with a database of its own never loads it.
    from adapters.postgres.cluster import PostgresCluster, find_binaries

    with contextlib.ExitStack() as stack:
        primary = PostgresCluster(binaries=find_binaries())
        stack.callback(primary.destroy)
        primary.init()
        primary.start()
        started = []
        for _ in range(replicas):
            replica = primary.create_replica()
            stack.callback(replica.destroy)
            started.append(replica)
        yield EmbeddedServers(primary, tuple(started))


@contextlib.contextmanager
def embedded_database(settings: Settings, *, replicas: int) -> Iterator[Settings]:
    """``settings`` as given when a writer is configured, else pointed at a throwaway cluster."""
    if settings.database.url is not None:
        yield settings
        return
    with embedded_servers(replicas=replicas) as servers:
        yield pointed_at(settings, servers.primary.dsn(), [r.dsn() for r in servers.replicas])


def pointed_at(settings: Settings, writer_dsn: str, replica_dsns: Sequence[str]) -> Settings:
    """``settings`` with the writer at ``writer_dsn`` and the replicas at ``replica_dsns``."""
    database = settings.database.model_copy(update={"url": writer_dsn, "replica_urls": ()})
    overrides = settings.model_dump(exclude={"database"})
    overrides["database"] = {**_unsecret(database.model_dump()), "replica_urls": list(replica_dsns)}
    return load_settings(**overrides)


def _unsecret(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v.get_secret_value() if hasattr(v, "get_secret_value") else v for k, v in values.items()}


class DemoCompanion(Protocol):
    """What runs beside the demo's workload and ends it (``demo --faults``' scripted faults)."""

    def observe(self, kind: str, started: float, ended: float, error: str | None) -> None:
        """Told of every call of the workload as it ends (see ``app.ledger.workload.CallObserver``)."""

    async def run(self, workload: LedgerWorkload, say: Say) -> None:
        """Do its part while ``workload`` runs; the workload stops when this returns."""

    async def finish(self, acknowledged: Sequence[str]) -> dict[str, Any]:
        """Its part of the summary, given the idempotency keys of every acknowledged transfer."""


async def run_demo(
    container: Container, plan: WorkloadPlan, *, progress: bool, companion: DemoCompanion | None = None
) -> dict[str, Any]:
    """Run the workload of ``plan`` until done or SIGTERM/SIGINT; its summary and the acknowledged keys.

    With a ``companion``, the workload stops when the companion's ``run`` returns (or ``plan`` is
    over), and its ``finish`` adds ``"faults"`` to the summary.
    """
    stop = _stop_on_signals()
    workload = LedgerWorkload(
        open_account=container.open_account(),
        deposit=container.deposit(),
        transfer=container.transfer(),
        get_balance=container.get_balance(),
        audit=container.audit_ledger(),
        settle=container.connection_provider().wait_for_replay,
        stop=stop,
        on_call=None if companion is None else companion.observe,
    )
    shown = asyncio.create_task(_show_progress(container, workload)) if progress else None
    scripted = None
    if companion is not None:
        scripted = asyncio.create_task(_accompany(companion, workload, stop, say_above_progress(progress)))
    try:
        report = await workload.run(plan)
    finally:
        for task in (shown, scripted):
            if task is not None and not task.done():
                task.cancel()
    summary = _summary(container, report) | {"acknowledged_keys": report.progress.acknowledged}
    if companion is not None and scripted is not None:
        # A failure of the companion itself (a server that would not start again) surfaces here.
        with contextlib.suppress(asyncio.CancelledError):
            await scripted
        summary["faults"] = await companion.finish(report.progress.acknowledged)
    return summary


async def _accompany(
    companion: DemoCompanion, workload: LedgerWorkload, stop: asyncio.Event, say: Say
) -> None:
    try:
        await companion.run(workload, say)
    finally:
        stop.set()


def say_above_progress(progress: bool) -> Say:
    """Print a line to stderr; on a terminal it replaces the live line, which the next tick redraws."""
    prefix = "\r\x1b[K" if progress else ""

    def say(line: str) -> None:
        sys.stderr.write(f"{prefix}{line}\n")
        sys.stderr.flush()

    return say


def _stop_on_signals() -> asyncio.Event:
    """An event set by SIGTERM or SIGINT: the workload stops taking new work and drains."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def request_stop(name: str) -> None:
        log.warning("shutdown.requested", signal=name)
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, request_stop, signum.name)
    return stop


async def _show_progress(container: Container, workload: LedgerWorkload) -> None:
    """One line, rewritten every second: throughput, failures, the pools, the circuits, the read routes."""
    provider, breaker = container.connection_provider(), container.circuit_breaker()
    seen = 0
    while True:
        await asyncio.sleep(1.0)
        p = workload.progress
        sys.stderr.write(
            "\r\x1b[K" + progress_line(p.total - seen, sum(p.failed.values()), provider.stats(), breaker)
        )
        sys.stderr.flush()
        seen = p.total


def progress_line(ops_per_s: int, failed: int, stats: ProviderStats, breaker: CircuitBreaker) -> str:
    """The live line, e.g. ``ops/s 812  failed 3  writer 4/10 q0 closed  reads replica:90``.

    Per target: connections in use / open, requests queued, the circuit's state.
    """
    pools = "  ".join(
        f"{t.name} {t.in_use}/{t.size} q{t.waiting} {breaker.state(t.name).value}" for t in stats.targets
    )
    routes = " ".join(
        f"{route.removeprefix('fallback_')}:{n}" for route, n in sorted(stats.read_routes.items())
    )
    return f"ops/s {ops_per_s:5d}  failed {failed:5d}  {pools}  reads {routes or '-'}"


def _summary(container: Container, report: WorkloadReport) -> dict[str, Any]:
    stats = container.connection_provider().stats()
    p = report.progress
    return {
        "elapsed_s": round(report.elapsed_s, 3),
        "operations": {k: {"ok": p.ok[k], "failed": p.failed[k]} for k in sorted({*p.ok, *p.failed})},
        "errors": dict(p.errors),
        "idempotent_replays_applied_once": p.replays_applied_once,
        "retries": container.metrics().snapshot()["retries"],
        "reads": {
            "by_target": dict(stats.reads_by_target),
            "served_in_recovery": stats.reads_in_recovery,
            "writer_fallbacks": stats.writer_fallbacks,
            # Why each read ran where it did (see ports.connection_provider.ReadRoute).
            "routes": dict(stats.read_routes),
            "causal_waits": stats.causal_waits,
            "replicas": [
                {
                    "name": r.name,
                    "healthy": r.healthy,
                    "ejected": r.ejected,
                    "lag_s": None if r.lag_s is None else round(r.lag_s, 4),
                    "reads": r.reads,
                    "lag_skips": r.lag_skips,
                    "ejections": r.ejections,
                    "readmissions": r.readmissions,
                }
                for r in stats.replicas
            ],
        },
        "pools": [
            {
                "target": t.name,
                "role": t.role,
                "size": t.size,
                "in_use": t.in_use,
                "idle": t.idle,
                "checkouts": t.served,
                "timeouts": t.timed_out,
                "in_recovery": t.in_recovery,
            }
            for t in stats.targets
        ],
        "balance_check": {
            "before": report.total_before,
            "after": report.total_after,
            "entries": report.entries_total,
            "passed": report.balance_unchanged,
        },
    }


def print_summary(summary: dict[str, Any]) -> None:
    ops = "  ".join(
        f"{kind}: {v['ok']} ok / {v['failed']} failed" for kind, v in summary["operations"].items()
    )
    reads = summary["reads"]
    check = summary["balance_check"]
    print(f"\noperations  {ops}")
    print(f"errors      {summary['errors'] or 'none'}")
    print(
        f"retries     {summary['retries'] or 'none'}   idempotent replays applied once: "
        f"{summary['idempotent_replays_applied_once']}"
    )
    print(
        f"reads       by target {reads['by_target']}   served by a server in recovery: "
        f"{reads['served_in_recovery']}   writer fallbacks: {reads['writer_fallbacks']}"
    )
    print(f"routes      {reads['routes'] or 'none'}")
    for replica in reads["replicas"]:
        print(
            f"replica     {replica['name']:<10} healthy={replica['healthy']} ejected={replica['ejected']} "
            f"lag_s={replica['lag_s']} reads={replica['reads']} lag_skips={replica['lag_skips']} "
            f"ejections={replica['ejections']} readmissions={replica['readmissions']}"
        )
    for pool in summary["pools"]:
        print(
            f"pool        {pool['target']:<10} size={pool['size']} in_use={pool['in_use']} "
            f"idle={pool['idle']} checkouts={pool['checkouts']} timeouts={pool['timeouts']} "
            f"in_recovery={pool['in_recovery']}"
        )
    verdict = "PASSED" if check["passed"] else "FAILED"
    print(
        f"balance     before={check['before']} after={check['after']} entries={check['entries']}  {verdict}"
    )
