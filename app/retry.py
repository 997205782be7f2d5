"""Retries of work that is safe to repeat, with exponential backoff and full jitter (tenacity)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final, TypeVar

import structlog
from opentelemetry import trace
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt, stop_after_delay
from tenacity.wait import wait_none, wait_random_exponential

from app.metrics import Metrics
from app.retry_budget import RetryBudget
from ports.deadline import remaining_s
from ports.errors import CommitOutcomeUnknownError, HexError, InfrastructureError, SaturationError

T = TypeVar("T")
log = structlog.get_logger(__name__)

#: The least an attempt needs besides its backoff: a retry that would start with less is not made.
MIN_ATTEMPT_S: Final = 0.005


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how patiently to run a use case again; ``wait=False`` is the test mode."""

    max_attempts: int = 4
    initial_backoff_s: float = 0.05
    max_backoff_s: float = 2.0
    max_total_s: float = 10.0
    wait: bool = True


def is_safe_to_retry(error: BaseException, *, idempotent: bool) -> bool:
    """Whether running the whole unit of work again cannot apply it twice.

    Acquisition failures and transactions the server rolled back are safe. A commit whose
    outcome is unknown is safe only when the use case is idempotent (an idempotency key makes the
    repeat return the first outcome); everything else is not retried.
    """
    if isinstance(error, CommitOutcomeUnknownError):
        return idempotent
    return isinstance(error, HexError) and error.retryable


async def run_with_retries(
    attempt: Callable[[], Awaitable[T]],
    *,
    policy: RetryPolicy,
    budget: RetryBudget,
    metrics: Metrics,
    operation: str,
    idempotent: bool,
) -> T:
    """Run ``attempt`` until it succeeds, fails with an error unsafe to retry, or the policy gives up.

    The call deposits into the process's retry ``budget`` once; each retry of an infrastructure
    failure withdraws from it. When the budget is spent, the error is raised instead of retrying
    (and counted), so the retries of many callers cannot multiply the load on a database that is
    already failing. A transaction the server rolled back (serialization failure, deadlock) is
    retried without drawing on the budget: like the circuit breaker, the budget reads it as a
    healthy, contended database, and ``policy.max_attempts`` alone bounds those retries.

    Under a caller's deadline (:mod:`ports.deadline`), a retry whose backoff plus
    :data:`MIN_ATTEMPT_S` would not fit in the time left is not scheduled: the last error is
    raised at once (``retry.skipped``, reason ``deadline``), before any budget is spent.

    The first attempt runs without tenacity (most calls succeed, and building its machinery costs
    more than the attempt's own Python); only a failure safe to retry hands over to it, replayed
    as the first attempt, so every limit, event and count is the same as if tenacity had run it.
    """
    budget.deposit()
    started = time.monotonic()
    try:
        return await attempt()
    except Exception as error:
        if not is_safe_to_retry(error, idempotent=idempotent):
            raise
        first_error = error
    replayed = False

    async def replay_then_attempt() -> T:
        nonlocal replayed
        if not replayed:
            replayed = True
            raise first_error
        return await attempt()

    # The first attempt's time counts against the policy's total, as it would inside tenacity.
    total_left_s = max(0.0, policy.max_total_s - (time.monotonic() - started))
    policy_stop = stop_after_attempt(policy.max_attempts) | stop_after_delay(total_left_s)

    def stop(state: RetryCallState) -> bool:
        # Asked only once the error is known to be safe to retry, so a token is spent only on a
        # retry that will happen: the policy's own limits are checked first.
        if policy_stop(state):
            return True
        error = state.outcome.exception() if state.outcome else None
        left = remaining_s()
        if left is not None and left < state.upcoming_sleep + MIN_ATTEMPT_S:
            trace.get_current_span().add_event(
                "retry.skipped",
                {
                    "attempt": state.attempt_number,
                    "reason": "deadline",
                    "remaining_ms": round(left * 1000, 3),
                },
            )
            log.info(
                "retry.skipped",
                operation=operation,
                attempt=state.attempt_number,
                reason="deadline",
                remaining_s=round(left, 4),
                backoff_s=round(state.upcoming_sleep, 4),
            )
            return True
        # Saturation retries add load exactly when there is none to spare: they draw on it too.
        if not isinstance(error, InfrastructureError | SaturationError) or budget.try_withdraw():
            return False
        metrics.count_retry_budget_exhausted(operation)
        trace.get_current_span().add_event(
            "retry.budget_exhausted", {"attempt": state.attempt_number, "error.type": type(error).__name__}
        )
        log.warning(
            "retry.budget_exhausted",
            operation=operation,
            attempt=state.attempt_number,
            error=type(error).__name__,
        )
        return True

    def before_sleep(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        metrics.count_retry(operation, error)
        # On the use case's span (the attempt's own has ended): the attempt that failed, and why.
        trace.get_current_span().add_event(
            "retry", {"attempt": state.attempt_number, "error.type": type(error).__name__}
        )
        log.info(
            "retry.scheduled", operation=operation, attempt=state.attempt_number, error=type(error).__name__
        )

    retrying = AsyncRetrying(
        stop=stop,
        wait=wait_random_exponential(multiplier=policy.initial_backoff_s, max=policy.max_backoff_s)
        if policy.wait
        else wait_none(),
        retry=retry_if_exception(lambda e: is_safe_to_retry(e, idempotent=idempotent)),
        before_sleep=before_sleep,
        reraise=True,
    )
    async for attempt_state in retrying:
        with attempt_state:
            return await replay_then_attempt()
    raise AssertionError("unreachable: tenacity re-raises the last error")  # pragma: no cover
