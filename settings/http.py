"""The HTTP service (``alchemy-hex serve``): where it listens and how it stops."""

from __future__ import annotations

from typing import Self

from pydantic import Field, model_validator

from settings.group import SettingsGroup


class HttpSettings(SettingsGroup):
    """Where ``alchemy-hex serve`` listens and how it drains.

    On SIGTERM readiness fails at once and new requests get 503 for ``drain_delay_s`` (time for a
    load balancer to notice), then the listener closes and requests in flight have
    ``shutdown_timeout_s`` to finish; the whole stop takes at most the sum of the two (keep it
    under the orchestrator's grace period, 30 s on Kubernetes). ``retry_after_s`` is the
    ``Retry-After`` of a 503 with no better estimate (draining, database unavailable, pool full).
    With ``max_in_flight`` set, a request arriving while that many others run (probes aside) is
    refused at once with 503 (problem type ``overloaded``) instead of queueing for CPU.
    """

    host: str = Field(default="127.0.0.1", min_length=1, max_length=255)
    port: int = Field(default=8000, ge=1, le=65535)
    drain_delay_s: float = Field(default=5.0, ge=0, le=300)
    shutdown_timeout_s: float = Field(default=20.0, ge=1, le=600)
    retry_after_s: int = Field(default=1, ge=1, le=3600)
    max_in_flight: int | None = Field(default=None, ge=1, le=100_000)

    @model_validator(mode="after")
    def _check_host(self) -> Self:
        if any(char.isspace() for char in self.host):
            raise ValueError("http.host: must not contain spaces")
        return self
