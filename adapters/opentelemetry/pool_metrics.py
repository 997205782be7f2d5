"""The pools' metrics under the semantic conventions' names: ``db.client.connection.*`` and operations.

Two halves. :class:`OtelPoolObservers` is handed to the provider (``observe=``) and records the
four histograms as each wait, use, connect and statement ends. :func:`observe_pools` registers
the observable instruments, which read ``provider.stats()`` (and the gate's queues) only when a
reader collects: connections by state, the configured maxima, pending requests, timeouts, plus
this project's admission, replica, read-route and client-deadline figures.
"""

from __future__ import annotations

import functools
import re
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Final, TypeVar

from opentelemetry import trace
from opentelemetry.metrics import CallbackOptions, Meter, Observation

from adapters.opentelemetry.names import (
    CONNECTION_STATE,
    DB_OPERATION,
    DB_STATUS_CODE,
    DB_SYSTEM,
    ERROR_TYPE,
    OPERATION_BUCKETS_S,
    POOL_BUCKETS_S,
    POOL_NAME,
    PRIORITY,
    READ_ROUTE,
    TARGET,
)
from adapters.sqlalchemy.pool_observer import PoolObserver
from ports.connection_provider import Priority, ProviderStats, ReplicaStats, TargetStats

__all__ = ["OtelPoolObservers", "observe_pools", "operation_name"]

# The statement's first keyword, after comments; anything else is reported as "OTHER", so that
# the attribute's values stay a short, fixed list whatever SQL a repository sends.
_FIRST_WORD: Final = re.compile(r"(?:\s+|--[^\n]*\n|/\*.*?\*/)*([A-Za-z]+)", re.S)
_KNOWN_OPERATIONS: Final = frozenset(
    {
        "SELECT", "INSERT", "UPDATE", "DELETE", "MERGE", "WITH", "VALUES", "COPY", "CALL", "LOCK",
        "SAVEPOINT", "RELEASE", "ROLLBACK", "SET", "SHOW", "TRUNCATE", "CREATE", "ALTER", "DROP",
    }
)  # fmt: skip


@functools.lru_cache(maxsize=2048)
def operation_name(statement: str) -> str:
    """``db.operation.name`` of ``statement``: its first keyword when it is a known one, else ``OTHER``."""
    match = _FIRST_WORD.match(statement)
    word = match.group(1).upper() if match else ""
    return word if word in _KNOWN_OPERATIONS else "OTHER"


class OtelPoolObservers:
    """The histograms every target's observer records into; ``observers(name)`` makes one per target."""

    def __init__(self, meter: Meter) -> None:
        self._wait = meter.create_histogram(
            "db.client.connection.wait_time",
            unit="s",
            description="The time it took to obtain an open connection from the pool.",
            explicit_bucket_boundaries_advisory=POOL_BUCKETS_S,
        )
        self._use = meter.create_histogram(
            "db.client.connection.use_time",
            unit="s",
            description="The time between borrowing a connection and returning it to the pool.",
            explicit_bucket_boundaries_advisory=POOL_BUCKETS_S,
        )
        self._create = meter.create_histogram(
            "db.client.connection.create_time",
            unit="s",
            description="The time it took to create a new connection.",
            explicit_bucket_boundaries_advisory=POOL_BUCKETS_S,
        )
        self._operation = meter.create_histogram(
            "db.client.operation.duration",
            unit="s",
            description="Duration of database client operations.",
            explicit_bucket_boundaries_advisory=OPERATION_BUCKETS_S,
        )
        self._queued = meter.create_histogram(
            "alchemy_hex.admission.wait_time",
            unit="s",
            description="How long requests that had to queue for a connection waited, by priority.",
            explicit_bucket_boundaries_advisory=POOL_BUCKETS_S,
        )

    def __call__(self, target: str) -> PoolObserver:
        return _TargetObserver(self, target)


