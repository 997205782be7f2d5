"""``SqlAlchemyUnitOfWork``: one transaction on the writer or a replica, behind every policy port.

The unit of work is generic over the repositories it hands out: the composition root gives it a
factory that builds them on a :class:`Transaction` (the unit's connection, its target and, on
demand, an ORM ``AsyncSession`` on that same connection), so Core and ORM repositories share the
transaction, the policies, the routing and the ``READ ONLY`` enforcement.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Any, Final, Generic, Self, TypeVar

import structlog
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from adapters.asyncio.shielding import run_to_completion
from adapters.sqlalchemy import watchdog
from adapters.sqlalchemy.connection_provider import SqlAlchemyConnectionProvider
from adapters.sqlalchemy.errors import translate
from adapters.sqlalchemy.statement_guard import UNIT_OPTION, UnitSession
from adapters.sqlalchemy.targets import SessionChanged
from adapters.sqlalchemy.wal import insert_position, wait_for_replay
from ports.circuit_breaker import BreakerState, CircuitBreaker
from ports.connection_provider import WRITER, CausalToken, Intent, Priority, ReadRoute, ReplicaView
from ports.deadline import DeadlineStage, expires_at, require
from ports.errors import (
    CircuitOpenError,
    CommitOutcomeUnknownError,
    DatabaseUnavailableError,
    DeadlineExceededError,
    HexError,
    InfrastructureError,
    NoHealthyReplicaError,
    SaturationError,
    TransactionAbortedError,
)
from ports.rate_limiter import RateLimiter
from ports.replica_strategy import ReplicaStrategy
from ports.unit_of_work import DEFAULT_OPTIONS, UnitOfWork, UnitOptions

log = structlog.get_logger(__name__)
R = TypeVar("R")

#: How long after the caller's deadline the unit cuts a request the server has not answered. The
#: server was told to cancel it at the deadline (``statement_timeout``), so an answer, even the
#: cancellation's, should be back by then; one that is not means the server or the way to it is gone.
DEADLINE_GRACE_S: Final = 0.1


class Transaction:
    """What repositories are built on: one unit's connection and target, and an ORM session on demand.

    The session is created at first use, bound to the unit's connection inside its transaction
    (``join_transaction_mode="rollback_only"``: the session never commits it, the unit does), and
    keeps loaded objects usable after the commit (``expire_on_commit=False``). The unit flushes it
    before ``COMMIT`` and closes it on exit.
    """

    __slots__ = ("_session", "connection", "target")

    def __init__(self, connection: AsyncConnection, target: str) -> None:
        self.connection = connection
        self.target = target
        self._session: AsyncSession | None = None

    @property
    def session(self) -> AsyncSession:
        if self._session is None:
            self._session = AsyncSession(
                bind=self.connection, join_transaction_mode="rollback_only", expire_on_commit=False
            )
        return self._session

    @property
    def opened_session(self) -> AsyncSession | None:
        """The session if a repository used one, else ``None`` (nothing to flush or close)."""
        return self._session


#: Builds a unit's repositories on its transaction; the composition root names the concrete ones.
RepositoryFactory = Callable[[Transaction], R]


def _not_open() -> HexError:
    return HexError("the unit of work is not open; use it as 'async with uow:'")


class _FlushFailed(Exception):
    """A flush before COMMIT failed (carries the driver's error): nothing was applied."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(error)
        self.error = error


class _NotReplayed(Exception):
    """The chosen replica had not replayed the causal token within the wait."""


class SqlAlchemyUnitOfWork(UnitOfWork[R], Generic[R]):
    """A transaction on an ``AsyncConnection`` from the provider, handing out the repositories it builds.

    A read unit chooses a replica through the strategy among those that are healthy and whose
    circuit admits the call; when the chosen one fails to open, the strategy chooses again among
    the others; when none is left, it falls back to the writer (or raises
    ``NoHealthyReplicaError`` when ``fallback_to_writer`` is off). ``Intent.READ_PRIMARY`` reads
    run on the writer. Read units always run ``READ ONLY`` transactions, wherever they land. The
    provider counts each read by route.

    Read-your-writes: a write unit made with ``options.issue_causal_token`` reads the writer's WAL
    insert position right after COMMIT, on the same connection (one round trip, only when asked;
    read before COMMIT it would precede the commit record), and exposes it as ``causal_token``.
    A read unit given ``options.causal_token`` prefers replicas known to have replayed it; else it waits
    on the chosen replica up to ``causal_wait_s`` before its transaction begins, then falls back
    to the writer.

    What a unit sends is checked first (see :mod:`.statement_guard`): SQL that would end or change
    its transaction (``COMMIT``, ``ROLLBACK``, ``BEGIN``, ``SET TRANSACTION READ WRITE``...) is
    refused with ``TransactionControlError``, and a connection whose session the unit changed
    (``SET`` without ``LOCAL``, ``set_config``, session advisory locks...) is closed afterwards
    instead of serving the next unit. A read unit's ``commit()`` ends its transaction with
    ``ROLLBACK``: it wrote nothing, and whatever it changed in the session is undone with it.

    Under a caller's deadline (:mod:`ports.deadline`) every stage is bounded by the time left: the
    rate limiter's wait, the admission wait and the connect (see the provider's ``Lease``), each
    statement (``SET LOCAL statement_timeout`` to the time left, sent only when that is shorter
    than the configured timeout by more than ``deadline_grace_s``; a statement due after the
    deadline is not sent), and, as a backstop, a request still unanswered ``deadline_grace_s``
    after the deadline is cut on the client (the connection is discarded, never returned
    mid-request). A deadline that passes
    before ``COMMIT`` rolls the unit back (``DeadlineExceededError`` at stage ``commit``, nothing
    applied). Without a deadline none of this costs anything.
    """

    def __init__(
        self,
        *,
        provider: SqlAlchemyConnectionProvider,
        repositories: RepositoryFactory[R],
        rate_limiter: RateLimiter,
        circuit_breaker: CircuitBreaker,
        replica_strategy: ReplicaStrategy,
        intent: Intent = Intent.WRITE,
        priority: Priority = Priority.NORMAL,
        options: UnitOptions = DEFAULT_OPTIONS,
        fallback_to_writer: bool = True,
        isolation_level: str = "READ COMMITTED",
        causal_wait_s: float = 1.0,
        deadline_grace_s: float = DEADLINE_GRACE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._provider = provider
        self._repositories = repositories
        self._rate_limiter = rate_limiter
        self._breaker = circuit_breaker
        self._strategy = replica_strategy
        self._intent = intent
        self._priority = priority
        self._rate_limit_key = options.rate_limit_key
        self._fallback_to_writer = fallback_to_writer
        self._isolation_level = isolation_level
        self._after = options.causal_token
        self._issue_token = options.issue_causal_token
        self._causal_wait_s = causal_wait_s
        self._deadline_grace_s = deadline_grace_s
        self._backstop: asyncio.TimerHandle | None = None
        self._clock = clock
        self._token: CausalToken | None = None
        self._stack: AsyncExitStack | None = None
        self._connection: AsyncConnection | None = None
        self._transaction: Transaction | None = None
        self._repos: R | None = None
        self._session = UnitSession(intent.value)
        self._target = WRITER
        self._route: ReadRoute | None = None
        self._committed = False

    @property
    def target(self) -> str:
        return self._target

    @property
    def repos(self) -> R:
        if self._repos is None:
            raise _not_open()
        return self._repos

    @property
    def session(self) -> AsyncSession:
        """An ORM session on the transaction's connection, created at first use (see :class:`Transaction`)."""
        if self._transaction is None:
            raise _not_open()
        return self._transaction.session

    @property
    def connection(self) -> AsyncConnection:
        """The transaction's connection, for adapter-level code (benchmarks, diagnostics)."""
        return self._connection_or_fail()

    @property
    def intent(self) -> Intent:
        return self._intent

    @property
    def causal_token(self) -> CausalToken | None:
        return self._token

    @property
    def read_route(self) -> ReadRoute | None:
        return self._route

    async def __aenter__(self) -> Self:
        if self._stack is not None:
            raise HexError("a unit of work is used once; make a new one for each transaction")
        left = require(DeadlineStage.START)
        if left is None:
            await self._rate_limiter.acquire(self._rate_limit_key)
        else:
            await self._acquire_by(left)
        if self._intent is Intent.WRITE:
            await self._open(WRITER)
            return self
        if self._intent is Intent.READ_PRIMARY:
            await self._open(WRITER)
            route = ReadRoute.PRIMARY
        else:
            route = await self._open_read()
        in_recovery = bool(self._connection_or_fail().info.get("in_recovery"))
        self._provider.record_read(self._target, in_recovery=in_recovery, route=route)
        self._route = route
        return self

    async def _acquire_by(self, left: float) -> None:
        # Limiters hand their reservation back when cancelled, so a wait cut short costs nothing.
        try:
            async with asyncio.timeout(left) as scope:
                await self._rate_limiter.acquire(self._rate_limit_key)
        except TimeoutError:
            if scope.expired():
                raise DeadlineExceededError(DeadlineStage.RATE_LIMITER) from None
            raise

    async def _bound_by_deadline(self, connection: AsyncConnection, target: str) -> None:
        """Make the server cancel what outlasts the deadline, and cut what it leaves unanswered."""
        at = expires_at()
        if at is None:
            return
        self._session.expires_at = at
        left = require(DeadlineStage.STATEMENT, target=target)
        assert left is not None  # a deadline is set
        raw = await connection.get_raw_connection()
        # Armed first: BEGIN and the SET below are requests a frozen server leaves unanswered too.
        loop = asyncio.get_running_loop()
        self._backstop = loop.call_later(
            left + self._deadline_grace_s, self._cut, raw.driver_connection, target
        )
        # The configured timeout is kept when it ends a statement within the grace anyway (a caller
        # whose budget matches it, as behind a load balancer, pays no extra round trip per unit).
        if left + self._deadline_grace_s < self._provider.statement_timeout_s:
            try:
                await _limit_statements(raw.dbapi_connection, max(1, int(left * 1000)))
            except Exception as exc:  # below SQLAlchemy: the adapter's and asyncpg's own errors
                raise translate(exc, target=target) from exc

    def _cut(self, driver: Any, target: str) -> None:
        self._backstop = None
        reason = f"no answer from {target!r} {self._deadline_grace_s:g}s after the caller's deadline"
        if watchdog.cut_request(driver, reason):
            log.warning("uow.deadline_cut", target=target, grace_s=self._deadline_grace_s)

    async def _open_read(self) -> ReadRoute:
        if not self._provider.replica_names:
            await self._open(WRITER)
            return ReadRoute.WRITER
        views = [
            view
            for view in self._provider.replica_views()
            if view.healthy and self._breaker.state(view.name) is not BreakerState.OPEN
        ]
        route = await self._open_replica(views) if views else ReadRoute.FALLBACK_NO_HEALTHY_REPLICA
        if not route.is_fallback:
            return route
        if not self._fallback_to_writer:
            raise NoHealthyReplicaError(f"no replica could serve a read ({route}) and writer fallback is off")
        await self._open(WRITER)
        return route

    async def _open_replica(self, candidates: Sequence[ReplicaView]) -> ReadRoute:
        """Open on a replica the strategy picks, trying the others when it fails; else a fallback route."""
        token, failed = self._after, False
        while candidates:
            # With a token, replicas already known to have replayed it go first: no wait there.
            ready = (
                [] if token is None else [v for v in candidates if self._provider.has_replayed(v.name, token)]
            )
            chosen = self._strategy.choose(ready or candidates)
            if chosen is None:
                break
            candidates = [view for view in candidates if view.name != chosen.name]
            wait = token if token is not None and chosen not in ready else None
            try:
                await self._open(chosen.name, wait_for=wait)
            except _NotReplayed:
                return ReadRoute.FALLBACK_TOKEN_NOT_REPLAYED
            except (InfrastructureError, SaturationError, CircuitOpenError) as error:
                log.warning("read.replica_failed", target=chosen.name, error=str(error))
                failed = True
                continue
            if token is None:
                return ReadRoute.REPLICA
            return ReadRoute.REPLICA_CAUGHT_UP if wait is None else ReadRoute.REPLICA_AFTER_WAIT
        return ReadRoute.FALLBACK_REPLICA_FAILED if failed else ReadRoute.FALLBACK_DECLINED

    async def _wait_for(self, connection: AsyncConnection, target: str, token: CausalToken) -> None:
        # Before BEGIN, so that the transaction's first snapshot (all of it, under REPEATABLE READ)
        # is taken once the write is visible.
        started = self._clock()
        replayed, position = await wait_for_replay(
            connection, token.position, target=target, timeout_s=self._causal_wait_s, clock=self._clock
        )
        if position is not None:
            self._provider.note_replayed(target, position)
        self._provider.record_causal_wait(self._clock() - started)
        if not replayed:
            log.info("read.token_not_replayed", target=target, wait_s=self._causal_wait_s)
            raise _NotReplayed(target)

    async def _open(self, target: str, *, wait_for: CausalToken | None = None) -> None:
        stack = AsyncExitStack()
        try:
            stack.enter_context(self._breaker.guard(target))
            connection = await stack.enter_async_context(
                self._provider.connection(self._intent, target=target, priority=self._priority)
            )
            if wait_for is not None:
                await self._wait_for(connection, target, wait_for)
            options: dict[str, object] = {UNIT_OPTION: self._session}
            # A write unit needs no read-only flag: SQLAlchemy resets a read unit's at checkin.
            if self._intent.read_only:
                options["postgresql_readonly"] = True
            if self._isolation_level != "READ COMMITTED":
                options["isolation_level"] = self._isolation_level
            # On the sync connection, not through two greenlet round trips: with the asyncpg dialect
            # neither sends anything (the options are applied at the transaction's lazy BEGIN); if
            # one ever did, SQLAlchemy would raise MissingGreenlet rather than block.
            sync = connection.sync_connection
            assert sync is not None  # a started AsyncConnection
            sync.execution_options(**options)
            sync.begin()
            await self._bound_by_deadline(connection, target)
        except BaseException as error:
            self._disarm()
            await stack.__aexit__(type(error), error, error.__traceback__)
            if isinstance(error, sa_exc.DBAPIError | OSError):
                raise translate(error, target=target) from error
            raise
        self._stack, self._connection, self._target = stack, connection, target
        self._transaction = Transaction(connection, target)
        self._repos = self._repositories(self._transaction)

    def _connection_or_fail(self) -> AsyncConnection:
        if self._connection is None:
            raise _not_open()
        return self._connection

    def _disarm(self) -> None:
        if self._backstop is not None:
            self._backstop.cancel()
            self._backstop = None

    async def commit(self) -> None:
        connection = self._connection_or_fail()
        if self._session.expires_at is not None:
            # Past the deadline the caller has given up: a known "nothing applied" beats a commit
            # nobody waits for.
            require(DeadlineStage.COMMIT, target=self._target)
        # COMMIT must not be abandoned half-way by a cancellation: run it to its end, so the
        # connection is left in a known state and the outcome is settled one way or the other.
        # A read unit has nothing to keep: ROLLBACK also undoes any session setting it changed.
        read_only = self._intent.read_only
        session = self._transaction.opened_session if self._transaction is not None else None
        if session is not None:
            sync_session = session.sync_session

            # ORM changes still pending are flushed first, or they would be lost: in the same
            # greenlet as COMMIT (one trip through it, not two), and so run to its end with it.
            # (A clean session's flush returns at once; asking it from here costs more.)
            def flush_then_end(sync: Any) -> None:
                try:
                    sync_session.flush()
                except (sa_exc.DBAPIError, OSError) as exc:
                    raise _FlushFailed(exc) from exc
                self._check_not_aborted()
                (sync.rollback if read_only else sync.commit)()

            ending = connection.run_sync(flush_then_end)
        else:
            self._check_not_aborted()
            ending = connection.rollback() if read_only else connection.commit()
        try:
            await run_to_completion(ending)
        except _FlushFailed as failed:
            # Before COMMIT: nothing was applied.
            raise translate(failed.error, target=self._target) from failed.error
        except (sa_exc.DBAPIError, OSError) as exc:
            error = translate(exc, target=self._target)
            lost = isinstance(error, DeadlineExceededError) and error.server_unresponsive
            if isinstance(error, DatabaseUnavailableError) or lost:
                raise CommitOutcomeUnknownError(
                    f"connection to {self._target!r} failed during COMMIT; the transaction may have applied"
                ) from exc
            raise error from exc
        self._committed = True
        if self._issue_token:
            await self._read_token(connection)

    def _check_not_aborted(self) -> None:
        if self._session.failed:
            raise TransactionAbortedError(
                f"a statement of this unit of work failed on {self._target!r}, so PostgreSQL aborted its "
                "transaction and nothing was committed"
            )

    async def _read_token(self, connection: AsyncConnection) -> None:
        # Any position the writer reports after COMMIT returned covers the commit record. If the
        # connection died just after a successful COMMIT, the commit stands and only the token is
        # lost: the caller reads without one (and may see an older state), it is not an error.
        try:
            self._token = CausalToken(await insert_position(connection, target=self._target))
        except HexError as error:
            log.warning("uow.causal_token_unavailable", target=self._target, error=type(error).__name__)

    async def rollback(self) -> None:
        connection = self._connection_or_fail()
        try:
            await connection.rollback()
        except (sa_exc.DBAPIError, OSError) as exc:
            raise translate(exc, target=self._target) from exc

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._disarm()
        stack, connection = self._stack, self._connection
        if stack is None or connection is None:
            return
        self._connection = None
        session = self._transaction.opened_session if self._transaction is not None else None
        try:
            if session is not None:
                # Releases the session's hold on the connection; the transaction is the unit's to end.
                # Not shielded: a session joined "rollback_only" to a connection it did not open
                # neither commits, rolls back nor closes anything on close, so this never waits on
                # the network and no cancellation can land inside it (a task per unit saved).
                await session.close()
            if not self._committed and connection.in_transaction():
                # Finished before the connection is released below, even when cancelled.
                await run_to_completion(connection.rollback())
        except (sa_exc.DBAPIError, OSError) as error:
            # A broken connection cannot roll back; releasing it below invalidates it and the
            # server discards the transaction with the session.
            log.info("uow.rollback_failed", target=self._target, error=type(error).__name__)
        finally:
            try:
                if self._session.dirty and not connection.invalidated:
                    # Closed, not pooled: the next unit must find the session as the provider made it.
                    await run_to_completion(
                        connection.invalidate(SessionChanged("the unit changed the session"))
                    )
            finally:
                await stack.__aexit__(exc_type, exc, tb)


async def _limit_statements(adapted: Any, timeout_ms: int) -> None:
    """``SET LOCAL statement_timeout`` on the unit's transaction: one round trip, nothing cached.

    Sent through asyncpg's simple-query protocol, not SQLAlchemy's ``execute``: the asyncpg dialect
    prepares every statement and keeps it in a 100-entry cache, and a ``SET`` with a different
    number each time would push the service's own statements out of it. The dialect begins its
    transaction lazily at the first statement; it is begun here first, as that statement would
    (SQLAlchemy 2.x's asyncpg adapter: ``_execute_mutex``, ``_transaction``, ``_start_transaction``).
    """
    async with adapted._execute_mutex:
        if adapted._transaction is None:
            await adapted._start_transaction()
        await adapted._connection.execute(f"SET LOCAL statement_timeout = {int(timeout_ms)}")
