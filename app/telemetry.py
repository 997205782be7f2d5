"""Spans and the duration histogram of every use-case call, through the OpenTelemetry API only.

One ``INTERNAL`` span per call, named by the use case's ``operation``, and one child ``uow`` span
per attempt (its target, intent and read route as attributes, the caller's deadline as the budget
left when the attempt started, a refusal by the circuit breaker or the rate limiter and a deadline
that ran out as events); retries are events on the call's span (see :mod:`app.retry`). The call's duration
goes to ``alchemy_hex.use_case.duration`` with its outcome. With no SDK installed the tracer and
the histogram are the API's no-ops, and the spans are not even made current (there is nothing
for a child to join), so a service that exports nothing pays a few calls per use case.
"""

from __future__ import annotations

import time
from types import TracebackType
from typing import Final

from opentelemetry import context as otel_context
from opentelemetry import metrics, trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from ports.connection_provider import Intent, Priority
from ports.deadline import DeadlineStage, remaining_s
from ports.errors import CircuitOpenError, DeadlineExceededError, RateLimitExceededError

__all__ = ["DEADLINE_REMAINING_MS", "SCOPE", "UseCaseTelemetry", "default_telemetry"]

#: The instrumentation scope of every span and instrument of the kernel.
SCOPE: Final = "alchemy_hex"
#: The caller's budget left when an attempt started, in milliseconds (only under a deadline).
DEADLINE_REMAINING_MS: Final = "alchemy_hex.deadline.remaining_ms"
_DURATION_BUCKETS_S: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class UseCaseTelemetry:
    """The tracer and the duration histogram the use cases report to; one per container."""

    def __init__(
        self,
        *,
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: metrics.MeterProvider | None = None,
    ) -> None:
        self.tracer = (tracer_provider or trace.get_tracer_provider()).get_tracer(SCOPE)
        meter = (meter_provider or metrics.get_meter_provider()).get_meter(SCOPE)
        self._duration = meter.create_histogram(
            "alchemy_hex.use_case.duration",
            unit="s",
            description="Duration of use-case calls, retries included, by operation and outcome.",
            explicit_bucket_boundaries_advisory=_DURATION_BUCKETS_S,
        )
        self._outcomes: dict[tuple[str, str], dict[str, str]] = {}

    def call(self, operation: str, intent: Intent, priority: Priority) -> TracedCall:
        """The span (and timer) of one use-case call; use as ``with telemetry.call(...):``."""
        return TracedCall(self, operation, intent, priority)

    def unit(self, intent: Intent) -> TracedUnit:
        """The ``uow`` span of one attempt, a child of the call's."""
        return TracedUnit(self.tracer, intent)

    def record(self, operation: str, seconds: float, error: BaseException | None) -> None:
        outcome = "ok" if error is None else type(error).__name__
        key = (operation, outcome)
        attributes = self._outcomes.get(key)
        if attributes is None:  # bounded: operations are class constants, errors are classes
            attributes = {"alchemy_hex.operation": operation, "alchemy_hex.outcome": "ok"}
            if error is not None:
                attributes |= {"alchemy_hex.outcome": "error", "error.type": outcome}
            self._outcomes[key] = attributes
        self._duration.record(seconds, attributes)


class _Traced:
    """A span made current for a block, by hand: a generator-based manager costs microseconds a call."""

    __slots__ = ("_span", "_token")

    def _start(self, span: Span) -> Span:
        self._span = span
        # INVALID_SPAN (no SDK) has nothing to propagate: skip the context switch entirely.
        self._token = (
            otel_context.attach(trace.set_span_in_context(span)) if span.get_span_context().is_valid else None
        )
        return span

    def _finish(self, exc: BaseException | None) -> None:
        span = self._span
        if exc is not None and span.is_recording():
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
        span.end()
        if self._token is not None:
            otel_context.detach(self._token)


def _deadline_exceeded(span: Span, error: DeadlineExceededError) -> None:
    attributes: dict[str, str | bool] = {"alchemy_hex.deadline.stage": error.stage}
    if error.target is not None:
        attributes["alchemy_hex.target"] = error.target
    if error.server_unresponsive:
        attributes["alchemy_hex.deadline.server_unresponsive"] = True
    span.add_event("deadline.exceeded", attributes)


class TracedCall(_Traced):
    """One use-case call: its span, and its duration recorded on exit with the outcome."""

    __slots__ = ("_intent", "_operation", "_priority", "_started", "_telemetry")

    def __init__(
        self, telemetry: UseCaseTelemetry, operation: str, intent: Intent, priority: Priority
    ) -> None:
        self._telemetry = telemetry
        self._operation = operation
        self._intent = intent
        self._priority = priority

    def __enter__(self) -> Span:
        self._started = time.perf_counter()
        span = self._telemetry.tracer.start_span(self._operation, kind=SpanKind.INTERNAL)
        if span.is_recording():
            span.set_attributes(
                {
                    "alchemy_hex.operation": self._operation,
                    "alchemy_hex.intent": self._intent.value,
                    "alchemy_hex.priority": self._priority.name.lower(),
                }
            )
        return self._start(span)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._telemetry.record(self._operation, time.perf_counter() - self._started, exc)
        # Checked before any unit began: no ``uow`` span saw it, so it is told here.
        if (
            isinstance(exc, DeadlineExceededError)
            and exc.stage == DeadlineStage.START
            and self._span.is_recording()
        ):
            _deadline_exceeded(self._span, exc)
        self._finish(exc)


class TracedUnit(_Traced):
    """One attempt's ``uow`` span: the deadline's budget left at its start; refusals and expiry as events."""

    __slots__ = ("_intent", "_tracer")

    def __init__(self, tracer: trace.Tracer, intent: Intent) -> None:
        self._tracer = tracer
        self._intent = intent

    def __enter__(self) -> Span:
        span = self._tracer.start_span("uow", kind=SpanKind.INTERNAL)
        if span.is_recording():
            span.set_attribute("alchemy_hex.intent", self._intent.value)
            left = remaining_s()
            if left is not None:
                span.set_attribute(DEADLINE_REMAINING_MS, round(max(left, 0.0) * 1000, 3))
        return self._start(span)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if isinstance(exc, CircuitOpenError) and self._span.is_recording():
            self._span.add_event(
                "circuit.rejected",
                {"alchemy_hex.target": exc.target, "retry_after_s": exc.retry_after_s},
            )
        elif isinstance(exc, RateLimitExceededError) and self._span.is_recording():
            self._span.add_event("rate_limited", {"retry_after_s": exc.retry_after_s})
        elif isinstance(exc, DeadlineExceededError) and self._span.is_recording():
            _deadline_exceeded(self._span, exc)
        self._finish(exc)


_default: UseCaseTelemetry | None = None


def default_telemetry() -> UseCaseTelemetry:
    """Telemetry on the API's global providers, for use cases built without a container."""
    global _default
    if _default is None:
        _default = UseCaseTelemetry()
    return _default
