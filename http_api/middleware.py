"""The outermost layer of every request: its id, the drain's refusals, and unhandled errors.

A pure ASGI middleware (no ``BaseHTTPMiddleware``: it would run the endpoint in another task,
which loses the context variables the log lines read, and costs a task per request).

- **Request id**: an incoming ``X-Request-ID`` is kept when valid (1 to 128 letters, digits,
  ``-``, ``_``, ``.``, ``:``; so UUIDs, 32-hex trace ids and ULIDs pass), else replaced by a new
  one; it is bound as the ``correlation_id`` of every log line of the request (the use cases pick
  it up as theirs) and returned on every response, a 500 included.
- **Draining**: once the lifecycle drains, every new request but the probes is refused with a
  503 problem, ``Retry-After`` and ``Connection: close``; responses of requests already running
  also get ``Connection: close``, so clients move to another instance.
- **Overload** (``max_in_flight``, off by default): a request arriving while that many are
  already running (probes aside, which are neither limited nor counted) is refused at once with
  a 503 problem and ``Retry-After``, before its body is read or any use case runs. A server short
  of CPU then spends it on the requests it can finish instead of queueing every one behind the
  event loop until callers, pool waits and the breaker's slow-call clock all run out.
- **Deadline**: a ``Request-Timeout`` (or ``X-Request-Timeout``) header gives the request's
  budget, in seconds (``2``, ``2.5``, ``2s``) or milliseconds (``250ms``); the request runs in a
  :func:`ports.deadline.deadline_scope` of it, so every stage below (rate limiter, admission,
  connect, each statement, retries) is bounded by what is left, and an exhausted budget is a 504
  problem naming the stage. A malformed value is a 400 problem; no header, no deadline.
- **Unhandled errors**: an exception that no handler mapped becomes a 500 problem carrying the
  request id and nothing else (no trace, no message); the error is logged, scrubbed, with its id.
"""

from __future__ import annotations

import re
import uuid
from typing import Final

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from http_api.lifecycle import Lifecycle
from http_api.problems import INTERNAL_ERROR, Problem, problem_response
from ports.deadline import deadline_scope, parse_timeout_s

log = structlog.get_logger("http_api")

REQUEST_ID_HEADER: Final = b"x-request-id"
_VALID_REQUEST_ID: Final = re.compile(rb"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
#: The probes answer during the drain too: readiness must say it is failing, liveness that it lives.
PROBE_PATHS: Final = frozenset({"/livez", "/readyz"})
#: The request's budget, as the draft "Request-Timeout" header and its common ``X-`` form name it.
TIMEOUT_HEADERS: Final = (b"request-timeout", b"x-request-timeout")
#: A budget longer than this is taken as this (a day): a deadline, not a way to overflow the clock.
MAX_TIMEOUT_S: Final = 86_400.0
BAD_TIMEOUT: Final = Problem(
    400,
    "bad-request-timeout",
    "Bad Request-Timeout",
    "Request-Timeout must be a number of seconds (2, 2.5, 2s) or of milliseconds (250ms)",
)


def timeout_from(headers: list[tuple[bytes, bytes]]) -> float | None:
    """The request's budget in seconds from its timeout header, ``None`` without one.

    Raises ``ValueError`` for a malformed value (the caller answers 400).
    """
    for name, value in headers:
        if name in TIMEOUT_HEADERS:
            return min(parse_timeout_s(value.decode("latin-1")), MAX_TIMEOUT_S)
    return None


def request_id_from(headers: list[tuple[bytes, bytes]]) -> str:
    """The request's id: the first ``X-Request-ID`` when valid, else a new UUID (32 hex digits)."""
    for name, value in headers:
        if name == REQUEST_ID_HEADER:
            if _VALID_REQUEST_ID.fullmatch(value):
                return value.decode("ascii")
            break
    return uuid.uuid4().hex


class RequestContextMiddleware:
    """Request ids, refusals while draining, and the last word on unhandled errors."""

    def __init__(
        self, app: ASGIApp, *, lifecycle: Lifecycle, retry_after_s: int, max_in_flight: int | None = None
    ) -> None:
        self._app = app
        self._lifecycle = lifecycle
        self._draining = Problem(
            503, "shutting-down", "Shutting down", "this instance is shutting down; retry", retry_after_s
        )
        self._overloaded = Problem(
            503, "overloaded", "Overloaded", "too many requests in flight here; retry", retry_after_s
        )
        self._max_in_flight = max_in_flight
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        request_id = request_id_from(scope["headers"])
        scope.setdefault("state", {})["request_id"] = request_id
        probe = scope["path"] in PROBE_PATHS
        if self._lifecycle.draining and not probe:
            await _refuse(self._draining, request_id, scope, receive, send, close=True)
            return
        limit = self._max_in_flight
        if limit is not None and not probe:
            if self.in_flight >= limit:
                await _refuse(self._overloaded, request_id, scope, receive, send)
                return
            self.in_flight += 1
            try:
                await self._serve(scope, receive, send, request_id)
            finally:
                self.in_flight -= 1
            return
        await self._serve(scope, receive, send, request_id)

    async def _serve(self, scope: Scope, receive: Receive, send: Send, request_id: str) -> None:
        lifecycle = self._lifecycle
        try:
            budget_s = timeout_from(scope["headers"])
        except ValueError:
            await _refuse(BAD_TIMEOUT, request_id, scope, receive, send)
            return
        encoded = request_id.encode("ascii")
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                # A new list: the response may hold on to the one it sent.
                headers = [*message.get("headers", ()), (REQUEST_ID_HEADER, encoded)]
                if lifecycle.draining:
                    headers.append((b"connection", b"close"))
                message["headers"] = headers
            await send(message)

        with structlog.contextvars.bound_contextvars(correlation_id=request_id), deadline_scope(budget_s):
            try:
                await self._app(scope, receive, send_with_id)
            except Exception:
                log.exception("http.unhandled_error", method=scope["method"], path=scope["path"])
                if started:
                    raise
                await problem_response(INTERNAL_ERROR, request_id)(scope, receive, send_with_id)


async def _refuse(
    problem: Problem, request_id: str, scope: Scope, receive: Receive, send: Send, *, close: bool = False
) -> None:
    """Answer ``problem`` before the app sees the request, the request id included."""
    response = problem_response(problem, request_id, close=close, headers={"x-request-id": request_id})
    await response(scope, receive, send)
