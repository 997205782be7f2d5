"""What the lifespan shares with the requests (Starlette's lifespan state), and how routes read it."""

from __future__ import annotations

from typing import Any, TypedDict, TypeVar

from starlette.requests import Request

from http_api.health import HealthSources
from ports.errors import ShuttingDownError

T = TypeVar("T")


class ServiceState(TypedDict):
    """The lifespan's state: copied into every request's ``request.state``."""

    services: Any
    health: HealthSources


class NotStartedError(ShuttingDownError):
    """A request reached the app before its lifespan started the container (or after it stopped)."""


def services_of(request: Request, kind: type[T]) -> T:
    """The domain's services from the lifespan state, or :class:`NotStartedError` (a 503)."""
    services = getattr(request.state, "services", None)
    if not isinstance(services, kind):
        raise NotStartedError("the service has not started")
    return services
