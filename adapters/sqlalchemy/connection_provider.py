"""``SqlAlchemyConnectionProvider``: fair admission, tracked checkouts and clean errors per target."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Any

import structlog
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from adapters.asyncio.admission_gate import AdmissionGate
from adapters.asyncio.shielding import BackgroundFinisher
from adapters.sqlalchemy import wal, watchdog
from adapters.sqlalchemy.checkouts import CheckoutRegistry
from adapters.sqlalchemy.errors import translate
from adapters.sqlalchemy.idle import IdlePolicy, tend_idle
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
    TargetStats,
)
from ports.errors import (
    ConnectionReclaimedError,
    DatabaseUnavailableError,
    EventLoopMismatchError,
    HexError,
    InfrastructureError,
    ShuttingDownError,
)

__all__ = ["SqlAlchemyConnectionProvider", "asyncpg_url"]
log = structlog.get_logger(__name__)


class SqlAlchemyConnectionProvider(ConnectionProvider[AsyncConnection]):
    """Connections to one writer and any number of replicas over SQLAlchemy's asyncpg dialect.

    In front of each target's pool sits an :class:`AdmissionGate` (capacity ``pool_size +
    max_overflow``, at most ``max_waiting`` queued, FIFO per priority, ``acquire_timeout_s``).
    Every connection gets its server-side timeouts at connect time, is pinged at checkout when it
    sat idle longer than ``pre_ping_idle_s`` (a dead one is replaced), is recycled after
    ``max_lifetime_s`` minus up to ``lifetime_jitter`` of it, and every checkout is registered
    until released (leaks past ``leak_detection_threshold_s`` are logged; with ``reclaim_after_s``
    set, off by default, a connection held past it is invalidated and its holder gets
    :class:`ConnectionReclaimedError`). Release survives cancellation, and so does a connect: a
    cancelled request leaves it to finish (within ``connect_timeout_s``) and be closed, its slot
    taken until then, rather than interrupt asyncpg half-way (see ``targets.make_engine``). A
    request left without an answer for ``statement_timeout_s + connect_timeout_s`` (a black hole,
    a frozen server) ends as a lost connection: see :mod:`.watchdog`. The provider belongs to the
    event loop that first uses it; another loop gets :class:`EventLoopMismatchError` rather than
    asyncpg's obscure failure.

    The writer may be several hosts (``postgresql://u@h1:5432,h2:5432/db``): a new connection goes
    to the first that accepts read-write sessions, so a promoted standby is found after a failover.
    Replicas are ejected for ``replica_eject_s`` after a failed connect and, with
    ``probe_interval_s`` set, probed in the background (see :class:`ReplicaProber`): ejected while
    unreachable or promoted, readmitted once a probe succeeds, their replay lag measured.
    ``replica_weights`` (one per replica, default 1) are handed to the strategy in the views.
    """

    def __init__(
        self,
        *,
        writer_url: str,
        replica_urls: Sequence[str] = (),
        pool_size: int = 10,
        max_overflow: int = 5,
        max_waiting: int = 1000,
        acquire_timeout_s: float = 5.0,
        connect_timeout_s: float = 5.0,
        statement_timeout_s: float = 30.0,
        idle_in_transaction_timeout_s: float = 60.0,
        lock_timeout_s: float = 10.0,
        max_lifetime_s: float = 1800.0,
        lifetime_jitter: float = 0.1,
        pre_ping: bool = True,
        pre_ping_idle_s: float = 1.0,
        pgbouncer: bool = False,
        replica_eject_s: float = 5.0,
        replica_weights: Sequence[float] = (),
        probe_interval_s: float | None = None,
        probe_timeout_s: float = 1.0,
        leak_detection_threshold_s: float | None = None,
        reclaim_after_s: float | None = None,
        keepalive_s: float | None = 60.0,
        idle_timeout_s: float | None = 600.0,
        min_idle: int | None = None,
        monitor_interval_s: float = 1.0,
        stats_log_interval_s: float | None = 60.0,
        application_name: str = "alchemy-hex",
        target_connect_args: Mapping[str, Mapping[str, Any]] | None = None,
        concurrency_limit: Callable[[], ConcurrencyLimit] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        # statement_timeout runs on the server, so it cannot end a request whose answer never comes
        # back (a black hole, a frozen server): a client-side deadline a little later bounds each one.
        deadline_s = statement_timeout_s + connect_timeout_s
        self._options = EngineOptions(
            pool_size=pool_size,
            max_overflow=max_overflow,
            connect_timeout_s=connect_timeout_s,
            server_settings={
                "statement_timeout": str(int(statement_timeout_s * 1000)),
                "idle_in_transaction_session_timeout": str(int(idle_in_transaction_timeout_s * 1000)),
                "lock_timeout": str(int(lock_timeout_s * 1000)),
                "application_name": application_name,
            },
            max_lifetime_s=max_lifetime_s,
            lifetime_jitter=lifetime_jitter,
            pre_ping=pre_ping,
            pgbouncer=pgbouncer,
            pre_ping_idle_s=pre_ping_idle_s,
            command_timeout_s=None if watchdog.supported() else deadline_s,
        )
        self._clock = clock
        self._acquire_timeout_s = acquire_timeout_s
        self._max_waiting = max_waiting
        self._monitor_interval_s = monitor_interval_s
        self._reclaim_after_s = reclaim_after_s
        # By default every connection of the core pool may stay (as HikariCP with minimumIdle
        # equal to the pool size); a lower ``min_idle`` lets the idle timeout shrink it.
        self._idle = IdlePolicy(keepalive_s, idle_timeout_s, pool_size if min_idle is None else min_idle)
        self._concurrency_limit = concurrency_limit
        self._stats_log_interval_s = stats_log_interval_s
        self._registry = CheckoutRegistry(clock=clock, leak_detection_threshold_s=leak_detection_threshold_s)
        self._closing = False
        self._drained = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._monitor: asyncio.Task[None] | None = None
        self._watchdog_task: asyncio.Task[None] | None = None
        extras = target_connect_args or {}
        dsns = {WRITER: writer_url} | {f"replica-{i}": url for i, url in enumerate(replica_urls, start=1)}
        self._targets = {
            name: self._make_target(name, dsn, extras.get(name, {})) for name, dsn in dsns.items()
        }
        try:
            weights = tuple(replica_weights) or (1.0,) * len(replica_urls)
            self._replicas = ReplicaSet(self._targets, weights=weights, eject_s=replica_eject_s, clock=clock)
        except ValueError as error:
            raise HexError(str(error)) from None
        self._watchdog = None
        if self._options.command_timeout_s is None:
            self._watchdog = watchdog.DeadlineWatchdog(
                deadline_s=deadline_s,
                connections=self._open_connections,
                clock=clock,
                on_close=self._unresponsive,
            )
        self._prober = None
        if replica_urls and probe_interval_s is not None:

            def connect(name: str) -> Callable[[], Any]:
                role = "writer" if name == WRITER else "replica"
                extra = extras.get(name, {})
                return probe_connector(dsns[name], self._options, extra, role=role, timeout_s=probe_timeout_s)

            self._prober = ReplicaProber(
                writer=connect(WRITER),
                replicas={name: (connect(name), h) for name, h in self._replicas.health.items()},
                interval_s=probe_interval_s,
                timeout_s=probe_timeout_s,
                clock=clock,
            )

    def _make_target(self, name: str, dsn: str, extra: Mapping[str, Any]) -> Target:
        role = "writer" if name == WRITER else "replica"
        capacity = self._options.pool_size + self._options.max_overflow
        connects = BackgroundFinisher()
        engine = make_engine(dsn, self._options, extra, role=role, connects=connects)
        pool: Any = engine.pool

        def describe() -> str:
            # Late-bound on purpose: ``gate`` exists by the time a message is built.
            return (
                f"size={pool.checkedin() + pool.checkedout()} in_use={gate.in_use} idle={pool.checkedin()} "
                + (f"waiting={gate.waiting} capacity={gate.capacity}")
            )

        gate = AdmissionGate(
            name=name,
            capacity=capacity,
            max_waiting=self._max_waiting,
            describe=describe,
            # One limit per target: what the writer's latency teaches says nothing of a replica.
            limit=None if self._concurrency_limit is None else self._concurrency_limit(),
            clock=self._clock,
        )
        target = Target(name=name, role=role, engine=engine, gate=gate, connects=connects)
        instrument(target, self._options, self._clock)
        return target

    def _open_connections(self) -> list[tuple[str, Any]]:
        return [(t.name, driver) for t in self._targets.values() for driver in t.drivers.values()]

    def _unresponsive(self, target: str) -> None:
        self._targets[target].unresponsive += 1

    @property
    def replica_names(self) -> tuple[str, ...]:
        return tuple(name for name, t in self._targets.items() if t.role == "replica")

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
            self._monitor = loop.create_task(
                self._watch(), name="alchemy-hex-provider-monitor", context=contextvars.Context()
            )
            if self._watchdog is not None:
                self._watchdog_task = loop.create_task(
                    self._watchdog.run(), name="alchemy-hex-provider-watchdog", context=contextvars.Context()
                )
            if self._prober is not None:
                self._prober.start()
        elif loop is not self._loop:
            raise EventLoopMismatchError(
                f"connection provider belongs to event loop {id(self._loop):#x} but was used from "
                f"event loop {id(loop):#x}; create one provider per event loop"
            )

    def connection(
        self, intent: Intent, *, target: str = WRITER, priority: Priority = Priority.NORMAL
    ) -> AbstractAsyncContextManager[AsyncConnection]:
        return _Lease(self, self._target(target), priority)

    async def _checkout(self, state: Target) -> AsyncConnection:
        try:
            return await state.engine.connect()
        except (sa_exc.DBAPIError, sa_exc.TimeoutError, OSError, TimeoutError) as exc:
            state.connect_failures += 1
            if state.role == "replica":
                self._replicas.connect_failed(state.name)
            error = translate(exc, target=state.name)
            log.warning("connection.failed", target=state.name, error=str(error))
            if isinstance(error, DatabaseUnavailableError):
                raise error from exc
            raise DatabaseUnavailableError(str(error)) from exc

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

    async def _watch(self) -> None:
        """Report suspected leaks every interval and the pool statistics every log interval."""
        last_log = self._clock()
        while True:
            await asyncio.sleep(self._monitor_interval_s)
            self._registry.report_leaks()
            if self._reclaim_after_s is not None:
                await self._reclaim(self._reclaim_after_s)
            for target in list(self._targets.values()):
                if not self._closing:
                    try:
                        await tend_idle(self.connection, target, self._idle, self._clock())
                    except Exception as error:  # a dead target is the probes' business, not the monitor's
                        log.info("connection.tend_failed", target=target.name, error=type(error).__name__)
            if (
                self._stats_log_interval_s is not None
                and self._clock() - last_log >= self._stats_log_interval_s
            ):
                last_log = self._clock()
                for t in self.stats().targets:
                    log.info("pool.stats", **{k: getattr(t, k) for k in TargetStats.__slots__})

    async def _reclaim(self, limit_s: float) -> None:
        """Invalidate connections held past the hard limit; their holders fail on next use."""
        for checkout in self._registry.overdue(limit_s):
            checkout.reclaimed = True
            log.error(
                "connection.reclaimed", target=checkout.target, task=checkout.task_name, limit_s=limit_s
            )
            # Invalidate (terminates the server session, failing any query in flight), then close:
            # an invalidated but open Connection would silently reconnect on its next use.
            with contextlib.suppress(Exception):
                await checkout.connection.invalidate()
                await checkout.connection.close()

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
        await _cancel(self._monitor)
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


class _Lease:
    """One checkout as a plain async context manager: the hot path of every unit of work.

    Written out by hand rather than with ``@asynccontextmanager`` because a generator-based
    manager costs several microseconds per use, which the benchmark against plain SQLAlchemy sees.
    """

    __slots__ = ("_checkout", "_connection", "_in_flight", "_priority", "_provider", "_state")

    def __init__(self, provider: SqlAlchemyConnectionProvider, state: Target, priority: Priority) -> None:
        self._provider = provider
        self._state = state
        self._priority = priority

    async def __aenter__(self) -> AsyncConnection:
        provider, state = self._provider, self._state
        provider._check_loop()
        if provider._closing:
            raise ShuttingDownError("connection provider is shutting down; no new work is admitted")
        await state.gate.acquire(self._priority, timeout_s=provider._acquire_timeout_s)
        self._in_flight = state.gate.in_use
        try:
            self._connection = await provider._checkout(state)
        except BaseException:
            # A connect this request was cancelled in goes on to its end (see targets.make_engine)
            # and holds a place on the server until then: so does the request's slot.
            state.connects.call_when_done(state.gate.release)
            raise
        self._checkout = provider._registry.open(state.name)
        self._checkout.connection = self._connection
        state.in_flight += 1
        return self._connection

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        provider, state = self._provider, self._state
        state.in_flight -= 1
        held_s = provider._registry.close(self._checkout)
        state.usage_total_s += held_s
        try:
            # Awaited directly, without a task of its own (the hot path). If a cancellation lands
            # during the ROLLBACK that returning an open transaction needs, SQLAlchemy invalidates
            # the connection (the server session ends) and still returns the slot to the pool, so
            # nothing leaks and no orphaned work keeps using the connection afterwards.
            await self._connection.close()
        except (sa_exc.DBAPIError, OSError) as error:
            # The connection failed while the open transaction was rolled back on return; it is
            # invalidated and its slot returned. The block's own error, if any, says more.
            if exc is None:
                raise translate(error, target=state.name) from error
            log.info("connection.release_failed", target=state.name, error=type(error).__name__)
        finally:
            gate = state.gate
            if gate.adaptive:
                dropped = isinstance(exc, InfrastructureError | TimeoutError | sa_exc.DBAPIError)
                gate.release((held_s, self._in_flight, dropped))
            else:
                gate.release()
            if provider._closing and not len(provider._registry):
                provider._drained.set()
        if self._checkout.reclaimed and isinstance(exc, Exception):
            limit = provider._reclaim_after_s
            raise ConnectionReclaimedError(
                f"connection to {state.name!r} was held past the {limit}s limit and reclaimed"
            ) from exc
        if isinstance(exc, sa_exc.DBAPIError | OSError):
            # Raw users of the connection get contract errors too, never driver exceptions.
            raise translate(exc, target=state.name) from exc
