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

    def record_stuck(self, target: str, calls: int) -> None:
        """``calls`` calls to ``target`` have had no answer from the server for the slow-call duration.

        They count at once, while still running, as failed slow calls (as Hystrix counts a
        timed-out command), so a frozen server opens the circuit without waiting for them to end;
        when they do end, they are not counted again. A stuck half-open trial reopens the circuit.
        """
        ...

    def recovered(self, target: str) -> None:
        """A probe outside the breaker reached ``target``: an open circuit half-opens now.

        Recovery then takes one probe rather than the whole recovery time; the trials decide, as
        they do after the recovery time. Nothing changes for a circuit that is not open.
        """
        ...
