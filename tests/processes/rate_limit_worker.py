"""One instance hammering a shared Redis rate limiter; prints what Redis decided, as JSON.

``python -m tests.processes.rate_limit_worker URL KEY RATE BURST DEMAND SECONDS PHASE OFFSET``: prints
``ready`` once connected, reads a start time (seconds of Redis's clock) from standard input, waits
for it, then calls at ``DEMAND`` calls a second
(its schedule shifted by ``PHASE`` of one interval, so that instances interleave) for ``SECONDS``,
with this process's clocks (``time.time``, ``time.monotonic``) moved by ``OFFSET`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time


def _skew_clocks(offset_s: float) -> None:
    # Everything in this process that asks the time from here on, the event loop included, sees it
    # offset_s off: what a host whose clock disagrees with the others' would see.
    real_time, real_monotonic = time.time, time.monotonic
    time.time = lambda: real_time() + offset_s
    time.monotonic = lambda: real_monotonic() + offset_s


async def _run(argv: list[str]) -> dict[str, object]:
    from adapters.redis import Decision, RedisGcraRateLimiter, RedisOptions, create_guarded_redis
    from ports.errors import RateLimitExceededError

    url, key = argv[0], argv[1]
    rate, burst, demand, seconds, phase = (float(value) for value in argv[2:7])
    redis = create_guarded_redis(RedisOptions(url=url, call_timeout_s=1.0, connect_timeout_s=1.0))
    decisions: list[Decision] = []
    limiter = RedisGcraRateLimiter(
        redis=redis, rate_per_s=rate, burst=burst, failure_mode="closed", on_decision=decisions.append
    )
    await redis.client.ping()
    print("ready", flush=True)
    start_at = float(await asyncio.to_thread(sys.stdin.readline))
    seconds_now, micros = await redis.client.time()
    late_s = seconds_now + micros / 1e6 - start_at
    await asyncio.sleep(max(0.0, -late_s))
    interval = 1.0 / demand
    started = time.monotonic()
    next_at = started + phase * interval
    while next_at < started + seconds:
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        with contextlib.suppress(RateLimitExceededError):
            await limiter.acquire(key)
        next_at += interval
    await redis.aclose()
    return {
        "late_s": max(0.0, late_s),
        "decided_at": [d.server_time_s for d in decisions],
        "admitted_at": [d.server_time_s for d in decisions if d.admitted],
        "failures": dict(limiter.failures),
    }


def main() -> None:
    from adapters.structlog.logging import configure_logging

    configure_logging(output_format="console", level="info", secrets=())  # on stderr: stdout is the report
    _skew_clocks(float(sys.argv[8]))
    print(json.dumps(asyncio.run(_run(sys.argv[1:]))))


if __name__ == "__main__":
    main()
