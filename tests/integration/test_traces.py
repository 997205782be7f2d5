"""Spans of use-case calls on PostgreSQL, through the SDK's in-memory exporter: the tree of each outcome."""

from __future__ import annotations

import asyncio
import io
import json

import pytest
import structlog
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode

from adapters.structlog.logging import configure_logging
from ports.circuit_breaker import BreakerState
from ports.connection_provider import WRITER, Intent
from ports.errors import CircuitOpenError, DatabaseUnavailableError
from tests.chaos.load import wait_until
from tests.support import make_settings
from tests.telemetry_support import observed_container


def tree(spans: tuple[ReadableSpan, ...]) -> dict[str, list[ReadableSpan]]:
    """The finished spans by the name of their parent (``""`` for a root), each list in start order."""
    by_id = {span.context.span_id: span for span in spans}
    children: dict[str, list[ReadableSpan]] = {}
    for span in sorted(spans, key=lambda s: s.start_time or 0):
        parent = by_id.get(span.parent.span_id) if span.parent is not None else None
        children.setdefault("" if parent is None else parent.name, []).append(span)
    return children


def events(span: ReadableSpan) -> list[str]:
    return [event.name for event in span.events]


async def test_a_successful_call_is_one_span_with_one_unit_of_work_span(database_url: str) -> None:
    async with observed_container(make_settings(database_url)) as observed:
        account = await observed.container.open_account()("ann")
        observed.spans.clear()
        assert await observed.container.get_balance()(account) == 0
        spans = observed.spans.get_finished_spans()

    children = tree(spans)
    [root] = children[""]
    assert (root.name, root.kind, root.status.status_code) == (
        "get_balance",
        SpanKind.INTERNAL,
        StatusCode.UNSET,
    )
    assert root.attributes is not None
    assert root.attributes["alchemy_hex.intent"] == "read"
    [unit] = children["get_balance"]
    assert unit.name == "uow"
    assert unit.context.trace_id == root.context.trace_id
    assert dict(unit.attributes or {}) == {
        "alchemy_hex.intent": "read",
        "db.client.connection.pool.name": WRITER,
        "alchemy_hex.read_route": "writer",
    }


async def test_a_retried_success_shows_the_failed_attempt_the_retry_and_the_wait(
    database_url: str, request: pytest.FixtureRequest
) -> None:
    settings = make_settings(
        database_url, database={"pool_size": 1, "max_overflow": 0, "acquire_timeout_s": 0.2}
    )
    logs = io.StringIO()
    async with observed_container(settings) as observed:
        configure_logging(output_format="json", level="info", stream=logs)
        request.addfinalizer(structlog.reset_defaults)
        container, provider = observed.container, observed.container.connection_provider()
        account = await container.open_account()("bob")
        observed.spans.clear()
        async with provider.connection(Intent.WRITE):
            call = asyncio.create_task(container.get_balance()(account))
            # The first attempt timed out; the retry is queued: let it have the connection.
            assert await wait_until(
                lambda: (
                    provider.stats().targets[0].timed_out == 1 and provider.stats().targets[0].waiting == 1
                ),
                timeout_s=5.0,
            )
        assert await call == 0
        spans = observed.spans.get_finished_spans()

    children = tree(spans)
    [root] = children[""]
    failed, succeeded = children["get_balance"]
    assert failed.status.status_code is StatusCode.ERROR
    assert "exception" in events(failed)
    assert succeeded.status.status_code is StatusCode.UNSET
    assert "admission.waited" in events(succeeded)
    retry = next(event for event in root.events if event.name == "retry")
    assert dict(retry.attributes or {}) == {"attempt": 1, "error.type": "PoolTimeoutError"}
    # The retry's log line carries the call's trace and span ids.
    line = next(json.loads(line) for line in logs.getvalue().splitlines() if "retry.scheduled" in line)
    assert line["trace_id"] == format(root.context.trace_id, "032x")
    assert line["span_id"] == format(root.context.span_id, "016x")


async def test_a_call_refused_by_an_open_circuit_records_the_refusal(database_url: str) -> None:
    settings = make_settings(
        database_url,
        retry={"max_attempts": 1},
        circuit_breaker={"window_size": 2, "minimum_calls": 2, "recovery_time_s": 60.0},
    )
    async with observed_container(settings) as observed:
        container = observed.container
        account = await container.open_account()("cy")
        breaker = container.circuit_breaker()
        for _ in range(2):  # infrastructure failures the breaker is told of, until it opens
            with pytest.raises(DatabaseUnavailableError), breaker.guard(WRITER):
                raise DatabaseUnavailableError("the writer is down (told to the breaker by the test)")
            if breaker.state(WRITER) is BreakerState.OPEN:
                break
        assert breaker.state(WRITER) is BreakerState.OPEN
        observed.spans.clear()
        with pytest.raises(CircuitOpenError):
            await container.get_balance()(account)
        spans = observed.spans.get_finished_spans()

    children = tree(spans)
    [root] = children[""]
    [unit] = children["get_balance"]
    assert root.status.status_code is StatusCode.ERROR
    assert unit.status.status_code is StatusCode.ERROR
    rejected = next(event for event in unit.events if event.name == "circuit.rejected")
    assert (rejected.attributes or {})["alchemy_hex.target"] == WRITER
    # Refused before any connection was taken: the span never learnt a target.
    assert "db.client.connection.pool.name" not in (unit.attributes or {})
