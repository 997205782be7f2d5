"""The policies' metrics, under ``alchemy_hex.*``: breaker, rate limiter, retries and the retry budget.

Every instrument is observable: the callbacks read what the policies already count (the breaker's
state and transitions, the limiter's :class:`~adapters.memory.admission_counts.AdmissionCounts`,
the use cases' :class:`~app.metrics.Metrics`) when a reader collects.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from opentelemetry.metrics import CallbackOptions, Meter, Observation

from adapters.memory.admission_counts import AdmissionCounts
from adapters.opentelemetry.names import BREAKER_STATE, DECISION, ERROR_TYPE, OPERATION, TARGET, TRANSITION
from ports.circuit_breaker import BreakerState, CircuitBreaker
from ports.rate_limiter import RateLimiter

__all__ = ["PolicySources", "RetryCounts", "observe_policies"]


@runtime_checkable
class _CountsTransitions(Protocol):
    def transitions(self, target: str) -> Mapping[str, int]: ...


@runtime_checkable
class _CountsAdmissions(Protocol):
    counts: AdmissionCounts


class RetryCounts(Protocol):
    """What the use cases count of their retries (``app.metrics.Metrics``; adapters do not import app)."""

    @property
    def retried_errors(self) -> Mapping[tuple[str, str], int]: ...

    @property
    def retry_budget_exhausted(self) -> Mapping[str, int]: ...


@runtime_checkable
class _HasBalance(Protocol):
    @property
    def balance(self) -> float: ...


@dataclass(frozen=True, slots=True)
class PolicySources:
    """What the callbacks read: the policies of one container and the targets they guard."""

    targets: Sequence[str]
    circuit_breaker: CircuitBreaker
    rate_limiter: RateLimiter
    #: The retry budget (``app.retry_budget``); its ``balance`` is observed when it has one.
    retry_budget: object
    metrics: RetryCounts


def observe_policies(meter: Meter, sources: PolicySources) -> Callable[[], None]:
    """Register the policies' observable instruments; returns the function that stops them observing."""
    stopped = False

    def stop() -> None:
        nonlocal stopped
        stopped = True

    def observing(
        observe: Callable[[], Iterator[Observation]],
    ) -> Callable[[CallbackOptions], Iterator[Observation]]:
        def callback(_options: CallbackOptions) -> Iterator[Observation]:
            return iter(()) if stopped else observe()

        return callback

    breaker, limiter, budget, counted = (
        sources.circuit_breaker,
        sources.rate_limiter,
        sources.retry_budget,
        sources.metrics,
    )

    def breaker_states() -> Iterator[Observation]:
        for target in sources.targets:
            current = breaker.state(target)
            for state in BreakerState:
                yield Observation(int(state is current), {TARGET: target, BREAKER_STATE: state.value})

    def breaker_transitions() -> Iterator[Observation]:
        if isinstance(breaker, _CountsTransitions):
            for target in sources.targets:
                for transition, count in breaker.transitions(target).items():
                    yield Observation(count, {TARGET: target, TRANSITION: transition})

    def limiter_decisions() -> Iterator[Observation]:
        if isinstance(limiter, _CountsAdmissions):
            yield Observation(limiter.counts.admitted, {DECISION: "admitted"})
            yield Observation(limiter.counts.rejected, {DECISION: "rejected"})

    def limiter_waits() -> Iterator[Observation]:
        if isinstance(limiter, _CountsAdmissions):
            yield Observation(limiter.counts.waited)

    def limiter_wait_time() -> Iterator[Observation]:
        if isinstance(limiter, _CountsAdmissions):
            yield Observation(limiter.counts.wait_total_s)

    def retries() -> Iterator[Observation]:
        for (operation, error), count in list(counted.retried_errors.items()):
            yield Observation(count, {OPERATION: operation, ERROR_TYPE: error})

    def budget_refusals() -> Iterator[Observation]:
        for operation, count in list(counted.retry_budget_exhausted.items()):
            yield Observation(count, {OPERATION: operation})

    def budget_balance() -> Iterator[Observation]:
        if isinstance(budget, _HasBalance):
            yield Observation(budget.balance)

    gauge, counter = meter.create_observable_gauge, meter.create_observable_counter
    gauge(
        "alchemy_hex.circuit_breaker.state",
        [observing(breaker_states)],
        unit="",
        description="1 for the state each target's circuit is in (closed, open, half_open), else 0.",
    )
    counter(
        "alchemy_hex.circuit_breaker.transitions",
        [observing(breaker_transitions)],
        unit="{transition}",
        description="State changes of each target's circuit: opened, half_opened, closed.",
    )
    counter(
        "alchemy_hex.rate_limiter.decisions",
        [observing(limiter_decisions)],
        unit="{call}",
        description="Calls the rate limiter admitted (at once or after waiting) and rejected.",
    )
    counter(
        "alchemy_hex.rate_limiter.waits",
        [observing(limiter_waits)],
        unit="{call}",
        description="Admitted calls that had to wait for their turn.",
    )
    counter(
        "alchemy_hex.rate_limiter.wait_time",
        [observing(limiter_wait_time)],
        unit="s",
        description="The time admitted calls spent waiting for their turn, in all.",
    )
    counter(
        "alchemy_hex.retries",
        [observing(retries)],
        unit="{retry}",
        description="Use-case attempts run again, by operation and by the error that made them retry.",
    )
    counter(
        "alchemy_hex.retry_budget.refusals",
        [observing(budget_refusals)],
        unit="{retry}",
        description="Retries refused because the process's retry budget was spent.",
    )
    gauge(
        "alchemy_hex.retry_budget.balance",
        [observing(budget_balance)],
        unit="{retry}",
        description="How many retries the retry budget would allow now.",
    )
    return stop
