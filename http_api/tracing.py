"""The request's ``SERVER`` span, continuing the caller's W3C trace, through the OpenTelemetry API only.

A pure ASGI middleware, the outermost of ours (so the request id's middleware, its log lines and
the use cases all run inside the span):

- **Trace context**: an incoming ``traceparent`` (and its ``tracestate``) is read with the API's
  W3C propagator; the request's span is then a child of the caller's span, in the caller's
  trace. A malformed ``traceparent`` is ignored, as the W3C spec says: the request starts a
  trace of its own. Only the W3C headers are read (the HTTP issue asks for ``traceparent``); a
  deployment that wants B3 or baggage configures its own propagator in front.
- **The span**: named ``{method} {route template}`` (``GET /accounts/{account_id}/balance``,
  never the raw path: the name is what backends group by, so its cardinality must stay bounded;
  just ``{method}`` when no route matched), with the HTTP semantic conventions' attributes:
  ``http.request.method``, ``url.scheme``, ``url.path`` (the raw path, ids included, is fine on a
  span, never on a metric), ``network.protocol.version``, ``http.route``,
  ``http.response.status_code``; a 5xx (or an exception) sets ``error.type`` and the error status.
  The route is known only once the router has matched, so the name is set as the span ends.
- **Cost**: with no SDK (the API's no-op tracer) and no ``traceparent`` the span is the API's
  invalid span and the request goes straight through: one scan of the header list, one call.
  With a ``traceparent`` but no SDK the caller's context is made current (the API's
  propagation-only behaviour), so log lines still carry the caller's trace id.

FastAPI's own native telemetry is switched off for tracing in :func:`http_api.create_app`:
once a global tracer provider exists it would make a second ``SERVER`` span per request.
"""

from __future__ import annotations

from typing import Final

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["SCOPE", "TracingMiddleware", "trace_carrier"]

#: The instrumentation scope of the request spans.
SCOPE: Final = "alchemy_hex.http"
_PROPAGATOR: Final = TraceContextTextMapPropagator()
#: The methods the semantic conventions name; any other is ``_OTHER`` (a bounded span name).
_KNOWN_METHODS: Final = frozenset(
    {"CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "QUERY", "TRACE"}
)


def trace_carrier(headers: list[tuple[bytes, bytes]]) -> dict[str, str] | None:
    """The W3C trace headers of a request as the propagator reads them, ``None`` without a ``traceparent``.

    The first ``traceparent`` counts; several ``tracestate`` headers are one list, joined with
    commas (RFC 9110 field-line combination, as the W3C spec allows).
    """
    carrier: dict[str, str] | None = None
    for name, value in headers:
        if name == b"traceparent":
            if carrier is None:
                carrier = {}
            carrier.setdefault("traceparent", value.decode("latin-1"))
        elif name == b"tracestate":
            if carrier is None:
                carrier = {}
            state = value.decode("latin-1")
            carrier["tracestate"] = f"{carrier['tracestate']},{state}" if "tracestate" in carrier else state
    return carrier if carrier is not None and "traceparent" in carrier else None


class TracingMiddleware:
    """One ``SERVER`` span per HTTP request, a child of the caller's when it sent ``traceparent``."""

    def __init__(self, app: ASGIApp, *, tracer_provider: trace.TracerProvider | None = None) -> None:
        self._app = app
        self._tracer = (tracer_provider or trace.get_tracer_provider()).get_tracer(SCOPE)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        carrier = trace_carrier(scope["headers"])
        parent = None if carrier is None else _PROPAGATOR.extract(carrier)
        method = scope["method"]
        if method not in _KNOWN_METHODS:
            method = "_OTHER"
        name = "HTTP" if method == "_OTHER" else method
        span = self._tracer.start_span(name, parent, SpanKind.SERVER)
        if not span.is_recording():
            await self._propagate_only(span, scope, receive, send)
            return
        span.set_attributes(
            {
                "http.request.method": method,
                "url.scheme": scope.get("scheme", "http"),
                "url.path": scope["path"],
                "network.protocol.version": scope.get("http_version", "1.1"),
            }
        )
        if method == "_OTHER":
            span.set_attribute("http.request.method_original", scope["method"])
        status = 0

        async def send_traced(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        token = otel_context.attach(trace.set_span_in_context(span))
        error: Exception | None = None
        try:
            await self._app(scope, receive, send_traced)
        except Exception as raised:
            error = raised
            raise
        finally:
            _finish(span, name, scope, status, error)
            otel_context.detach(token)

    async def _propagate_only(self, span: Span, scope: Scope, receive: Receive, send: Send) -> None:
        """No span is recorded: pass the caller's context on if there is one, else nothing at all."""
        if not span.get_span_context().is_valid:
            await self._app(scope, receive, send)
            return
        token = otel_context.attach(trace.set_span_in_context(span))
        try:
            await self._app(scope, receive, send)
        finally:
            otel_context.detach(token)


def _finish(span: Span, name: str, scope: Scope, status: int, error: Exception | None) -> None:
    """Name the span after the matched route, record the response's status, end it."""
    route = getattr(scope.get("route"), "path", None)
    if isinstance(route, str):
        span.set_attribute("http.route", route)
        span.update_name(f"{name} {route}")
    if status:
        span.set_attribute("http.response.status_code", status)
    if error is not None:
        span.record_exception(error)
        span.set_attribute("error.type", type(error).__qualname__)
        span.set_status(StatusCode.ERROR, type(error).__name__)
    elif status >= 500 or not status:
        # No response at all is a failure too: the semantic conventions' fallback error type.
        span.set_attribute("error.type", str(status) if status else "_OTHER")
        span.set_status(StatusCode.ERROR)
    span.end()
