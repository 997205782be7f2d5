"""The in-memory circuit breaker: counting, opening, half-open trials, cancellation and logs."""

from __future__ import annotations

import asyncio
import enum
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, invariant, multiple, rule
from structlog.testing import capture_logs

from adapters.memory.circuit_breaker import InMemoryCircuitBreaker
from domain.errors import InvalidAmountError
from ports.circuit_breaker import BreakerState
from ports.errors import (
    CircuitOpenError,
    DatabaseUnavailableError,
    DataIntegrityError,
    PoolTimeoutError,
    QueryTimeoutError,
    RateLimitExceededError,
)


class FakeClock:
    """A clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def make_breaker(
    clock: FakeClock,
    *,
    failure_threshold: int = 3,
    recovery_time_s: float = 10.0,
    half_open_max_calls: int = 1,
) -> InMemoryCircuitBreaker:
    return InMemoryCircuitBreaker(
        failure_threshold=failure_threshold,
        recovery_time_s=recovery_time_s,
        half_open_max_calls=half_open_max_calls,
        clock=clock,
    )


def fail(breaker: InMemoryCircuitBreaker, target: str = "writer") -> None:
    with pytest.raises(DatabaseUnavailableError), breaker.guard(target):
        raise DatabaseUnavailableError("connection refused")


def succeed(breaker: InMemoryCircuitBreaker, target: str = "writer") -> None:
    with breaker.guard(target):
        pass


def tripped(clock: FakeClock, **settings_: int) -> InMemoryCircuitBreaker:
    """A breaker whose ``writer`` circuit has just opened after a single failure."""
    breaker = make_breaker(clock, failure_threshold=1, **settings_)
    fail(breaker)
    assert breaker.state("writer") is BreakerState.OPEN
    return breaker


class Outcome(enum.Enum):
    SUCCESS = "success"
    FAILURE = "failure"
    DOMAIN_ERROR = "domain_error"
    CANCELLED = "cancelled"


def leave_entered(guard: AbstractContextManager[None], outcome: Outcome) -> None:
    """Leave an entered guard the way ``outcome`` says; a true ``__exit__`` would swallow the error."""
    error: BaseException | None = {
        Outcome.SUCCESS: None,
        Outcome.FAILURE: QueryTimeoutError("statement timeout"),
        Outcome.DOMAIN_ERROR: InvalidAmountError("amount must be positive"),
        Outcome.CANCELLED: asyncio.CancelledError(),
    }[outcome]
    assert not guard.__exit__(type(error) if error else None, error, None)


def leave_with(guard: AbstractContextManager[None], error: BaseException) -> None:
    """Leave an entered guard with ``error`` and check that the guard lets it through."""
    assert not guard.__exit__(type(error), error, None)


@pytest.mark.parametrize(
    ("settings_", "named"),
    [
        ({"failure_threshold": 0}, "failure_threshold"),
        ({"recovery_time_s": -1.0}, "recovery_time_s"),
        ({"recovery_time_s": float("nan")}, "recovery_time_s"),
        ({"recovery_time_s": float("inf")}, "recovery_time_s"),
        ({"half_open_max_calls": 0}, "half_open_max_calls"),
    ],
)
def test_invalid_settings_are_refused_with_the_argument_named(settings_: dict[str, Any], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        InMemoryCircuitBreaker(**settings_)


def test_a_target_never_seen_is_closed_and_has_no_transitions() -> None:
    breaker = make_breaker(FakeClock())
    assert breaker.state("replica-9") is BreakerState.CLOSED
    assert breaker.transitions("replica-9") == {"opened": 0, "half_opened": 0, "closed": 0}


def test_consecutive_infrastructure_failures_open_the_circuit_at_the_threshold() -> None:
    breaker = make_breaker(FakeClock(), failure_threshold=3)
    fail(breaker)
    fail(breaker)
    assert breaker.state("writer") is BreakerState.CLOSED
    fail(breaker)
    assert breaker.state("writer") is BreakerState.OPEN


def test_failures_separated_by_a_success_never_open_the_circuit() -> None:
    breaker = make_breaker(FakeClock(), failure_threshold=3)
    for _ in range(10):
        fail(breaker)
        fail(breaker)
        succeed(breaker)
    assert breaker.state("writer") is BreakerState.CLOSED


@settings(max_examples=200)
@given(
    threshold=st.integers(1, 5),
    outcomes=st.lists(st.sampled_from([Outcome.SUCCESS, Outcome.FAILURE, Outcome.DOMAIN_ERROR]), max_size=30),
)
def test_the_circuit_opens_exactly_when_a_run_of_threshold_failures_happens(
    threshold: int, outcomes: list[Outcome]
) -> None:
    breaker = make_breaker(FakeClock(), failure_threshold=threshold)
    run = 0
    for outcome in outcomes:
        run = run + 1 if outcome is Outcome.FAILURE else 0
        guard = breaker.guard("writer")
        guard.__enter__()
        leave_entered(guard, outcome)
        expected = BreakerState.OPEN if run >= threshold else BreakerState.CLOSED
        assert breaker.state("writer") is expected
        if expected is BreakerState.OPEN:
            break


def test_an_open_circuit_refuses_at_once_saying_when_it_will_half_open() -> None:
    clock = FakeClock()
    breaker = tripped(clock)
    with pytest.raises(CircuitOpenError) as refused, breaker.guard("writer"):
        pytest.fail("an open circuit admitted a call")
    assert (refused.value.target, refused.value.retry_after_s) == ("writer", 10.0)
    clock.now = 7.5
    with pytest.raises(CircuitOpenError) as refused, breaker.guard("writer"):
        pytest.fail("an open circuit admitted a call")
    assert refused.value.retry_after_s == pytest.approx(2.5)


def test_the_state_is_half_open_once_the_recovery_time_has_passed_even_before_a_call() -> None:
    clock = FakeClock()
    breaker = tripped(clock)
    clock.now = 9.99
    assert breaker.state("writer") is BreakerState.OPEN
    clock.now = 10.0
    assert breaker.state("writer") is BreakerState.HALF_OPEN


async def test_half_open_admits_exactly_n_of_a_hundred_concurrent_callers() -> None:
    clock = FakeClock()
    breaker = tripped(clock, half_open_max_calls=3)
    clock.now = 10.0
    release = asyncio.Event()
    admitted: list[int] = []
    refused: list[CircuitOpenError] = []

    async def caller(number: int) -> None:
        try:
            with breaker.guard("writer"):
                admitted.append(number)
                await release.wait()
        except CircuitOpenError as error:
            refused.append(error)

    callers = [asyncio.create_task(caller(number)) for number in range(100)]
    await asyncio.sleep(0)  # one turn of the loop runs every caller up to its guard's verdict
    assert (len(admitted), len(refused)) == (3, 97)
    assert all(0 < error.retry_after_s <= 0.1 for error in refused)
    release.set()
    await asyncio.gather(*callers)
    assert breaker.state("writer") is BreakerState.CLOSED


def test_half_open_closes_only_once_n_trials_have_succeeded() -> None:
    clock = FakeClock()
    breaker = tripped(clock, half_open_max_calls=3)
    clock.now = 10.0
    succeed(breaker)
    succeed(breaker)
    assert breaker.state("writer") is BreakerState.HALF_OPEN
    succeed(breaker)
    assert breaker.state("writer") is BreakerState.CLOSED


def test_a_failed_trial_reopens_the_circuit_for_a_whole_recovery_time() -> None:
    clock = FakeClock()
    breaker = tripped(clock, half_open_max_calls=3)
    clock.now = 12.0
    succeed(breaker)
    fail(breaker)
    assert breaker.state("writer") is BreakerState.OPEN
    with pytest.raises(CircuitOpenError) as refused, breaker.guard("writer"):
        pytest.fail("a reopened circuit admitted a call")
    assert refused.value.retry_after_s == 10.0


@pytest.mark.parametrize(
    "error",
    [
        InvalidAmountError("amount must be positive"),
        DataIntegrityError("duplicate key"),
        RateLimitExceededError("tenant", 1.0),
        ValueError("bad"),
        KeyError("missing"),
    ],
    ids=lambda error: type(error).__name__,
)
def test_errors_that_are_not_infrastructure_errors_never_open_the_circuit(error: Exception) -> None:
    breaker = make_breaker(FakeClock(), failure_threshold=1)
    for _ in range(20):
        with pytest.raises(type(error)), breaker.guard("writer"):
            raise error
    assert breaker.state("writer") is BreakerState.CLOSED


def test_an_answer_that_is_a_domain_error_counts_as_a_successful_trial() -> None:
    clock = FakeClock()
    breaker = tripped(clock)
    clock.now = 10.0
    with pytest.raises(InvalidAmountError), breaker.guard("writer"):
        raise InvalidAmountError("amount must be positive")
    assert breaker.state("writer") is BreakerState.CLOSED


def test_a_cancelled_call_neither_counts_as_a_failure_nor_resets_the_count() -> None:
    breaker = make_breaker(FakeClock(), failure_threshold=2)
    fail(breaker)
    with pytest.raises(asyncio.CancelledError), breaker.guard("writer"):
        raise asyncio.CancelledError
    assert breaker.state("writer") is BreakerState.CLOSED
    fail(breaker)
    assert breaker.state("writer") is BreakerState.OPEN


async def test_a_cancelled_trial_frees_its_slot_and_counts_for_nothing() -> None:
    clock = FakeClock()
    breaker = tripped(clock)
    clock.now = 10.0
    started = asyncio.Event()

    async def hanging_trial() -> None:
        with breaker.guard("writer"):
            started.set()
            await asyncio.Event().wait()

    trial = asyncio.create_task(hanging_trial())
    await started.wait()
    with pytest.raises(CircuitOpenError), breaker.guard("writer"):
        pytest.fail("a second trial was admitted")
    trial.cancel()
    with pytest.raises(asyncio.CancelledError):
        await trial
    assert breaker.state("writer") is BreakerState.HALF_OPEN
    succeed(breaker)
    assert breaker.state("writer") is BreakerState.CLOSED


@pytest.mark.parametrize(
    "error",
    [
        PoolTimeoutError("pool exhausted"),
        InvalidAmountError("negative"),
        asyncio.CancelledError(),
        KeyboardInterrupt(),
    ],
    ids=lambda error: type(error).__name__,
)
def test_the_guard_re_raises_the_very_exception_it_saw(error: BaseException) -> None:
    breaker = make_breaker(FakeClock())
    with pytest.raises(type(error)) as raised, breaker.guard("writer"):
        raise error
    assert raised.value is error


def test_a_slow_call_admitted_before_the_circuit_opened_does_not_restart_the_recovery_time() -> None:
    clock = FakeClock()
    breaker = make_breaker(clock, failure_threshold=1)
    slow = breaker.guard("writer")
    slow.__enter__()
    fail(breaker)
    clock.now = 9.0
    leave_with(slow, DatabaseUnavailableError("connection reset"))
    clock.now = 10.0
    assert breaker.state("writer") is BreakerState.HALF_OPEN


def test_a_slow_call_admitted_while_closed_neither_uses_nor_decides_a_half_open_trial() -> None:
    clock = FakeClock()
    breaker = make_breaker(clock, failure_threshold=1)
    slow_success, slow_failure = breaker.guard("writer"), breaker.guard("writer")
    slow_success.__enter__()
    slow_failure.__enter__()
    fail(breaker)
    clock.now = 10.0
    trial = breaker.guard("writer")
    trial.__enter__()
    assert not slow_success.__exit__(None, None, None)
    leave_with(slow_failure, DatabaseUnavailableError("connection reset"))
    assert breaker.state("writer") is BreakerState.HALF_OPEN
    assert not trial.__exit__(None, None, None)
    assert breaker.state("writer") is BreakerState.CLOSED


def test_targets_have_separate_circuits() -> None:
    breaker = make_breaker(FakeClock(), failure_threshold=1)
    fail(breaker, "replica-1")
    assert breaker.state("replica-1") is BreakerState.OPEN
    assert breaker.state("writer") is BreakerState.CLOSED
    succeed(breaker, "writer")


def test_transitions_are_logged_with_their_context_and_counted() -> None:
    clock = FakeClock()
    breaker = make_breaker(clock, failure_threshold=2)
    with capture_logs() as logs:
        fail(breaker)
        fail(breaker)
        clock.now = 10.0
        assert breaker.state("writer") is BreakerState.HALF_OPEN
        succeed(breaker)
    assert [(entry["event"], entry["log_level"]) for entry in logs] == [
        ("circuit.opened", "warning"),
        ("circuit.half_opened", "info"),
        ("circuit.closed", "info"),
    ]
    assert logs[0]["target"] == "writer"
    assert logs[0]["failures"] == 2
    assert breaker.transitions("writer") == {"opened": 1, "half_opened": 1, "closed": 1}


@dataclass
class BreakerModel:
    """The breaker's rules written as plainly as possible, to check the real one against."""

    threshold: int
    recovery_s: float
    max_trials: int
    state: BreakerState = BreakerState.CLOSED
    epoch: int = 0
    failures: int = 0
    opened_at: float = 0.0
    trials: int = 0
    trial_successes: int = 0

    def look(self, now: float) -> BreakerState:
        if self.state is BreakerState.OPEN and now - self.opened_at >= self.recovery_s:
            self.become(BreakerState.HALF_OPEN)
        return self.state

    def admit(self, now: float) -> int | None:
        state = self.look(now)
        if state is BreakerState.OPEN or (state is BreakerState.HALF_OPEN and self.trials == self.max_trials):
            return None
        self.trials += state is BreakerState.HALF_OPEN
        return self.epoch

    def finish(self, epoch: int, outcome: Outcome, now: float) -> None:
        if epoch != self.epoch:
            return
        if self.state is BreakerState.HALF_OPEN:
            self.trials -= 1
        if outcome is Outcome.CANCELLED:
            return
        failed = outcome is Outcome.FAILURE
        if self.state is BreakerState.HALF_OPEN:
            self.trial_successes += not failed
            if failed:
                self.open(now)
            elif self.trial_successes == self.max_trials:
                self.become(BreakerState.CLOSED)
            return
        self.failures = self.failures + 1 if failed else 0
        if self.failures >= self.threshold:
            self.open(now)

    def open(self, now: float) -> None:
        self.become(BreakerState.OPEN)
        self.opened_at = now

    def become(self, state: BreakerState) -> None:
        self.state, self.epoch = state, self.epoch + 1
        self.failures = self.trials = self.trial_successes = 0


