"""The ``ReplicaStrategy`` port."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from ports.connection_provider import ReplicaView


class ReplicaStrategy(Protocol):
    """Chooses which replica serves a read unit of work.

    ``choose`` receives the replicas' current views (health, connections in flight, measured lag,
    configured weight) and returns one of the healthy ones, or ``None`` when none should be used
    (the caller then tries another replica if the chosen one fails, and finally falls back to the
    writer or raises :class:`ports.errors.NoHealthyReplicaError`, as configured). It never blocks,
    does no I/O and never raises. Safe to share between tasks of one event loop.
    """

    def choose(self, replicas: Sequence[ReplicaView]) -> ReplicaView | None:
        """Pick a healthy replica or ``None``."""
        ...
