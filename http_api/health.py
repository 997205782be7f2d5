"""``/livez`` and ``/readyz`` in ``application/health+json`` (draft-inadarei-api-health-check-06).

Liveness says the event loop answers and reads nothing else: not the database, the breaker or
the pool (a database outage must not get every instance restarted at once). Readiness reads only
state the service already holds, ``provider.stats()`` and the breaker's state, so a probe never
runs a query: it fails (503) before start-up completes and from the first moment of a drain; a
shared dependency in trouble (an open circuit, a waiting queue, a replica out of rotation) is a
``warn`` with 200, since failing every instance's readiness at once would leave the load
balancer nothing to send the fast 503s to.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from starlette.requests import Request
from starlette.responses import JSONResponse

from http_api.lifecycle import Lifecycle, Phase
from ports.circuit_breaker import BreakerState, CircuitBreaker
from ports.connection_provider import ConnectionProvider, ProviderStats

HEALTH_JSON: Final = "application/health+json"
_NO_STORE: Final = {"cache-control": "no-store"}


@dataclass(frozen=True, slots=True)
class HealthSources:
    """What readiness reads: the provider's statistics and the circuit breaker's states."""

    provider: ConnectionProvider[Any]
    breaker: CircuitBreaker


def liveness() -> JSONResponse:
    return JSONResponse({"status": "pass"}, media_type=HEALTH_JSON, headers=_NO_STORE)


def readiness(request: Request, lifecycle: Lifecycle) -> JSONResponse:
    sources = getattr(request.state, "health", None)
    now = datetime.now(UTC).isoformat()
    phase = lifecycle.phase if isinstance(sources, HealthSources) else Phase.STARTING
    checks: dict[str, list[dict[str, object]]] = {
        "service:phase": [
            _check("component", phase.value, None, "pass" if phase is Phase.READY else "fail", now)
        ]
    }
    if isinstance(sources, HealthSources) and phase is Phase.READY:
        checks |= _target_checks(sources.provider.stats(), sources.breaker, now)
    statuses = {check["status"] for entries in checks.values() for check in entries}
    status = "fail" if "fail" in statuses else "warn" if "warn" in statuses else "pass"
    body: dict[str, object] = {"status": status, "checks": checks}
    if status == "fail":
        body["output"] = f"not ready: {phase.value}"
    return JSONResponse(
        body, status_code=503 if status == "fail" else 200, media_type=HEALTH_JSON, headers=_NO_STORE
    )


def _check(
    kind: str, value: object, unit: str | None, status: str, now: str, **extra: object
) -> dict[str, object]:
    check: dict[str, object] = {"componentType": kind, "observedValue": value, "status": status, "time": now}
    if unit is not None:
        check["observedUnit"] = unit
    return check | extra


def _target_checks(
    stats: ProviderStats, breaker: CircuitBreaker, now: str
) -> dict[str, list[dict[str, object]]]:
    checks: dict[str, list[dict[str, object]]] = {}
    for target in stats.targets:
        state = breaker.state(target.name)
        checks[f"{target.name}:breaker"] = [
            _check("datastore", state.value, None, "pass" if state is BreakerState.CLOSED else "warn", now)
        ]
        checks[f"{target.name}:connections"] = [
            _check(
                "datastore",
                target.in_use,
                "connections",
                "warn" if target.waiting else "pass",
                now,
                waiting=target.waiting,
                size=target.size,
                idle=target.idle,
            )
        ]
    for replica in stats.replicas:
        lag = None if replica.lag_s is None else round(replica.lag_s, 4)
        extra: dict[str, object] = (
            {} if replica.ejected is None else {"output": f"ejected: {replica.ejected}"}
        )
        checks[f"{replica.name}:lag"] = [
            _check("datastore", lag, "s", "pass" if replica.healthy else "warn", now, **extra)
        ]
    return checks
