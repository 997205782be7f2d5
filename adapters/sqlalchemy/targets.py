"""One target (the writer or a replica): its engine, its admission gate and its counters."""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from adapters.asyncio.admission_gate import AdmissionGate


def asyncpg_url(dsn: str) -> URL:
    """``dsn`` as a SQLAlchemy URL for the asyncpg driver, whatever postgres scheme it used."""
    return make_url(dsn).set(drivername="postgresql+asyncpg")


class LifetimeExpired(sa_exc.DisconnectionError):
    """Raised at checkout to make the pool replace a connection past its (jittered) lifetime."""


@dataclass(slots=True)
class Target:
    """A configured server and everything the provider keeps about it."""

    name: str
    role: str
    engine: AsyncEngine
    gate: AdmissionGate
    in_flight: int = 0
    connect_failures: int = 0
    opened: int = 0
    closed: int = 0
    lost: int = 0
    usage_total_s: float = 0.0
    unhealthy_until: float = 0.0
    in_recovery: bool | None = None
    reads: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class EngineOptions:
    """How every engine is built; see ``SqlAlchemyConnectionProvider`` for the meaning of each."""

    pool_size: int
    max_overflow: int
    connect_timeout_s: float
    server_settings: Mapping[str, str]
    max_lifetime_s: float
    lifetime_jitter: float
    pre_ping: bool
    pgbouncer: bool
    pre_ping_idle_s: float = 1.0


def make_engine(dsn: str, options: EngineOptions, extra_connect_args: Mapping[str, Any]) -> AsyncEngine:
    connect_args: dict[str, Any] = {
        "timeout": options.connect_timeout_s,
        "server_settings": dict(options.server_settings),
        **extra_connect_args,
    }
    url = asyncpg_url(dsn)
    if options.pgbouncer:
        # PgBouncer in transaction mode hands each transaction to any server connection, so named
        # prepared statements from one client collide or vanish; asyncpg's cache must be off and
        # SQLAlchemy's adapted cache too (the current SQLAlchemy docs' recommendation).
        connect_args["statement_cache_size"] = 0
        url = url.update_query_dict({"prepared_statement_cache_size": "0"})
        # PgBouncer refuses unknown startup parameters, and a session-level SET would leak to other
        # clients in transaction mode: behind it, set the timeouts on the role (ALTER ROLE ... SET).
        connect_args["server_settings"] = {
            k: v for k, v in options.server_settings.items() if k == "application_name"
        }
    return create_async_engine(
        url,
        pool_size=options.pool_size,
        max_overflow=options.max_overflow,
        # The admission gate is the queue; the pool itself should never make anyone wait long.
        pool_timeout=max(options.connect_timeout_s, 1.0),
        pool_recycle=-1,
        # Pinging on every checkout costs a round trip per unit of work; ``instrument`` pings only
        # connections idle for a while, as HikariCP does with its alive-bypass window.
        pool_pre_ping=False,
        connect_args=connect_args,
    )


def instrument(target: Target, options: EngineOptions, clock: Callable[[], float]) -> None:
    """Count opened, closed and lost connections, learn the server's role, recycle with jitter."""
    pool_events: Any = target.engine.sync_engine.pool

    def on_connect(dbapi_connection: Any, record: Any) -> None:
        target.opened += 1
        # Spread recycling so a pool opened at once does not reconnect all at once either.
        spread = 1.0 - random.random() * options.lifetime_jitter
        record.info["expires_at"] = clock() + options.max_lifetime_s * spread
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("SELECT pg_is_in_recovery()")
            target.in_recovery = record.info["in_recovery"] = bool(cursor.fetchone()[0])
        finally:
            cursor.close()

    def on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        now = clock()
        if now > record.info.get("expires_at", float("inf")):
            # The documented way to make the pool replace a connection at checkout.
            raise LifetimeExpired("connection reached its max lifetime")
        if options.pre_ping and now - record.info.get("returned_at", now) > options.pre_ping_idle_s:
            try:
                dbapi_connection.ping()
            except Exception as exc:
                raise sa_exc.DisconnectionError("connection failed its pre-ping") from exc

    def on_checkin(_dbapi_connection: Any, record: Any) -> None:
        record.info["returned_at"] = clock()

    def on_close(_dbapi_connection: Any, _record: Any) -> None:
        target.closed += 1

    def on_invalidate(_dbapi_connection: Any, _record: Any, exception: BaseException | None) -> None:
        if not isinstance(exception, LifetimeExpired):
            target.lost += 1

    event.listen(pool_events, "connect", on_connect)
    event.listen(pool_events, "checkout", on_checkout)
    event.listen(pool_events, "checkin", on_checkin)
    event.listen(pool_events, "close", on_close)
    event.listen(pool_events, "invalidate", on_invalidate)
