"""The OpenTelemetry SDK for an entry point: metrics as a Prometheus exposition, spans to exporters.

The kernel records through the OpenTelemetry API only; this module (the ``telemetry`` extra) is
what an entry point adds to export it: an SDK ``MeterProvider`` whose ``PrometheusMetricReader``
writes to a private ``CollectorRegistry`` (so nothing else in the process, such as
prometheus_client's default process collectors, ends up on the page), and an SDK
``TracerProvider`` with the span processors given. Give both to the container
(:func:`use_telemetry`) before anything is resolved.

Serving the exposition is independent of any web framework: :meth:`Telemetry.exposition` renders
it (bytes and content type) for any handler, :meth:`Telemetry.asgi_app` is an ASGI app to mount at
``/metrics``, and :meth:`Telemetry.serve` runs prometheus_client's own small HTTP server on a
port (the CLI demo's ``--metrics-port``). The exporter keeps its state in the process: run one
worker per process (no multiprocess mode); OTLP export, where wanted, is another reader or span
processor given here, not a change to the kernel.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final

from dependency_injector import providers
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, make_asgi_app
from prometheus_client.exposition import start_http_server

from container import KernelContainer

__all__ = ["Telemetry", "prometheus_telemetry", "use_telemetry"]

SERVICE_NAME: Final = "alchemy-hex"


@dataclass(frozen=True, slots=True)
class Telemetry:
    """An SDK meter provider exported to a private Prometheus registry, and an SDK tracer provider."""

    meter_provider: MeterProvider
    tracer_provider: TracerProvider
    registry: CollectorRegistry

    def exposition(self) -> tuple[bytes, str]:
        """The Prometheus text exposition of every metric now, and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def asgi_app(self) -> Callable[..., Any]:
        """An ASGI app serving the exposition, to mount at ``/metrics`` on the HTTP service."""
        app: Callable[..., Any] = make_asgi_app(registry=self.registry)
        return app

    def serve(self, port: int, *, host: str = "127.0.0.1") -> Callable[[], None]:
        """Serve the exposition on ``host:port`` from a daemon thread; returns the function that stops it.

        Loopback by default: a metrics port is for the machine's own scraper unless told otherwise.
        """
        server, thread = start_http_server(port, addr=host, registry=self.registry)

        def stop() -> None:
            server.shutdown()
            server.server_close()
            thread.join(timeout=5.0)

        return stop

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
    for processor in span_processors:
        tracer_provider.add_span_processor(processor)
    return Telemetry(meter_provider, tracer_provider, registry)


def use_telemetry(container: KernelContainer, telemetry: Telemetry) -> None:
    """Make ``container`` record to ``telemetry``'s providers; call before resolving anything."""
    container.meter_provider.override(providers.Object(telemetry.meter_provider))
    container.tracer_provider.override(providers.Object(telemetry.tracer_provider))
