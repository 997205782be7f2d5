"""One target (the writer or a replica): its engine, its admission gate and its counters."""

from __future__ import annotations

import functools
import importlib
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import unquote, urlsplit

from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects.postgresql.asyncpg import PGDialect_asyncpg
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.util import await_

from adapters.asyncio.admission_gate import AdmissionGate
from adapters.asyncio.shielding import BackgroundFinisher
from adapters.sqlalchemy import operation_timing, statement_guard
from adapters.sqlalchemy.grower import GrowablePool, PoolGrower
from adapters.sqlalchemy.pool_observer import NULL_POOL_OBSERVER, PoolObserver
from ports.connection_provider import TargetStats

# Imported by name, as in the watchdog: asyncpg ships no type information.
_asyncpg: Any = importlib.import_module("asyncpg")
_DEFAULT_PORT: Final = "5432"
_NEVER: Final = float("inf")
# A writer must accept read-write sessions: with several hosts, asyncpg tries each in turn and
# keeps the first that does, so after a failover the promoted server is found on the next connect.
# PostgreSQL 14+ reports ``in_hot_standby`` at login, so the check costs no round trip there.
_WRITER_SESSION: Final = "read-write"


def asyncpg_url(dsn: str) -> URL:
    """``dsn`` as a SQLAlchemy URL for the asyncpg driver, whatever postgres scheme it used.

    libpq's multi-host form ``postgresql://user@h1:5432,h2:5433/db``, which SQLAlchemy's URL parser
    rejects, becomes the asyncpg dialect's ``?host=h1:5432&host=h2:5433`` (a host without a port
    gets 5432, as in libpq; IPv6 literals are not supported in this form). A ``password`` in the
    query string becomes the URL's password (winning over one in the user-info part, as it would
    as a connect argument), so that the URL and the engine show it as ``***``, never in clear.
    """
    parts = urlsplit(dsn)
    # Split at the last "@", as the settings do: SQLAlchemy's parser would end the user-info at the
    # first, making the rest of a password with an "@" the host name, there for all to see.
    userinfo, at, hosts = parts.netloc.rpartition("@")
    several = "," in hosts
    rest = f"{parts.path}?{parts.query}" if parts.query else parts.path
    url = make_url(f"{parts.scheme}://{'' if several else hosts}{rest}").set(drivername="postgresql+asyncpg")
    if several:
        listed = [host if ":" in host else f"{host}:{_DEFAULT_PORT}" for host in hosts.split(",")]
        url = url.update_query_dict({"host": listed})
    if at:
        user, colon, password = userinfo.partition(":")
        url = url.set(username=unquote(user), password=unquote(password) if colon else None)
    given = url.query.get("password")
    if given is not None:
        last = given if isinstance(given, str) else given[-1]  # repeated: the last wins, as in libpq
        url = url.difference_update_query(["password"]).set(password=last)
    return url


class LifetimeExpired(sa_exc.DisconnectionError):
    """Raised at checkout to make the pool replace a connection past its (jittered) lifetime."""


class IdleExpired(LifetimeExpired):
    """Given when a connection idle past the idle timeout is closed: retired, not lost."""


class SessionChanged(LifetimeExpired):
    """Given when a unit of work changed its connection's session: closed rather than reused."""


@dataclass(slots=True)
class Target:
    """A configured server and everything the provider keeps about it."""

    name: str
    role: str
    engine: AsyncEngine
    gate: AdmissionGate
    #: Connects whose caller was cancelled, finishing by themselves (see :func:`make_engine`).
    connects: BackgroundFinisher
    #: Opens the pool's connections in the background and sets the gate's ceiling (see :mod:`.grower`).
    grower: PoolGrower
    in_flight: int = 0
    connect_failures: int = 0
    opened: int = 0
    closed: int = 0
    lost: int = 0
    usage_total_s: float = 0.0
    in_recovery: bool | None = None
    reads: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    #: When each connection now idle in the pool was returned, by connection record.
    idle_since: dict[int, float] = field(default_factory=dict)
    #: The asyncpg connection of every open connection, checked out or idle, by connection record.
    drivers: dict[int, Any] = field(default_factory=dict)
    #: Connections closed by the client deadline because the server stopped answering.
    unresponsive: int = 0
    #: Told every wait, use, connect and statement duration (see :mod:`.pool_observer`).
    observer: PoolObserver = NULL_POOL_OBSERVER
    #: The configured ``pool_size``: connections beyond it are the stats' ``overflow``.
    core_size: int = 0


