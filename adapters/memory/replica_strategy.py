"""Replica strategies that need no I/O: round robin, random, weighted, least in flight, lag-aware,
and the writer-only null object. Each is given the replicas' current views and picks a healthy one.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

from ports.connection_provider import ReplicaView
from ports.replica_strategy import ReplicaStrategy


class RoundRobinReplicaStrategy(ReplicaStrategy):
    """Takes the healthy replicas in turn, in the order given, skipping the unhealthy ones.

    Each choice is the first healthy replica after the previous choice, cyclically, so while the
    list and health stay put the healthy replicas take strict turns, whichever ones are down.
    The cursor is a position rather than a name so that a list which grows or shrinks needs no
    bookkeeping; only the turn in progress may then be uneven.
    Weight, lag and connections in flight are ignored (``LagAwareReplicaStrategy`` wraps this one
    to skip lagging replicas). Safe to share between tasks of one event loop.
    """

    def __init__(self) -> None:
        self._cursor = 0

    def choose(self, replicas: Sequence[ReplicaView]) -> ReplicaView | None:
        """The next healthy replica after the previous choice, or ``None`` when none is healthy."""
        count = len(replicas)
        for step in range(count):
            index = (self._cursor + step) % count
            if replicas[index].healthy:
                self._cursor = (index + 1) % count
                return replicas[index]
        return None


class RandomReplicaStrategy(ReplicaStrategy):
    """Picks a healthy replica uniformly at random; ``rng`` is injected so tests can seed it.

    Without coordination, many service instances spread their reads evenly this way, where round
    robin cursors that start together would hit the same replica together.
    """

    def __init__(self, *, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()

    def choose(self, replicas: Sequence[ReplicaView]) -> ReplicaView | None:
        """A uniformly random healthy replica, or ``None`` when none is healthy."""
        healthy = [view for view in replicas if view.healthy]
        return self._rng.choice(healthy) if healthy else None


class WeightedReplicaStrategy(ReplicaStrategy):
    """Smooth weighted round robin (nginx's): each healthy replica gets its weight's share of reads.

    Every choice adds each candidate's weight to its credit, takes the candidate with the most
    credit and charges it the total weight. Over any run of choices the shares match the weights
    within one choice, interleaved (5:1:1 gives a a b a c a a, not a a a a a b c), and with no
    randomness. A replica of weight 0 gets no reads: a way to drain one without a restart.
    """

    def __init__(self) -> None:
        self._credit: dict[str, float] = {}

    def choose(self, replicas: Sequence[ReplicaView]) -> ReplicaView | None:
        """The healthy replica of weight > 0 with the most credit, or ``None`` when there is none."""
        candidates = [view for view in replicas if view.healthy and view.weight > 0]
        if not candidates:
            return None
        # A replica leaving the rotation takes its credit with it, so it cannot return with a burst.
        self._credit = {view.name: self._credit.get(view.name, 0.0) + view.weight for view in candidates}
        chosen = max(candidates, key=lambda view: self._credit[view.name])
        self._credit[chosen.name] -= sum(view.weight for view in candidates)
        return chosen


class LeastInFlightReplicaStrategy(ReplicaStrategy):
    """Picks the healthy replica with the fewest connections in flight; ties take turns.

    A slow replica keeps its connections longer, so it gets fewer new reads without any latency
    measurement. Taking turns among ties matters: at low load every replica has 0 in flight.
    """

    def __init__(self) -> None:
        self._turn = 0

    def choose(self, replicas: Sequence[ReplicaView]) -> ReplicaView | None:
        """A healthy replica with the fewest in flight, or ``None`` when none is healthy."""
        healthy = [view for view in replicas if view.healthy]
        if not healthy:
            return None
        fewest = min(view.in_flight for view in healthy)
        tied = [view for view in healthy if view.in_flight == fewest]
        self._turn += 1
        return tied[self._turn % len(tied)]


class LagAwareReplicaStrategy(ReplicaStrategy):
    """Skips replicas whose measured replay lag exceeds ``max_lag_s``, then asks ``inner`` (round robin).

    A replica of unknown lag (not probed yet, or the writer unreachable, when replicas are as fresh
    as anything can be) is not skipped. When every healthy replica lags, it returns ``None``: the
    read goes to the writer or fails with ``NoHealthyReplicaError``, as configured. ``on_skip`` is
    told each replica passed over, so the provider can count it (it must not raise).
    """

    def __init__(
        self,
        *,
        max_lag_s: float,
        inner: ReplicaStrategy | None = None,
        on_skip: Callable[[str], None] | None = None,
    ) -> None:
        self._max_lag_s = max_lag_s
        self._inner = inner or RoundRobinReplicaStrategy()
        self._on_skip = on_skip

    def choose(self, replicas: Sequence[ReplicaView]) -> ReplicaView | None:
        """The inner strategy's choice among the healthy replicas within ``max_lag_s``."""
        fresh = []
        for view in replicas:
            if view.lag_s is not None and view.lag_s > self._max_lag_s:
                if view.healthy and self._on_skip is not None:
                    self._on_skip(view.name)
            else:
                fresh.append(view)
        return self._inner.choose(fresh)


class WriterOnlyReplicaStrategy(ReplicaStrategy):
    """The switched-off strategy: never picks a replica, so every read goes to the writer."""

    def choose(self, replicas: Sequence[ReplicaView]) -> ReplicaView | None:
        """Always ``None``."""
        return None
