"""Concurrency limits per target: fixed, AIMD and gradient, as in Netflix's concurrency-limits.

Pure arithmetic on the samples the admission gate reports: no clock, no sleeping, no I/O, so the
algorithms are tested with simulated latencies. One instance per target.
"""

from __future__ import annotations

import math

from ports.concurrency_limit import ConcurrencyLimit

# A sample of zero seconds (a coarse clock) must not divide by zero in a latency ratio.
_MIN_LATENCY_S = 1e-9


def _check_bounds(min_limit: int, initial_limit: int, max_limit: int) -> None:
    if not 1 <= min_limit <= initial_limit <= max_limit:
        raise ValueError(
            "limits must satisfy 1 <= min_limit <= initial_limit <= max_limit, "
            f"got {min_limit!r}, {initial_limit!r}, {max_limit!r}"
        )


class FixedConcurrencyLimit(ConcurrencyLimit):
    """The switched-off algorithm: always ``limit``, whatever the samples say."""

    def __init__(self, *, limit: int) -> None:
        _check_bounds(1, limit, limit)
        self._limit = limit

    @property
    def limit(self) -> int:
        return self._limit

    def on_sample(self, *, latency_s: float, in_flight: int, dropped: bool) -> None:
        """Ignored."""


class AimdConcurrencyLimit(ConcurrencyLimit):
    """Additive increase, multiplicative decrease (Netflix's ``AIMDLimit``, with one decrease per flight).

    A sample that was dropped or took longer than ``slow_latency_s`` multiplies the limit by
    ``backoff_ratio`` (rounded down); any other sample adds one, but only when the limit is in use
    (at least half of it in flight: an idle service learns nothing about the database's capacity).
    Unlike Netflix's, a decrease is applied at most once per flight: the calls that were in flight
    when the limit fell report the same congestion as they finish, and counting each of them would
    collapse a limit of 50 to the minimum on one latency spike, so congestion signals are ignored
    until that many samples have been seen (TCP's once-per-window rule, without a clock).
    The limit stays within ``[min_limit, max_limit]``.
    """

    def __init__(
        self,
        *,
        initial_limit: int = 20,
        min_limit: int = 1,
        max_limit: int = 200,
        backoff_ratio: float = 0.9,
        slow_latency_s: float = 1.0,
    ) -> None:
        _check_bounds(min_limit, initial_limit, max_limit)
        if not 0.5 <= backoff_ratio < 1:
            raise ValueError(f"backoff_ratio must be >= 0.5 and < 1, got {backoff_ratio!r}")
        if not slow_latency_s > 0:
            raise ValueError(f"slow_latency_s must be > 0, got {slow_latency_s!r}")
        self._limit = initial_limit
        self._min_limit = min_limit
        self._max_limit = max_limit
        self._backoff_ratio = backoff_ratio
        self._slow_latency_s = slow_latency_s
        self._ignore_congestion_for = 0  # samples still to come from the flight of the last decrease

    @property
    def limit(self) -> int:
        return self._limit

    def on_sample(self, *, latency_s: float, in_flight: int, dropped: bool) -> None:
        """Decrease on a drop or a slow sample (once per flight), else increase by one when in use."""
        congested = dropped or latency_s > self._slow_latency_s
        if self._ignore_congestion_for > 0:
            self._ignore_congestion_for -= 1
            if congested:
                return
        if congested:
            self._ignore_congestion_for = max(in_flight - 1, 0)
            self._limit = max(self._min_limit, math.floor(self._limit * self._backoff_ratio))
        elif in_flight * 2 >= self._limit:
            self._limit = min(self._max_limit, self._limit + 1)


class _ExpAverage:
    """Netflix's ``ExpAvgMeasurement``: a plain mean over the first ``warmup`` samples, then exponential."""

    def __init__(self, *, window: int, warmup: int = 10) -> None:
        self._factor = 2.0 / (window + 1)
        self._warmup = warmup
        self._count = 0
        self.value = 0.0

    def add(self, sample: float) -> float:
        if self._count < self._warmup:
            self._count += 1
            self.value += (sample - self.value) / self._count
        else:
            self.value += (sample - self.value) * self._factor
        return self.value


class GradientConcurrencyLimit(ConcurrencyLimit):
    """Netflix's ``Gradient2Limit``: the limit follows the ratio of long-term to current latency.

    Each sample's latency is compared with an exponential average over ``long_window`` samples
    (the latency without queueing, as far as the service can tell). The gradient
    ``rtt_tolerance * long / sample``, kept within ``[0.5, 1]``, scales the limit, and
    ``queue_size`` calls are allowed on top so that the limit can grow while latency is steady:
    ``new = limit * gradient + queue_size``, of which only ``smoothing`` is taken per sample. A
    sample taken while less than half the limit was in flight does not move the limit (nothing
    was learnt about its capacity). When the current latency drops to less than half the average
    after a long slow spell, the average is lowered by 5% per sample so the limit recovers without
    waiting for the average to forget. A dropped call, which Netflix's version ignores, counts as
    the steepest gradient (0.5) and does not enter the average: its latency is the timeout's, not
    the database's. The limit stays within ``[min_limit, max_limit]``.
    """

    def __init__(
        self,
        *,
        initial_limit: int = 20,
        min_limit: int = 1,
        max_limit: int = 200,
        smoothing: float = 0.2,
        rtt_tolerance: float = 1.5,
        long_window: int = 600,
        queue_size: int = 4,
    ) -> None:
        _check_bounds(min_limit, initial_limit, max_limit)
        if not 0 < smoothing <= 1:
            raise ValueError(f"smoothing must be > 0 and <= 1, got {smoothing!r}")
        if not rtt_tolerance >= 1:
            raise ValueError(f"rtt_tolerance must be >= 1, got {rtt_tolerance!r}")
        if long_window < 1 or queue_size < 0:
            raise ValueError(
                f"long_window must be >= 1 and queue_size >= 0, got {long_window!r}, {queue_size!r}"
            )
        self._estimate = float(initial_limit)
        self._min_limit = min_limit
        self._max_limit = max_limit
        self._smoothing = smoothing
        self._rtt_tolerance = rtt_tolerance
        self._queue_size = queue_size
        self._long_latency = _ExpAverage(window=long_window)

    @property
    def limit(self) -> int:
        return max(self._min_limit, math.floor(self._estimate))

    def on_sample(self, *, latency_s: float, in_flight: int, dropped: bool) -> None:
        """Move the limit towards ``limit * gradient + queue_size``."""
        if dropped:
            gradient = 0.5
        else:
            short = max(latency_s, _MIN_LATENCY_S)
            long = self._long_latency.add(short)
            if long / short > 2:
                self._long_latency.value *= 0.95
            if in_flight < self._estimate / 2:
                return
            gradient = max(0.5, min(1.0, self._rtt_tolerance * long / short))
        target = self._estimate * gradient + self._queue_size
        estimate = self._estimate * (1 - self._smoothing) + target * self._smoothing
        self._estimate = min(float(self._max_limit), max(float(self._min_limit), estimate))
