"""The request-span middleware without I/O: the W3C headers it reads and what it costs with no SDK."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry import trace
from starlette.types import Message, Receive, Scope, Send

from http_api.tracing import TracingMiddleware, trace_carrier

TRACEPARENT = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_the_carrier_holds_the_first_traceparent_and_every_tracestate_joined() -> None:
    headers = [
        (b"tracestate", b"a=1"),
        (b"traceparent", TRACEPARENT),
        (b"traceparent", b"00-ffffffffffffffffffffffffffffffff-ffffffffffffffff-01"),
        (b"tracestate", b"b=2"),
    ]

    assert trace_carrier(headers) == {"traceparent": TRACEPARENT.decode(), "tracestate": "a=1,b=2"}


def test_without_a_traceparent_there_is_no_carrier_even_with_a_tracestate() -> None:
    assert trace_carrier([(b"host", b"service"), (b"tracestate", b"a=1")]) is None
    assert trace_carrier([]) is None


class Recorder:
    """An ASGI app that records the ``send`` it was handed and the span current while it ran."""

    def __init__(self) -> None:
        self.sends: list[Send] = []
        self.current: list[trace.Span] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.sends.append(send)
        self.current.append(trace.get_current_span())
        await send({"type": "http.response.start", "status": 200, "headers": []})


async def _receive() -> Message:
    return {"type": "http.request", "body": b""}


async def _send(message: Message) -> None:
    pass


def _scope(headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    return {"type": "http", "method": "GET", "path": "/livez", "headers": headers}


@pytest.mark.parametrize("provider", [trace.NoOpTracerProvider(), None], ids=["no-op", "api-global"])
async def test_with_no_sdk_and_no_traceparent_the_request_goes_straight_through(
    provider: trace.TracerProvider | None,
) -> None:
    app = Recorder()

    await TracingMiddleware(app, tracer_provider=provider)(_scope([]), _receive, _send)

    assert app.sends == [_send]  # not even a wrapper around send
    assert not app.current[0].get_span_context().is_valid


async def test_with_no_sdk_a_traceparent_is_passed_on_as_the_current_context() -> None:
    app = Recorder()
    middleware = TracingMiddleware(app, tracer_provider=trace.NoOpTracerProvider())

    await middleware(_scope([(b"traceparent", TRACEPARENT)]), _receive, _send)

    assert app.sends == [_send]
    context = app.current[0].get_span_context()
    assert (context.trace_id, context.span_id, context.is_remote) == (
        0x4BF92F3577B34DA6A3CE929D0E0E4736,
        0x00F067AA0BA902B7,
        True,
    )
    assert not trace.get_current_span().get_span_context().is_valid  # detached afterwards


async def test_a_lifespan_or_websocket_scope_is_not_traced() -> None:
    seen: list[Scope] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope)

    await TracingMiddleware(app)({"type": "lifespan"}, _receive, _send)

    assert seen == [{"type": "lifespan"}]
