"""The OpenTelemetry SDK for an entry point: metrics as a Prometheus exposition, spans to exporters.

The kernel records through the OpenTelemetry API only; this module (the ``telemetry`` extra) is
what an entry point adds to export it: an SDK ``MeterProvider`` whose ``PrometheusMetricReader``
writes to a private ``CollectorRegistry`` (so nothing else in the process, such as
prometheus_client's default process collectors, ends up on the page), and an SDK
``TracerProvider`` with the span processors given. Give both to the container
(:func:`use_telemetry`) before anything is resolved.

Serving the exposition is independent of any web framework: :meth:`Telemetry.exposition` renders
it (bytes and content type) for any handler, :meth:`Telemetry.asgi_app` is an ASGI app to mount at
``/metrics``, and :meth:`Telemetry.serve` answers ``GET /metrics`` on a port of its own, on the
event loop (the CLI demo's ``--metrics-port``). The exporter keeps its state in the process: run one
worker per process (no multiprocess mode); OTLP export, where wanted, is another reader or span
processor given here, not a change to the kernel.

SQL spans (``telemetry.sql_spans``, :func:`trace_sql`) come from
``opentelemetry-instrumentation-sqlalchemy``, attached to each engine of the connection provider
by the container. Not ``SQLAlchemyInstrumentor().instrument()``: its release line declares
``sqlalchemy < 2.1`` and does nothing on the 2.1 pinned here (a logged "nothing can be
instrumented") unless told ``skip_dep_check=True``; it is a process-wide singleton, so a second
container (another tracer provider, a test's) would get no spans; and it patches
``create_engine`` and ``Engine.connect`` for every engine of the process (the migration
provider's included) with a ``connect`` span per checkout. Its ``EngineTracer``, which that call
makes for an ``engine=`` anyway, only adds SQLAlchemy event listeners (``before_cursor_execute``,
``after_cursor_execute``, ``handle_error`` and the pool's checkout/checkin) to the engine it is
given, and those events are unchanged in 2.1. Its connection-usage counter (the deprecated
``db.client.connections.usage``) is given the API's no-op meter: the pool metrics of
``adapters/opentelemetry`` are the authoritative ones. The asyncpg instrumentation is not
enabled, and must not be: it wraps asyncpg's query methods (``Connection``, ``Cursor`` and
``PreparedStatement``, through which SQLAlchemy's asyncpg dialect runs every statement), so each
statement would show twice, a SQLAlchemy span with an asyncpg span inside it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final

from dependency_injector import providers
from opentelemetry import metrics, trace
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer
from opentelemetry.instrumentation.sqlalchemy.version import __version__ as sql_instrumentation_version
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, make_asgi_app

from container import KernelContainer

__all__ = ["Telemetry", "prometheus_telemetry", "trace_sql", "use_telemetry"]

SERVICE_NAME: Final = "alchemy-hex"
_REQUEST_TIMEOUT_S: Final = 5.0


@dataclass(frozen=True, slots=True)
class Telemetry:
    """An SDK meter provider exported to a private Prometheus registry, and an SDK tracer provider."""

    meter_provider: MeterProvider
    tracer_provider: TracerProvider
    registry: CollectorRegistry
    #: Whether the tracer provider was given span processors: without any, recording spans is waste.
    exports_spans: bool = False

    def exposition(self) -> tuple[bytes, str]:
        """The Prometheus text exposition of every metric now, and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def asgi_app(self) -> Callable[..., Any]:
        """An ASGI app serving the exposition, to mount at ``/metrics`` on the HTTP service."""
        app: Callable[..., Any] = make_asgi_app(registry=self.registry)
        return app

    async def serve(self, port: int, *, host: str = "127.0.0.1") -> asyncio.Server:
        """Serve the exposition at ``http://host:port/metrics`` on this event loop; close the server to stop.

        On the event loop, not in a thread as prometheus_client's own server would: collecting
        runs the observable callbacks, which read the provider's and the policies' state, and
        that state belongs to the loop. Loopback by default: a metrics port is for the machine's
        own scraper unless told otherwise. One request per connection, 8 KiB of head at most.
        """
        return await asyncio.start_server(self._answer, host, port)

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(_REQUEST_TIMEOUT_S):
                head = await reader.readuntil(b"\r\n\r\n")
            method, path = ([*head.split(b" ", 2), b"", b""])[:2]
            if method == b"GET" and path.split(b"?", 1)[0] == b"/metrics":
                body, content_type = self.exposition()
                status = b"200 OK"
            else:
                body, content_type, status = b"not found\n", "text/plain", b"404 Not Found"
            writer.write(
                b"HTTP/1.1 " + status + b"\r\nContent-Type: " + content_type.encode()
                + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n"
                + body
            )  # fmt: skip
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass  # a scraper that went away or sent no request: nothing to answer
        finally:
            writer.close()

    def shutdown(self) -> None:
        """Flush and stop both providers (spans still buffered are exported first)."""
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()


def prometheus_telemetry(
    *, span_processors: Iterable[SpanProcessor] = (), service_name: str = SERVICE_NAME
) -> Telemetry:
    """SDK providers for metrics (Prometheus, private registry) and spans (``span_processors``)."""
    resource = Resource.create({"service.name": service_name})
    registry = CollectorRegistry(auto_describe=True)
    reader = PrometheusMetricReader(registry=registry)
    meter_provider = MeterProvider(resource=resource, metric_readers=[reader])
    tracer_provider = TracerProvider(resource=resource)
    processors = list(span_processors)
    for processor in processors:
        tracer_provider.add_span_processor(processor)
    return Telemetry(meter_provider, tracer_provider, registry, exports_spans=bool(processors))


def use_telemetry(container: KernelContainer, telemetry: Telemetry, *, traces: bool = True) -> None:
    """Make ``container`` record to ``telemetry``'s providers; call before resolving anything.

    ``traces=False`` keeps the API's no-op tracer: with no span exporter configured, recording
    spans would cost every use case for nothing (see the README's callgrind figures).
    """
    container.meter_provider.override(providers.Object(telemetry.meter_provider))
    if traces:
        container.tracer_provider.override(providers.Object(telemetry.tracer_provider))


def trace_sql(engines: Iterable[Any], tracer_provider: trace.TracerProvider) -> list[EngineTracer]:
    """A ``CLIENT`` span per statement on each of ``engines`` (SQLAlchemy ``Engine``: an async engine's
    ``sync_engine``), recorded by ``tracer_provider``; see the module's docstring for why this way.

    The spans carry ``db.system``, ``db.name``, ``db.statement`` (the SQL with its ``$n``
    placeholders, never the parameters), ``db.operation`` and the server's address, under the
    older semantic-convention names unless ``OTEL_SEMCONV_STABILITY_OPT_IN=database`` asks for the
    stable ones (``db.system.name``, ``db.query.text``...). The listeners live as long as the
    engines do.
    """
    tracer = tracer_provider.get_tracer(
        "opentelemetry.instrumentation.sqlalchemy", sql_instrumentation_version
    )
    unused = metrics.NoOpMeter("alchemy_hex.unused").create_up_down_counter("db.client.connections.usage")
    # The instrumentation ships no type hints (no py.typed): its constructor is untyped.
    return [EngineTracer(tracer, engine, unused) for engine in engines]  # type: ignore[no-untyped-call]
