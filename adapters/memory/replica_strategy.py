"""Replica strategies that need no I/O: round robin, and the writer-only null object."""

from __future__ import annotations

from collections.abc import Sequence

from ports.connection_provider import ReplicaView
from ports.replica_strategy import ReplicaStrategy


class RoundRobinReplicaStrategy(ReplicaStrategy):
    """Takes the healthy replicas in turn, in the order given, skipping the unhealthy ones.

    Each choice is the first healthy replica after the previous choice, cyclically, so while the
    list and health stay put the healthy replicas take strict turns, whichever ones are down.
    The cursor is a position rather than a name so that a list which grows or shrinks needs no
    bookkeeping; only the turn in progress may then be uneven.
    Weight, lag and connections in flight are ignored: deciding that a lagging replica is unusable
    is the provider's job (it reports it unhealthy). Safe to share between tasks of one event loop.
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


class WriterOnlyReplicaStrategy(ReplicaStrategy):
    """The switched-off strategy: never picks a replica, so every read goes to the writer."""

    def choose(self, replicas: Sequence[ReplicaView]) -> ReplicaView | None:
        """Always ``None``."""
        return None
