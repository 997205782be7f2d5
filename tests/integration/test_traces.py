"""Spans of use-case calls on PostgreSQL, through the SDK's in-memory exporter: the tree of each outcome."""

from __future__ import annotations

import asyncio
import io
import json

import pytest
import structlog
from opentelemetry.trace import SpanKind, StatusCode

from adapters.structlog.logging import configure_logging
from app.telemetry import DEADLINE_REMAINING_MS
from ports.circuit_breaker import BreakerState
from ports.connection_provider import WRITER, Intent
from ports.deadline import deadline_scope
from ports.errors import CircuitOpenError, DatabaseUnavailableError, DeadlineExceededError
from tests.chaos.load import wait_until
from tests.support import make_settings
from tests.telemetry_support import events, observed_container, tree


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


async def test_under_a_deadline_the_unit_of_work_span_carries_the_budget_left(database_url: str) -> None:
    async with observed_container(make_settings(database_url)) as observed:
        account = await observed.container.open_account()("dee")
        observed.spans.clear()
        with deadline_scope(5.0):
            await observed.container.get_balance()(account)
        unbounded = await observed.container.get_balance()(account)
        spans = observed.spans.get_finished_spans()

    assert unbounded == 0
    bounded, free = tree(spans)["get_balance"]
    left_ms = (bounded.attributes or {})[DEADLINE_REMAINING_MS]
    assert isinstance(left_ms, float)
    assert 0 < left_ms <= 5000
    assert DEADLINE_REMAINING_MS not in (free.attributes or {})


async def test_a_deadline_that_runs_out_in_the_admission_queue_is_an_event_naming_the_stage(
    database_url: str,
) -> None:
    settings = make_settings(
        database_url, database={"pool_size": 1, "max_overflow": 0, "acquire_timeout_s": 5.0}
    )
    async with observed_container(settings) as observed:
        container, provider = observed.container, observed.container.connection_provider()
        account = await container.open_account()("eli")
        observed.spans.clear()
        async with provider.connection(Intent.WRITE):  # the only connection: the call must queue
            with deadline_scope(0.2), pytest.raises(DeadlineExceededError):
                await container.get_balance()(account)
        spans = observed.spans.get_finished_spans()

    children = tree(spans)
    [unit] = children["get_balance"]
    assert unit.status.status_code is StatusCode.ERROR
    left_ms = (unit.attributes or {})[DEADLINE_REMAINING_MS]
    assert isinstance(left_ms, float)
    assert 0 < left_ms <= 200
    exceeded = next(event for event in unit.events if event.name == "deadline.exceeded")
    assert dict(exceeded.attributes or {}) == {
        "alchemy_hex.deadline.stage": "admission",
        "alchemy_hex.target": WRITER,
    }


async def test_a_deadline_already_passed_is_an_event_on_the_call_and_no_unit_is_begun(
    database_url: str,
) -> None:
    async with observed_container(make_settings(database_url)) as observed:
        account = await observed.container.open_account()("fay")
        observed.spans.clear()
        with deadline_scope(0.0), pytest.raises(DeadlineExceededError):
            await observed.container.get_balance()(account)
        spans = observed.spans.get_finished_spans()

    children = tree(spans)
    [root] = children[""]
    assert "get_balance" not in children
    exceeded = next(event for event in root.events if event.name == "deadline.exceeded")
    assert dict(exceeded.attributes or {}) == {"alchemy_hex.deadline.stage": "start"}
