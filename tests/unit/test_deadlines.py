"""The caller's deadline: scopes only shorten, headers parse, retries never outlast it, breakers read it."""

from __future__ import annotations

import asyncio

import pytest

from adapters.memory.circuit_breaker import InMemoryCircuitBreaker
from app.metrics import Metrics
from app.retry import RetryPolicy, run_with_retries
from app.retry_budget import UnlimitedRetryBudget
from ports.circuit_breaker import BreakerState
from ports.deadline import DeadlineStage, deadline_scope, expires_at, parse_timeout_s, remaining_s, require
from ports.errors import CircuitOpenError, DatabaseUnavailableError, DeadlineExceededError


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def test_without_a_scope_there_is_no_deadline_and_nothing_is_required() -> None:
    assert remaining_s() is None
    assert require(DeadlineStage.START) is None


def test_a_nested_scope_can_shorten_the_deadline_but_never_extend_it() -> None:
    with deadline_scope(10.0) as outer:
        with deadline_scope(60.0) as longer:
            assert longer == outer
        with deadline_scope(1.0) as shorter:
            assert shorter is not None
            assert outer is not None
            assert shorter < outer
            assert expires_at() == shorter
        assert expires_at() == outer
    assert expires_at() is None


def test_an_expired_deadline_names_the_stage_that_ran_out() -> None:
    with deadline_scope(0), pytest.raises(DeadlineExceededError) as raised:
        require(DeadlineStage.ADMISSION, target="writer")
    assert raised.value.stage == "admission"
    assert raised.value.target == "writer"
    assert not raised.value.server_unresponsive
    assert not raised.value.retryable


@pytest.mark.parametrize("bad", [-1.0, float("nan")])
def test_a_negative_or_nan_timeout_is_refused(bad: float) -> None:
    with pytest.raises(ValueError, match=">= 0"):
        deadline_scope(bad)


@pytest.mark.parametrize(
    ("header", "seconds"), [("2", 2.0), ("2.5", 2.5), ("2.5s", 2.5), ("250ms", 0.25), (" 1500MS ", 1.5)]
)
def test_a_timeout_header_is_seconds_unless_it_says_milliseconds(header: str, seconds: float) -> None:
    assert parse_timeout_s(header) == pytest.approx(seconds)


@pytest.mark.parametrize("header", ["", "-1", "soon", "1h", "1e3"])
def test_a_timeout_header_that_is_not_a_duration_is_refused(header: str) -> None:
    with pytest.raises(ValueError, match="timeout"):
        parse_timeout_s(header)


async def test_a_retry_is_not_scheduled_when_the_time_left_is_less_than_its_backoff() -> None:
    calls = 0
    metrics = Metrics()

    async def attempt() -> str:
        nonlocal calls
        calls += 1
        raise DatabaseUnavailableError("down")

    policy = RetryPolicy(max_attempts=5, wait=False)  # backoff 0: only the attempt's own minimum
    with deadline_scope(0.001):
        await asyncio.sleep(0.002)  # spent already
        with pytest.raises(DatabaseUnavailableError):
            await run_with_retries(
                attempt,
                policy=policy,
                budget=UnlimitedRetryBudget(),
                metrics=metrics,
                operation="op",
                idempotent=False,
            )
    assert calls == 1
    assert metrics.retries["op"] == 0


def _breaker(clock: FakeClock) -> InMemoryCircuitBreaker:
    return InMemoryCircuitBreaker(
        window_size=10, minimum_calls=10, slow_call_duration_s=5.0, recovery_time_s=5.0, clock=clock
    )


def test_calls_that_ran_out_of_their_callers_deadline_teach_the_breaker_nothing() -> None:
    clock = FakeClock()
    breaker = _breaker(clock)
    for _ in range(20):
        with pytest.raises(DeadlineExceededError), breaker.guard("writer"):
            raise DeadlineExceededError(DeadlineStage.STATEMENT)
    assert breaker.state("writer") is BreakerState.CLOSED


def test_calls_the_server_left_unanswered_past_the_deadline_count_as_failures() -> None:
    clock = FakeClock()
    breaker = _breaker(clock)
    for _ in range(10):
        with pytest.raises(DeadlineExceededError), breaker.guard("writer"):
            raise DeadlineExceededError(DeadlineStage.STATEMENT, server_unresponsive=True)
    assert breaker.state("writer") is BreakerState.OPEN


def test_stuck_calls_open_the_circuit_while_they_run_and_do_not_count_again_when_they_end() -> None:
    clock = FakeClock()
    breaker = _breaker(clock)
    for _ in range(10):
        with breaker.guard("writer"):
            clock.advance(0.001)
    stuck = [breaker.guard("writer") for _ in range(5)]
    for guard in stuck:
        guard.__enter__()
    clock.advance(6.0)
    breaker.record_stuck("writer", 5)  # 5 failures of the last 10 calls: the threshold, 0.5
    assert breaker.state("writer") is BreakerState.OPEN
    with pytest.raises(CircuitOpenError):
        breaker.guard("writer").__enter__()
    for guard in stuck:
        guard.__exit__(None, None, None)  # stale now: admitted before the circuit opened
    assert breaker.transitions("writer")["opened"] == 1


def test_stuck_calls_below_the_threshold_are_counted_once_however_they_end() -> None:
    clock = FakeClock()
    breaker = _breaker(clock)
    for _ in range(10):
        with breaker.guard("writer"):
            clock.advance(0.001)
    guard = breaker.guard("writer")
    guard.__enter__()
    clock.advance(6.0)
    breaker.record_stuck("writer", 1)
    guard.__exit__(None, None, None)  # slow, but already counted while stuck
    for _ in range(3):  # three more failures: 4 of 10 would stay closed, 5 would open
        with pytest.raises(DatabaseUnavailableError), breaker.guard("writer"):
            raise DatabaseUnavailableError("x")
    assert breaker.state("writer") is BreakerState.CLOSED


def test_a_probe_that_reached_the_server_half_opens_an_open_circuit_at_once() -> None:
    clock = FakeClock()
    breaker = _breaker(clock)
    for _ in range(10):
        with pytest.raises(DatabaseUnavailableError), breaker.guard("writer"):
            raise DatabaseUnavailableError("x")
    assert breaker.state("writer") is BreakerState.OPEN
    breaker.recovered("writer")
    assert breaker.state("writer") is BreakerState.HALF_OPEN
    with breaker.guard("writer"):
        pass
    assert breaker.state("writer") is BreakerState.CLOSED
    breaker.recovered("writer")  # closed: nothing changes
    assert breaker.state("writer") is BreakerState.CLOSED
