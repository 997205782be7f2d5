"""The HTTP service's own options (the ``http`` settings group feeds them)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class HttpOptions:
    """Where to listen and how to stop.

    ``drain_delay_s``: after SIGTERM, how long the service keeps its listener open while failing
    readiness and refusing new requests with 503 (so a load balancer has time to stop sending),
    before it stops accepting connections. ``shutdown_timeout_s``: then, how long requests in
    flight may take to finish before they are cancelled. ``retry_after_s``: the ``Retry-After`` of
    a refusal that has no better estimate (draining, an unavailable database, a full pool).
    """

    host: str = "127.0.0.1"
    port: int = 8000
    drain_delay_s: float = 5.0
    shutdown_timeout_s: float = 20.0
    retry_after_s: int = 1
