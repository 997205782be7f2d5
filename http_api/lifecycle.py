"""Where the service is in its life: the readiness probe and the drain's refusals read it."""

from __future__ import annotations

import enum


class Phase(enum.StrEnum):
    """The phases in order; a service only ever moves forward."""

    #: The lifespan has not finished starting the container: not ready.
    STARTING = "starting"
    READY = "ready"
    #: SIGTERM arrived: readiness fails, new requests are refused, requests in flight finish.
    DRAINING = "draining"
    #: The lifespan is disposing the container (or has).
    STOPPED = "stopped"


class Lifecycle:
    """The service's phase, shared by the lifespan, the middleware, the probes and the server.

    One event loop reads and writes it, so a plain attribute is enough.
    """

    def __init__(self) -> None:
        self._phase = Phase.STARTING

    @property
    def phase(self) -> Phase:
        return self._phase

    @property
    def accepting(self) -> bool:
        """Whether new requests are taken (only while ready)."""
        return self._phase is Phase.READY

    @property
    def draining(self) -> bool:
        return self._phase is Phase.DRAINING

    def mark_ready(self) -> None:
        if self._phase is Phase.STARTING:
            self._phase = Phase.READY

    def begin_drain(self) -> None:
        """Fail readiness and refuse new requests from now on (idempotent)."""
        if self._phase in (Phase.STARTING, Phase.READY):
            self._phase = Phase.DRAINING

    def mark_stopped(self) -> None:
        self._phase = Phase.STOPPED
