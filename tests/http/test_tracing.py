"""The request's SERVER span in process: it continues the caller's ``traceparent``, the use case below it."""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
import structlog
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from adapters.structlog.logging import configure_logging
from http_api import create_app
from http_api.lifecycle import Lifecycle
from tests.http.support import in_process
from tests.http.test_ledger_endpoints import open_account
from tests.support import make_settings
from tests.telemetry_support import recording_telemetry, tree

CALLER_TRACE_ID = 0x4BF92F3577B34DA6A3CE929D0E0E4736
CALLER_SPAN_ID = 0x00F067AA0BA902B7
TRACEPARENT = f"00-{CALLER_TRACE_ID:032x}-{CALLER_SPAN_ID:016x}-01"


@dataclass
class Traced:
    client: httpx.AsyncClient
    spans: InMemorySpanExporter


@pytest.fixture
async def traced(database_url: str) -> AsyncIterator[Traced]:
    """The app in process recording its spans to an in-memory exporter (never the global provider)."""
    spans, telemetry = recording_telemetry()
    try:
        async with in_process(create_app(make_settings(database_url), telemetry=telemetry)) as running:
            yield Traced(running.client, spans)
    finally:
        telemetry.shutdown()


def server_span(spans: tuple[ReadableSpan, ...]) -> ReadableSpan:
    [span] = [span for span in spans if span.kind is SpanKind.SERVER]
    return span


async def test_a_request_with_a_traceparent_continues_the_callers_trace_down_to_the_unit_of_work(
    traced: Traced,
) -> None:
    account = await open_account(traced.client)
    traced.spans.clear()

    response = await traced.client.get(f"/accounts/{account}/balance", headers={"traceparent": TRACEPARENT})

    assert response.status_code == 200
    spans = traced.spans.get_finished_spans()
    request = server_span(spans)
    assert request.name == "GET /accounts/{account_id}/balance"  # the template, never the id
    assert request.context.trace_id == CALLER_TRACE_ID
    assert request.parent is not None
    assert (request.parent.span_id, request.parent.is_remote) == (CALLER_SPAN_ID, True)
    assert request.status.status_code is StatusCode.UNSET
    assert dict(request.attributes or {}) == {
        "http.request.method": "GET",
        "url.scheme": "http",
        "url.path": f"/accounts/{account}/balance",
        "network.protocol.version": "1.1",
        "http.route": "/accounts/{account_id}/balance",
        "http.response.status_code": 200,
    }
    children = tree(spans)
    [use_case] = children[request.name]
    assert (use_case.name, use_case.context.trace_id) == ("get_balance", CALLER_TRACE_ID)
    [unit] = children["get_balance"]
    assert unit.name == "uow"


async def test_a_malformed_traceparent_starts_a_fresh_trace_without_an_error(traced: Traced) -> None:
    response = await traced.client.post(
        "/accounts",
        json={"owner": "eve"},
        headers={"traceparent": "00-not-a-trace-id-01", "tracestate": "a=b"},
    )

    assert response.status_code == 201
    spans = traced.spans.get_finished_spans()
    request = server_span(spans)
    assert request.name == "POST /accounts"
    assert request.parent is None
    assert request.context.trace_id != CALLER_TRACE_ID
    assert request.context.trace_state.get("a") is None  # a tracestate without its traceparent is dropped
    [use_case] = tree(spans)["POST /accounts"]
    assert use_case.context.trace_id == request.context.trace_id


async def test_an_unmatched_path_is_named_by_its_method_alone_and_a_4xx_is_no_error(traced: Traced) -> None:
    response = await traced.client.get("/no/such/path/123")

    assert response.status_code == 404
    request = server_span(traced.spans.get_finished_spans())
    assert request.name == "GET"  # bounded: no raw path in a span name
    assert "http.route" not in (request.attributes or {})
    assert (request.attributes or {})["http.response.status_code"] == 404
    assert request.status.status_code is StatusCode.UNSET


async def test_a_refusal_while_draining_is_a_failed_request_span(database_url: str) -> None:
    spans, telemetry = recording_telemetry()
    lifecycle = Lifecycle()
    try:
        app = create_app(make_settings(database_url), lifecycle=lifecycle, telemetry=telemetry)
        async with in_process(app) as running:
            lifecycle.begin_drain()
            response = await running.client.get("/accounts/x/balance")
        assert response.status_code == 503
        request = server_span(spans.get_finished_spans())
        assert request.status.status_code is StatusCode.ERROR
        assert (request.attributes or {})["error.type"] == "503"
        assert (request.attributes or {})["http.response.status_code"] == 503
    finally:
        telemetry.shutdown()


async def test_an_unhandled_error_is_a_failed_request_span_and_its_log_line_carries_the_ids(
    database_url: str, request: pytest.FixtureRequest
) -> None:
    spans, telemetry = recording_telemetry()
    logs = io.StringIO()
    try:
        app = create_app(make_settings(database_url), telemetry=telemetry)

        @app.get("/boom/{n}")
        async def boom(n: int) -> None:
            raise RuntimeError(f"boom {n}")

        async with in_process(app) as running:
            configure_logging(output_format="json", level="info", stream=logs)
            request.addfinalizer(structlog.reset_defaults)
            response = await running.client.get("/boom/7", headers={"traceparent": TRACEPARENT})
        assert response.status_code == 500
        span = server_span(spans.get_finished_spans())
        assert span.name == "GET /boom/{n}"
        assert span.status.status_code is StatusCode.ERROR
        assert (span.attributes or {})["error.type"] == "500"
        [line] = [json.loads(line) for line in logs.getvalue().splitlines() if "http.unhandled_error" in line]
        assert line["trace_id"] == f"{CALLER_TRACE_ID:032x}"
        assert line["span_id"] == f"{span.context.span_id:016x}"
    finally:
        telemetry.shutdown()


async def test_without_an_sdk_a_traceparent_is_accepted_and_nothing_is_recorded(
    client: httpx.AsyncClient,
) -> None:
    account = await open_account(client)

    response = await client.get(f"/accounts/{account}/balance", headers={"traceparent": TRACEPARENT})

    assert response.status_code == 200
