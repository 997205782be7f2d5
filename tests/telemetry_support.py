"""Test support for telemetry: a container recording to SDK providers, the exposition's sample names."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families

from container import Container, create_container, start_resources, stop_resources
from settings import Settings
from telemetry import Telemetry, prometheus_telemetry, use_telemetry


@dataclass(frozen=True, slots=True)
class Observed:
    """A started container, the SDK providers it records to, and the spans they finished."""

    container: Container
    telemetry: Telemetry
    spans: InMemorySpanExporter

    def scrape(self) -> str:
        body, _ = self.telemetry.exposition()
        return body.decode()


@asynccontextmanager
async def observed_container(settings: Settings) -> AsyncIterator[Observed]:
    """A container for ``settings`` recording to fresh SDK providers (never the global ones)."""
    spans = InMemorySpanExporter()
    telemetry = prometheus_telemetry(span_processors=[SimpleSpanProcessor(spans)])
    container = create_container(settings)
    use_telemetry(container, telemetry)
    await start_resources(container)
    try:
        yield Observed(container, telemetry, spans)
    finally:
        await stop_resources(container)
        telemetry.shutdown()


def sample_names(exposition: str) -> set[str]:
    """Every sample name of a Prometheus text exposition (``..._bucket``, ``..._total`` included)."""
    return {sample.name for family in text_string_to_metric_families(exposition) for sample in family.samples}


def label_values(exposition: str) -> set[str]:
    """Every label value of every sample, to check that no key, id or SQL text became a label."""
    return {
        value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
        for value in sample.labels.values()
    }
