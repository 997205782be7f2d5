"""Test support for telemetry: a container recording to SDK providers, the exposition's sample names."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Final

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

from container import Container, create_container, start_resources, stop_resources
from domain.ledger import AccountId
from ports.connection_provider import Intent
from ports.errors import HexError, PoolTimeoutError
from settings import Settings
from telemetry import Telemetry, prometheus_telemetry, use_telemetry
from tests.chaos.load import wait_until

#: Settings groups under which :func:`exercise` makes every metric show: a one-connection pool,
#: a limiter that counts, and a retry budget of exactly one retry.
EXERCISED: Final[dict[str, Any]] = {
    "database": {"pool_size": 1, "max_overflow": 0, "acquire_timeout_s": 0.2},
    "rate_limiter": {"implementation": "token_bucket", "rate_per_s": 10_000, "burst": 10_000},
    "retry": {"budget": "token", "max_attempts": 2, "budget_ratio": 0.0, "budget_min_retries_per_s": 0.1},
}


@dataclass(frozen=True, slots=True)
class Observed:
    """A started container, the SDK providers it records to, and the spans they finished."""

    container: Container
    telemetry: Telemetry
    spans: InMemorySpanExporter

    def scrape(self) -> str:
        body, _ = self.telemetry.exposition()
        return body.decode()


def recording_telemetry() -> tuple[InMemorySpanExporter, Telemetry]:
    """Fresh SDK providers whose spans end up in the returned in-memory exporter (shut them down after)."""
    spans = InMemorySpanExporter()
    return spans, prometheus_telemetry(span_processors=[SimpleSpanProcessor(spans)])


@asynccontextmanager
async def observed_container(settings: Settings) -> AsyncIterator[Observed]:
    """A container for ``settings`` recording to fresh SDK providers (never the global ones)."""
    spans, telemetry = recording_telemetry()
    container = create_container(settings)
    use_telemetry(container, telemetry)
    await start_resources(container)
    try:
        yield Observed(container, telemetry, spans)
    finally:
        await stop_resources(container)
        telemetry.shutdown()


def tree(spans: tuple[ReadableSpan, ...]) -> dict[str, list[ReadableSpan]]:
    """The finished spans by the name of their parent (``""`` for a root), each list in start order."""
    by_id = {span.context.span_id: span for span in spans}
    children: dict[str, list[ReadableSpan]] = {}
    for span in sorted(spans, key=lambda s: s.start_time or 0):
        parent = by_id.get(span.parent.span_id) if span.parent is not None else None
        children.setdefault("" if parent is None else parent.name, []).append(span)
    return children


def events(span: ReadableSpan) -> list[str]:
    """The names of a span's events, in order."""
    return [event.name for event in span.events]


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


async def exercise(observed: Observed) -> AccountId:
    """Calls that make every metric show (under :data:`EXERCISED`); returns the account they used.

    An account opened, a read, a statement that fails, a deposit that queues behind a held writer
    connection and gets it, and two that time out while it is held: the first is retried, the
    second refused its retry.
    """
    container = observed.container
    account = await container.open_account()("owner-secret-name")
    provider, deposit = container.connection_provider(), container.deposit()
    await provider.wait_for_replay()  # a read on a replica must find the account
    await container.get_balance()(account)
    with pytest.raises(HexError, match="22012"):  # a statement the server refuses
        async with provider.connection(Intent.WRITE) as connection:
            await connection.execute(text("SELECT 1 / 0"))
    async with provider.connection(Intent.WRITE):
        queued = asyncio.create_task(deposit(account, 100, idempotency_key="key-never-a-label"))
        assert await wait_until(lambda: provider.stats().targets[0].waiting == 1, timeout_s=5.0)
    await queued
    async with provider.connection(Intent.WRITE):
        for attempt in range(2):
            with pytest.raises(PoolTimeoutError):
                await deposit(account, 1, idempotency_key=f"key-never-a-label-{attempt}")
    return account
