"""What every chaos scenario shares: a throwaway server, the service, a load, and the report row.

Scenarios run on a :class:`ChaosLab` (a throwaway cluster from the launcher with a migrated
template database; each scenario clones its own database), never on a shared server. A
scenario's load records every call with its timing and outcome in an :class:`AckLedger`; the
report holds the row of ``make chaos``'s table and, in words, every invariant that broke.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import asyncpg

from adapters.postgres.cluster import PostgresCluster, find_binaries
from container import Container, create_container, start_resources, stop_resources
from domain.ledger import AccountId
from pictures import Timeline
from settings import Settings
from tests.chaos.ledger import LedgerVerdict
from tests.support import create_database, make_settings, migrate_database, with_database

if TYPE_CHECKING:
    from tests.chaos.load import Load

INITIAL_BALANCE: Final = 1_000_000
_SETTLE_TIMEOUT_S: Final = 3.0


@dataclass(frozen=True, slots=True)
class Scale:
    """How long the scenarios run: ``short`` for the test suite, ``full`` for ``make chaos``."""

    full: bool

    def pick(self, short: float, full: float) -> float:
        return full if self.full else short

    def count(self, short: int, full: int) -> int:
        return full if self.full else short


SHORT: Final = Scale(full=False)
FULL: Final = Scale(full=True)


@dataclass(frozen=True, slots=True)
class Row:
    """One line of ``make chaos``'s table and of ``chaos-results.json``."""

    scenario: str
    ok: int
    failed_clean: int
    lost: int
    duplicated: int
    leaked_sessions: int
    recovery_s: float | None

    def as_json(self) -> dict[str, object]:
        recovery = None if self.recovery_s is None else round(self.recovery_s, 3)
        return {
            "scenario": self.scenario,
            "ok": self.ok,
            "failed_clean": self.failed_clean,
            "lost": self.lost,
            "duplicated": self.duplicated,
            "leaked_sessions": self.leaked_sessions,
            "recovery_s": recovery,
        }


@dataclass(frozen=True, slots=True)
class ScenarioReport:
    """A row, the scenario's own measurements in words, every broken invariant, and its timeline."""

    row: Row
    notes: str
    problems: tuple[str, ...]
    timeline: Timeline | None = None

    @property
    def passed(self) -> bool:
        return not self.problems

    def problems_with(self, *markers: str) -> list[str]:
        """The problems that mention any of ``markers`` (a known finding, say)."""
        return [p for p in self.problems if any(marker in p for marker in markers)]

    def problems_without(self, *markers: str) -> list[str]:
        """Every other problem."""
        return [p for p in self.problems if not any(marker in p for marker in markers)]


class ChaosLab:
    """A throwaway PostgreSQL cluster with a migrated template; scenarios take fresh databases."""

    def __init__(self, cluster: PostgresCluster, template: str) -> None:
        self.cluster = cluster
        self._template = template

    def fresh_database(self) -> str:
        """The DSN of a new database cloned from the migrated template."""
        return create_database(self.cluster.dsn(), template=self._template, prefix="chaos")


#: The launcher's defaults trade durability for speed; ``synchronous_commit=off`` acknowledges a
#: COMMIT before its WAL is written, so an immediate shutdown loses the last commits the service
#: was told succeeded. That is the server's contract, not the service's: the lab turns it on.
#: ``fsync=off`` stays: a process crash, unlike a host crash, keeps what was written.
LAB_SERVER_SETTINGS: Final = {"synchronous_commit": "on"}


@contextmanager
def chaos_lab() -> Iterator[ChaosLab]:
    """A started throwaway cluster (destroyed afterwards) with a migrated template database."""
    with PostgresCluster(binaries=find_binaries(), settings=LAB_SERVER_SETTINGS) as cluster:
        template = create_database(cluster.dsn(), prefix="chaos_template")
        migrate_database(template)
        yield ChaosLab(cluster, template.rsplit("/", 1)[1])


def settings_for(
    url: str,
    replicas: list[str] | None = None,
    *,
    app: str,
    database: dict[str, object] | None = None,
    **groups: Any,
) -> Settings:
    """Test-preset settings with the scenario's own ``application_name``, to find its sessions."""
    return make_settings(url, replicas, database={"application_name": app, **(database or {})}, **groups)


def capacity_of(settings: Settings) -> int:
    return settings.database.pool_size + settings.database.max_overflow


