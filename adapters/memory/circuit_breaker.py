"""Circuit breakers per target, held in memory: each process learns about its targets on its own."""

from __future__ import annotations

import enum
import math
import time
from collections import Counter
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from types import TracebackType
from typing import Final, Literal

import structlog

from adapters.memory.call_window import CallWindow, CountWindow, TimeWindow
from ports.circuit_breaker import BreakerState, CircuitBreaker
from ports.errors import CircuitOpenError, DeadlineExceededError, InfrastructureError

log = structlog.get_logger(__name__)

#: The names under which :meth:`InMemoryCircuitBreaker.transitions` counts state changes.
TRANSITION_NAMES: Final = ("opened", "half_opened", "closed")
# What a caller refused because every half-open trial slot is taken is told: the trials' duration
# is unknown, so a short guess, never longer than a whole recovery period.
_TRIALS_BUSY_RETRY_AFTER_S: Final = 0.1

WindowKind = Literal["count", "time"]


class _Outcome(enum.Enum):
    SUCCESS = "success"
    FAILURE = "failure"
    ABANDONED = "abandoned"


def _outcome_of(error: BaseException) -> _Outcome:
    if isinstance(error, DeadlineExceededError):
        # The caller's budget ran out: news about the target only if the server left a request
        # unanswered past the deadline although it was told to cancel it then.
        return _Outcome.FAILURE if error.server_unresponsive else _Outcome.ABANDONED
    if isinstance(error, InfrastructureError):
        return _Outcome.FAILURE
    if isinstance(error, Exception):
        return _Outcome.SUCCESS  # a domain or data error: the database answered
    return _Outcome.ABANDONED  # cancelled or interrupted: nothing was learnt about the target


@dataclass(slots=True)
class _Circuit:
    window: CallWindow
    state: BreakerState = BreakerState.CLOSED
    # Bumped on every transition: an outcome only counts in the epoch that admitted its call, so a
    # slow call admitted while closed cannot reopen, or use up a trial of, a later half-open state.
    epoch: int = 0
    opened_at: float = 0.0
    trials_in_flight: int = 0
    trial_successes: int = 0
    # Calls already counted while stuck (see ``record_stuck``), whose end is not counted again.
    stuck: int = 0
    transitions: Counter[str] = field(default_factory=Counter)

    def move_to(self, state: BreakerState, transition: str, window: CallWindow) -> None:
        self.state = state
        self.epoch += 1
        self.window = window  # every state starts from an empty window, as in Resilience4j
        self.trials_in_flight = 0
        self.trial_successes = 0
        self.stuck = 0
        self.transitions[transition] += 1


