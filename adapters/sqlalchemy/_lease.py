"""``Lease``: one checkout of the provider's, as a hand-written async context manager (the hot path).

A friend of :class:`~adapters.sqlalchemy.connection_provider.SqlAlchemyConnectionProvider`: it
reads the provider's private state directly, because every attribute lookup and call it saves is
paid by every unit of work. Nothing else should construct one.
"""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import TYPE_CHECKING

import structlog
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters.sqlalchemy.errors import translate
from adapters.sqlalchemy.targets import Target
from ports.connection_provider import Priority
from ports.deadline import DeadlineStage, remaining_s
from ports.errors import (
    ConnectionReclaimedError,
    DeadlineExceededError,
    InfrastructureError,
    PoolTimeoutError,
    ShuttingDownError,
)

if TYPE_CHECKING:
    from adapters.sqlalchemy.connection_provider import SqlAlchemyConnectionProvider

log = structlog.get_logger(__name__)


class Lease:
    """One checkout as a plain async context manager: the hot path of every unit of work.

    Written out by hand rather than with ``@asynccontextmanager`` because a generator-based
    manager costs several microseconds per use, which the benchmark against plain SQLAlchemy sees.

    Under a caller's deadline (:mod:`ports.deadline`) the admission wait and the connect are
    bounded by the time left, and an expired deadline is refused before the gate. Without one,
    the hot path pays a single context-variable read.
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
        left = remaining_s()
        if left is None:
            waited = await state.gate.acquire(self._priority, timeout_s=provider._acquire_timeout_s)
        else:
            waited = await self._admit_by(left)
        state.observer.waited(waited, self._priority)
        self._in_flight = state.gate.in_use
        try:
            if left is None:
                self._connection = await provider._checkout(state)
            else:
                self._connection = await self._connect_by()
        except BaseException:
            # A connect this request was cancelled in goes on to its end (see targets.make_engine)
            # and holds a place on the server until then: so does the request's slot.
            state.connects.call_when_done(state.gate.release)
            raise
        self._checkout = provider._registry.open(state.name)
        self._checkout.connection = self._connection
        state.in_flight += 1
        return self._connection

    async def _admit_by(self, left: float) -> float:
        provider, state = self._provider, self._state
        if left <= 0:
            raise DeadlineExceededError(DeadlineStage.ADMISSION, target=state.name)
        timeout_s = provider._acquire_timeout_s
        try:
            return await state.gate.acquire(self._priority, timeout_s=min(timeout_s, left))
        except PoolTimeoutError:
            if left < timeout_s:  # the deadline, not the acquire timeout, ended the wait
                raise DeadlineExceededError(DeadlineStage.ADMISSION, target=state.name) from None
            raise

    async def _connect_by(self) -> AsyncConnection:
        # A connect cut short here finishes in the background (see targets.make_engine); the
        # caller's slot is held until then by the release in __aenter__.
        provider, state = self._provider, self._state
        left = remaining_s()
        if left is None or left <= 0:
            raise DeadlineExceededError(DeadlineStage.CONNECT, target=state.name)
        try:
            async with asyncio.timeout(left):
                return await provider._checkout(state)
        except TimeoutError:
            raise DeadlineExceededError(DeadlineStage.CONNECT, target=state.name) from None

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        provider, state = self._provider, self._state
        state.in_flight -= 1
        held_s = provider._registry.close(self._checkout)
        state.usage_total_s += held_s
        state.observer.used(held_s)
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
