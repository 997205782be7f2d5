"""``SqlAlchemyConnectionProvider``: fair admission, tracked checkouts and clean errors per target."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

import structlog
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from adapters.asyncio.admission_gate import AdmissionGate
from adapters.asyncio.shielding import BackgroundFinisher
from adapters.sqlalchemy import wal, watchdog
from adapters.sqlalchemy._lease import Lease
from adapters.sqlalchemy.checkouts import CheckoutRegistry
from adapters.sqlalchemy.errors import translate
from adapters.sqlalchemy.grower import PoolGrower
from adapters.sqlalchemy.idle import IdlePolicy
from adapters.sqlalchemy.pool_monitor import PoolMonitor
from adapters.sqlalchemy.pool_observer import PoolObserver, no_observer
from adapters.sqlalchemy.provider_options import (
    DEFAULT_MONITOR,
    DEFAULT_POOL,
    DEFAULT_REPLICAS,
    DEFAULT_TIMEOUTS,
    MonitorOptions,
    PoolOptions,
    ReplicaOptions,
    TimeoutOptions,
)
from adapters.sqlalchemy.replica_health import ReplicaSet
from adapters.sqlalchemy.replica_probe import ReplicaProber
from adapters.sqlalchemy.targets import (
    EngineOptions,
    Target,
    asyncpg_url,
    instrument,
    make_engine,
    probe_connector,
    target_stats,
)
from ports.concurrency_limit import ConcurrencyLimit
from ports.connection_provider import (
    WRITER,
    CausalToken,
    ConnectionProvider,
    Intent,
    Priority,
    ProviderStats,
    ReadRoute,
    ReplicaView,
)
from ports.errors import (
    ConfigurationError,
    DatabaseUnavailableError,
    EventLoopMismatchError,
    HexError,
)

__all__ = ["SqlAlchemyConnectionProvider", "asyncpg_url"]
log = structlog.get_logger(__name__)


class SqlAlchemyConnectionProvider(ConnectionProvider[AsyncConnection]):
    """Connections to one writer and any number of replicas over SQLAlchemy's asyncpg dialect.

    Configured by option groups (:mod:`.provider_options`): ``pool`` (size, admission, lifetimes,
    idle tending), ``timeouts`` (connect and the server-side ones), ``replicas`` (ejection,
    weights, probes) and ``monitor`` (leak detection, reclaim, statistics).

    In front of each target's pool sits an :class:`AdmissionGate` (capacity ``pool_size +
    max_overflow``, at most ``max_waiting`` queued, FIFO per priority, ``acquire_timeout_s``).
    Every connection gets its server-side timeouts at connect time, is pinged at checkout when it
    sat idle longer than ``pre_ping_idle_s`` (a dead one is replaced), is recycled after
    ``max_lifetime_s`` minus up to ``lifetime_jitter`` of it, and every checkout is registered
    until released (see :class:`.PoolMonitor` for leaks and reclaims). Release survives
    cancellation, and so does a connect: a cancelled request leaves it to finish (within
    ``connect_timeout_s``) and be closed, its slot taken until then, rather than interrupt asyncpg
    half-way (see ``targets.make_engine``). A request left without an answer for
    ``statement_timeout_s + connect_timeout_s`` (a black hole, a frozen server) ends as a lost
    connection: see :mod:`.watchdog`; with ``monitor.stuck_after_s`` and ``on_stuck`` set, requests
    unanswered that long are reported per target first (the breaker counts them while they run).
    ``probe_connector`` and ``discard_idle`` serve the recovery probes. The provider belongs to the
    event loop that first uses it;
    another loop gets :class:`EventLoopMismatchError` rather than asyncpg's obscure failure.

    The writer may be several hosts (``postgresql://u@h1:5432,h2:5432/db``): a new connection goes
    to the first that accepts read-write sessions, so a promoted standby is found after a failover.
    Replicas are ejected for ``replicas.eject_s`` after a failed connect and, with
    ``replicas.probe_interval_s`` set, probed in the background (see :class:`ReplicaProber`):
    ejected while unreachable or promoted, readmitted once a probe succeeds, their replay lag
    measured. ``replicas.weights`` (one per replica, default 1) are handed to the strategy.
    """

    def __init__(
        self,
        *,
        writer_url: str,
        replica_urls: Sequence[str] = (),
        pool: PoolOptions = DEFAULT_POOL,
        timeouts: TimeoutOptions = DEFAULT_TIMEOUTS,
        replicas: ReplicaOptions = DEFAULT_REPLICAS,
        monitor: MonitorOptions = DEFAULT_MONITOR,
        application_name: str = "alchemy-hex",
        target_connect_args: Mapping[str, Mapping[str, Any]] | None = None,
        concurrency_limit: Callable[[], ConcurrencyLimit] | None = None,
        on_stuck: Callable[[str, int], None] | None = None,
        observe: Callable[[str], PoolObserver] = no_observer,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._observe = observe
        self._options = EngineOptions(
            pool_size=pool.pool_size,
            max_overflow=pool.max_overflow,
            connect_timeout_s=timeouts.connect_timeout_s,
            server_settings={
                "statement_timeout": str(int(timeouts.statement_timeout_s * 1000)),
                "idle_in_transaction_session_timeout": str(
                    int(timeouts.idle_in_transaction_timeout_s * 1000)
                ),
                "lock_timeout": str(int(timeouts.lock_timeout_s * 1000)),
                "application_name": application_name,
            },
            max_lifetime_s=pool.max_lifetime_s,
            lifetime_jitter=pool.lifetime_jitter,
            pre_ping=pool.pre_ping,
            pgbouncer=pool.pgbouncer,
            pre_ping_idle_s=pool.pre_ping_idle_s,
            command_timeout_s=None if watchdog.supported() else timeouts.client_deadline_s,
        )
        self._pool = pool
        self._statement_timeout_s = timeouts.statement_timeout_s
        self._clock = clock
        self._acquire_timeout_s = pool.acquire_timeout_s
        self._reclaim_after_s = monitor.reclaim_after_s
        self._concurrency_limit = concurrency_limit
        self._registry = CheckoutRegistry(
            clock=clock, leak_detection_threshold_s=monitor.leak_detection_threshold_s
        )
        self._closing = False
        self._drained = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._monitor_task: asyncio.Task[None] | None = None
        self._watchdog_task: asyncio.Task[None] | None = None
        extras = target_connect_args or {}
        dsns = {WRITER: writer_url} | {f"replica-{i}": url for i, url in enumerate(replica_urls, start=1)}
        self._dsns, self._extras = dsns, extras
        self._targets = {
            name: self._make_target(name, dsn, extras.get(name, {})) for name, dsn in dsns.items()
        }
        try:
            weights = tuple(replicas.weights) or (1.0,) * len(replica_urls)
            self._replicas = ReplicaSet(self._targets, weights=weights, eject_s=replicas.eject_s, clock=clock)
        except ValueError as error:
            raise ConfigurationError(f"replicas: {error}") from None
        # By default every connection of the core pool may stay (as HikariCP with minimumIdle
        # equal to the pool size); a lower ``min_idle`` lets the idle timeout shrink it.
        min_idle = pool.pool_size if pool.min_idle is None else pool.min_idle
        self._monitor = PoolMonitor(
            registry=self._registry,
            targets=self._targets,
            idle=IdlePolicy(pool.keepalive_s, pool.idle_timeout_s, min_idle),
            options=monitor,
            lease=self.connection,
            stats=self.stats,
            closing=lambda: self._closing,
            clock=clock,
        )
        self._watchdog = None
        if self._options.command_timeout_s is None:
            self._watchdog = watchdog.DeadlineWatchdog(
                deadline_s=timeouts.client_deadline_s,
                connections=self._open_connections,
                clock=clock,
                on_close=self._unresponsive,
                stuck_after_s=monitor.stuck_after_s,
                on_stuck=on_stuck,
            )
        self._prober = None
        if replica_urls and replicas.probe_interval_s is not None:
            timeout_s = replicas.probe_timeout_s

            def connect(name: str) -> Callable[[], Any]:
                role = "writer" if name == WRITER else "replica"
                extra = extras.get(name, {})
                return probe_connector(dsns[name], self._options, extra, role=role, timeout_s=timeout_s)

            self._prober = ReplicaProber(
                writer=connect(WRITER),
                replicas={name: (connect(name), h) for name, h in self._replicas.health.items()},
                interval_s=replicas.probe_interval_s,
                timeout_s=timeout_s,
                clock=clock,
            )

    def _make_target(self, name: str, dsn: str, extra: Mapping[str, Any]) -> Target:
        role = "writer" if name == WRITER else "replica"
        connects = BackgroundFinisher()
        observer = self._observe(name)
        engine = make_engine(dsn, self._options, extra, role=role, connects=connects, observer=observer)
        pool: Any = engine.pool

        def describe() -> str:
            # Late-bound on purpose: ``gate`` and ``grower`` exist by the time a message is built.
            return (
                f"size={pool.checkedin() + pool.checkedout()} in_use={gate.in_use} idle={pool.checkedin()} "
                + (f"waiting={gate.waiting} capacity={gate.capacity} connecting={grower.connecting}")
            )

        gate = AdmissionGate(
            name=name,
            capacity=self._pool.capacity,
            max_waiting=self._pool.max_waiting,
            describe=describe,
            # One limit per target: what the writer's latency teaches says nothing of a replica.
            limit=None if self._concurrency_limit is None else self._concurrency_limit(),
            clock=self._clock,
            overload_wait_s=self._pool.overload_wait_s,
            overload_window_s=self._pool.overload_window_s,
        )
        pool_options = self._pool
        grower = PoolGrower(
            name=name,
            pool=lambda: engine.sync_engine.pool,  # late-bound: disposal replaces the pool
            gate=gate,
            maximum=pool_options.capacity,
            min_idle=pool_options.pool_size if pool_options.min_idle is None else pool_options.min_idle,
            max_concurrent_connects=pool_options.max_concurrent_connects,
            on_failure=lambda error: self._connect_failed(target, error),
            clock=self._clock,
        )
        gate.on_queue = grower.nudge
        target = Target(
            name=name,
            role=role,
            engine=engine,
            gate=gate,
            connects=connects,
            grower=grower,
            observer=observer,
            core_size=pool_options.pool_size,
        )
        instrument(target, self._options, self._clock)
        return target

    def _open_connections(self) -> list[tuple[str, Any]]:
        return [(t.name, driver) for t in self._targets.values() for driver in t.drivers.values()]

    def _unresponsive(self, target: str) -> None:
        self._targets[target].unresponsive += 1

    @property
    def statement_timeout_s(self) -> float:
        """The server-side ``statement_timeout`` every connection starts with."""
        return self._statement_timeout_s

    def probe_connector(self, target: str, *, timeout_s: float) -> Callable[[], Any]:
        """Opens a fresh asyncpg connection to ``target`` outside its pool (for recovery probes)."""
        self._target(target)
        role = "writer" if target == WRITER else "replica"
        extra = self._extras.get(target, {})
        return probe_connector(self._dsns[target], self._options, extra, role=role, timeout_s=timeout_s)

    def discard_idle(self, target: str) -> int:
        """Abort ``target``'s idle pooled connections, so each is replaced by a fresh one at checkout.

        After an outage (a restart leaves every pooled connection dead, a frozen server may have
        lost them) the first calls must not spend their attempt on a corpse. Checked-out
        connections are left to their holders. Returns how many were discarded.
        """
        state = self._target(target)
        discarded = 0
        for key in list(state.idle_since):
            driver = state.drivers.get(key)
            if driver is not None and not driver.is_closed():
                driver.terminate()  # the checkout hook sees it closed and has the pool reconnect
                discarded += 1
        if discarded:
            log.info("pool.idle_discarded", target=target, connections=discarded)
        return discarded

    @property
    def target_names(self) -> tuple[str, ...]:
        """Every target's name, the writer first, then ``replica-1``, ``replica-2``..."""
        return tuple(self._targets)

    @property
    def replica_names(self) -> tuple[str, ...]:
        return tuple(name for name, t in self._targets.items() if t.role == "replica")

    @property
    def pool_options(self) -> PoolOptions:
        """The size and admission options every target's pool was built with."""
        return self._pool

    def queued_by_priority(self, target: str) -> Mapping[Priority, int]:
        """How many requests wait for a connection to ``target`` now, by priority (for metrics)."""
        return self._target(target).gate.waiting_by_priority()

    def engine(self, target: str = WRITER) -> AsyncEngine:
        """The engine behind ``target``; for adapters (Alembic, benchmarks), not for use cases."""
        return self._target(target).engine

    def _target(self, name: str) -> Target:
        try:
            return self._targets[name]
        except KeyError:
            raise HexError(f"unknown target {name!r}; configured: {', '.join(self._targets)}") from None

    def _check_loop(self) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
            # A fresh context, so that the request that happened to come first does not lend its
            # correlation ID to every line the background tasks log.
            self._monitor_task = loop.create_task(
                self._monitor.run(), name="alchemy-hex-provider-monitor", context=contextvars.Context()
            )
            if self._watchdog is not None:
                self._watchdog_task = loop.create_task(
                    self._watchdog.run(), name="alchemy-hex-provider-watchdog", context=contextvars.Context()
                )
            if self._prober is not None:
                self._prober.start()
            for target in self._targets.values():
                target.grower.nudge()  # fill to min_idle
        elif loop is not self._loop:
            raise EventLoopMismatchError(
                f"connection provider belongs to event loop {id(self._loop):#x} but was used from "
                f"event loop {id(loop):#x}; create one provider per event loop"
            )

    def connection(
        self, intent: Intent, *, target: str = WRITER, priority: Priority = Priority.NORMAL
    ) -> AbstractAsyncContextManager[AsyncConnection]:
        return Lease(self, self._target(target), priority)

    async def _checkout(self, state: Target) -> AsyncConnection:
        try:
            return await state.engine.connect()
        except (sa_exc.DBAPIError, sa_exc.TimeoutError, OSError, TimeoutError) as exc:
            error = self._connect_failed(state, exc)
            log.warning("connection.failed", target=state.name, error=str(error))
            raise error from exc

    def _connect_failed(self, state: Target, exc: BaseException) -> HexError:
        """Count a failed connect (a replica is ejected) and say what the requests get for it."""
        state.connect_failures += 1
        if state.role == "replica":
            self._replicas.connect_failed(state.name)
        error = translate(exc, target=state.name)
        return error if isinstance(error, DatabaseUnavailableError) else DatabaseUnavailableError(str(error))

    def replica_views(self) -> tuple[ReplicaView, ...]:
        return self._replicas.views()

    def record_read(self, target: str, *, in_recovery: bool, route: ReadRoute) -> None:
        self._replicas.record_read(target, in_recovery=in_recovery, route=route)

    def record_lag_skip(self, replica: str) -> None:
        self._replicas.record_lag_skip(replica)

    def has_replayed(self, replica: str, token: CausalToken) -> bool:
        return self._replicas.has_replayed(replica, token)

    def note_replayed(self, replica: str, position: int) -> None:
        """Remember that ``replica`` had replayed ``position`` (learnt while waiting on it)."""
        self._replicas.note_replayed(replica, position)

    def record_causal_wait(self, waited_s: float) -> None:
        """Count a read unit that waited ``waited_s`` for a replica to replay its causal token."""
        self._replicas.record_causal_wait(waited_s)

    async def wait_for_replay(self, timeout_s: float = 5.0) -> bool:
        replicas = [view.name for view in self.replica_views() if view.healthy]
        if not replicas:
            return True
        async with self.connection(Intent.WRITE) as writer:
            position = await wal.insert_position(writer, target=WRITER)
        deadline = self._clock() + timeout_s
        for name in replicas:
            async with self.connection(Intent.READ, target=name) as replica:
                left_s = max(deadline - self._clock(), 0.0)
                replayed, seen = await wal.wait_for_replay(
                    replica, position, target=name, timeout_s=left_s, clock=self._clock
                )
            if seen is not None:
                self.note_replayed(name, seen)
            if not replayed:
                return False
        return True

    def stats(self) -> ProviderStats:
        return self._replicas.stats(tuple(target_stats(t) for t in self._targets.values()))

    @property
    def checked_out(self) -> int:
        """How many checkouts are registered right now."""
        return len(self._registry)

    def begin_shutdown(self) -> None:
        """Stop admitting: new and queued requests get ``ShuttingDownError``; holders carry on."""
        self._closing = True
        for target in self._targets.values():
            target.gate.close()
        if not len(self._registry):
            self._drained.set()

    async def aclose(self, timeout_s: float = 30.0) -> None:
        self.begin_shutdown()
        try:
            await asyncio.wait_for(self._drained.wait(), timeout_s)
        except TimeoutError:
            log.warning(
                "provider.drain_timed_out", still_checked_out=len(self._registry), timeout_s=timeout_s
            )
        await _cancel(self._monitor_task)
        await asyncio.gather(*(t.grower.aclose() for t in self._targets.values()))
        if self._prober is not None:
            await self._prober.aclose()
        # A connect left behind by a cancelled caller ends within its connect timeout.
        timeout = self._options.connect_timeout_s
        await asyncio.gather(*(t.connects.wait(timeout) for t in self._targets.values()))
        # Disposal closes idle connections over the network; a dead server must not hold it up.
        for target in self._targets.values():
            try:
                async with asyncio.timeout(max(timeout_s, 1.0)):
                    await target.engine.dispose()
            except TimeoutError:
                log.warning("provider.dispose_timed_out", target=target.name)
        # Last: until every connection is closed, a request may still need its deadline kept.
        await _cancel(self._watchdog_task)


async def _cancel(task: asyncio.Task[None] | None) -> None:
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