class InMemoryCircuitBreaker(CircuitBreaker):
    """One closed/open/half-open circuit per target, created on first use, over a sliding window.

    Closed: every call that ends is recorded in a sliding window of the last ``window_size`` calls
    (``window="count"``) or of the calls that ended in the last ``window_size`` seconds
    (``window="time"``, to a tenth of the window). Once the window holds ``minimum_calls``, the
    circuit opens when the share of infrastructure failures reaches ``failure_rate_threshold``
    or the share of slow calls (longer than ``slow_call_duration_s`` from entering the guard to
    leaving it, on the injected clock, whatever their outcome) reaches ``slow_call_rate_threshold``.
    ``window_size = minimum_calls = N`` with ``failure_rate_threshold = 1`` is the classic breaker
    that opens after N consecutive failures.

    Open: every call is refused with ``retry_after_s`` = the time left until half-open. After
    ``recovery_time_s`` the circuit is half-open (``state`` reports it without waiting for a
    call): at most ``half_open_max_calls`` trial calls run at once, others are refused with a short
    ``retry_after_s``. The first trial that fails or is slow reopens it for another
    ``recovery_time_s``; it closes once ``half_open_max_calls`` trials have succeeded quickly. A
    cancelled call frees its trial slot and counts for nothing. Outcomes of calls admitted before
    the latest transition are ignored. Safe to share between tasks of one event loop: admission
    never awaits, so a hundred concurrent callers cannot overshoot the trial count.

    Calls the provider reports stuck (:meth:`record_stuck`: no answer from the server for the
    slow-call duration) count as failed slow calls while still running. A probe that reaches the
    target (:meth:`recovered`) half-opens an open circuit at once. A call that ran out of its
    caller's deadline counts for nothing, unless the server left it unanswered (then a failure).
    """

    def __init__(
        self,
        *,
        window: WindowKind = "count",
        window_size: int = 20,
        minimum_calls: int = 10,
        failure_rate_threshold: float = 0.5,
        slow_call_rate_threshold: float = 1.0,
        slow_call_duration_s: float = 5.0,
        recovery_time_s: float = 10.0,
        half_open_max_calls: int = 1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        _check_window(window, window_size, minimum_calls)
        for name, rate in [
            ("failure_rate_threshold", failure_rate_threshold),
            ("slow_call_rate_threshold", slow_call_rate_threshold),
        ]:
            if not 0 < rate <= 1:
                raise ValueError(f"{name} must be a share > 0 and <= 1, got {rate!r}")
        if not slow_call_duration_s > 0:
            raise ValueError(
                f"slow_call_duration_s must be > 0 (inf: never slow), got {slow_call_duration_s!r}"
            )
        if not (0 <= recovery_time_s < math.inf):
            raise ValueError(f"recovery_time_s must be a finite number >= 0, got {recovery_time_s!r}")
        if half_open_max_calls < 1:
            raise ValueError(f"half_open_max_calls must be >= 1, got {half_open_max_calls!r}")
        self._window_kind = window
        self._window_size = window_size
        self._minimum_calls = minimum_calls
        self._failure_rate_threshold = failure_rate_threshold
        self._slow_call_rate_threshold = slow_call_rate_threshold
        self._slow_call_duration_s = slow_call_duration_s
        self._recovery_time_s = recovery_time_s
        self._half_open_max_calls = half_open_max_calls
        self._clock = clock
        self._circuits: dict[str, _Circuit] = {}

    def guard(self, target: str) -> AbstractContextManager[None]:
        """Admit one call to ``target`` on entry or raise ``CircuitOpenError``; record the outcome on exit."""
        return _Guard(self, target)

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

    def record_stuck(self, target: str, calls: int) -> None:
        """Count ``calls`` stuck calls to ``target`` as failed slow calls now (see the port)."""
        circuit = self._circuits.get(target)
        if circuit is None or calls < 1:
            return
        now = self._clock()
        self._refresh(target, circuit, now)
        if circuit.state is BreakerState.OPEN:
            return
        if circuit.state is BreakerState.HALF_OPEN:
            if circuit.trials_in_flight:
                self._open(target, circuit, reason="trial_stuck", stuck=calls)
            return
        circuit.stuck += calls
        for _ in range(calls):
            circuit.window.record(now, failed=True, slow=True)
        self._check_rates(target, circuit, now, stuck=calls)

    def recovered(self, target: str) -> None:
        """Half-open ``target``'s circuit now if it is open: a probe reached the server."""
        circuit = self._circuits.get(target)
        if circuit is None:
            return
        self._refresh(target, circuit, self._clock())
        if circuit.state is BreakerState.OPEN:
            circuit.move_to(BreakerState.HALF_OPEN, "half_opened", circuit.window)
            log.info("circuit.half_opened", target=target, max_trials=self._half_open_max_calls, by="probe")

    def _admit(self, target: str, now: float) -> int:
        circuit = self._circuits.get(target)
        if circuit is None:
            circuit = self._circuits[target] = _Circuit(window=self._new_window())
        self._refresh(target, circuit, now)
        if circuit.state is BreakerState.OPEN:
            raise CircuitOpenError(target, circuit.opened_at + self._recovery_time_s - now)
        if circuit.state is BreakerState.HALF_OPEN:
            if circuit.trials_in_flight >= self._half_open_max_calls:
                raise CircuitOpenError(target, min(_TRIALS_BUSY_RETRY_AFTER_S, self._recovery_time_s))
            circuit.trials_in_flight += 1
        return circuit.epoch

    def _record(self, target: str, epoch: int, outcome: _Outcome, started_at: float) -> None:
        circuit = self._circuits[target]
        if circuit.epoch != epoch:
            return  # admitted before the latest transition: stale news about the target
        now = self._clock()
        failed = outcome is _Outcome.FAILURE
        slow = now - started_at > self._slow_call_duration_s
        if circuit.state is BreakerState.HALF_OPEN:
            self._record_trial(target, circuit, outcome, failed=failed, slow=slow)
        elif slow and circuit.stuck:
            circuit.stuck -= 1  # counted while it was stuck (the longest calls are the stuck ones)
        elif outcome is not _Outcome.ABANDONED:
            circuit.window.record(now, failed=failed, slow=slow)
            self._check_rates(target, circuit, now)

    def _check_rates(self, target: str, circuit: _Circuit, now: float, **context: object) -> None:
        tally = circuit.window.tally(now)
        if tally.calls < self._minimum_calls:
            return
        if tally.failure_rate >= self._failure_rate_threshold:
            reason = "failure_rate"
        elif tally.slow_call_rate >= self._slow_call_rate_threshold:
            reason = "slow_call_rate"
        else:
            return
        self._open(
            target,
            circuit,
            reason=reason,
            calls=tally.calls,
            failure_rate=round(tally.failure_rate, 3),
            slow_call_rate=round(tally.slow_call_rate, 3),
            **context,
        )

    def _record_trial(
        self, target: str, circuit: _Circuit, outcome: _Outcome, *, failed: bool, slow: bool
    ) -> None:
        circuit.trials_in_flight -= 1
        if outcome is _Outcome.ABANDONED:
            return
        if failed or slow:
            self._open(target, circuit, reason="trial_failed" if failed else "trial_slow")
            return
        circuit.trial_successes += 1
        if circuit.trial_successes >= self._half_open_max_calls:
            circuit.move_to(BreakerState.CLOSED, "closed", self._new_window())
            log.info("circuit.closed", target=target, trials=self._half_open_max_calls)

    def _refresh(self, target: str, circuit: _Circuit, now: float) -> None:
        # Half-open is reached by the passing of time alone, so it is applied whenever anyone looks.
        if circuit.state is BreakerState.OPEN and now >= circuit.opened_at + self._recovery_time_s:
            circuit.move_to(BreakerState.HALF_OPEN, "half_opened", circuit.window)
            log.info("circuit.half_opened", target=target, max_trials=self._half_open_max_calls)

    def _open(self, target: str, circuit: _Circuit, *, reason: str, **context: object) -> None:
        previous = circuit.state
        circuit.move_to(BreakerState.OPEN, "opened", self._new_window())
        circuit.opened_at = self._clock()
        log.warning(
            "circuit.opened",
            target=target,
            reason=reason,
            previous=previous.value,
            recovery_time_s=self._recovery_time_s,
            **context,
        )

    def _new_window(self) -> CallWindow:
        if self._window_kind == "count":
            return CountWindow(self._window_size)
        return TimeWindow(float(self._window_size))


def _check_window(window: str, window_size: int, minimum_calls: int) -> None:
    if window not in ("count", "time"):
        raise ValueError(f"window must be 'count' or 'time', got {window!r}")
    if window_size < 1:
        raise ValueError(f"window_size must be >= 1 (calls or seconds), got {window_size!r}")
    if minimum_calls < 1:
        raise ValueError(f"minimum_calls must be >= 1, got {minimum_calls!r}")
    if window == "count" and minimum_calls > window_size:
        # A count window never holds more than window_size calls: the circuit could never open.
        raise ValueError(f"minimum_calls ({minimum_calls}) must be <= window_size ({window_size})")


class _Guard:
    """One guarded call, written out by hand: a generator-based context manager costs several
    microseconds a call, which every unit of work would pay."""

    __slots__ = ("_breaker", "_epoch", "_started_at", "_target")

    def __init__(self, breaker: InMemoryCircuitBreaker, target: str) -> None:
        self._breaker = breaker
        self._target = target

    def __enter__(self) -> None:
        now = self._breaker._clock()
        self._epoch = self._breaker._admit(self._target, now)
        self._started_at = now

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        # Recording is all a breaker does with an error: it is never swallowed (None is returned).
        outcome = _Outcome.SUCCESS if exc is None else _outcome_of(exc)
        self._breaker._record(self._target, self._epoch, outcome, self._started_at)


class AlwaysClosedCircuitBreaker(CircuitBreaker):
    """The switched-off breaker: admits every call, records nothing and always reports ``CLOSED``."""

    def guard(self, target: str) -> AbstractContextManager[None]:
        """A context manager that admits the call and lets every exception through."""
        return nullcontext()

    def state(self, target: str) -> BreakerState:
        """Always ``CLOSED``."""
        return BreakerState.CLOSED

    def record_stuck(self, target: str, calls: int) -> None:
        """Nothing to count."""

    def recovered(self, target: str) -> None:
        """Nothing to recover: it is never open."""

    def transitions(self, target: str) -> Mapping[str, int]:
        """Always zero: a breaker that never trips never changes state."""
        return dict.fromkeys(TRANSITION_NAMES, 0)
