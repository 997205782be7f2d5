"""The shared part of a circuit, in Redis: an OPEN flag with a TTL, a quorum of votes, a probe lock.

Per target ``T`` and key prefix ``p`` (the target is a hash tag, so each script's keys share a
cluster slot):

- ``p:cb:{T}:votes``: a sorted set of the instances whose local breaker opened, scored by Redis's
  clock; votes older than the quorum window drop out.
- ``p:cb:{T}:open``: the OPEN flag, set once ``quorum`` instances voted; it expires by itself
  after the open period, so nobody has to clear it and no clocks need to agree.
- ``p:cb:{T}:episode``: set with the flag, kept until a probe succeeds (or it expires: a grace
  period after the flag, so a cluster whose prober vanished falls back to local breakers).
- ``p:cb:{T}:probe``: the probe lock (``SET NX PX``): once the flag has expired, the one instance
  that holds it sends the trial calls; the others keep refusing until it reports.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final

from adapters.redis._client import GuardedRedis

_VOTE: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[3]))
redis.call('PEXPIRE', KEYS[1], ARGV[3])
local votes = redis.call('ZCARD', KEYS[1])
if votes >= tonumber(ARGV[2]) then
  if redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[4], 'NX') then
    redis.call('SET', KEYS[3], ARGV[1], 'PX', ARGV[5])
  end
  return {votes, redis.call('PTTL', KEYS[2])}
end
return {votes, 0}
"""
_OBSERVE: Final = """
local pttl = redis.call('PTTL', KEYS[1])
if pttl > 0 then
  return {pttl, 0}
end
if redis.call('EXISTS', KEYS[2]) == 0 then
  return {0, 0}
end
if redis.call('SET', KEYS[3], ARGV[1], 'PX', ARGV[2], 'NX') then
  return {-1, 1}
end
if redis.call('GET', KEYS[3]) == ARGV[1] then
  return {-1, 1}
end
return {-1, 0}
"""
_REOPEN: Final = """
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[3])
if redis.call('GET', KEYS[3]) == ARGV[1] then
  redis.call('DEL', KEYS[3])
end
return 1
"""
_CLOSE: Final = """
local holder = redis.call('GET', KEYS[3])
if holder and holder ~= ARGV[1] then
  return 0
end
if redis.call('PTTL', KEYS[1]) > 0 then
  return 0
end
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4])
return 1
"""


class Phase(enum.Enum):
    """What the cluster says about a target."""

    LOCAL = "local"  # no shared episode: the local breaker decides
    OPEN = "open"  # the OPEN flag is set: refuse
    PROBING = "probing"  # the flag expired, a probe is due: only the lock's holder calls


@dataclass(frozen=True, slots=True)
class Observation:
    """One reading of a target's shared state; ``open_s`` is the flag's remaining life."""

    phase: Phase
    open_s: float = 0.0
    probe_holder: bool = False


class RedisCircuitState:
    """The Redis side of :class:`adapters.redis.circuit_breaker.RedisSharedCircuitBreaker`.

    Each method is one script, one round trip through ``redis`` (deadline and breaker included),
    and raises what :meth:`GuardedRedis.run` raises. Never called on a breaker's hot path.
    """

    def __init__(self, redis: GuardedRedis, *, key_prefix: str, instance: str) -> None:
        self._redis = redis
        self._prefix = f"{key_prefix}cb:"
        self.instance = instance
        client = redis.client
        self._vote = client.register_script(_VOTE)
        self._observe = client.register_script(_OBSERVE)
        self._reopen = client.register_script(_REOPEN)
        self._close = client.register_script(_CLOSE)

    def key(self, target: str, part: str) -> str:
        """The Redis key of one part (``open``, ``episode``, ``probe``, ``votes``) of ``target``."""
        return f"{self._prefix}{{{target}}}:{part}"

    async def vote_open(
        self, target: str, *, quorum: int, window_s: float, open_s: float, episode_s: float
    ) -> float:
        """Vote OPEN for ``target``; the flag's remaining seconds once the quorum is met, else 0."""
        keys = [self.key(target, "votes"), self.key(target, "open"), self.key(target, "episode")]
        args: list[str | int] = [self.instance, quorum, _ms(window_s), _ms(open_s), _ms(episode_s)]
        reply = await self._run(lambda: self._vote(keys=keys, args=args))
        return max(0, int(reply[1])) / 1000

    async def observe(self, target: str, *, probe_ttl_s: float) -> Observation:
        """Read ``target``'s shared state, taking the probe lock if a probe is due and it is free."""
        keys = [self.key(target, "open"), self.key(target, "episode"), self.key(target, "probe")]
        args: list[str | int] = [self.instance, _ms(probe_ttl_s)]
        open_ms, holder = (int(part) for part in await self._run(lambda: self._observe(keys=keys, args=args)))
        if open_ms > 0:
            return Observation(Phase.OPEN, open_s=open_ms / 1000)
        if open_ms == 0:
            return Observation(Phase.LOCAL)
        return Observation(Phase.PROBING, probe_holder=bool(holder))

    async def reopen(self, target: str, *, open_s: float, episode_s: float) -> None:
        """A probe failed: set the flag again (no quorum needed within an episode), free the lock."""
        keys = [self.key(target, "open"), self.key(target, "episode"), self.key(target, "probe")]
        args: list[str | int] = [self.instance, _ms(open_s), _ms(episode_s)]
        await self._run(lambda: self._reopen(keys=keys, args=args))

    async def close(self, target: str) -> bool:
        """A probe succeeded: end the episode unless someone else holds the lock or reopened it."""
        parts = ("open", "episode", "probe", "votes")
        keys = [self.key(target, part) for part in parts]
        reply = await self._run(lambda: self._close(keys=keys, args=[self.instance]))
        return bool(reply[0])

    async def _run(self, script_call: Callable[[], Awaitable[list[int] | int]]) -> list[int]:
        async def call() -> list[int]:
            result = await script_call()
            return result if isinstance(result, list) else [result]

        return await self._redis.run(call)


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))
