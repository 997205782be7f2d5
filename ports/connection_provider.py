"""The ``ConnectionProvider`` port: connections to the writer and the replicas, by intent."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Final, Protocol, TypeVar

WRITER: Final = "writer"


class Intent(enum.StrEnum):
    """What a unit of work will do; routing follows the declared intent, never the SQL."""

    WRITE = "write"
    READ = "read"


class Priority(enum.IntEnum):
    """Admission class of a request; a lower value is served first."""

    CRITICAL = 0
    HIGH = 1
    NORMAL = 2
    LOW = 3


@dataclass(frozen=True, slots=True)
class TargetStats:
    """A snapshot of one target's pool (the writer or one replica)."""

    name: str
    role: str
    size: int
    in_use: int
    idle: int
    overflow: int
    waiting: int
    checkouts: int
    timeouts: int
    connect_failures: int
    in_recovery: bool | None = None
    opened: int = 0
    closed: int = 0
    lost: int = 0
    served: int = 0
    queued: int = 0
    timed_out: int = 0
    rejected: int = 0
    wait_total_s: float = 0.0
    wait_max_s: float = 0.0
    usage_total_s: float = 0.0

    def describe(self) -> str:
        """One line for error messages: ``size=10 in_use=10 idle=0 waiting=3``."""
        return (
            f"size={self.size} in_use={self.in_use} idle={self.idle} "
            f"overflow={self.overflow} waiting={self.waiting}"
        )


@dataclass(frozen=True, slots=True)
class ProviderStats:
    """A snapshot of every target; ``reads_by_target`` counts read units by where they ran."""

    targets: tuple[TargetStats, ...]
    reads_by_target: Mapping[str, int] = field(default_factory=dict)
    reads_in_recovery: int = 0
    writer_fallbacks: int = 0


@dataclass(frozen=True, slots=True)
class ReplicaView:
    """What a :class:`ReplicaStrategy` may know of a replica when it chooses one."""

    name: str
    healthy: bool
    in_flight: int
    lag_s: float | None = None
    weight: float = 1.0


ConnectionT_co = TypeVar("ConnectionT_co", covariant=True)


class ConnectionProvider(Protocol[ConnectionT_co]):
    """Hands out database connections for the writer or a named replica.

    ``connection()`` is an async context manager: the connection is released on exit however the
    block ends (return, error or cancellation). Acquisition raises :class:`PoolTimeoutError` (with
    the pool state in the message), :class:`PoolQueueFullError`, :class:`DatabaseUnavailableError`
    or :class:`ShuttingDownError`. Safe to share between tasks of the event loop that created it.
    """

    @property
    def replica_names(self) -> tuple[str, ...]:
        """The configured replicas, in configuration order; empty when only a writer is set."""
        ...

    def connection(
        self,
        intent: Intent,
        *,
        target: str = WRITER,
        priority: Priority = Priority.NORMAL,
    ) -> AbstractAsyncContextManager[ConnectionT_co]:
        """Check out a connection to ``target`` (the writer unless a replica name is given)."""
        ...

    def replica_views(self) -> tuple[ReplicaView, ...]:
        """The replicas as a strategy sees them: health, connections in flight, lag."""
        ...

    def record_read(self, target: str, *, in_recovery: bool, fallback: bool) -> None:
        """Count a read unit of work served by ``target`` (``fallback``: a replica was wanted)."""
        ...

    async def wait_for_replay(self, timeout_s: float = 5.0) -> bool:
        """Wait until every healthy replica has replayed the writer's WAL as of this call.

        Returns ``False`` if some replica had not caught up after ``timeout_s`` seconds.
        """
        ...

    def stats(self) -> ProviderStats:
        """A consistent snapshot of every target's pool."""
        ...

    async def aclose(self, timeout_s: float = 30.0) -> None:
        """Stop admitting, wait up to ``timeout_s`` seconds for checkouts to return, dispose."""
        ...