def target_stats(t: Target) -> TargetStats:
    """A snapshot of ``t``'s pool and admission counters."""
    pool: Any = t.engine.pool
    counters = t.gate.counters
    # The queue pool counts a connect under way as checked out: the grower's are not (yet).
    checked_out = max(pool.checkedout() - t.grower.connecting, 0)
    size = pool.checkedin() + checked_out
    return TargetStats(
        name=t.name,
        role=t.role,
        size=size,
        in_use=checked_out,
        idle=pool.checkedin(),
        # The engine's queue pool is sized at the maximum (the grower decides what is open), so its
        # own overflow is always 0: what SQLAlchemy users read as overflow is what exceeds pool_size.
        overflow=max(size - t.core_size, 0),
        waiting=t.gate.waiting,
        connecting=t.grower.connecting,
        connect_failures=t.connect_failures,
        in_recovery=t.in_recovery,
        opened=t.opened,
        closed=t.closed,
        lost=t.lost,
        served=counters.served,
        queued=counters.queued,
        timed_out=counters.timed_out,
        shed=counters.shed,
        rejected=counters.rejected,
        wait_total_s=counters.wait_total_s,
        wait_max_s=counters.wait_max_s,
        usage_total_s=t.usage_total_s,
        unresponsive=t.unresponsive,
    )


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
    #: asyncpg's per-request client timeout; ``None`` when the provider's watchdog keeps the deadline.
    command_timeout_s: float | None = None


def _url_and_connect_args(
    dsn: str, options: EngineOptions, extra_connect_args: Mapping[str, Any], role: str
) -> tuple[URL, dict[str, Any]]:
    connect_args: dict[str, Any] = {
        "timeout": options.connect_timeout_s,
        "server_settings": dict(options.server_settings),
        **extra_connect_args,
    }
    if options.command_timeout_s is not None:
        connect_args.setdefault("command_timeout", options.command_timeout_s)
    url = asyncpg_url(dsn)
    # Behind PgBouncer the bouncer picks the server (and answers asyncpg's check of the session
    # with a protocol violation), so failover is the bouncer's business there.
    if role == "writer" and "target_session_attrs" not in url.query and not options.pgbouncer:
        connect_args.setdefault("target_session_attrs", _WRITER_SESSION)
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
    return url, connect_args


def make_engine(
    dsn: str,
    options: EngineOptions,
    extra_connect_args: Mapping[str, Any],
    *,
    role: str = "replica",
    connects: BackgroundFinisher,
    observer: PoolObserver = NULL_POOL_OBSERVER,
) -> AsyncEngine:
    """The target's engine; every new connection is opened through ``connects`` (see below)."""
    url, connect_args = _url_and_connect_args(dsn, options, extra_connect_args, role)
    # The dialect calls ``async_creator_fn`` (SQLAlchemy's own hook behind ``async_creator``) with
    # the arguments it would give ``asyncpg.connect``, URL and connect_args included.
    connect_args["async_creator_fn"] = functools.partial(_connect_uninterrupted, connects, observer)
    return create_async_engine(
        url,
        # Every connection the grower opens stays until the idle timeout or its lifetime: sized
        # at the maximum, the queue pool never closes one on return as an "overflow" connection.
        poolclass=GrowablePool,
        pool_size=options.pool_size + options.max_overflow,
        max_overflow=0,
        # The admission gate is the queue; the pool itself should never make anyone wait long.
        pool_timeout=max(options.connect_timeout_s, 1.0),
        pool_recycle=-1,
        # Pinging on every checkout costs a round trip per unit of work; ``instrument`` pings only
        # connections idle for a while, as HikariCP does with its alive-bypass window.
        pool_pre_ping=False,
        connect_args=connect_args,
    )


async def _connect_uninterrupted(
    connects: BackgroundFinisher, observer: PoolObserver, *args: Any, **kwargs: Any
) -> Any:
    """``asyncpg.connect``, left to finish (and the connection closed) if the caller is cancelled.

    asyncpg (0.32) opens its socket with a protocol whose ``on_data`` future answers the SSLRequest
    (sslmode ``prefer`` and above, the default). Cancelled while asyncio is still setting up that
    socket, the connect closes it, the protocol fails the future with "unexpected connection_lost()
    call", and nobody ever awaits it: "Future exception was never retrieved", dozens in a
    cancellation storm. Left alone, the connect ends by itself within its ``timeout`` (the
    connect timeout), and :class:`BackgroundFinisher` retrieves whatever it ends with.
    """
    started = time.perf_counter()
    connection = await connects.run(_asyncpg.connect(*args, **kwargs), discard=_terminate)
    observer.created(time.perf_counter() - started)
    return connection


def _terminate(connection: Any) -> None:
    # Fresh and idle, so an abrupt close costs the server nothing (it ends the session quietly),
    # and needs no task of its own as a graceful one would.
    connection.terminate()


