"""Retries of work that is safe to repeat, with exponential backoff and full jitter (tenacity)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import structlog
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt, stop_after_delay
from tenacity.wait import wait_none, wait_random_exponential

from app.metrics import Metrics
from ports.errors import CommitOutcomeUnknownError, HexError

T = TypeVar("T")
log = structlog.get_logger(__name__)


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
    metrics: Metrics,
    operation: str,
    idempotent: bool,
) -> T:
    """Run ``attempt`` until it succeeds, fails with an error unsafe to retry, or the policy gives up."""

    def before_sleep(state: RetryCallState) -> None:
        metrics.count_retry(operation)
        error = state.outcome.exception() if state.outcome else None
        log.info(
            "retry.scheduled", operation=operation, attempt=state.attempt_number, error=type(error).__name__
        )

    retrying = AsyncRetrying(
        stop=stop_after_attempt(policy.max_attempts) | stop_after_delay(policy.max_total_s),
        wait=wait_random_exponential(multiplier=policy.initial_backoff_s, max=policy.max_backoff_s)
        if policy.wait
        else wait_none(),
        retry=retry_if_exception(lambda e: is_safe_to_retry(e, idempotent=idempotent)),
        before_sleep=before_sleep,
        reraise=True,
    )
    async for attempt_state in retrying:
        with attempt_state:
            return await attempt()
    raise AssertionError("unreachable: tenacity re-raises the last error")  # pragma: no cover
