"""One instance calling a database through a shared circuit breaker; prints what it did, as JSON.

``python -m tests.processes.breaker_worker REDIS_URL DB_PORT MINIMUM_CALLS QUORUM OPEN_S REFRESH_S
PROBE_TTL_S SECONDS KEY_PREFIX``: prints ``ready`` once connected to Redis, reads a start time
(``time.time()``, the machine's clock) from standard input, then for ``SECONDS`` makes one call
every 10 ms: a TCP connection to 127.0.0.1:DB_PORT (a refused one is a
``DatabaseUnavailableError``), through a :class:`RedisSharedCircuitBreaker` around an in-memory
breaker that opens after ``MINIMUM_CALLS`` failures in a row.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

CALL_EVERY_S = 0.01


async def _call_database(port: int) -> None:
    from ports.errors import DatabaseUnavailableError

    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError as exc:
        raise DatabaseUnavailableError(f"connection to 127.0.0.1:{port} refused") from exc
    writer.close()
    await writer.wait_closed()


async def _run(argv: list[str]) -> dict[str, Any]:
    from adapters.memory.circuit_breaker import InMemoryCircuitBreaker
    from adapters.redis import RedisOptions, RedisSharedCircuitBreaker, create_guarded_redis
    from ports.errors import CircuitOpenError, DatabaseUnavailableError

    url, port, minimum_calls, quorum = argv[0], int(argv[1]), int(argv[2]), int(argv[3])
    open_s, refresh_s, probe_ttl_s, seconds = (float(value) for value in argv[4:8])
    key_prefix = argv[8]
    redis = create_guarded_redis(RedisOptions(url=url, call_timeout_s=0.5, connect_timeout_s=0.5))
    inner = InMemoryCircuitBreaker(
        window_size=minimum_calls,
        minimum_calls=minimum_calls,
        failure_rate_threshold=1.0,
        recovery_time_s=open_s,
        half_open_max_calls=1,
    )
    breaker = RedisSharedCircuitBreaker(
        inner=inner,
        redis=redis,
        open_s=open_s,
        key_prefix=key_prefix,
        quorum=quorum,
        refresh_interval_s=refresh_s,
        probe_ttl_s=probe_ttl_s,
    )
    await redis.client.ping()
    with breaker.guard("warm-up"):  # starts the refresher before the clock starts
        pass
    print("ready", flush=True)
    start_at = float(await asyncio.to_thread(sys.stdin.readline))
    await asyncio.sleep(max(0.0, start_at - time.time()))
    attempts: list[float] = []
    opened_at: list[float] = []
    succeeded = refused = 0
    while time.time() < start_at + seconds:
        try:
            with breaker.guard("writer"):
                attempts.append(time.time())
                await _call_database(port)
            succeeded += 1
        except DatabaseUnavailableError:
            pass
        except CircuitOpenError:
            refused += 1
        if inner.transitions("writer")["opened"] > len(opened_at):
            opened_at.append(time.time())
        await asyncio.sleep(CALL_EVERY_S)
    await redis.aclose()
    return {
        "attempts": attempts,
        "opened_at": opened_at,
        "succeeded": succeeded,
        "refused": refused,
        "shared_refusals": breaker.shared_refusals,
    }


def main() -> None:
    from adapters.structlog.logging import configure_logging

    configure_logging(output_format="console", level="info", secrets=())  # on stderr: stdout is the report
    print(json.dumps(asyncio.run(_run(sys.argv[1:]))))


if __name__ == "__main__":
    main()
