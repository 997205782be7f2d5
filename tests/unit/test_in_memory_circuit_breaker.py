"""The in-memory circuit breaker: sliding windows, rates, half-open trials, cancellation and logs."""

from __future__ import annotations

import asyncio
import enum
import math
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, invariant, multiple, rule
from structlog.testing import capture_logs

from adapters.memory.call_window import TIME_BUCKETS
from adapters.memory.circuit_breaker import InMemoryCircuitBreaker, WindowKind
from domain.ledger.errors import InvalidAmountError
from ports.circuit_breaker import BreakerState
from ports.errors import (
    CircuitOpenError,
    DatabaseUnavailableError,
    DataIntegrityError,
    PoolTimeoutError,
    QueryTimeoutError,
    RateLimitExceededError,
    TransactionConflictError,
)


class FakeClock:
    """A clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def consecutive(
    clock: FakeClock, *, failures: int = 3, recovery_time_s: float = 10.0, half_open_max_calls: int = 1
) -> InMemoryCircuitBreaker:
    """The classic breaker as a special case: opens after ``failures`` consecutive failures."""
    return InMemoryCircuitBreaker(
        window_size=failures,
        minimum_calls=failures,
        failure_rate_threshold=1.0,
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


def slow_success(breaker: InMemoryCircuitBreaker, clock: FakeClock, duration_s: float) -> None:
    with breaker.guard("writer"):
        clock.now += duration_s


def tripped(clock: FakeClock, **settings_: Any) -> InMemoryCircuitBreaker:
    """A breaker whose ``writer`` circuit has just opened after a single failure."""
    breaker = consecutive(clock, failures=1, **settings_)
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
        ({"window": "sliding"}, "window"),
        ({"window_size": 0}, "window_size"),
        ({"minimum_calls": 0}, "minimum_calls"),
        ({"window_size": 5, "minimum_calls": 6}, "minimum_calls"),
        ({"failure_rate_threshold": 0.0}, "failure_rate_threshold"),
        ({"failure_rate_threshold": 1.5}, "failure_rate_threshold"),
        ({"slow_call_rate_threshold": math.nan}, "slow_call_rate_threshold"),
        ({"slow_call_duration_s": 0.0}, "slow_call_duration_s"),
        ({"recovery_time_s": -1.0}, "recovery_time_s"),
        ({"recovery_time_s": float("nan")}, "recovery_time_s"),
        ({"recovery_time_s": float("inf")}, "recovery_time_s"),
        ({"half_open_max_calls": 0}, "half_open_max_calls"),
    ],
)
def test_invalid_settings_are_refused_with_the_argument_named(settings_: dict[str, Any], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        InMemoryCircuitBreaker(**settings_)


def test_a_time_window_may_need_more_calls_than_its_length_in_seconds() -> None:
    InMemoryCircuitBreaker(window="time", window_size=5, minimum_calls=100)


def test_a_target_never_seen_is_closed_and_has_no_transitions() -> None:
    breaker = consecutive(FakeClock())
    assert breaker.state("replica-9") is BreakerState.CLOSED
    assert breaker.transitions("replica-9") == {"opened": 0, "half_opened": 0, "closed": 0}


def test_consecutive_failures_open_a_breaker_configured_as_the_classic_one_at_the_threshold() -> None:
    breaker = consecutive(FakeClock(), failures=3)
    fail(breaker)
    fail(breaker)
    assert breaker.state("writer") is BreakerState.CLOSED
    fail(breaker)
    assert breaker.state("writer") is BreakerState.OPEN


def test_failures_separated_by_a_success_never_open_the_classic_breaker() -> None:
    breaker = consecutive(FakeClock(), failures=3)
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
def test_the_classic_breaker_opens_exactly_when_a_run_of_threshold_failures_happens(
    threshold: int, outcomes: list[Outcome]
) -> None:
    breaker = consecutive(FakeClock(), failures=threshold)
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


def rate_breaker(clock: FakeClock, **settings_: Any) -> InMemoryCircuitBreaker:
    defaults: dict[str, Any] = {"window_size": 10, "minimum_calls": 10, "failure_rate_threshold": 0.5}
    return InMemoryCircuitBreaker(**(defaults | settings_), clock=clock)


def test_the_circuit_opens_when_the_failure_rate_reaches_the_threshold_once_the_window_is_full() -> None:
    breaker = rate_breaker(FakeClock())
    for _ in range(5):
        fail(breaker)
        assert breaker.state("writer") is BreakerState.CLOSED, "fewer calls than minimum_calls"
    for _ in range(4):
        succeed(breaker)
    assert breaker.state("writer") is BreakerState.CLOSED
    succeed(breaker)  # 5 failures in 10 calls: 50%
    assert breaker.state("writer") is BreakerState.OPEN


def test_a_failure_rate_under_the_threshold_leaves_the_circuit_closed_for_ever() -> None:
    breaker = rate_breaker(FakeClock())
    for _ in range(100):
        fail(breaker)
        for _ in range(2):
            succeed(breaker)
    assert breaker.state("writer") is BreakerState.CLOSED


def test_old_outcomes_slide_out_of_a_count_window() -> None:
    breaker = rate_breaker(FakeClock())
    for _ in range(4):
        fail(breaker)
    for _ in range(16):
        succeed(breaker)
    for _ in range(4):
        fail(breaker)  # 8 failures seen, but only the last 4 are among the last 10 calls
    assert breaker.state("writer") is BreakerState.CLOSED
    fail(breaker)
    assert breaker.state("writer") is BreakerState.OPEN


def test_a_time_window_forgets_what_ended_more_than_its_length_ago() -> None:
    clock = FakeClock()
    breaker = rate_breaker(clock, window="time", window_size=10, minimum_calls=4)
    for _ in range(3):
        fail(breaker)
    clock.now = 10.0 + 10.0 / TIME_BUCKETS  # the failures' bucket has left the window
    fail(breaker)
    succeed(breaker)
    succeed(breaker)
    succeed(breaker)
    assert breaker.state("writer") is BreakerState.CLOSED
    clock.now = 19.0
    fail(breaker)  # 2 failures among the 5 calls of the last 10 s: still under 50%
    assert breaker.state("writer") is BreakerState.CLOSED
    fail(breaker)
    assert breaker.state("writer") is BreakerState.OPEN


def test_a_time_window_needs_minimum_calls_within_the_window() -> None:
    clock = FakeClock()
    breaker = rate_breaker(clock, window="time", window_size=1, minimum_calls=3)
    for _ in range(10):
        fail(breaker)
        fail(breaker)
        clock.now += 1.0
    assert breaker.state("writer") is BreakerState.CLOSED


def test_slow_calls_open_the_circuit_even_when_they_succeed() -> None:
    clock = FakeClock()
    breaker = rate_breaker(clock, slow_call_duration_s=2.0, slow_call_rate_threshold=0.6)
    for _ in range(5):
        slow_success(breaker, clock, 2.0)  # exactly the limit is not slow
    for _ in range(5):
        slow_success(breaker, clock, 2.5)
    assert breaker.state("writer") is BreakerState.CLOSED  # 5 of 10 slow: under 60%
    slow_success(breaker, clock, 2.01)  # a quick call slid out: 6 of 10
    assert breaker.state("writer") is BreakerState.OPEN


def test_a_slow_domain_error_counts_as_slow_but_not_as_a_failure() -> None:
    clock = FakeClock()
    breaker = rate_breaker(clock, slow_call_duration_s=1.0, slow_call_rate_threshold=1.0)

    def slow_refusal() -> None:
        with breaker.guard("writer"):
            clock.now += 5.0
            raise InvalidAmountError("amount must be positive")

    for _ in range(10):
        with pytest.raises(InvalidAmountError):
            slow_refusal()
    assert breaker.state("writer") is BreakerState.OPEN


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


def test_refusing_a_call_costs_microseconds_not_a_connect_timeout() -> None:
    breaker = tripped(FakeClock())
    refusals = 20_000
    started = time.perf_counter()
    for _ in range(refusals):
        try:
            with breaker.guard("writer"):
                pass
        except CircuitOpenError:
            pass
    per_refusal_s = (time.perf_counter() - started) / refusals
    assert per_refusal_s < 50e-6  # typically 1-3 µs; the bound only catches an accidental await or I/O


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
        await asyncio.sleep(0)  # every caller is started before any reaches the guard
        try:
            with breaker.guard("writer"):
                admitted.append(number)
                await release.wait()
        except CircuitOpenError as error:
            refused.append(error)

    callers = [asyncio.create_task(caller(number)) for number in range(100)]
    for _ in range(3):
        await asyncio.sleep(0)  # a few turns of the loop run every caller up to its guard's verdict
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


def test_a_slow_trial_reopens_the_circuit_even_though_it_succeeded() -> None:
    clock = FakeClock()
    breaker = InMemoryCircuitBreaker(
        window_size=1, minimum_calls=1, slow_call_duration_s=1.0, recovery_time_s=10.0, clock=clock
    )
    fail(breaker)
    clock.now = 10.0
    with capture_logs() as logs:
        slow_success(breaker, clock, 1.5)
    assert breaker.state("writer") is BreakerState.OPEN
    assert logs[-1]["event"] == "circuit.opened"
    assert logs[-1]["reason"] == "trial_slow"


def test_the_circuit_starts_again_from_an_empty_window_after_closing() -> None:
    clock = FakeClock()
    breaker = rate_breaker(clock, window_size=4, minimum_calls=4)
    for _ in range(4):
        fail(breaker)
    clock.now = 10.0
    succeed(breaker)
    assert breaker.state("writer") is BreakerState.CLOSED
    for _ in range(3):
        fail(breaker)
    assert breaker.state("writer") is BreakerState.CLOSED  # 3 calls: fewer than minimum_calls


@pytest.mark.parametrize(
    "error",
    [
        InvalidAmountError("amount must be positive"),
        DataIntegrityError("duplicate key"),
        TransactionConflictError("could not serialize access"),
        RateLimitExceededError("tenant", 1.0),
        ValueError("bad"),
        KeyError("missing"),
    ],
    ids=lambda error: type(error).__name__,
)
def test_a_hundred_errors_that_are_not_infrastructure_errors_leave_the_circuit_closed(
    error: Exception,
) -> None:
    breaker = rate_breaker(FakeClock(), window_size=5, minimum_calls=1, failure_rate_threshold=0.01)
    for _ in range(100):
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
    breaker = consecutive(FakeClock(), failures=2)
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
    breaker = consecutive(FakeClock())
    with pytest.raises(type(error)) as raised, breaker.guard("writer"):
        raise error
    assert raised.value is error


def test_a_slow_call_admitted_before_the_circuit_opened_does_not_restart_the_recovery_time() -> None:
    clock = FakeClock()
    breaker = consecutive(clock, failures=1)
    slow = breaker.guard("writer")
    slow.__enter__()
    fail(breaker)
    clock.now = 9.0
    leave_with(slow, DatabaseUnavailableError("connection reset"))
    clock.now = 10.0
    assert breaker.state("writer") is BreakerState.HALF_OPEN


def test_a_slow_call_admitted_while_closed_neither_uses_nor_decides_a_half_open_trial() -> None:
    clock = FakeClock()
    breaker = consecutive(clock, failures=1)
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
    breaker = consecutive(FakeClock(), failures=1)
    fail(breaker, "replica-1")
    assert breaker.state("replica-1") is BreakerState.OPEN
    assert breaker.state("writer") is BreakerState.CLOSED
    succeed(breaker, "writer")


def test_transitions_are_logged_with_their_context_and_counted() -> None:
    clock = FakeClock()
    breaker = consecutive(clock, failures=2)
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
    opened = logs[0]
    assert (opened["target"], opened["reason"], opened["calls"], opened["failure_rate"]) == (
        "writer",
        "failure_rate",
        2,
        1.0,
    )
    assert breaker.transitions("writer") == {"opened": 1, "half_opened": 1, "closed": 1}


MACHINE_SETTINGS = settings(max_examples=100, stateful_step_count=40, deadline=None)


@dataclass
class BreakerModel:
    """The breaker's rules written as plainly as possible, to check the real one against.

    The window is the list of every outcome recorded since the last transition; a count window
    looks at its tail, a time window at the outcomes whose bucket is one of the last ten.
    """

    window: WindowKind
    size: int
    minimum: int
    failure_rate: float
    slow_rate: float
    slow_s: float
    recovery_s: float
    max_trials: int
    state: BreakerState = BreakerState.CLOSED
    epoch: int = 0
    recorded: list[tuple[float, bool, bool]] = field(default_factory=list)
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

    def finish(self, epoch: int, outcome: Outcome, started_at: float, now: float) -> None:
        if epoch != self.epoch:
            return
        if self.state is BreakerState.HALF_OPEN:
            self.trials -= 1
        if outcome is Outcome.CANCELLED:
            return
        failed, slow = outcome is Outcome.FAILURE, now - started_at > self.slow_s
        if self.state is BreakerState.HALF_OPEN:
            if failed or slow:
                self.open(now)
                return
            self.trial_successes += 1
            if self.trial_successes == self.max_trials:
                self.become(BreakerState.CLOSED)
            return
        self.recorded.append((now, failed, slow))
        seen = self.in_window(now)
        if len(seen) >= self.minimum and (
            sum(f for f, _ in seen) >= self.failure_rate * len(seen)
            or sum(s for _, s in seen) >= self.slow_rate * len(seen)
        ):
            self.open(now)

    def in_window(self, now: float) -> list[tuple[bool, bool]]:
        if self.window == "count":
            return [(f, s) for _, f, s in self.recorded[-self.size :]]
        bucket_s = self.size / TIME_BUCKETS
        newest = math.floor(now / bucket_s)
        return [(f, s) for at, f, s in self.recorded if math.floor(at / bucket_s) > newest - TIME_BUCKETS]

    def open(self, now: float) -> None:
        self.become(BreakerState.OPEN)
        self.opened_at = now

    def become(self, state: BreakerState) -> None:
        self.state, self.epoch = state, self.epoch + 1
        self.trials = self.trial_successes = 0
        self.recorded = []


@MACHINE_SETTINGS
class BreakerMachine(RuleBasedStateMachine):
    """Random interleavings of calls, outcomes and waiting, checked against :class:`BreakerModel`."""

    window: WindowKind = "count"
    calls = Bundle("calls")

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        settings_: dict[str, Any] = {
            "window": self.window,
            "window_size": 4 if self.window == "count" else 10,
            "minimum_calls": 3,
            "failure_rate_threshold": 0.5,
            "slow_call_rate_threshold": 0.75,
            "slow_call_duration_s": 3.0,
            "recovery_time_s": 5.0,
            "half_open_max_calls": 2,
        }
        self.breaker = InMemoryCircuitBreaker(**settings_, clock=self.clock)
        self.model = BreakerModel(
            window=self.window,
            size=settings_["window_size"],
            minimum=3,
            failure_rate=0.5,
            slow_rate=0.75,
            slow_s=3.0,
            recovery_s=5.0,
            max_trials=2,
        )

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
        return (guard, expected, self.clock.now)

    @rule(call=consumes(calls), outcome=st.sampled_from(Outcome))
    def finish(self, call: tuple[AbstractContextManager[None], int, float], outcome: Outcome) -> None:
        guard, epoch, started_at = call
        self.model.finish(epoch, outcome, started_at, self.clock.now)
        leave_entered(guard, outcome)

    @rule(seconds=st.sampled_from([0.5, 2.0, 5.0]))
    def wait(self, seconds: float) -> None:
        self.clock.now += seconds

    @invariant()
    def states_agree(self) -> None:
        assert self.breaker.state("writer") is self.model.look(self.clock.now)


class TimeWindowBreakerMachine(BreakerMachine):
    """The same, over a time window (settings are inherited from the base machine)."""

    window: WindowKind = "time"


test_a_count_window_breaker_follows_its_model_through_random_interleavings = BreakerMachine.TestCase
test_a_time_window_breaker_follows_its_model_through_random_interleavings = TimeWindowBreakerMachine.TestCase