class _TargetObserver(PoolObserver):
    """One target's recorder: attribute sets built once, one ``record`` per duration."""

    __slots__ = ("_by_priority", "_create", "_operation", "_operations", "_pool", "_queued", "_use", "_wait")

    def __init__(self, instruments: OtelPoolObservers, target: str) -> None:
        self._pool = {POOL_NAME: target}
        self._wait = instruments._wait.record
        self._use = instruments._use.record
        self._create = instruments._create.record
        self._queued = instruments._queued.record
        self._operation = instruments._operation.record
        self._by_priority = {p: {TARGET: target, PRIORITY: p.name.lower()} for p in Priority}
        self._operations: dict[str, dict[str, str]] = {}

    def waited(self, seconds: float, priority: Priority) -> None:
        self._wait(seconds, self._pool)
        if seconds > 0:  # queued: the rare path, where a span event is worth its cost
            self._queued(seconds, self._by_priority[priority])
            trace.get_current_span().add_event(
                "admission.waited",
                {TARGET: self._pool[POOL_NAME], PRIORITY: priority.name.lower(), "wait_s": seconds},
            )

    def used(self, seconds: float) -> None:
        self._use(seconds, self._pool)

    def created(self, seconds: float) -> None:
        self._create(seconds, self._pool)

    def operation(self, seconds: float, statement: str, error: BaseException | None) -> None:
        name = operation_name(statement)
        if error is None:
            attributes = self._operations.get(name)
            if attributes is None:
                attributes = self._operations[name] = {
                    DB_SYSTEM: "postgresql",
                    DB_OPERATION: name,
                    **self._pool,
                }
            self._operation(seconds, attributes)
            return
        failed = {DB_SYSTEM: "postgresql", DB_OPERATION: name, **self._pool, ERROR_TYPE: _error_type(error)}
        sqlstate = getattr(error, "sqlstate", None)
        if isinstance(sqlstate, str) and len(sqlstate) == 5:
            failed[DB_STATUS_CODE] = sqlstate
        self._operation(seconds, failed)


def _error_type(error: BaseException) -> str:
    # The driver's own exception when the dialect wrapped it (asyncpg's names say what failed).
    cause = error.__cause__ or error
    return type(cause).__name__


