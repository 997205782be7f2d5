"""The kernel's ports: the Protocols use cases and adapters meet at, and the contract errors.

Import from the modules (``ports.unit_of_work``, ``ports.errors``, ...); the names below are the
public surface of the package. The example ledger's ports live in ``ports.ledger``, outside it.
"""

from ports.circuit_breaker import BreakerState, CircuitBreaker
from ports.concurrency_limit import ConcurrencyLimit
from ports.connection_provider import (
    WRITER,
    CausalToken,
    ConnectionProvider,
    Intent,
    Priority,
    ProviderStats,
    ReadRoute,
    ReplicaStats,
    ReplicaView,
    TargetStats,
)
from ports.credential_provider import CredentialProvider
from ports.rate_limiter import RateLimiter
from ports.replica_strategy import ReplicaStrategy
from ports.unit_of_work import DEFAULT_OPTIONS, UnitOfWork, UnitOfWorkFactory, UnitOptions

__all__ = [
    "DEFAULT_OPTIONS",
    "WRITER",
    "BreakerState",
    "CausalToken",
    "CircuitBreaker",
    "ConcurrencyLimit",
    "ConnectionProvider",
    "CredentialProvider",
    "Intent",
    "Priority",
    "ProviderStats",
    "RateLimiter",
    "ReadRoute",
    "ReplicaStats",
    "ReplicaStrategy",
    "ReplicaView",
    "TargetStats",
    "UnitOfWork",
    "UnitOfWorkFactory",
    "UnitOptions",
]