class Service:
    """The service under test: a started container and the accounts it seeded."""

    def __init__(self, container: Container, accounts: list[AccountId], total_before: int) -> None:
        self.container = container
        self.accounts = accounts
        self.total_before = total_before

    @property
    def settings(self) -> Settings:
        settings: Settings = self.container.settings()
        return settings

    def breaker_transitions(self, target: str = "writer") -> dict[str, int]:
        transitions: dict[str, int] = dict(self.container.circuit_breaker().transitions(target))
        return transitions


@asynccontextmanager
async def running_service(settings: Settings, *, accounts: int = 8) -> AsyncIterator[Service]:
    """Start the container, open and fund ``accounts`` accounts; stop the container on exit."""
    container = create_container(settings)
    await start_resources(container)
    try:
        opened = [await container.open_account()(f"chaos-{i}") for i in range(accounts)]
        deposit = container.deposit()
        for account in opened:
            await deposit(account, INITIAL_BALANCE, idempotency_key=f"seed-{account}")
        audit = await container.audit_ledger()()
        # Reads on a replica must find the seeded accounts.
        await container.connection_provider().wait_for_replay()
        yield Service(container, opened, audit.total_balance)
    finally:
        await stop_resources(container)


@dataclass(frozen=True, slots=True)
class Sessions:
    """The service's server sessions (by ``application_name``): all, and those idle in a transaction."""

    total: int
    idle_in_transaction: int


async def sessions(admin_dsn: str, app: str) -> Sessions:
    connection = await asyncpg.connect(admin_dsn)
    try:
        row = await connection.fetchrow(
            "SELECT count(*) AS total, count(*) FILTER (WHERE state LIKE 'idle in transaction%') AS idle_tx "
            "FROM pg_stat_activity WHERE application_name = $1",
            app,
        )
    finally:
        await connection.close()
    assert row is not None
    return Sessions(int(row["total"]), int(row["idle_tx"]))


async def leaked_while_running(admin_dsn: str, app: str, capacity: int) -> tuple[int, Sessions]:
    """Sessions idle in a transaction, and backends beyond the pool's capacity, once the load is over.

    Both can show up for a moment while connections are being returned, so it polls until they
    are gone or ``_SETTLE_TIMEOUT_S`` passes, and reports what was left.
    """
    deadline = time.monotonic() + _SETTLE_TIMEOUT_S
    while True:
        seen = await sessions(admin_dsn, app)
        leaked = seen.idle_in_transaction + max(0, seen.total - capacity)
        if not leaked or time.monotonic() >= deadline:
            return leaked, seen
        await asyncio.sleep(0.05)


async def leaked_after_shutdown(admin_dsn: str, app: str) -> int:
    """Backends of ``app`` still there after the service stopped (the server notices closes quickly)."""
    for _ in range(int(_SETTLE_TIMEOUT_S / 0.05)):
        if not (seen := await sessions(admin_dsn, app)).total:
            return 0
        await asyncio.sleep(0.05)
    return seen.total


def admin_dsn_of(database_dsn: str) -> str:
    """The superuser DSN of the same server (for pg_stat_activity and pg_terminate_backend)."""
    return with_database(database_dsn, "postgres")


def report(
    scenario: str,
    *,
    loads: Sequence[Load],
    verdict: LedgerVerdict,
    leaked_sessions: int,
    recovery_s: float | None,
    notes: list[str],
    problems: list[str],
    extra_ok: int = 0,
    extra_failed_clean: int = 0,
    faults: Sequence[tuple[float, float]] = (),
    recovered_at: float | None = None,
) -> ScenarioReport:
    """The scenario's row and its problems, including the ledger's and any unclean error.

    ``faults`` (monotonic ``(from, to)``) and ``recovered_at`` go to the timeline picture.
    """
    unclean = [u for load in loads for u in load.unclean]
    every = [*problems, *verdict.problems, *(f"unclean error: {u}" for u in unclean[:5])]
    if leaked_sessions:
        every.append(f"{leaked_sessions} leaked server sessions")
    if verdict.failed_but_applied:
        notes.append(f"{verdict.failed_but_applied} reported failed were applied in full")
    row = Row(
        scenario=scenario,
        ok=sum(load.ok_count() for load in loads) + extra_ok,
        failed_clean=sum(load.failed_clean_count() for load in loads) + extra_failed_clean,
        lost=verdict.lost,
        duplicated=verdict.duplicated,
        leaked_sessions=leaked_sessions,
        recovery_s=recovery_s,
    )
    calls = tuple(sorted((c.started, c.ended, c.error) for load in loads for c in load.calls))
    timeline = Timeline(calls, tuple(faults), recovered_at)
    return ScenarioReport(row, "; ".join(notes), tuple(every), timeline)
