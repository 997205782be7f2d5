"""Rate limiting per key, held in memory (token bucket, sliding log): the limit applies within one process."""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Final

from adapters.memory.admission_counts import AdmissionCounts
from ports.errors import RateLimitExceededError
from ports.rate_limiter import RateLimiter

# Float refill arithmetic can leave 0.9999999 of a token where a whole one is due; without this
# slack a caller arriving exactly on time would be told to retry after a few nanoseconds.
_TOKEN_EPSILON: Final = 1e-6
# The same for times: a call whose window ends within a nanosecond of now has left it.
_TIME_EPSILON_S: Final = 1e-9
# Idle buckets are swept when the dict reaches this size (later: twice what survived the last
# sweep), so each sweep is paid for by as many new keys and memory follows the keys in use.
_SWEEP_AT_KEYS: Final = 1024


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated_at: float
    # Deadlines of the callers sleeping on a reservation, by ticket, in arrival order.
    waiters: dict[int, float] = field(default_factory=dict)


class TokenBucketRateLimiter(RateLimiter):
    """Admits ``rate_per_s`` tokens a second per key, in bursts of at most ``burst`` tokens.

    With ``max_wait_s == 0`` a call that finds too few tokens is refused at once. Otherwise the
    call reserves its tokens (the count may go negative) and sleeps until they have been refilled.
    Reservations are made in arrival order, so the waiters of one key are admitted first come,
    first served whatever their cost. A call that would have to wait longer than ``max_wait_s``
    (``math.inf`` waits as long as needed) is refused at once rather than after sleeping;
    ``RateLimitExceededError.retry_after_s`` is when it could be admitted given the reservations
    already made. The count, not the wake-up time, enforces the rate, so a late or early wake-up
    never lets more than ``burst + rate_per_s * t`` tokens through in ``t`` seconds.
    Safe to share between the tasks of one event loop.
    """

    def __init__(
        self,
        *,
        rate_per_s: float,
        burst: float,
        max_wait_s: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if not (0 < rate_per_s < math.inf):
            raise ValueError(f"rate_per_s must be a finite number > 0, got {rate_per_s!r}")
        if not (1 <= burst < math.inf):
            raise ValueError(f"burst must be a finite number >= 1, got {burst!r}")
        if not max_wait_s >= 0:
            raise ValueError(f"max_wait_s must be >= 0, got {max_wait_s!r}")
        self._rate_per_s = rate_per_s
        self._burst = burst
        self._max_wait_s = max_wait_s
        self._clock = clock
        self._sleep = sleep
        self._buckets: dict[str, _Bucket] = {}
        self._tickets = itertools.count()
        self._sweep_at_keys = _SWEEP_AT_KEYS
        self.counts = AdmissionCounts()

    async def acquire(self, key: str = "default", *, cost: float = 1.0) -> None:
        """Take ``cost`` tokens of ``key``, waiting at most ``max_wait_s``, or refuse the call."""
        if not (0 < cost <= self._burst):
            raise ValueError(f"cost must be > 0 and <= burst ({self._burst}), got {cost!r}")
        now = self._clock()
        bucket = self._bucket(key, now)
        deadline = self._deadline(bucket, cost, now)
        wait_s = deadline - now
        if wait_s > self._max_wait_s:
            self.counts.rejected += 1
            raise RateLimitExceededError(key, wait_s)
        bucket.tokens -= cost
        self.counts.admit(wait_s)
        if wait_s > 0:
            await self._wait(bucket, cost, deadline, wait_s)

    def tokens(self, key: str = "default") -> float:
        """The tokens ``key`` holds now; negative while waiters hold reservations. For stats and tests."""
        bucket = self._buckets.get(key)
        if bucket is None:
            return self._burst
        self._refill(bucket, self._clock())
        return bucket.tokens

    @property
    def bucket_count(self) -> int:
        """How many keys currently have a bucket (full idle ones are dropped as the dict grows)."""
        return len(self._buckets)

    def _deadline(self, bucket: _Bucket, cost: float, now: float) -> float:
        shortfall = cost - bucket.tokens
        ready_at = now if shortfall <= _TOKEN_EPSILON else now + shortfall / self._rate_per_s
        if bucket.waiters:
            # After a cancelled waiter handed its tokens back, the count alone could schedule a
            # cheap newcomer before someone already waiting; never before the last waiter.
            ready_at = max(ready_at, next(reversed(bucket.waiters.values())))
        return ready_at

    async def _wait(self, bucket: _Bucket, cost: float, deadline: float, wait_s: float) -> None:
        ticket = next(self._tickets)
        bucket.waiters[ticket] = deadline
        try:
            await self._sleep(wait_s)
        except BaseException:
            # The caller gave up (cancelled, usually) before its turn: hand the tokens back, so the
            # count is what it would be had the caller never come. Later waiters keep their deadline.
            self._refill(bucket, self._clock())
            bucket.tokens = min(self._burst, bucket.tokens + cost)
            raise
        finally:
            del bucket.waiters[ticket]

    def _bucket(self, key: str, now: float) -> _Bucket:
        bucket = self._buckets.get(key)
        if bucket is not None:
            self._refill(bucket, now)
            return bucket
        if len(self._buckets) >= self._sweep_at_keys:
            self._sweep(now)
        bucket = self._buckets[key] = _Bucket(tokens=self._burst, updated_at=now)
        return bucket

    def _refill(self, bucket: _Bucket, now: float) -> None:
        # Only forward: a clock that stepped back must neither drain nor fill the bucket.
        if now > bucket.updated_at:
            bucket.tokens = min(self._burst, bucket.tokens + (now - bucket.updated_at) * self._rate_per_s)
            bucket.updated_at = now

    def _sweep(self, now: float) -> None:
        # A full bucket nobody waits on is exactly what a new key gets: dropping it changes nothing.
        for key, bucket in list(self._buckets.items()):
            self._refill(bucket, now)
            if not bucket.waiters and bucket.tokens >= self._burst:
                del self._buckets[key]
        self._sweep_at_keys = max(_SWEEP_AT_KEYS, 2 * len(self._buckets))


@dataclass(slots=True, eq=False)  # identity equality: a cancelled waiter removes its own entry
class _Admission:
    at: float
    cost: float


@dataclass(slots=True)
class _Log:
    # Every admission (past, or reserved by a sleeping waiter) that is still in a window, oldest first.
    admissions: deque[_Admission] = field(default_factory=deque)
    total: float = 0.0


class SlidingWindowRateLimiter(RateLimiter):
    """Admits at most ``rate_per_s * window_s`` of cost in any ``window_s`` seconds, per key (a sliding log).

    The limiter keeps the time and cost of every admission of the last ``window_s`` seconds, so
    the bound is exact for every window, not an approximation from two fixed windows; the price is
    memory of one entry per admission in the window (at most ``limit / cost`` per key). Unlike the
    token bucket, a whole window's allowance may be spent in one burst. Waiting and refusing work as
    in :class:`TokenBucketRateLimiter`: with ``max_wait_s == 0`` a call that does not fit is refused
    at once; otherwise it reserves the earliest time at which it fits (never before an earlier
    waiter of its key, so waiters are served in arrival order) and sleeps until then, unless that
    is further away than ``max_wait_s``, when it is refused at once with ``retry_after_s`` = the
    wait it would have had. A cancelled waiter's reservation is removed. Safe to share between the
    tasks of one event loop.
    """

    def __init__(
        self,
        *,
        rate_per_s: float,
        window_s: float = 1.0,
        max_wait_s: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if not (0 < rate_per_s < math.inf):
            raise ValueError(f"rate_per_s must be a finite number > 0, got {rate_per_s!r}")
        if not (0 < window_s < math.inf):
            raise ValueError(f"window_s must be a finite number > 0, got {window_s!r}")
        if not rate_per_s * window_s >= 1 - _TOKEN_EPSILON:
            raise ValueError(f"rate_per_s * window_s must be >= 1, got {rate_per_s * window_s!r}")
        if not max_wait_s >= 0:
            raise ValueError(f"max_wait_s must be >= 0, got {max_wait_s!r}")
        self._limit = rate_per_s * window_s
        self._window_s = window_s
        self._max_wait_s = max_wait_s
        self._clock = clock
        self._sleep = sleep
        self._logs: dict[str, _Log] = {}
        self._sweep_at_keys = _SWEEP_AT_KEYS
        self.counts = AdmissionCounts()

    async def acquire(self, key: str = "default", *, cost: float = 1.0) -> None:
        """Admit ``cost`` for ``key``, waiting at most ``max_wait_s``, or refuse the call."""
        if not (0 < cost <= self._limit + _TOKEN_EPSILON):
            raise ValueError(f"cost must be > 0 and <= rate_per_s * window_s ({self._limit}), got {cost!r}")
        now = self._clock()
        log = self._log(key, now)
        wait_s = self._admit_at(log, cost, now) - now
        if wait_s <= _TIME_EPSILON_S:
            wait_s = 0.0
        if wait_s > self._max_wait_s:
            self.counts.rejected += 1
            raise RateLimitExceededError(key, wait_s)
        self.counts.admit(wait_s)
        admission = _Admission(now + wait_s, cost)
        log.admissions.append(admission)
        log.total += cost
        if wait_s > 0:
            try:
                await self._sleep(wait_s)
            except BaseException:
                # The caller gave up before its turn: the window is as if it had never come.
                self._forget(log, admission)
                raise

    def in_window(self, key: str = "default") -> float:
        """The cost admitted or reserved for ``key`` that still counts in a window. For stats and tests."""
        log = self._logs.get(key)
        if log is None:
            return 0.0
        self._expire(log, self._clock())
        return log.total

    @property
    def key_count(self) -> int:
        """How many keys currently have a log (empty ones are dropped as the dict grows)."""
        return len(self._logs)

    def _admit_at(self, log: _Log, cost: float, now: float) -> float:
        """The earliest time ``cost`` fits in the window ending then, not before the last reservation."""
        admissions = log.admissions
        admit_at = max(now, admissions[-1].at) if admissions else now
        remaining = log.total
        for admission in admissions:
            leaves_at = admission.at + self._window_s
            if leaves_at > admit_at + _TIME_EPSILON_S:
                if remaining + cost <= self._limit + _TOKEN_EPSILON:
                    break
                admit_at = leaves_at  # wait for this one to leave the window
            remaining -= admission.cost
        return admit_at

    def _forget(self, log: _Log, admission: _Admission) -> None:
        if admission in log.admissions:  # it may already have left the window if the loop lagged
            log.admissions.remove(admission)
            log.total -= admission.cost

    def _expire(self, log: _Log, now: float) -> None:
        admissions = log.admissions
        while admissions and admissions[0].at + self._window_s <= now + _TIME_EPSILON_S:
            log.total -= admissions.popleft().cost
        if not admissions:
            log.total = 0.0  # no drift from float subtraction survives an empty window

    def _log(self, key: str, now: float) -> _Log:
        log = self._logs.get(key)
        if log is not None:
            self._expire(log, now)
            return log
        if len(self._logs) >= self._sweep_at_keys:
            self._sweep(now)
        log = self._logs[key] = _Log()
        return log

    def _sweep(self, now: float) -> None:
        # An empty log is exactly what a new key gets: dropping it changes nothing.
        for key, log in list(self._logs.items()):
            self._expire(log, now)
            if not log.admissions:
                del self._logs[key]
        self._sweep_at_keys = max(_SWEEP_AT_KEYS, 2 * len(self._logs))


class UnlimitedRateLimiter(RateLimiter):
    """The switched-off limiter: admits every call at once, whatever its key and cost."""

    def __init__(self) -> None:
        self.counts = AdmissionCounts()

    async def acquire(self, key: str = "default", *, cost: float = 1.0) -> None:
        """Return at once; a non-positive ``cost`` is still a caller's bug and raises ``ValueError``."""
        if not cost > 0:
            raise ValueError(f"cost must be > 0, got {cost!r}")
        self.counts.admitted += 1
