"""The option groups of ``SqlAlchemyConnectionProvider``: what each pool does, grouped by concern.

Every field has a unit in its name where it has one, and a default that suits a small service;
the settings groups of the same names fill them in the container.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["MonitorOptions", "PoolOptions", "ReplicaOptions", "TimeoutOptions"]


@dataclass(frozen=True, slots=True, kw_only=True)
class PoolOptions:
    """Size, admission and lifetime of each target's pool.

    Up to ``pool_size + max_overflow`` connections, opened in the background by a grower (at most
    ``max_concurrent_connects`` at a time, only while requests wait that returning connections will
    not serve, or while fewer than ``min_idle`` are open; see :mod:`.grower`); at most
    ``max_waiting`` requests queue for one (FIFO per priority) for up to ``acquire_timeout_s``.
    A connection is pinged at checkout when it sat idle past ``pre_ping_idle_s`` (``pre_ping``),
    recycled after ``max_lifetime_s`` minus up to ``lifetime_jitter`` of it, pinged by the monitor
    after ``keepalive_s`` idle and closed after ``idle_timeout_s`` idle while more than ``min_idle``
    (default: ``pool_size``) stay. ``pgbouncer`` adapts everything to PgBouncer's transaction mode.
    With ``overload_wait_s`` set, a request that queues within ``overload_window_s`` of another's
    timing out waits at most that long (controlled delay, see
    :class:`adapters.asyncio.admission_gate.AdmissionGate`): under overload the excess is refused
    fast and the requests served have not waited out ``acquire_timeout_s``.
    """

    pool_size: int = 10
    max_overflow: int = 5
    max_waiting: int = 1000
    acquire_timeout_s: float = 5.0
    max_lifetime_s: float = 1800.0
    lifetime_jitter: float = 0.1
    pre_ping: bool = True
    pre_ping_idle_s: float = 1.0
    keepalive_s: float | None = 60.0
    idle_timeout_s: float | None = 600.0
    min_idle: int | None = None
    max_concurrent_connects: int = 1
    overload_wait_s: float | None = None
    overload_window_s: float = 1.0
    pgbouncer: bool = False

    @property
    def capacity(self) -> int:
        return self.pool_size + self.max_overflow


@dataclass(frozen=True, slots=True, kw_only=True)
class TimeoutOptions:
    """How long a connect, a statement, an idle transaction and a lock wait may take.

    The last three are set on the server for every session; ``statement_timeout_s +
    connect_timeout_s`` is also the client-side deadline of a request left without an answer.
    """

    connect_timeout_s: float = 5.0
    statement_timeout_s: float = 30.0
    idle_in_transaction_timeout_s: float = 60.0
    lock_timeout_s: float = 10.0

    @property
    def client_deadline_s(self) -> float:
        # statement_timeout runs on the server, so it cannot end a request whose answer never comes
        # back (a black hole, a frozen server): a client-side deadline a little later bounds each one.
        return self.statement_timeout_s + self.connect_timeout_s


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplicaOptions:
    """How replicas are chosen, ejected and probed.

    A replica that failed to connect is skipped for ``eject_s``; ``weights`` (one per replica,
    default 1 each) are handed to the strategy; with ``probe_interval_s`` set, a background probe
    bounded by ``probe_timeout_s`` ejects and readmits replicas and measures their lag.
    """

    eject_s: float = 5.0
    weights: Sequence[float] = ()
    probe_interval_s: float | None = None
    probe_timeout_s: float = 1.0


@dataclass(frozen=True, slots=True, kw_only=True)
class MonitorOptions:
    """What the background monitor watches, every ``interval_s``.

    A checkout held past ``leak_detection_threshold_s`` is logged with its stack; one held past
    ``reclaim_after_s`` is invalidated and its holder gets ``ConnectionReclaimedError`` (both off
    by default); the pool statistics are logged every ``stats_log_interval_s``. A request left
    without an answer for ``stuck_after_s`` is reported to the provider's ``on_stuck`` (off by
    default; the container sets it to the breaker's slow-call duration).
    """

    interval_s: float = 1.0
    leak_detection_threshold_s: float | None = None
    reclaim_after_s: float | None = None
    stats_log_interval_s: float | None = 60.0
    stuck_after_s: float | None = None


#: The defaults, shared (the groups are frozen) so that a constructor's signature can name them.
DEFAULT_POOL = PoolOptions()
DEFAULT_TIMEOUTS = TimeoutOptions()
DEFAULT_REPLICAS = ReplicaOptions()
DEFAULT_MONITOR = MonitorOptions()
