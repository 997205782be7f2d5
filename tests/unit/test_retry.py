"""``run_with_retries``: what is retried, how often, and how the process's retry budget caps it."""

from __future__ import annotations

import pytest
from structlog.testing import capture_logs

from app.metrics import Metrics
from app.retry import RetryPolicy, run_with_retries
from app.retry_budget import RetryBudget, TokenRetryBudget
from domain.ledger.errors import InsufficientFundsError
from ports.errors import (
    DatabaseUnavailableError,
    PoolTimeoutError,
    QueryTimeoutError,
    TransactionConflictError,
)
from tests.fakes import RecordingRetryBudget

NO_WAIT = RetryPolicy(max_attempts=4, wait=False)


class Flaky:
    """An attempt that fails with ``error`` the first ``failures`` times, then returns ``"done"``."""

    def __init__(self, error: Exception, failures: int) -> None:
        self.error = error
        self.failures = failures
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return "done"


async def run(attempt: Flaky, budget: RetryBudget, metrics: Metrics, *, idempotent: bool = False) -> str:
    return await run_with_retries(
        attempt, policy=NO_WAIT, budget=budget, metrics=metrics, operation="transfer", idempotent=idempotent
    )


async def test_a_call_deposits_once_and_each_retry_of_an_infrastructure_failure_withdraws_once() -> None:
    budget, metrics = RecordingRetryBudget(), Metrics()
    assert await run(Flaky(PoolTimeoutError("pool exhausted"), failures=2), budget, metrics) == "done"
    assert (budget.deposits, budget.withdrawals) == (1, 2)
    assert metrics.retries["transfer"] == 2


async def test_a_transaction_the_server_rolled_back_is_retried_without_drawing_on_the_budget() -> None:
    budget, metrics = RecordingRetryBudget(retries=0), Metrics()
    assert await run(Flaky(TransactionConflictError("40001"), failures=3), budget, metrics) == "done"
    assert (budget.deposits, budget.withdrawals, budget.refusals) == (1, 0, 0)
    assert metrics.retries["transfer"] == 3
    assert metrics.snapshot()["retried_errors"] == {"transfer": {"TransactionConflictError": 3}}


async def test_the_budget_is_not_asked_once_the_policy_has_run_out_of_attempts() -> None:
    budget, metrics = RecordingRetryBudget(), Metrics()
    attempt = Flaky(DatabaseUnavailableError("refused"), failures=10)
    with pytest.raises(DatabaseUnavailableError):
        await run(attempt, budget, metrics)
    assert (attempt.calls, budget.withdrawals, budget.refusals) == (4, 3, 0)
    assert metrics.retry_budget_exhausted["transfer"] == 0


@pytest.mark.parametrize(
    "error",
    [InsufficientFundsError("a", 0, 1), QueryTimeoutError("statement timeout")],
    ids=lambda error: type(error).__name__,
)
async def test_an_error_unsafe_to_retry_never_touches_the_budget(error: Exception) -> None:
    budget = RecordingRetryBudget()
    with pytest.raises(type(error)):
        await run(Flaky(error, failures=1), budget, Metrics())
    assert (budget.withdrawals, budget.refusals) == (0, 0)


async def test_a_spent_budget_hands_the_error_to_the_caller_and_counts_it() -> None:
    budget, metrics = RecordingRetryBudget(retries=1), Metrics()
    attempt = Flaky(DatabaseUnavailableError("connection refused"), failures=3)
    with capture_logs() as logs, pytest.raises(DatabaseUnavailableError):
        await run(attempt, budget, metrics)
    assert attempt.calls == 2
    assert metrics.retries["transfer"] == 1
    assert metrics.retry_budget_exhausted["transfer"] == 1
    assert metrics.snapshot()["retry_budget_exhausted"] == {"transfer": 1}
    exhausted = [line for line in logs if line["event"] == "retry.budget_exhausted"]
    assert exhausted == [
        {
            "event": "retry.budget_exhausted",
            "log_level": "warning",
            "operation": "transfer",
            "attempt": 2,
            "error": "DatabaseUnavailableError",
        }
    ]


async def test_a_retry_storm_against_a_dead_database_is_capped_by_the_budget() -> None:
    now = [0.0]
    budget = TokenRetryBudget(ratio=0.2, min_retries_per_s=0.0, ttl_s=10.0, clock=lambda: now[0])
    metrics = Metrics()
    calls = 0
    for _ in range(1000):  # a thousand requests in one second, each failing on every attempt
        attempt = Flaky(DatabaseUnavailableError("refused"), failures=10)
        with pytest.raises(DatabaseUnavailableError):
            await run(attempt, budget, metrics)
        calls += attempt.calls
        now[0] += 0.001
    # Without a budget: 4000 attempts. With it: each request, plus 20% more.
    assert calls <= 1000 * 1.2 + 1
    assert metrics.retries["transfer"] == pytest.approx(200, abs=1)