def probe_connector(
    dsn: str,
    options: EngineOptions,
    extra_connect_args: Mapping[str, Any],
    *,
    role: str,
    timeout_s: float,
) -> Callable[[], Awaitable[Any]]:
    """Opens a bare asyncpg connection to the target, outside its pool, for the health probes.

    Same hosts, TLS and credentials as the pool's, its own ``application_name`` (``...-probe``, so
    that counting the service's sessions is unaffected) and ``timeout_s`` for connecting and for
    every statement.
    """
    url, connect_args = _url_and_connect_args(dsn, options, extra_connect_args, role)
    # The dialect turns the URL (hosts, ports, query) into asyncpg's arguments, as an engine would,
    # and hands over asyncpg itself (imported through it, as asyncpg ships no type information).
    dialect: Any = PGDialect_asyncpg
    _, params = dialect().create_connect_args(url)
    connect = dialect.import_dbapi().asyncpg.connect
    params.pop("prepared_statement_cache_size", None)
    settings = dict(connect_args["server_settings"])
    settings["application_name"] = settings.get("application_name", "alchemy-hex")[:57] + "-probe"
    if not options.pgbouncer:  # PgBouncer refuses it as a startup parameter, as above
        settings["statement_timeout"] = str(max(int(timeout_s * 1000), 1))
    arguments = {**params, **connect_args, "timeout": timeout_s, "server_settings": settings}
    return functools.partial(connect, **arguments)


def _in_recovery(driver: Any) -> bool:
    """Whether the server behind a new asyncpg connection is a standby, leaving no transaction open.

    PostgreSQL 14+ reports ``in_hot_standby`` at login, so this costs no round trip there; older
    servers and PgBouncer (which does not pass the parameter on) are asked outside any transaction.
    Not through SQLAlchemy's cursor: its asyncpg adapter begins a transaction that outlives this
    hook, and the connection's first unit of work would run inside it, its ``BEGIN READ ONLY``
    (or isolation level) never sent.
    """
    reported = getattr(driver.get_settings(), "in_hot_standby", None)
    if reported is not None:
        return bool(reported == "on")
    return bool(await_(driver.fetchval("SELECT pg_is_in_recovery()")))


def instrument(target: Target, options: EngineOptions, clock: Callable[[], float]) -> None:
    """Count opened, closed and lost connections, learn the server's role, recycle with jitter."""
    pool_events: Any = target.engine.sync_engine.pool

    def on_connect(dbapi_connection: Any, record: Any) -> None:
        target.opened += 1
        target.drivers[id(record)] = dbapi_connection.driver_connection
        # Spread recycling so a pool opened at once does not reconnect all at once either.
        spread = 1.0 - random.random() * options.lifetime_jitter
        record.info["expires_at"] = clock() + options.max_lifetime_s * spread
        target.in_recovery = record.info["in_recovery"] = _in_recovery(dbapi_connection.driver_connection)

    # Checkout and checkin run for every unit of work: a few dictionary operations each.
    def on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        now = clock()
        returned_at = target.idle_since.pop(id(record), None)  # None: fresh from connect
        if now > record.info.get("expires_at", _NEVER):
            # The documented way to make the pool replace a connection at checkout.
            raise LifetimeExpired("connection reached its max lifetime")
        if dbapi_connection.driver_connection.is_closed():
            # The server closed it while it sat in the pool (shutdown, failover, terminated):
            # asyncpg already knows, at no cost, so a replacement is made before anyone uses it.
            raise sa_exc.DisconnectionError("connection was closed by the server")
        if options.pre_ping and returned_at is not None and now - returned_at > options.pre_ping_idle_s:
            try:
                dbapi_connection.ping()
            except Exception as exc:
                raise sa_exc.DisconnectionError("connection failed its pre-ping") from exc

    def on_checkin(dbapi_connection: Any, record: Any) -> None:
        if dbapi_connection is not None:  # None: invalidated, an empty slot rather than an idle connection
            target.idle_since[id(record)] = clock()

    def on_close(_dbapi_connection: Any, record: Any) -> None:
        target.closed += 1
        target.idle_since.pop(id(record), None)
        target.drivers.pop(id(record), None)

    def on_invalidate(_dbapi_connection: Any, record: Any, exception: BaseException | None) -> None:
        target.idle_since.pop(id(record), None)
        if not isinstance(exception, LifetimeExpired):
            target.lost += 1

    event.listen(pool_events, "connect", on_connect)
    event.listen(pool_events, "checkout", on_checkout)
    event.listen(pool_events, "checkin", on_checkin)
    event.listen(pool_events, "close", on_close)
    event.listen(pool_events, "invalidate", on_invalidate)
    statement_guard.install(target.engine)
    if target.observer is not NULL_POOL_OBSERVER:  # unobserved, statements are not even timed
        operation_timing.install(target.engine, target.observer)
