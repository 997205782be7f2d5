"""The ``CircuitBreaker`` port."""

from __future__ import annotations

import enum
from contextlib import AbstractContextManager
from typing import Protocol


class BreakerState(enum.StrEnum):
    """The classic three states of a circuit breaker."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker(Protocol):
    """Stops calling a target (the writer or one replica) that keeps failing.

    One circuit per target name, so a dead replica never blocks the writer. ``guard(target)`` is
    a context manager around one call: entering raises :class:`ports.errors.CircuitOpenError` (with
    ``retry_after_s``) when the circuit refuses the call; leaving records the outcome. Only
    :class:`ports.errors.InfrastructureError` counts as a failure: domain and data errors mean
    the database answered, so they count as successes. A cancelled call records nothing but
    frees its half-open trial slot. Safe to share between tasks of one event loop.
    """

    def guard(self, target: str) -> AbstractContextManager[None]:
        """Admit one call to ``target`` or raise ``CircuitOpenError``; record its outcome on exit."""
        ...

    def state(self, target: str) -> BreakerState:
        """The current state of ``target``'s circuit (``CLOSED`` for a target never seen)."""
        ...
