"""Token-bucket rate limiting per key, held in memory: the limit applies within one process."""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Final

from ports.errors import RateLimitExceededError
from ports.rate_limiter import RateLimiter

# Float refill arithmetic can leave 0.9999999 of a token where a whole one is due; without this
# slack a caller arriving exactly on time would be told to retry after a few nanoseconds.
_TOKEN_EPSILON: Final = 1e-6
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

    async def acquire(self, key: str = "default", *, cost: float = 1.0) -> None:
        """Take ``cost`` tokens of ``key``, waiting at most ``max_wait_s``, or refuse the call."""
        if not (0 < cost <= self._burst):
            raise ValueError(f"cost must be > 0 and <= burst ({self._burst}), got {cost!r}")
        now = self._clock()
        bucket = self._bucket(key, now)
        deadline = self._deadline(bucket, cost, now)
        wait_s = deadline - now
        if wait_s > self._max_wait_s:
            raise RateLimitExceededError(key, wait_s)
        bucket.tokens -= cost
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


class UnlimitedRateLimiter(RateLimiter):
    """The switched-off limiter: admits every call at once, whatever its key and cost."""

    async def acquire(self, key: str = "default", *, cost: float = 1.0) -> None:
        """Return at once; a non-positive ``cost`` is still a caller's bug and raises ``ValueError``."""
        if not cost > 0:
            raise ValueError(f"cost must be > 0, got {cost!r}")