@settings(max_examples=150, stateful_step_count=40, deadline=None)
class BreakerMachine(RuleBasedStateMachine):
    """Random interleavings of calls, outcomes and waiting, checked against :class:`BreakerModel`."""

    calls = Bundle("calls")

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.breaker = make_breaker(
            self.clock, failure_threshold=3, recovery_time_s=5.0, half_open_max_calls=2
        )
        self.model = BreakerModel(threshold=3, recovery_s=5.0, max_trials=2)

    @rule(target=calls)
    def enter(self) -> object:
        guard = self.breaker.guard("writer")
        expected = self.model.admit(self.clock.now)
        refusal: CircuitOpenError | None = None
        try:
            guard.__enter__()
        except CircuitOpenError as refused:
            refusal = refused
        if refusal is not None:
            assert expected is None
            assert refusal.retry_after_s > 0
            return multiple()
        assert expected is not None
        return (guard, expected)

    @rule(call=consumes(calls), outcome=st.sampled_from(Outcome))
    def finish(self, call: tuple[AbstractContextManager[None], int], outcome: Outcome) -> None:
        guard, epoch = call
        self.model.finish(epoch, outcome, self.clock.now)
        leave_entered(guard, outcome)

    @rule(seconds=st.sampled_from([0.5, 2.0, 5.0]))
    def wait(self, seconds: float) -> None:
        self.clock.now += seconds

    @invariant()
    def states_agree(self) -> None:
        assert self.breaker.state("writer") is self.model.look(self.clock.now)


test_the_breaker_follows_its_model_through_random_interleavings = BreakerMachine.TestCase
