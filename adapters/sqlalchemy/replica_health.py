"""Replica health and read routing: what the provider knows of each replica, and where reads went.

A replica is out of rotation ("ejected") while a connection to it has just failed (for
``replica_eject_s``), or while the last probe failed: unreachable, or promoted (it left recovery,
so it no longer follows the writer). A probe that starts after the failure and succeeds readmits
it (see ``replica_probe.ReplicaProber``, which also measures lag).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import structlog

from adapters.sqlalchemy.targets import Target
from ports.connection_provider import (
    CausalToken,
    ProviderStats,
    ReadRoute,
    ReplicaStats,
    ReplicaView,
    TargetStats,
)

log = structlog.get_logger(__name__)


@dataclass(slots=True)
class ReplicaHealth:
    """One replica's standing: ejection, recovery, lag, the furthest replay position seen, counters."""

    name: str
    weight: float = 1.0
    ejected: str | None = None
    ejected_until: float = 0.0
    failed_at: float = -math.inf
    in_recovery: bool | None = None
    #: Seen in recovery once: leaving it later means it was promoted and no longer follows the writer.
    was_standby: bool = False
    lag_s: float | None = None
    replayed: int = 0
    reads: int = 0
    lag_skips: int = 0
    ejections: int = 0
    readmissions: int = 0
    probes: int = 0
    probe_failures: int = 0

    def healthy(self, now: float) -> bool:
        return self.ejected is None and now >= self.ejected_until

    def connect_failed(self, now: float, eject_s: float) -> None:
        """A pool connection failed: out of rotation for ``eject_s`` or until a later probe succeeds."""
        if self.healthy(now):
            self._eject("connect_failed")
        self.failed_at, self.ejected_until = now, now + eject_s

    def probe_failed(self, reason: str, now: float) -> None:
        self.probe_failures += 1
        if self.ejected is None and now >= self.ejected_until:
            self._eject(reason)
        self.ejected, self.failed_at = reason, now

    def probe_succeeded(self, *, started_at: float, in_recovery: bool, lag_s: float | None) -> None:
        self.in_recovery, self.lag_s = in_recovery, lag_s
        self.was_standby = self.was_standby or in_recovery
        if started_at < self.failed_at:
            return  # the probe began before the latest failure, so it proves nothing about it
        if self.ejected is not None or self.ejected_until > started_at:
            self.readmissions += 1
            log.info("replica.readmitted", target=self.name, lag_s=lag_s)
        self.ejected, self.ejected_until = None, 0.0

    def note_replayed(self, position: int) -> None:
        self.replayed = max(self.replayed, position)

    def _eject(self, reason: str) -> None:
        self.ejections += 1
        log.warning("replica.ejected", target=self.name, reason=reason)

    def stats(self, now: float, *, in_flight: int, reads: int) -> ReplicaStats:
        return ReplicaStats(
            name=self.name,
            healthy=self.healthy(now),
            ejected=None if self.healthy(now) else (self.ejected or "connect_failed"),
            in_recovery=self.in_recovery,
            lag_s=self.lag_s,
            weight=self.weight,
            in_flight=in_flight,
            reads=reads,
            lag_skips=self.lag_skips,
            ejections=self.ejections,
            readmissions=self.readmissions,
            probes=self.probes,
            probe_failures=self.probe_failures,
        )


class ReplicaSet:
    """The provider's replicas as the router sees them, and the counts of where reads went and why.

    Not thread-safe; every method is synchronous, so tasks of one event loop may share it.
    """

    def __init__(
        self,
        targets: Mapping[str, Target],
        *,
        weights: Sequence[float],
        eject_s: float,
        clock: Callable[[], float],
    ) -> None:
        replicas = [t for t in targets.values() if t.role == "replica"]
        if len(weights) != len(replicas):
            raise ValueError(f"{len(weights)} replica weights given for {len(replicas)} replicas")
        self._targets = targets
        self._eject_s = eject_s
        self._clock = clock
        pairs = zip(replicas, weights, strict=True)
        self.health = {t.name: ReplicaHealth(t.name, weight=weight) for t, weight in pairs}
        self._routes: Counter[ReadRoute] = Counter()
        self._reads_in_recovery = 0
        self._causal_waits = 0
        self._causal_wait_total_s = 0.0

    def views(self) -> tuple[ReplicaView, ...]:
        now, targets = self._clock(), self._targets
        return tuple(
            ReplicaView(h.name, h.healthy(now), targets[h.name].in_flight, lag_s=h.lag_s, weight=h.weight)
            for h in self.health.values()
        )

    def connect_failed(self, replica: str) -> None:
        self.health[replica].connect_failed(self._clock(), self._eject_s)

    def record_read(self, target: str, *, in_recovery: bool, route: ReadRoute) -> None:
        self._targets[target].reads += 1
        self._reads_in_recovery += in_recovery
        self._routes[route] += 1

    def record_lag_skip(self, replica: str) -> None:
        if (health := self.health.get(replica)) is not None:
            health.lag_skips += 1

    def has_replayed(self, replica: str, token: CausalToken) -> bool:
        health = self.health.get(replica)
        return health is not None and health.replayed >= token.position

    def note_replayed(self, replica: str, position: int) -> None:
        if (health := self.health.get(replica)) is not None:
            health.note_replayed(position)

    def record_causal_wait(self, waited_s: float) -> None:
        self._causal_waits += 1
        self._causal_wait_total_s += waited_s

    def stats(self, targets: tuple[TargetStats, ...]) -> ProviderStats:
        now, pools = self._clock(), self._targets
        return ProviderStats(
            targets=targets,
            reads_by_target={t.name: t.reads for t in pools.values()},
            reads_in_recovery=self._reads_in_recovery,
            writer_fallbacks=sum(n for route, n in self._routes.items() if route.is_fallback),
            read_routes={str(route): n for route, n in self._routes.items()},
            replicas=tuple(
                h.stats(now, in_flight=pools[h.name].in_flight, reads=pools[h.name].reads)
                for h in self.health.values()
            ),
            causal_waits=self._causal_waits,
            causal_wait_total_s=self._causal_wait_total_s,
        )
