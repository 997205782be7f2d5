"""Rate limiting per key shared by every instance through Redis: GCRA in one Lua script per decision."""

from __future__ import annotations

import asyncio
import bisect
import math
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Final, Literal

import structlog

from adapters.memory.admission_counts import AdmissionCounts
from adapters.redis._client import GuardedRedis, RedisUnavailableError
from ports.errors import CircuitOpenError, RateLimitExceededError
from ports.rate_limiter import RateLimiter

log = structlog.get_logger(__name__)

FailureMode = Literal["open", "closed", "local"]

# GCRA (the algorithm of redis-cell and throttled) keeps one number per key: the theoretical
# arrival time (TAT) of the next call, in microseconds of Redis's own clock. A call of cost c is
# due at TAT + c*interval - burst*interval; it is admitted now if that is not in the future, else
# it reserves its slot (TAT moves on) when the wait is within max_wait, else it is refused with
# the wait as its retry-after. This is the token bucket of adapters.memory.rate_limiter with the
# bucket's content expressed as a time. Time comes from TIME inside the script, never from the
# client, so clients whose clocks disagree share one budget; the key expires once it is idle.
_GCRA_SCRIPT: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local increment = interval * tonumber(ARGV[3])
local max_wait = tonumber(ARGV[4])
local tat = now
local stored = redis.call('GET', KEYS[1])
if stored then
  tat = math.max(now, tonumber(stored))
end
local new_tat = tat + increment
local wait = new_tat - tolerance - now
if wait <= 0.001 then
  wait = 0
end
if wait > max_wait then
  return {0, math.ceil(wait), now}
