"""Policies shared by every instance of the service through Redis (``redis.asyncio``).

Only the container imports these, and only the branches the settings select build anything.
"""

from adapters.redis._client import GuardedRedis, RedisOptions, RedisUnavailableError, create_guarded_redis
from adapters.redis.circuit_breaker import RedisSharedCircuitBreaker
from adapters.redis.rate_limiter import Decision, RedisGcraRateLimiter

__all__ = [
    "Decision",
    "GuardedRedis",
    "RedisGcraRateLimiter",
    "RedisOptions",
    "RedisSharedCircuitBreaker",
    "RedisUnavailableError",
    "create_guarded_redis",
]
