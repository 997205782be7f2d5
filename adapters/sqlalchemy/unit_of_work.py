"""``SqlAlchemyUnitOfWork``: one transaction on the writer or a replica, behind every policy port."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Self

import structlog
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters.sqlalchemy.connection_provider import SqlAlchemyConnectionProvider
from adapters.sqlalchemy.errors import translate
from adapters.sqlalchemy.repositories import SqlAlchemyAccountRepository, SqlAlchemyTransferRepository
from ports.circuit_breaker import BreakerState, CircuitBreaker
from ports.connection_provider import WRITER, Intent, Priority
from ports.errors import (
    CommitOutcomeUnknownError,
    DatabaseUnavailableError,
    HexError,
    InfrastructureError,
    NoHealthyReplicaError,
)
from ports.rate_limiter import RateLimiter
from ports.replica_strategy import ReplicaStrategy
from ports.unit_of_work import UnitOfWork

log = structlog.get_logger(__name__)


class SqlAlchemyUnitOfWork(UnitOfWork):
    """A transaction on an ``AsyncConnection`` from the provider, with the ledger's repositories.

    A read unit chooses a replica through the strategy among those that are healthy and whose
    circuit admits the call; when none does, or the chosen one fails to connect, it falls back to
    the writer (or raises ``NoHealthyReplicaError`` when ``fallback_to_writer`` is off). Read units
    always run ``READ ONLY`` transactions, wherever they land.
    """

    accounts: SqlAlchemyAccountRepository
    transfers: SqlAlchemyTransferRepository

    def __init__(
        self,
        *,
        provider: SqlAlchemyConnectionProvider,
        rate_limiter: RateLimiter,
        circuit_breaker: CircuitBreaker,
        replica_strategy: ReplicaStrategy,
        intent: Intent = Intent.WRITE,
        priority: Priority = Priority.NORMAL,
        rate_limit_key: str = "default",
        fallback_to_writer: bool = True,
        isolation_level: str = "READ COMMITTED",
    ) -> None:
        self._provider = provider
        self._rate_limiter = rate_limiter
        self._breaker = circuit_breaker
        self._strategy = replica_strategy
        self._intent = intent
        self._priority = priority
        self._rate_limit_key = rate_limit_key
        self._fallback_to_writer = fallback_to_writer
        self._isolation_level = isolation_level
        self._stack: AsyncExitStack | None = None
        self._connection: AsyncConnection | None = None
        self._target = WRITER
        self._committed = False

    @property
    def target(self) -> str:
        return self._target

    @property
    def connection(self) -> AsyncConnection:
        """The transaction's connection, for adapter-level code (benchmarks, diagnostics)."""
        return self._connection_or_fail()

    @property
    def intent(self) -> Intent:
        return self._intent

    async def __aenter__(self) -> Self:
        if self._stack is not None:
            raise HexError("a unit of work is used once; make a new one for each transaction")
        await self._rate_limiter.acquire(self._rate_limit_key)
        if self._intent is Intent.WRITE:
            await self._open(WRITER)
            return self
        replica = self._choose_replica()
        if replica is not None:
            try:
                await self._open(replica)
            except InfrastructureError as error:
                log.warning("read.replica_failed", target=replica, error=str(error))
                replica = None
        if replica is None:
            if not self._fallback_to_writer:
                raise NoHealthyReplicaError("no healthy replica for a read and writer fallback is off")
            await self._open(WRITER)
        in_recovery = bool(self._connection_or_fail().info.get("in_recovery"))
        fallback = replica is None and bool(self._provider.replica_names)
        self._provider.record_read(self._target, in_recovery=in_recovery, fallback=fallback)
        return self

    def _choose_replica(self) -> str | None:
        views = [
            view
            for view in self._provider.replica_views()
            if view.healthy and self._breaker.state(view.name) is not BreakerState.OPEN
        ]
        chosen = self._strategy.choose(views)
        return None if chosen is None else chosen.name

    async def _open(self, target: str) -> None:
        stack = AsyncExitStack()
        try:
            stack.enter_context(self._breaker.guard(target))
            connection = await stack.enter_async_context(
                self._provider.connection(self._intent, target=target, priority=self._priority)
            )
            options: dict[str, object] = {"postgresql_readonly": self._intent is Intent.READ}
            if self._isolation_level != "READ COMMITTED":
                options["isolation_level"] = self._isolation_level
            await connection.execution_options(**options)
            await connection.begin()
        except BaseException as error:
            await stack.__aexit__(type(error), error, error.__traceback__)
            if isinstance(error, sa_exc.DBAPIError | OSError):
                raise translate(error, target=target) from error
            raise
        self._stack, self._connection, self._target = stack, connection, target
        self.accounts = SqlAlchemyAccountRepository(connection, target=target)
        self.transfers = SqlAlchemyTransferRepository(connection, target=target)

    def _connection_or_fail(self) -> AsyncConnection:
        if self._connection is None:
            raise HexError("the unit of work is not open; use it as 'async with uow:'")
        return self._connection

    async def commit(self) -> None:
        connection = self._connection_or_fail()
        # COMMIT must not be abandoned half-way by a cancellation: shield it and wait for it, so
        # the connection is left in a known state and the outcome is settled one way or the other.
        commit = asyncio.ensure_future(connection.commit())
        try:
            await asyncio.shield(commit)
        except asyncio.CancelledError:
            await asyncio.wait([commit])
            raise
        except (sa_exc.DBAPIError, OSError) as exc:
            error = translate(exc, target=self._target)
            if isinstance(error, DatabaseUnavailableError):
                raise CommitOutcomeUnknownError(
                    f"connection to {self._target!r} failed during COMMIT; the transaction may have applied"
                ) from exc
            raise error from exc
        self._committed = True

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
        stack, connection = self._stack, self._connection
        if stack is None or connection is None:
            return
        self._connection = None
        try:
            if not self._committed and connection.in_transaction():
                await asyncio.shield(connection.rollback())
        except (sa_exc.DBAPIError, OSError) as error:
            # A broken connection cannot roll back; releasing it below invalidates it and the
            # server discards the transaction with the session.
            log.info("uow.rollback_failed", target=self._target, error=type(error).__name__)
        finally:
            await stack.__aexit__(exc_type, exc, tb)
