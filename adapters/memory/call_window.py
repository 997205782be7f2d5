"""Sliding windows of call outcomes, by count or by time, for the in-memory circuit breaker."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Final, Protocol

#: A time window is kept in this many buckets: its edge is exact to a tenth of its length.
TIME_BUCKETS: Final = 10


@dataclass(slots=True)
class Tally:
    """How many calls a window holds, and how many of them failed or were slow."""

    calls: int = 0
    failures: int = 0
    slow: int = 0

    def add(self, *, failed: bool, slow: bool, times: int = 1) -> None:
        self.calls += times
        self.failures += times * failed
        self.slow += times * slow

    @property
    def failure_rate(self) -> float:
        return self.failures / self.calls if self.calls else 0.0

    @property
    def slow_call_rate(self) -> float:
        return self.slow / self.calls if self.calls else 0.0


class CallWindow(Protocol):
    """The outcomes of the recent calls to one target."""

    def record(self, now: float, *, failed: bool, slow: bool) -> None:
        """Add the outcome of a call that ended at ``now``."""
        ...

    def tally(self, now: float) -> Tally:
        """What the window holds at ``now``; the caller must not change it."""
        ...


class CountWindow(CallWindow):
    """The outcomes of the last ``size`` calls, whenever they ended."""

    def __init__(self, size: int) -> None:
        self._outcomes: deque[tuple[bool, bool]] = deque(maxlen=size)
        self._tally = Tally()

    def record(self, now: float, *, failed: bool, slow: bool) -> None:
        # Inlined tally updates: this runs once per guarded call.
        outcomes, tally = self._outcomes, self._tally
        if len(outcomes) == outcomes.maxlen:
            old_failed, old_slow = outcomes[0]
            tally.calls -= 1
            tally.failures -= old_failed
            tally.slow -= old_slow
        outcomes.append((failed, slow))
        tally.calls += 1
        tally.failures += failed
        tally.slow += slow

    def tally(self, now: float) -> Tally:
        return self._tally


class TimeWindow(CallWindow):
    """The outcomes of the calls that ended in the last ``size_s`` seconds.

    Outcomes are aggregated in :data:`TIME_BUCKETS` buckets of ``size_s / TIME_BUCKETS`` seconds,
    as Resilience4j does per second, so memory does not grow with the call rate: the window holds
    the current bucket and the ones before it, between 90% and 100% of ``size_s``.
    """

    def __init__(self, size_s: float) -> None:
        self._bucket_s = size_s / TIME_BUCKETS
        self._buckets = [Tally() for _ in range(TIME_BUCKETS)]
        self._bucket_ids = [-1] * TIME_BUCKETS  # which bucket number each slot holds now

    def record(self, now: float, *, failed: bool, slow: bool) -> None:
        number = self._number(now)
        slot = number % TIME_BUCKETS
        if self._bucket_ids[slot] != number:
            self._buckets[slot], self._bucket_ids[slot] = Tally(), number
        self._buckets[slot].add(failed=failed, slow=slow)

    def tally(self, now: float) -> Tally:
        newest = self._number(now)
        total = Tally()
        for number, bucket in zip(self._bucket_ids, self._buckets, strict=True):
            if newest - TIME_BUCKETS < number <= newest:
                total.calls += bucket.calls
                total.failures += bucket.failures
                total.slow += bucket.slow
        return total

    def _number(self, now: float) -> int:
        return math.floor(now / self._bucket_s)