def observe_pools(
    meter: Meter,
    stats: Callable[[], ProviderStats],
    *,
    limits: tuple[int, int, int],
    queued: Callable[[str], Mapping[Priority, int]],
) -> Callable[[], None]:
    """Register the pools' observable instruments; returns the function that stops them observing.

    ``limits`` is ``(max, idle_max, idle_min)`` connections per pool; ``queued(target)`` the
    waiters by priority. The callbacks hold ``stats`` and ``queued`` weakly when they are bound
    methods, and observe nothing once stopped, so a meter that outlives the provider (the API's
    global one) neither keeps it alive nor reads a disposed pool.
    """
    source = _Source(stats, queued)
    maximum, idle_max, idle_min = limits

    def connections(_options: CallbackOptions) -> Iterator[Observation]:
        for t in source.targets():
            yield Observation(t.idle, {CONNECTION_STATE: "idle", POOL_NAME: t.name})
            yield Observation(t.in_use, {CONNECTION_STATE: "used", POOL_NAME: t.name})

    def configured(value: int) -> Callable[[CallbackOptions], Iterator[Observation]]:
        def observe(_options: CallbackOptions) -> Iterator[Observation]:
            for t in source.targets():
                yield Observation(value, {POOL_NAME: t.name})

        return observe

    def of_targets(field: str, key: str = POOL_NAME) -> Callable[[CallbackOptions], Iterator[Observation]]:
        def observe(_options: CallbackOptions) -> Iterator[Observation]:
            for t in source.targets():
                yield Observation(getattr(t, field), {key: t.name})

        return observe

    def queue_lengths(_options: CallbackOptions) -> Iterator[Observation]:
        for t in source.targets():
            for priority, count in source.queued(t.name).items():
                yield Observation(count, {TARGET: t.name, PRIORITY: priority.name.lower()})

    def routes(_options: CallbackOptions) -> Iterator[Observation]:
        snapshot = source.snapshot()
        for route, count in (snapshot.read_routes if snapshot else {}).items():
            yield Observation(count, {READ_ROUTE: route})

    def replica_lag(_options: CallbackOptions) -> Iterator[Observation]:
        for r in source.replicas():
            if r.lag_s is not None:
                yield Observation(r.lag_s, {TARGET: r.name})

    def replica_health(_options: CallbackOptions) -> Iterator[Observation]:
        for r in source.replicas():
            yield Observation(int(r.healthy), {TARGET: r.name})

    def replica_ejections(_options: CallbackOptions) -> Iterator[Observation]:
        for r in source.replicas():
            yield Observation(r.ejections, {TARGET: r.name})

    up_down, counter, gauge = (
        meter.create_observable_up_down_counter,
        meter.create_observable_counter,
        meter.create_observable_gauge,
    )
    up_down(
        "db.client.connection.count",
        [connections],
        unit="{connection}",
        description="The number of connections that are currently in state described by the state attribute.",
    )
    up_down(
        "db.client.connection.max",
        [configured(maximum)],
        unit="{connection}",
        description="The maximum number of open connections allowed.",
    )
    up_down(
        "db.client.connection.idle.max",
        [configured(idle_max)],
        unit="{connection}",
        description="The maximum number of idle open connections allowed.",
    )
    up_down(
        "db.client.connection.idle.min",
        [configured(idle_min)],
        unit="{connection}",
        description="The minimum number of idle open connections allowed.",
    )
    up_down(
        "db.client.connection.pending_requests",
        [of_targets("waiting")],
        unit="{request}",
        description="The number of current pending requests for an open connection.",
    )
    counter(
        "db.client.connection.timeouts",
        [of_targets("timed_out")],
        unit="{timeout}",
        description="The number of connection timeouts that have occurred trying to obtain a connection.",
    )
    up_down(
        "alchemy_hex.admission.queue_length",
        [queue_lengths],
        unit="{request}",
        description="Requests waiting for a connection, by target and priority.",
    )
    counter(
        "alchemy_hex.admission.rejections",
        [of_targets("rejected", TARGET)],
        unit="{request}",
        description="Requests refused at once because the wait queue was full.",
    )
    counter(
        "alchemy_hex.client_deadline.cutoffs",
        [of_targets("unresponsive", TARGET)],
        unit="{connection}",
        description="Connections closed because a request had no answer within the client deadline.",
    )
    counter(
        "alchemy_hex.connections.lost",
        [of_targets("lost", TARGET)],
        unit="{connection}",
        description="Connections found broken (server gone, terminated, failed pre-ping) and replaced.",
    )
    counter(
        "alchemy_hex.reads",
        [routes],
        unit="{unit_of_work}",
        description="Read units of work by route: why each ran where it did.",
    )
    gauge(
        "alchemy_hex.replica.lag",
        [replica_lag],
        unit="s",
        description="How long the writer's position took to become visible on the replica at the last probe.",
    )
    gauge(
        "alchemy_hex.replica.healthy",
        [replica_health],
        unit="",
        description="1 while the replica is in rotation, 0 while it is ejected.",
    )
    counter(
        "alchemy_hex.replica.ejections",
        [replica_ejections],
        unit="{ejection}",
        description="How many times the replica was taken out of rotation.",
    )
    return source.stop


class _Source:
    """The provider as the callbacks see it: held weakly, nothing once stopped."""

    def __init__(
        self, stats: Callable[[], ProviderStats], queued: Callable[[str], Mapping[Priority, int]]
    ) -> None:
        self._stats = _weak(stats)
        self._queued = _weak(queued)
        self._stopped = False

    def stop(self) -> None:
        self._stopped = True

    def snapshot(self) -> ProviderStats | None:
        stats = None if self._stopped else self._stats()
        return None if stats is None else stats()

    def targets(self) -> Iterable[TargetStats]:
        snapshot = self.snapshot()
        return () if snapshot is None else snapshot.targets

    def replicas(self) -> Iterable[ReplicaStats]:
        snapshot = self.snapshot()
        return () if snapshot is None else snapshot.replicas

    def queued(self, target: str) -> Mapping[Priority, int]:
        queued = None if self._stopped else self._queued()
        return {} if queued is None else queued(target)


F = TypeVar("F", bound=Callable[..., Any])


def _weak(function: F) -> Callable[[], F | None]:
    """A weak reference to a bound method (the provider's), a strong one to a plain function."""
    if hasattr(function, "__self__"):
        return weakref.WeakMethod(function)
    return lambda: function
