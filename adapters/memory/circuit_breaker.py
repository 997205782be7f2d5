"""Circuit breakers per target, held in memory: each process learns about its targets on its own."""

from __future__ import annotations

import enum
import math
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Final

import structlog

from ports.circuit_breaker import BreakerState, CircuitBreaker
from ports.errors import CircuitOpenError, InfrastructureError

log = structlog.get_logger(__name__)

#: The names under which :meth:`InMemoryCircuitBreaker.transitions` counts state changes.
TRANSITION_NAMES: Final = ("opened", "half_opened", "closed")
# What a caller refused because every half-open trial slot is taken is told: the trials' duration
# is unknown, so a short guess, never longer than a whole recovery period.
_TRIALS_BUSY_RETRY_AFTER_S: Final = 0.1


class _Outcome(enum.Enum):
    SUCCESS = "success"
    FAILURE = "failure"
    ABANDONED = "abandoned"


def _outcome_of(error: BaseException) -> _Outcome:
    if isinstance(error, InfrastructureError):
        return _Outcome.FAILURE
    if isinstance(error, Exception):
        return _Outcome.SUCCESS  # a domain or data error: the database answered
    return _Outcome.ABANDONED  # cancelled or interrupted: nothing was learnt about the target


@dataclass(slots=True)
class _Circuit:
    state: BreakerState = BreakerState.CLOSED
    # Bumped on every transition: an outcome only counts in the epoch that admitted its call, so a
    # slow call admitted while closed cannot reopen, or use up a trial of, a later half-open state.
    epoch: int = 0
    consecutive_failures: int = 0
    opened_at: float = 0.0
    trials_in_flight: int = 0
    trial_successes: int = 0
    transitions: Counter[str] = field(default_factory=Counter)

    def move_to(self, state: BreakerState, transition: str) -> None:
        self.state = state
        self.epoch += 1
        self.consecutive_failures = 0
        self.trials_in_flight = 0
        self.trial_successes = 0
        self.transitions[transition] += 1


