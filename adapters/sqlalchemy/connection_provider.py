"""``SqlAlchemyConnectionProvider``: one async engine per target, tracked checkouts, clean errors."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import structlog
from sqlalchemy import event, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from adapters.sqlalchemy.errors import translate
from ports.connection_provider import (
    WRITER,
    ConnectionProvider,
    Intent,
    Priority,
    ProviderStats,
    ReplicaView,
    TargetStats,
)
from ports.errors import DatabaseUnavailableError, HexError, PoolTimeoutError, ShuttingDownError

log = structlog.get_logger(__name__)


def asyncpg_url(dsn: str) -> URL:
    """``dsn`` as a SQLAlchemy URL for the asyncpg driver, whatever postgres scheme it used."""
    return make_url(dsn).set(drivername="postgresql+asyncpg")


@dataclass(slots=True)
class _Checkout:
    target: str
    started_at: float
    task_name: str | None


@dataclass(slots=True)
class _Target:
    name: str
    role: str
    engine: AsyncEngine
    in_flight: int = 0
    waiting: int = 0
    checkouts: int = 0
    timeouts: int = 0
    connect_failures: int = 0
    unhealthy_until: float = 0.0
    in_recovery: bool | None = None
    reads: int = 0


@dataclass(slots=True)
class _Counters:
    reads_in_recovery: int = 0
    writer_fallbacks: int = 0
    checkouts: dict[int, _Checkout] = field(default_factory=dict)


class SqlAlchemyConnectionProvider(ConnectionProvider[AsyncConnection]):
    """Connections to one writer and any number of replicas over SQLAlchemy's asyncpg dialect.

    Every connection gets its server-side timeouts (``statement_timeout``,
    ``idle_in_transaction_session_timeout``, ``lock_timeout``) at connect time, is pinged before
    use, and is recycled after ``max_lifetime_s``. Every checkout is registered until it is
    released, so the registry shrinks back to empty when the work is done. Replicas that fail to
    connect are ejected for ``replica_eject_s`` seconds.
    """

    def __init__(
        self,
        *,
        writer_url: str,
        replica_urls: Sequence[str] = (),
        pool_size: int = 10,
        max_overflow: int = 5,
        acquire_timeout_s: float = 5.0,
        connect_timeout_s: float = 5.0,
        statement_timeout_s: float = 30.0,
        idle_in_transaction_timeout_s: float = 60.0,
        lock_timeout_s: float = 10.0,
        max_lifetime_s: float = 1800.0,
        pre_ping: bool = True,
        replica_eject_s: float = 5.0,
        application_name: str = "alchemy-hex",
        target_connect_args: Mapping[str, Mapping[str, Any]] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        server_settings = {
            "statement_timeout": str(int(statement_timeout_s * 1000)),
            "idle_in_transaction_session_timeout": str(int(idle_in_transaction_timeout_s * 1000)),
            "lock_timeout": str(int(lock_timeout_s * 1000)),
            "application_name": application_name,
        }
        engine_options: dict[str, Any] = {
            "pool_size": pool_size,
            "max_overflow": max_overflow,
            "pool_timeout": acquire_timeout_s,
            "pool_recycle": max_lifetime_s,
            "pool_pre_ping": pre_ping,
            "connect_args": {"timeout": connect_timeout_s, "server_settings": server_settings},
        }
        self._clock = clock
        self._replica_eject_s = replica_eject_s
        self._closing = False
        self._drained = asyncio.Event()
        self._counters = _Counters()
        self._targets: dict[str, _Target] = {
            WRITER: self._make_target(WRITER, "writer", writer_url, engine_options)
        }
        for index, url in enumerate(replica_urls, start=1):
            name = f"replica-{index}"
            self._targets[name] = self._make_target(name, "replica", url, engine_options)

    def _make_target(self, name: str, role: str, dsn: str, options: dict[str, Any]) -> _Target:
        engine = create_async_engine(asyncpg_url(dsn), **options)
        target = _Target(name=name, role=role, engine=engine)

        def on_connect(dbapi_connection: Any, record: Any) -> None:
            # Which kind of server answered is a fact worth a round trip per new connection:
            # it proves where reads went and, later, which host of a multi-host writer is primary.
            cursor = dbapi_connection.cursor()
            try:
                cursor.execute("SELECT pg_is_in_recovery()")
                target.in_recovery = record.info["in_recovery"] = bool(cursor.fetchone()[0])
            finally:
                cursor.close()

        event.listen(engine.sync_engine, "connect", on_connect)
        return target

    @property
    def replica_names(self) -> tuple[str, ...]:
        return tuple(name for name, t in self._targets.items() if t.role == "replica")

    def engine(self, target: str = WRITER) -> AsyncEngine:
        """The engine behind ``target``; for adapters (Alembic, benchmarks), not for use cases."""
        return self._target(target).engine

    def _target(self, name: str) -> _Target:
        try:
            return self._targets[name]
        except KeyError:
            raise HexError(f"unknown target {name!r}; configured: {', '.join(self._targets)}") from None

    @asynccontextmanager
    async def connection(
        self, intent: Intent, *, target: str = WRITER, priority: Priority = Priority.NORMAL
    ) -> AsyncIterator[AsyncConnection]:
        if self._closing:
            raise ShuttingDownError("connection provider is shutting down; no new work is admitted")
        state = self._target(target)
        conn = await self._checkout(state)
        token = id(conn)
        task = asyncio.current_task()
        self._counters.checkouts[token] = _Checkout(target, self._clock(), task.get_name() if task else None)
        state.in_flight += 1
        try:
            yield conn
        finally:
            state.in_flight -= 1
            del self._counters.checkouts[token]
            await self._release(conn, state)

    async def _checkout(self, state: _Target) -> AsyncConnection:
        state.waiting += 1
        try:
            conn = await state.engine.connect()
        except sa_exc.TimeoutError:
            state.timeouts += 1
            raise PoolTimeoutError(
                f"no connection to {state.name!r} became free in time ({self._stats_of(state).describe()})"
            ) from None
        except (TimeoutError, sa_exc.DBAPIError, OSError) as exc:
            state.connect_failures += 1
            if state.role == "replica":
                state.unhealthy_until = self._clock() + self._replica_eject_s
            error = translate(exc, target=state.name)
            log.warning("connection.failed", target=state.name, error=str(error))
            if isinstance(error, DatabaseUnavailableError):
                raise error from exc
            raise DatabaseUnavailableError(str(error)) from exc
        finally:
            state.waiting -= 1
        state.checkouts += 1
        return conn

    async def _release(self, conn: AsyncConnection, state: _Target) -> None:
        # Returning the connection must finish even if our task is being cancelled, or the
        # pool slot (and possibly a server session) would leak; shield it and wait for it.
        release = asyncio.ensure_future(conn.close())
        try:
            await asyncio.shield(release)
        except asyncio.CancelledError:
            await asyncio.wait([release])
            raise
        finally:
            if not self._counters.checkouts and self._closing:
                self._drained.set()

    def replica_views(self) -> tuple[ReplicaView, ...]:
        now = self._clock()
        return tuple(
            ReplicaView(name=t.name, healthy=now >= t.unhealthy_until, in_flight=t.in_flight)
            for t in self._targets.values()
            if t.role == "replica"
        )

    def record_read(self, target: str, *, in_recovery: bool, fallback: bool) -> None:
        self._target(target).reads += 1
        self._counters.reads_in_recovery += in_recovery
        self._counters.writer_fallbacks += fallback

    def served_by_replica(self, target: str) -> bool:
        """Whether ``target``'s server reported ``pg_is_in_recovery()`` on its last new connection."""
        return bool(self._target(target).in_recovery)

    async def wait_for_replay(self, timeout_s: float = 5.0) -> bool:
        replicas = [view.name for view in self.replica_views() if view.healthy]
        if not replicas:
            return True
        async with self.connection(Intent.WRITE) as writer:
            position = await writer.scalar(text("SELECT pg_current_wal_lsn()::text"))
            await writer.rollback()
        deadline = self._clock() + timeout_s
        for name in replicas:
            if not await self._replayed(name, position, deadline):
                return False
        return True

    async def _replayed(self, target: str, position: str, deadline: float) -> bool:
        async with self.connection(Intent.READ, target=target) as replica:
            while True:
                caught_up = await replica.scalar(
                    text("SELECT pg_last_wal_replay_lsn() >= CAST(CAST(:position AS text) AS pg_lsn)"),
                    {"position": position},
                )
                await replica.rollback()
                if caught_up:
                    return True
                if self._clock() >= deadline:
                    return False
                await asyncio.sleep(0.01)

    def _stats_of(self, t: _Target) -> TargetStats:
        pool: Any = t.engine.pool
        return TargetStats(
            name=t.name,
            role=t.role,
            size=pool.size(),
            in_use=pool.checkedout(),
            idle=pool.checkedin(),
            overflow=max(pool.overflow(), 0),
            waiting=t.waiting,
            checkouts=t.checkouts,
            timeouts=t.timeouts,
            connect_failures=t.connect_failures,
            in_recovery=t.in_recovery,
        )

    def stats(self) -> ProviderStats:
        return ProviderStats(
            targets=tuple(self._stats_of(t) for t in self._targets.values()),
            reads_by_target={t.name: t.reads for t in self._targets.values()},
            reads_in_recovery=self._counters.reads_in_recovery,
            writer_fallbacks=self._counters.writer_fallbacks,
        )

    @property
    def checked_out(self) -> int:
        """How many checkouts are registered right now."""
        return len(self._counters.checkouts)

    async def aclose(self, timeout_s: float = 30.0) -> None:
        self._closing = True
        if self._counters.checkouts:
            try:
                await asyncio.wait_for(self._drained.wait(), timeout_s)
            except TimeoutError:
                log.warning("provider.drain_timed_out", still_checked_out=len(self._counters.checkouts))
        for target in self._targets.values():
            await target.engine.dispose()
