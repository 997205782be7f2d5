"""``create_app(settings)``: the FastAPI app, its lifespan, error handlers and probes.

The lifespan owns every resource: it builds the container, starts its resources, builds the use
cases once and shares them through the lifespan state; on the way out (after uvicorn has let
requests in flight finish) it disposes the container, last. Logging is the entrypoint's to
configure (:func:`http_api.serve` does), since it is process-wide; given the entrypoint's
scrubber, the lifespan makes it mask every secret the credential providers hand out.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Final, Protocol

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse, Response

from container import create_container, start_resources, stop_resources, watch_served_secrets
from domain.errors import DomainError
from http_api.health import HealthSources, liveness, readiness
from http_api.idempotency import IdempotencyHeaderError, InFlightKeys, KeyInFlightError
from http_api.ledger import LEDGER_PROBLEMS, LedgerServices
from http_api.ledger import router as ledger_router
from http_api.lifecycle import Lifecycle
from http_api.middleware import RequestContextMiddleware
from http_api.problems import Problem, ProblemMapper, problem_response
from http_api.state import ServiceState
from http_api.tracing import TracingMiddleware
from ports.errors import HexError
from settings import Settings

if TYPE_CHECKING:
    from telemetry import Telemetry


class SecretWatcher(Protocol):
    """The log scrubber, as the lifespan needs it: told of every secret a credential source serves."""

    def watch(self, source: Callable[[], Iterable[str]]) -> None: ...


_PROBLEM_SCHEMA: Final = {
    "type": "object",
    "description": "RFC 9457 problem details",
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "request_id": {"type": "string"},
    },
    "required": ["type", "title", "status", "detail", "request_id"],
}


def create_app(
    settings: Settings,
    *,
    lifecycle: Lifecycle | None = None,
    scrubber: SecretWatcher | None = None,
    telemetry: Telemetry | None = None,
) -> FastAPI:
    """The HTTP service for ``settings``; nothing connects until the lifespan starts.

    With ``telemetry`` (``telemetry.prometheus_telemetry()``, the ``telemetry`` extra), the
    container records its metrics to that SDK and ``GET /metrics`` serves the Prometheus
    exposition, collected on the event loop that owns the state it reads; when it was given span
    processors, the request spans (:mod:`http_api.tracing`) and the use cases' go to its tracer
    provider, else to the API's global one (a no-op until an SDK is installed).
    """
    options = settings.http
    lifecycle = lifecycle or Lifecycle()
    mapper = ProblemMapper(LEDGER_PROBLEMS, retry_after_s=options.retry_after_s)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[ServiceState]:
        container = create_container(settings)
        if telemetry is not None:
            from telemetry import use_telemetry

            # Spans are recorded only when they go somewhere: serve's telemetry has no span processor.
            use_telemetry(container, telemetry, traces=telemetry.exports_spans)
        if scrubber is not None:
            # The container's helper names the adapter's class, which this package may not import;
            # the scrubber setup_logging() returned is one.
            watch_served_secrets(container, scrubber)  # type: ignore[arg-type]
        await start_resources(container)
        try:
            services = LedgerServices(
                open_account=container.open_account(),
                deposit=container.deposit(),
                transfer=container.transfer(),
                get_balance=container.get_balance(),
                get_statement=container.get_statement(),
                in_flight=InFlightKeys(retry_after_s=options.retry_after_s),
            )
            health = HealthSources(container.connection_provider(), container.circuit_breaker())
            lifecycle.mark_ready()
            yield {"services": services, "health": health}
        finally:
            lifecycle.mark_stopped()
            await stop_resources(container)

    app = FastAPI(
        title="alchemy-hex ledger",
        version="0.1.0",
        description="The example ledger's use cases over HTTP; errors are RFC 9457 problem details.",
        lifespan=lifespan,
        # The request's SERVER span is TracingMiddleware's: FastAPI's native one would be a second
        # span for the same request as soon as a global tracer provider exists.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.include_router(ledger_router)
    if telemetry is not None:
        exported = telemetry

        @app.get("/metrics", include_in_schema=False)
        async def metrics() -> Response:
            """The Prometheus exposition, collected here on the loop whose state it reads."""
            body, content_type = exported.exposition()
            return Response(body, media_type=content_type)

    _add_probes(app, lifecycle)
    _add_error_handlers(app, mapper)
    app.add_middleware(
        RequestContextMiddleware,
        lifecycle=lifecycle,
        retry_after_s=options.retry_after_s,
        max_in_flight=options.max_in_flight,
    )
    # Outermost of ours (added last): the request id's log lines and the use cases run in its span.
    spans = telemetry.tracer_provider if telemetry is not None and telemetry.exports_spans else None
    app.add_middleware(TracingMiddleware, tracer_provider=spans)
    _document_problems(app)
    return app


def _add_probes(app: FastAPI, lifecycle: Lifecycle) -> None:
    @app.get("/livez", tags=["probes"], response_class=JSONResponse)
    async def livez() -> Response:
        """Liveness: the event loop answers (nothing else is read)."""
        return liveness()

    @app.get("/readyz", tags=["probes"], response_class=JSONResponse)
    async def readyz(request: Request) -> Response:
        """Readiness, with a check per target; 503 before start-up completes and while draining."""
        return readiness(request, lifecycle)


def _request_id(request: Request) -> str:
    value = getattr(request.state, "request_id", "")
    return value if isinstance(value, str) else ""


def _add_error_handlers(app: FastAPI, mapper: ProblemMapper) -> None:
    async def mapped(request: Request, error: Exception) -> Response:
        return problem_response(mapper(error), _request_id(request))

    async def carried(request: Request, error: Exception) -> Response:
        problem: Problem = getattr(error, "problem")  # noqa: B009  (both error types carry one)
        return problem_response(problem, _request_id(request))

    async def invalid(request: Request, error: Exception) -> Response:
        assert isinstance(error, RequestValidationError)
        # loc, msg and type only: the input and context may echo whatever the client sent.
        errors = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in error.errors()]
        problem = Problem(
            422,
            "validation",
            "Invalid request",
            "the request does not match its schema",
            None,
            {"errors": errors},
        )
        return problem_response(problem, _request_id(request))

    async def http_error(request: Request, error: Exception) -> Response:
        assert isinstance(error, HTTPException)
        detail = error.detail if isinstance(error.detail, str) else "HTTP error"
        problem = Problem(error.status_code, f"http-{error.status_code}", detail, detail)
        return problem_response(problem, _request_id(request), headers=error.headers)

    app.add_exception_handler(DomainError, mapped)
    app.add_exception_handler(HexError, mapped)
    app.add_exception_handler(IdempotencyHeaderError, carried)
    app.add_exception_handler(KeyInFlightError, carried)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(HTTPException, http_error)


def _document_problems(app: FastAPI) -> None:
    """Add the ``Problem`` schema the routes' error responses refer to."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            schema.setdefault("components", {}).setdefault("schemas", {})["Problem"] = _PROBLEM_SCHEMA
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way to extend the schema
