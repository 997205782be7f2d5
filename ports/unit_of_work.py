"""The ``UnitOfWork`` port: one transaction, the repositories it hands out, and the policies around it."""

from __future__ import annotations

from dataclasses import dataclass
from types import TracebackType
from typing import Protocol, Self, TypeVar

from ports.connection_provider import CausalToken, Intent, Priority, ReadRoute

R_co = TypeVar("R_co", covariant=True)


@dataclass(frozen=True, slots=True)
class UnitOptions:
    """How one unit of work runs, beyond its intent and priority; the defaults suit most calls.

    ``rate_limit_key`` is the rate limiter's key (a tenant, an API client: each has its own
    budget). ``causal_token`` makes a read unit run on a server that has replayed that write
    (read-your-writes); ``issue_causal_token`` makes a write unit expose the writer's position once
    committed (:attr:`UnitOfWork.causal_token`, one round trip after ``COMMIT``, only when asked).
    """

    rate_limit_key: str = "default"
    causal_token: CausalToken | None = None
    issue_causal_token: bool = False


DEFAULT_OPTIONS = UnitOptions()


class UnitOfWork(Protocol[R_co]):
    """One database transaction as an async context manager, handing out repositories of type ``R``.

    Entering applies the policies (rate limiter, then the target's circuit breaker), chooses the
    target (the writer, or for a read unit a replica through the replica strategy), checks out a
    connection, begins the transaction and builds the repositories on it (:attr:`repos`, with the
    factory the composition root gave the unit of work's factory). A read unit's transaction is
    read-only at the database, so a write on a read path fails with
    :class:`ports.errors.ReadOnlyViolationError`; SQL that would end the transaction behind the
    unit's back fails with :class:`ports.errors.TransactionControlError`. Leaving rolls back unless
    :meth:`commit` was called, and always releases the connection. Errors are the contract errors
    of ``ports.errors``. A unit of work is used once, by one task.

    Read-your-writes: a write unit asked for a causal token exposes one once committed
    (:attr:`causal_token`); a read unit given that token runs on a server that has replayed the
    write (a replica that has caught up, waiting a bounded time, else the writer).
    """

    @property
    def repos(self) -> R_co:
        """The repositories, bound to this unit's transaction (valid once entered)."""
        ...

    @property
    def target(self) -> str:
        """Where the transaction runs: ``"writer"`` or a replica's name (valid once entered)."""
        ...

    @property
    def causal_token(self) -> CausalToken | None:
        """After a committed write unit that was asked for one, the writer's position; else ``None``."""
        ...

    @property
    def read_route(self) -> ReadRoute | None:
        """Why a read unit runs where it does (valid once entered); ``None`` for a write unit."""
        ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    async def commit(self) -> None:
        """Commit; raises ``CommitOutcomeUnknownError`` when the outcome cannot be known.

        A read unit has nothing to commit: its transaction ends with ``ROLLBACK``.
        """
        ...

    async def rollback(self) -> None:
        """Roll back explicitly (leaving without commit does it too)."""
        ...


class UnitOfWorkFactory(Protocol[R_co]):
    """Makes a fresh unit of work for each use-case attempt; injected into the use cases."""

    def __call__(
        self,
        *,
        intent: Intent = Intent.WRITE,
        priority: Priority = Priority.NORMAL,
        options: UnitOptions = DEFAULT_OPTIONS,
    ) -> UnitOfWork[R_co]: ...
