"""Errors of the ports' contracts.

Every error alchemy-hex raises derives from :class:`HexError`. Adapters translate driver
exceptions into these at their edge (``raise ... from exc``), so the application layer never
catches a SQLAlchemy or asyncpg exception. Domain rule violations live in ``domain.errors``.
"""

from __future__ import annotations


class HexError(Exception):
    """Root of every error raised by alchemy-hex outside the domain."""

    #: Whether running the same work again in a fresh transaction may succeed.
    retryable: bool = False


class ConfigurationError(HexError):
    """A setting is missing or invalid; the message names the field and never a secret."""


class InfrastructureError(HexError):
    """The database or the way to it failed; the only kind of failure a circuit breaker counts."""


class DatabaseUnavailableError(InfrastructureError):
    """No connection could be made or it was lost (refused, reset, server shutting down, too many)."""

    retryable = True


class SaturationError(HexError):
    """This process has no connection to spare right now; the database itself may be healthy.

    Not an :class:`InfrastructureError`: local saturation must not open the target's circuit,
    or the breaker would go on refusing the critical work the admission priorities let through.
    """

    retryable = True


class PoolTimeoutError(SaturationError):
    """No connection became free within the acquire timeout; the message carries the pool state."""


class PoolQueueFullError(SaturationError):
    """The bounded queue of requests waiting for a connection is full (for this request's priority)."""


class ConnectionReclaimedError(InfrastructureError):
    """The connection was held past the provider's hard limit and taken back from its holder."""


class QueryTimeoutError(InfrastructureError):
    """A statement ran past its timeout and was cancelled on the server."""


class DeadlineExceededError(HexError):
    """The caller's deadline ran out; ``stage`` names where (``rate_limiter``, ``admission``, ``connect``...).

    A contract error, not an infrastructure failure: the caller's budget ended, which says nothing
    of the database by itself. ``server_unresponsive`` is set when the server had not answered a
    request by the deadline (plus a short grace) although it was told to cancel it then, which
    does say something: the circuit breaker counts that one as a failure. Never retried.
    """

    def __init__(self, stage: str, *, target: str | None = None, server_unresponsive: bool = False) -> None:
        where = "" if target is None else f" on {target!r}"
        super().__init__(f"deadline exceeded during {stage}{where}")
        self.stage = stage
        self.target = target
        self.server_unresponsive = server_unresponsive


class TransactionConflictError(HexError):
    """The server rolled the whole transaction back (serialization failure, deadlock); safe to run again.

    Not an infrastructure failure: the server is healthy and answered, so a burst of conflicts
    under contention must not open the writer's circuit.
    """

    retryable = True


class CommitOutcomeUnknownError(InfrastructureError):
    """The connection failed while COMMIT was in flight: the transaction may or may not have applied."""


class CircuitOpenError(HexError):
    """Calls to a target are refused without trying because its circuit breaker is open."""

    def __init__(self, target: str, retry_after_s: float) -> None:
        super().__init__(f"circuit for {target!r} is open; retry after {retry_after_s:.3f}s")
        self.target = target
        self.retry_after_s = retry_after_s


class RateLimitExceededError(HexError):
    """The rate limiter refused the call; ``retry_after_s`` says when a token will be there."""

    def __init__(self, key: str, retry_after_s: float) -> None:
        super().__init__(f"rate limit for {key!r} exceeded; retry after {retry_after_s:.3f}s")
        self.key = key
        self.retry_after_s = retry_after_s


class NoHealthyReplicaError(HexError):
    """A read needed a replica, none was usable and falling back to the writer is switched off."""


class ShuttingDownError(HexError):
    """The provider is closing and admits no new work."""


class ReadOnlyViolationError(HexError):
    """A write was attempted inside a read-only unit of work."""


class TransactionAbortedError(HexError):
    """A statement of the unit failed, so PostgreSQL aborted its transaction: ``commit()`` applies nothing.

    Raised by ``commit()`` instead of letting the server turn the COMMIT into a silent ROLLBACK;
    a unit that must go on after a failing statement runs that statement in a savepoint.
    """


class TransactionControlError(HexError):
    """A unit of work refused SQL that would end or change its transaction (``COMMIT``, ``SET TRANSACTION``).

    The unit owns its transaction: end it with the unit's ``commit()``, or leave the block to roll back.
    """


class DataIntegrityError(HexError):
    """The database refused data that breaks a constraint (unique, check, foreign key)."""


class EventLoopMismatchError(HexError):
    """A provider was used from an event loop other than the one it was started on."""


class CredentialError(InfrastructureError):
    """No password could be had from the configured source (unreadable file, failed command).

    Retryable: a secret being replaced or a token service that blinked may answer the next time.
    """

    retryable = True


class TlsError(DatabaseUnavailableError):
    """The TLS handshake failed: the certificate is not trusted, names another host, or TLS was refused."""

    # A configuration to fix, not a blip to wait out: retrying would only delay the message.
    retryable = False


class PermissionDeniedError(HexError):
    """The role lacks a privilege the statement needs (least privilege at work, or a missing grant)."""