end
redis.call('SET', KEYS[1], string.format('%.3f', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1)
return {1, math.ceil(wait), now}
"""
#: What the failure counters are called: admitted without Redis, refused without it, decided locally.
FAILURE_OUTCOMES: Final = ("allowed", "refused", "fallback")


@dataclass(slots=True, eq=False)  # identity equality: each waiter removes its own entry
class _Waiter:
    slot_us: int
    gone: asyncio.Event


def _slot_of(waiter: _Waiter) -> int:
    return waiter.slot_us


@dataclass(frozen=True, slots=True)
class Decision:
    """One decision Redis made: whether it admitted the call, the wait, and Redis's clock then."""

    key: str
    cost: float
    admitted: bool
    wait_s: float
    server_time_s: float


class RedisGcraRateLimiter(RateLimiter):
    """Admits ``rate_per_s`` of cost a second per key, in bursts of at most ``burst``, across processes.

    Every instance pointed at the same Redis and key prefix shares one budget per key: one atomic
    script per decision (GCRA; ``EVALSHA``, reloaded after a Redis restart or ``SCRIPT FLUSH``),
    timed by Redis's clock. Admitting, waiting and refusing work exactly as in
    :class:`adapters.memory.rate_limiter.TokenBucketRateLimiter`: with ``max_wait_s == 0`` a call
    that does not fit is refused at once; otherwise it reserves its slot in Redis when the wait is
    at most ``max_wait_s`` and sleeps, else it is refused with ``retry_after_s`` = that wait.
    Reservations are ordered by Redis, so a call never overtakes one that reserved before it;
    within one process, the waiters of a key also wake in the order of their slots. A cancelled
    waiter keeps its reservation (another instance may have reserved after it, so it cannot be
    handed back exactly); this costs at most ``max_wait_s`` of the key's budget.

    When Redis fails, is too slow (the client's call timeout) or its breaker is open, the decision
    follows ``failure_mode``: ``open`` admits the call, ``closed`` refuses it, ``local`` asks
    ``local_fallback`` (an in-memory limiter with this instance's share of the rate). Each such
    decision is counted in :attr:`failures`; the first one after a healthy period is logged
    (``rate_limiter.redis_unavailable``), and so is the first Redis decision after them
    (``rate_limiter.redis_recovered``). Safe to share between the tasks of one event loop.
    """

    def __init__(
        self,
        *,
        redis: GuardedRedis,
        rate_per_s: float,
        burst: float,
        max_wait_s: float = 0.0,
        key_prefix: str = "hex:",
        failure_mode: FailureMode = "open",
        local_fallback: RateLimiter | None = None,
        on_decision: Callable[[Decision], None] | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if not (0 < rate_per_s < math.inf):
            raise ValueError(f"rate_per_s must be a finite number > 0, got {rate_per_s!r}")
        if not (1 <= burst < math.inf):
            raise ValueError(f"burst must be a finite number >= 1, got {burst!r}")
        if not (0 <= max_wait_s < math.inf):
            raise ValueError(f"max_wait_s must be a finite number >= 0, got {max_wait_s!r}")
        if failure_mode not in ("open", "closed", "local"):
            raise ValueError(f"failure_mode must be 'open', 'closed' or 'local', got {failure_mode!r}")
        if failure_mode == "local" and local_fallback is None:
            raise ValueError("failure_mode 'local' needs a local_fallback limiter")
        self._redis = redis
        self._burst = burst
        self._max_wait_s = max_wait_s
        interval_us = 1e6 / rate_per_s
        # The script's arguments as Redis receives them: repr keeps every digit of the floats.
        self._interval_us = repr(interval_us)
        self._tolerance_us = repr(burst * interval_us)
        self._max_wait_us = repr(max_wait_s * 1e6)
        self._prefix = f"{key_prefix}rl:"
        self._failure_mode = failure_mode
        self._fallback = local_fallback
        self._on_decision = on_decision
        self._sleep = sleep
        self._script = redis.client.register_script(_GCRA_SCRIPT)
        # This process's waiters of each key, by the Redis time of their slot.
        self._waiters: dict[str, list[_Waiter]] = {}
        self._failures: Counter[str] = Counter()
        self._redis_decisions = 0
        self._failing = False
        self.counts = AdmissionCounts()

    async def acquire(self, key: str = "default", *, cost: float = 1.0) -> None:
        """Take ``cost`` of ``key``'s shared budget, waiting at most ``max_wait_s``, or refuse the call."""
        if not (0 < cost <= self._burst):
            raise ValueError(f"cost must be > 0 and <= burst ({self._burst}), got {cost!r}")
        try:
            reply = await self._redis.run(lambda: self._call_script(key, cost))
        except (RedisUnavailableError, CircuitOpenError) as exc:
            await self._without_redis(key, cost, exc)
            return
        admitted, wait_us, now_us = (int(part) for part in reply)
        if self._failing:
            self._failing = False
            log.info("rate_limiter.redis_recovered", failures=dict(self._failures))
        self._redis_decisions += 1
        wait_s = wait_us / 1e6
        if self._on_decision is not None:
            self._on_decision(Decision(key, cost, bool(admitted), wait_s, now_us / 1e6))
        if not admitted:
            self.counts.rejected += 1
            raise RateLimitExceededError(key, wait_s)
        self.counts.admit(wait_s)
        if wait_s > 0:
            await self._wait(key, wait_s, now_us + wait_us)

    @property
    def failures(self) -> Mapping[str, int]:
        """Decisions made without Redis, by outcome: ``allowed``, ``refused``, ``fallback``."""
        return {outcome: self._failures[outcome] for outcome in FAILURE_OUTCOMES}

    @property
    def redis_decisions(self) -> int:
        """How many decisions Redis made (admitted or refused)."""
        return self._redis_decisions

    def _call_script(self, key: str, cost: float) -> Awaitable[list[int]]:
        args = [self._interval_us, self._tolerance_us, repr(float(cost)), self._max_wait_us]
        result: Awaitable[list[int]] = self._script(keys=[self._prefix + key], args=args)
        return result

    async def _wait(self, key: str, wait_s: float, slot_us: int) -> None:
        # Replies come back on several connections, so their order (and the local time each wait
        # starts from) may differ from the order of the slots Redis handed out: a waiter that
        # wakes before an earlier slot's waiter of its key also waits for that one to go.
        waiters = self._waiters.setdefault(key, [])
        waiter = _Waiter(slot_us, asyncio.Event())
        bisect.insort(waiters, waiter, key=_slot_of)
        try:
            await self._sleep(min(wait_s, self._max_wait_s))
            for earlier in [other for other in waiters if other.slot_us < slot_us]:
                await earlier.gone.wait()
        finally:
            waiter.gone.set()
            waiters.remove(waiter)
            if not waiters:
                del self._waiters[key]

    async def _without_redis(self, key: str, cost: float, error: Exception) -> None:
        if not self._failing:
            self._failing = True
            log.warning(
                "rate_limiter.redis_unavailable",
                failure_mode=self._failure_mode,
                error=type(error).__name__,
                detail=str(error),
            )
        if self._failure_mode == "open":
            self._failures["allowed"] += 1
            self.counts.admit(0.0)
        elif self._failure_mode == "closed":
            self._failures["refused"] += 1
            self.counts.rejected += 1
            retry_after_s = error.retry_after_s if isinstance(error, CircuitOpenError) else None
            raise RateLimitExceededError(key, retry_after_s or self._redis.breaker_open_s)
        else:
            assert self._fallback is not None  # checked in __init__
            self._failures["fallback"] += 1
            try:
                await self._fallback.acquire(key, cost=cost)
            except RateLimitExceededError:
                self.counts.rejected += 1
                raise
            self.counts.admit(0.0)
