"""One Redis client for the policies: a hard deadline per call, no retries, a breaker around Redis itself.

redis-py's defaults suit a cache, not a decision on the database path: seconds of socket timeout
and ten retries with backoff (``redis.asyncio.Redis``: ``socket_timeout=5``, ``Retry(..., 10)``).
Here every call has ``call_timeout_s`` end to end (connection wait, connect, script reload and
reply), errors are never retried, and after a few failures in a row the breaker stops calling Redis
for a while, so a dead or paused Redis costs a caller at most one timeout and usually nothing.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal, TypeVar

import structlog
from redis.asyncio import BlockingConnectionPool, Redis
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from adapters.memory.circuit_breaker import InMemoryCircuitBreaker
from ports.circuit_breaker import BreakerState, CircuitBreaker
from ports.errors import InfrastructureError

log = structlog.get_logger(__name__)

T = TypeVar("T")
TlsMode = Literal["disable", "require", "verify-ca", "verify-full"]
#: The breaker's name for Redis itself, in its log events (``circuit.opened target=redis``).
REDIS_TARGET: Final = "redis"


class RedisUnavailableError(InfrastructureError):
    """A Redis call failed or ran past its deadline; the policies answer with their failure mode."""


@dataclass(frozen=True, slots=True)
class RedisOptions:
    """How the policies' client reaches Redis; ``url`` may carry the password and is never logged."""

    url: str
    call_timeout_s: float = 0.02
    connect_timeout_s: float = 0.02
    max_connections: int = 32
    tls_mode: TlsMode = "disable"
    tls_ca_file: Path | None = None
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tls_key_password: str | None = None
    breaker_failures: int = 3
    breaker_open_s: float = 0.5


def _tls_arguments(options: RedisOptions) -> dict[str, Any]:
    if options.tls_mode == "disable":
        return {}
    # redis-py picks its SSL connection class from the pool's connection_class, not from ssl=True.
    return {
        "ssl_cert_reqs": "none" if options.tls_mode == "require" else "required",
        "ssl_check_hostname": options.tls_mode == "verify-full",
        "ssl_ca_certs": None if options.tls_ca_file is None else str(options.tls_ca_file),
        "ssl_certfile": None if options.tls_cert_file is None else str(options.tls_cert_file),
        "ssl_keyfile": None if options.tls_key_file is None else str(options.tls_key_file),
        "ssl_password": options.tls_key_password,
    }


def _create_client(options: RedisOptions) -> Redis:
    from redis.asyncio.connection import SSLConnection

    tls = _tls_arguments(options)
    extra: dict[str, Any] = {"connection_class": SSLConnection, **tls} if tls else {}
    pool = BlockingConnectionPool.from_url(
        options.url,
        max_connections=options.max_connections,
        timeout=None,  # waiting for a free connection counts against the call's own deadline
        socket_timeout=options.call_timeout_s,
        socket_connect_timeout=options.connect_timeout_s,
        retry=Retry(NoBackoff(), 0),
        retry_on_timeout=False,
        # No CLIENT SETINFO at connect: under CLIENT PAUSE it would hang every new connection.
        driver_info=None,
        **extra,
    )
    return Redis.from_pool(pool)


class GuardedRedis:
    """The policies' Redis client: ``run(call)`` within ``call_timeout_s``, behind a breaker.

    ``run`` raises :class:`RedisUnavailableError` when the call fails or times out, and
    :class:`ports.errors.CircuitOpenError` without calling when the breaker around Redis is open
    (``breaker_failures`` failures in a row open it for ``breaker_open_s``; then one trial call
    decides). Background work of the adapters (the circuit-state refresher) is started with
    ``spawn`` and ended by ``aclose``. Safe to share between the tasks of one event loop.
    """

    def __init__(
        self,
        client: Redis,
        *,
        call_timeout_s: float = 0.02,
        breaker: CircuitBreaker | None = None,
        breaker_failures: int = 3,
        breaker_open_s: float = 0.5,
    ) -> None:
        if not (0 < call_timeout_s < math.inf):
            raise ValueError(f"call_timeout_s must be a finite number > 0, got {call_timeout_s!r}")
        self.client = client
        self.call_timeout_s = call_timeout_s
        self.breaker_open_s = breaker_open_s
        self._breaker = breaker or InMemoryCircuitBreaker(
            window_size=breaker_failures,
            minimum_calls=breaker_failures,
            failure_rate_threshold=1.0,
            slow_call_duration_s=math.inf,
            recovery_time_s=breaker_open_s,
            half_open_max_calls=1,
        )
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False

    async def run(self, call: Callable[[], Awaitable[T]]) -> T:
        """``await call()`` within the deadline; Redis failures become ``RedisUnavailableError``."""
        with self._breaker.guard(REDIS_TARGET):
            try:
                async with asyncio.timeout(self.call_timeout_s):
                    return await call()
            except (RedisError, OSError, TimeoutError) as exc:
                # The message names host and port at most; the URL (and its password) is never in it.
                raise RedisUnavailableError(f"redis: {type(exc).__name__}: {exc}") from exc

    @property
    def state(self) -> BreakerState:
        """The state of the breaker around Redis."""
        return self._breaker.state(REDIS_TARGET)

    def spawn(self, work: Coroutine[Any, Any, None], *, name: str) -> asyncio.Task[None]:
        """Run ``work`` in the background until it ends or ``aclose`` cancels it."""
        task = asyncio.get_running_loop().create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    @property
    def closing(self) -> bool:
        """Whether ``aclose`` has begun: background loops check it, so none outlives the client."""
        return self._closing

    async def aclose(self, timeout_s: float = 2.0) -> None:
        """Cancel the background work and close the client's connections, within ``timeout_s`` each.

        Bounded: a background task that swallowed its cancellation (a cancel racing a timeout
        inside a library) still sees ``closing`` and ends at its next turn, and a close that hangs
        on a connection is given up on, logged, rather than holding the service's shutdown.
        """
        self._closing = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=timeout_s)
            if pending:
                log.warning("redis.background_task_not_ended", tasks=sorted(t.get_name() for t in pending))
        try:
            async with asyncio.timeout(timeout_s):
                await self.client.aclose()
        except TimeoutError:
            log.warning("redis.close_timed_out", timeout_s=timeout_s)


def create_guarded_redis(options: RedisOptions) -> GuardedRedis:
    """A :class:`GuardedRedis` for ``options``; nothing connects until the first call."""
    return GuardedRedis(
        _create_client(options),
        call_timeout_s=options.call_timeout_s,
        breaker_failures=options.breaker_failures,
        breaker_open_s=options.breaker_open_s,
    )