class InMemoryCircuitBreaker(CircuitBreaker):
    """One closed/open/half-open circuit per target, created on first use.

    Closed: ``failure_threshold`` consecutive infrastructure failures open it (any success resets
    the count). Open: every call is refused with ``retry_after_s`` = the time left until
    half-open. After ``recovery_time_s`` the circuit is half-open (``state`` reports it without
    waiting for a call): at most ``half_open_max_calls`` trial calls run at once, others are
    refused with a short ``retry_after_s``. The first trial failure reopens it for another
    ``recovery_time_s``; it closes once ``half_open_max_calls`` trials have succeeded without a
    failure in between. A cancelled trial frees its slot and counts for nothing. Outcomes of calls
    admitted before the latest transition are ignored. Safe to share between tasks of one loop.
    """

    def __init__(
        self,
        *,
        failure_threshold: int = 5,
        recovery_time_s: float = 10.0,
        half_open_max_calls: int = 1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError(f"failure_threshold must be >= 1, got {failure_threshold!r}")
        if not (0 <= recovery_time_s < math.inf):
            raise ValueError(f"recovery_time_s must be a finite number >= 0, got {recovery_time_s!r}")
        if half_open_max_calls < 1:
            raise ValueError(f"half_open_max_calls must be >= 1, got {half_open_max_calls!r}")
        self._failure_threshold = failure_threshold
        self._recovery_time_s = recovery_time_s
        self._half_open_max_calls = half_open_max_calls
        self._clock = clock
        self._circuits: dict[str, _Circuit] = {}

    def guard(self, target: str) -> AbstractContextManager[None]:
        """Admit one call to ``target`` on entry or raise ``CircuitOpenError``; record the outcome on exit."""
        return self._guarded(target)

    def state(self, target: str) -> BreakerState:
        """The state of ``target``'s circuit now; ``CLOSED`` for a target never seen."""
        circuit = self._circuits.get(target)
        if circuit is None:
            return BreakerState.CLOSED
        self._refresh(target, circuit, self._clock())
        return circuit.state

    def transitions(self, target: str) -> Mapping[str, int]:
        """How many times ``target``'s circuit has ``opened``, ``half_opened`` and ``closed``."""
        counts = dict.fromkeys(TRANSITION_NAMES, 0)
        circuit = self._circuits.get(target)
        if circuit is not None:
            self._refresh(target, circuit, self._clock())
            counts.update(circuit.transitions)
        return counts

    @contextmanager
    def _guarded(self, target: str) -> Iterator[None]:
        epoch = self._admit(target)
        try:
            yield
        except BaseException as error:
            self._record(target, epoch, _outcome_of(error))
            raise  # recording is all a breaker does with an error: never swallow it
        self._record(target, epoch, _Outcome.SUCCESS)

    def _admit(self, target: str) -> int:
        circuit = self._circuits.setdefault(target, _Circuit())
        now = self._clock()
        self._refresh(target, circuit, now)
        if circuit.state is BreakerState.OPEN:
            raise CircuitOpenError(target, circuit.opened_at + self._recovery_time_s - now)
        if circuit.state is BreakerState.HALF_OPEN:
            if circuit.trials_in_flight >= self._half_open_max_calls:
                raise CircuitOpenError(target, min(_TRIALS_BUSY_RETRY_AFTER_S, self._recovery_time_s))
            circuit.trials_in_flight += 1
        return circuit.epoch

    def _record(self, target: str, epoch: int, outcome: _Outcome) -> None:
        circuit = self._circuits[target]
        if circuit.epoch != epoch:
            return  # admitted before the latest transition: stale news about the target
        if circuit.state is BreakerState.HALF_OPEN:
            self._record_trial(target, circuit, outcome)
        elif outcome is _Outcome.SUCCESS:
            circuit.consecutive_failures = 0
        elif outcome is _Outcome.FAILURE:
            circuit.consecutive_failures += 1
            if circuit.consecutive_failures >= self._failure_threshold:
                self._open(target, circuit, failures=circuit.consecutive_failures)

    def _record_trial(self, target: str, circuit: _Circuit, outcome: _Outcome) -> None:
        circuit.trials_in_flight -= 1
        if outcome is _Outcome.FAILURE:
            self._open(target, circuit, failures=1)
        elif outcome is _Outcome.SUCCESS:
            circuit.trial_successes += 1
            if circuit.trial_successes >= self._half_open_max_calls:
                circuit.move_to(BreakerState.CLOSED, "closed")
                log.info("circuit.closed", target=target, trials=self._half_open_max_calls)

    def _refresh(self, target: str, circuit: _Circuit, now: float) -> None:
        # Half-open is reached by the passing of time alone, so it is applied whenever anyone looks.
        if circuit.state is BreakerState.OPEN and now >= circuit.opened_at + self._recovery_time_s:
            circuit.move_to(BreakerState.HALF_OPEN, "half_opened")
            log.info("circuit.half_opened", target=target, max_trials=self._half_open_max_calls)

    def _open(self, target: str, circuit: _Circuit, *, failures: int) -> None:
        previous = circuit.state
        circuit.move_to(BreakerState.OPEN, "opened")
        circuit.opened_at = self._clock()
        log.warning(
            "circuit.opened",
            target=target,
            failures=failures,
            previous=previous.value,
            recovery_time_s=self._recovery_time_s,
        )


class AlwaysClosedCircuitBreaker(CircuitBreaker):
    """The switched-off breaker: admits every call, records nothing and always reports ``CLOSED``."""

    def guard(self, target: str) -> AbstractContextManager[None]:
        """A context manager that admits the call and lets every exception through."""
        return nullcontext()

    def state(self, target: str) -> BreakerState:
        """Always ``CLOSED``."""
        return BreakerState.CLOSED

    def transitions(self, target: str) -> Mapping[str, int]:
        """Always zero: a breaker that never trips never changes state."""
        return dict.fromkeys(TRANSITION_NAMES, 0)
