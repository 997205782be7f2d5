"""The ``CircuitBreaker`` contract, run against every adapter of the port."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from adapters.memory.circuit_breaker import AlwaysClosedCircuitBreaker, InMemoryCircuitBreaker
from adapters.redis import RedisOptions, RedisSharedCircuitBreaker, create_guarded_redis
from domain.ledger.errors import InsufficientFundsError
from ports.circuit_breaker import BreakerState, CircuitBreaker
from ports.errors import (
    CircuitOpenError,
    CommitOutcomeUnknownError,
    DatabaseUnavailableError,
    DataIntegrityError,
    ReadOnlyViolationError,
    TransactionConflictError,
)


class FakeClock:
    """A clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


BreakerFactory = Callable[[FakeClock], CircuitBreaker]

ADAPTERS: dict[str, BreakerFactory] = {
    "always_closed": lambda _clock: AlwaysClosedCircuitBreaker(),
    "in_memory_default": lambda clock: InMemoryCircuitBreaker(clock=clock),
    "in_memory_touchy": lambda clock: InMemoryCircuitBreaker(
        window_size=1, minimum_calls=1, recovery_time_s=1.0, half_open_max_calls=2, clock=clock
    ),
    "in_memory_time_window": lambda clock: InMemoryCircuitBreaker(
        window="time", window_size=10, minimum_calls=5, failure_rate_threshold=0.2, clock=clock
    ),
    # Outside an event loop the shared signal never starts (no refresher, no Redis call), so this is
    # the wrapper's own path around the local breaker; tests/integration/test_redis_circuit_state.py
    # runs the signal itself on a real Redis.
    "redis_shared_without_a_loop": lambda clock: RedisSharedCircuitBreaker(
        inner=InMemoryCircuitBreaker(window_size=4, minimum_calls=4, recovery_time_s=1.0, clock=clock),
        redis=create_guarded_redis(RedisOptions(url="redis://127.0.0.1:1/0")),
        open_s=1.0,
        quorum=1,
        clock=clock,
    ),
}

each_breaker = pytest.mark.parametrize("make_breaker", ADAPTERS.values(), ids=ADAPTERS.keys())

NOT_INFRASTRUCTURE = [
    InsufficientFundsError("account-1", 0, 100),
    DataIntegrityError("duplicate key value violates unique constraint"),
    ReadOnlyViolationError("write in a read-only unit of work"),
    TransactionConflictError("could not serialize access due to concurrent update"),
    ValueError("bad input"),
    asyncio.CancelledError(),
]


def error_id(error: BaseException) -> str:
    return type(error).__name__


def fail(breaker: CircuitBreaker, target: str) -> None:
    """One infrastructure failure, or a refusal if the circuit is open: both are allowed."""
    try:
        with breaker.guard(target):
            raise DatabaseUnavailableError("connection refused")
    except (DatabaseUnavailableError, CircuitOpenError):
        pass


@each_breaker
def test_a_target_never_seen_is_closed(make_breaker: BreakerFactory) -> None:
    assert make_breaker(FakeClock()).state("replica-7") is BreakerState.CLOSED


@each_breaker
def test_a_call_that_succeeds_is_admitted_and_leaves_the_circuit_closed(make_breaker: BreakerFactory) -> None:
    breaker = make_breaker(FakeClock())
    with breaker.guard("writer") as value:
        assert value is None
    assert breaker.state("writer") is BreakerState.CLOSED


@each_breaker
@pytest.mark.parametrize(
    "error",
    [DatabaseUnavailableError("refused"), CommitOutcomeUnknownError("lost"), *NOT_INFRASTRUCTURE],
    ids=error_id,
)
def test_the_guard_re_raises_the_very_exception(make_breaker: BreakerFactory, error: BaseException) -> None:
    breaker = make_breaker(FakeClock())
    with pytest.raises(type(error)) as raised, breaker.guard("writer"):
        raise error
    assert raised.value is error


@each_breaker
@pytest.mark.parametrize("error", NOT_INFRASTRUCTURE, ids=error_id)
def test_a_hundred_errors_other_than_infrastructure_errors_never_open_the_circuit(
    make_breaker: BreakerFactory, error: BaseException
) -> None:
    breaker = make_breaker(FakeClock())
    for _ in range(100):
        with pytest.raises(type(error)), breaker.guard("writer"):
            raise error
    assert breaker.state("writer") is BreakerState.CLOSED


@each_breaker
def test_failures_of_one_target_never_refuse_calls_to_another(make_breaker: BreakerFactory) -> None:
    breaker = make_breaker(FakeClock())
    for _ in range(20):
        fail(breaker, "replica-1")
    with breaker.guard("writer"):
        pass
    assert breaker.state("writer") is BreakerState.CLOSED


@each_breaker
def test_a_failing_target_is_admitted_or_refused_with_a_retry_after_that_is_not_negative(
    make_breaker: BreakerFactory,
) -> None:
    breaker = make_breaker(FakeClock())
    for _ in range(20):
        fail(breaker, "writer")
        assert breaker.state("writer") in set(BreakerState)
    refusal: CircuitOpenError | None = None
    try:
        with breaker.guard("writer"):
            pass
    except CircuitOpenError as refused:
        refusal = refused
    if refusal is not None:
        assert refusal.target == "writer"
        assert refusal.retry_after_s >= 0


@each_breaker
def test_a_target_that_answers_again_ends_up_closed_once_the_recovery_time_passed(
    make_breaker: BreakerFactory,
) -> None:
    clock = FakeClock()
    breaker = make_breaker(clock)
    for _ in range(20):
        fail(breaker, "writer")
    clock.now += 3600.0
    for _ in range(20):
        with breaker.guard("writer"):
            pass
    assert breaker.state("writer") is BreakerState.CLOSED
