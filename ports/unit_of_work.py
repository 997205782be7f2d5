"""The ``UnitOfWork`` port: one transaction, its repositories, and the policies around it."""

from __future__ import annotations

from types import TracebackType
from typing import Protocol, Self

from ports.account_repository import AccountRepository
from ports.connection_provider import CausalToken, Intent, Priority
from ports.transfer_repository import TransferRepository


class UnitOfWork(Protocol):
    """One database transaction as an async context manager.

    Entering applies the policies (rate limiter, then the target's circuit breaker), chooses the
    target (the writer, or for a read unit a replica through the replica strategy), checks out a
    connection and begins the transaction; a read unit's transaction is read-only at the database,
    so a write on a read path fails with :class:`ports.errors.ReadOnlyViolationError`. Leaving
    rolls back unless :meth:`commit` was called, and always releases the connection. Errors are
    the contract errors of ``ports.errors``. A unit of work is used once, by one task.

    Read-your-writes: a write unit asked for a causal token exposes one once committed
    (:attr:`causal_token`); a read unit given that token runs on a server that has replayed the
    write (a replica that has caught up, waiting a bounded time, else the writer).
    """

    accounts: AccountRepository
    transfers: TransferRepository

    @property
    def target(self) -> str:
        """Where the transaction runs: ``"writer"`` or a replica's name (valid once entered)."""
        ...

    @property
    def causal_token(self) -> CausalToken | None:
        """After a committed write unit that was asked for one, the writer's position; else ``None``.

        The default suits a single server, where every read already sees every committed write.
        """
        return None

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    async def commit(self) -> None:
        """Commit; raises ``CommitOutcomeUnknownError`` when the outcome cannot be known."""
        ...

    async def rollback(self) -> None:
        """Roll back explicitly (leaving without commit does it too)."""
        ...


class UnitOfWorkFactory(Protocol):
    """Makes a fresh unit of work for each use-case call; injected into the use cases."""

    def __call__(
        self,
        *,
        intent: Intent = Intent.WRITE,
        priority: Priority = Priority.NORMAL,
        rate_limit_key: str = "default",
    ) -> UnitOfWork: ...
