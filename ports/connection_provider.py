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
    #: A read that a replica may serve (one that has replayed the caller's causal token, if given).
    READ = "read"
    #: A read that must see the latest committed state (an audit, a check before a write): a
    #: ``READ ONLY`` transaction on the writer, never on a replica.
    READ_PRIMARY = "read_primary"

    @property
    def read_only(self) -> bool:
        """Whether the unit runs a ``READ ONLY`` transaction."""
        return self is not Intent.WRITE


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
    #: Open connections beyond the configured ``pool_size`` (opened on demand, trimmed when idle).
    overflow: int
    waiting: int
    connect_failures: int
    in_recovery: bool | None = None
    #: Connects under way in the background to grow the pool.
    connecting: int = 0
    opened: int = 0
    closed: int = 0
    lost: int = 0
    served: int = 0
    queued: int = 0
    timed_out: int = 0
    #: Of ``timed_out``: requests refused after the short wait allowed while the queue is overloaded.
    shed: int = 0
    rejected: int = 0
    wait_total_s: float = 0.0
    wait_max_s: float = 0.0
    usage_total_s: float = 0.0
    #: Connections closed because a request had no answer within the client deadline.
    unresponsive: int = 0


class ReadRoute(enum.StrEnum):
    """Why a read unit of work ran where it did; the stats count read units per route."""

    #: The replica strategy's choice.
    REPLICA = "replica"
    #: Given a causal token, on a replica already known to have replayed it: no wait.
    REPLICA_CAUGHT_UP = "replica_caught_up"
    #: Given a causal token, on a replica after waiting for it to replay that position.
    REPLICA_AFTER_WAIT = "replica_after_wait"
    #: No replica is configured: the writer is the read endpoint, not a fallback.
    WRITER = "writer"
    #: The unit asked for the writer (``Intent.READ_PRIMARY``): it must see the latest state.
    PRIMARY = "primary"
    #: Fallback: no replica was healthy with its circuit admitting calls.
    FALLBACK_NO_HEALTHY_REPLICA = "fallback_no_healthy_replica"
    #: Fallback: the strategy chose none (``writer_only``, or every healthy replica lagged too far).
    FALLBACK_DECLINED = "fallback_declined"
    #: Fallback: every replica tried failed to open a transaction.
    FALLBACK_REPLICA_FAILED = "fallback_replica_failed"
    #: Fallback: the chosen replica had not replayed the causal token within the wait.
    FALLBACK_TOKEN_NOT_REPLAYED = "fallback_token_not_replayed"

    @property
    def is_fallback(self) -> bool:
        return self.value.startswith("fallback_")


@dataclass(frozen=True, slots=True, order=True)
class CausalToken:
    """The writer's log position when a write unit of work committed; opaque and totally ordered.

    A read unit given a token is served only by a server that has replayed at least this position,
    so it sees that write (read-your-writes). Tokens compare by position; the greater of two tokens
    covers both writes.
    """

    position: int


@dataclass(frozen=True, slots=True)
class ReplicaStats:
    """A snapshot of one replica's health as the background probe and the router see it.

    ``lag_s`` is how long the writer's log position took to become visible on the replica at the
    last probe (0 when it had already replayed everything, so an idle writer shows no lag; ``None``
    when unknown). ``ejected`` names why the replica is out of rotation (``unreachable``,
    ``connect_failed``, ``promoted``) or is ``None``.
    """

    name: str
    healthy: bool
    ejected: str | None
    in_recovery: bool | None
    lag_s: float | None
    weight: float
    in_flight: int
    reads: int
    lag_skips: int
    ejections: int
    readmissions: int
    probes: int
    probe_failures: int


@dataclass(frozen=True, slots=True)
class ProviderStats:
    """A snapshot of every target; ``reads_by_target`` counts read units by where they ran.

    ``read_routes`` counts read units by :class:`ReadRoute` (why they ran there);
    ``writer_fallbacks`` sums the fallback routes. ``causal_waits`` counts read units that waited
    for a replica to replay a causal token, ``causal_wait_total_s`` the time they waited.
    """

    targets: tuple[TargetStats, ...]
    reads_by_target: Mapping[str, int] = field(default_factory=dict)
    reads_in_recovery: int = 0
    writer_fallbacks: int = 0
    read_routes: Mapping[str, int] = field(default_factory=dict)
    replicas: tuple[ReplicaStats, ...] = ()
    causal_waits: int = 0
    causal_wait_total_s: float = 0.0


@dataclass(frozen=True, slots=True)
class ReplicaView:
    """What a :class:`ReplicaStrategy` may know of a replica when it chooses one.

    ``lag_s`` is the replay lag the last probe measured (``None`` when unknown: not probed yet, or
    the writer was unreachable); ``weight`` is the configured share of reads (0 takes none).
    """

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

    def record_read(self, target: str, *, in_recovery: bool, route: ReadRoute) -> None:
        """Count a read unit of work served by ``target``, and why it ran there."""
        ...

    def record_lag_skip(self, replica: str) -> None:
        """Count a choice that passed ``replica`` over because it lagged too far behind."""
        ...

    def has_replayed(self, replica: str, token: CausalToken) -> bool:
        """Whether ``replica`` is known, without any I/O, to have replayed ``token``'s position."""
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
