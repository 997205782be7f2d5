"""Shared circuit state on a real redis-server: three OS processes, a stopped database, one probe.

The database is a loopback port nobody listens on (every call refused at once); a live one is the
session's throwaway PostgreSQL, reached by a TCP connection.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import pytest

from adapters.memory.circuit_breaker import InMemoryCircuitBreaker
from adapters.redis import RedisOptions, RedisSharedCircuitBreaker, create_guarded_redis
from ports.circuit_breaker import BreakerState
from ports.errors import CircuitOpenError, DatabaseUnavailableError
from tests.redis_support import RedisServer, free_port

ROOT: Final = Path(__file__).resolve().parents[2]
WORKER: Final = "tests.processes.breaker_worker"
OPEN_S: Final = 1.0
REFRESH_S: Final = 0.2
PROBE_TTL_S: Final = 0.5
SECONDS: Final = 3.6
# Publishing the vote, and the event loops of three processes on a loaded 2-core machine.
PROPAGATION_SLACK_S: Final = 0.1
NEVER_OPENS: Final = 100_000  # a breaker that needs this many failures in a row stays closed here


def _run_instances(
    server: RedisServer, instances: list[tuple[int, int]], quorum: int
) -> list[dict[str, Any]]:
    """Run one worker per (database port, minimum calls), started together; their reports."""
    prefix = f"breaker-{uuid.uuid4().hex}:"  # the instances of one run share their keys, no one else
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                WORKER,
                server.url(),
                str(port),
                str(minimum_calls),
                str(quorum),
                str(OPEN_S),
                str(REFRESH_S),
                str(PROBE_TTL_S),
                str(SECONDS),
                prefix,
            ],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for port, minimum_calls in instances
    ]
    try:
        for process in processes:
            assert process.stdout is not None
            assert process.stdout.readline().strip() == "ready"
        start_at = time.time() + 0.3
        for process in processes:
            assert process.stdin is not None
            process.stdin.write(f"{start_at}\n")
            process.stdin.flush()
        reports = []
        for process in processes:
            out, _ = process.communicate(timeout=SECONDS + 30)
            assert process.returncode == 0
            reports.append(json.loads(out))
        return reports
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
            process.communicate()


def test_once_one_instance_opens_the_others_send_nothing_and_each_expiry_lets_exactly_one_probe_through(
    shared_redis: RedisServer,
) -> None:
    stopped = free_port()
    # Only the first instance has seen enough failures to open; the others would go on calling.
    first, *others = _run_instances(
        shared_redis, [(stopped, 5), (stopped, NEVER_OPENS), (stopped, NEVER_OPENS)], 1
    )
    opened_at = first["opened_at"][0]
    for other in others:
        assert other["opened_at"] == []
        assert any(t < opened_at for t in other["attempts"]), "the others were calling before"
        quiet_from = opened_at + REFRESH_S + PROPAGATION_SLACK_S
        assert [t for t in other["attempts"] if quiet_from <= t < opened_at + OPEN_S] == []
    # From then on every call anyone sends is a probe: one per expiry of the flag, each one
    # failing and setting it again, so consecutive probes are a whole open period apart.
    after = sorted(t for report in (first, *others) for t in report["attempts"] if t >= quiet_from)
    gaps = [later - earlier for earlier, later in itertools.pairwise(after)]
    print(f"probes at {[round(t - opened_at, 3) for t in after]} s after the first opening")
    assert len(after) >= 2
    assert min(gaps) >= OPEN_S * 0.95
    assert sum(other["shared_refusals"] for other in others) > 100


def test_a_fault_only_one_instance_sees_opens_no_one_else_when_the_quorum_is_not_met(
    shared_redis: RedisServer, admin_dsn: str
) -> None:
    stopped, live = free_port(), urlsplit(admin_dsn).port
    assert live is not None
    first, *others = _run_instances(shared_redis, [(stopped, 5), (live, 5), (live, 5)], 2)
    assert first["opened_at"] != []  # it opened, locally, more than once (it probes by itself)
    assert first["shared_refusals"] == 0
    for other in others:
        assert other["refused"] == 0
        assert other["succeeded"] == len(other["attempts"]) > 200


async def _drive(breaker: InMemoryCircuitBreaker | RedisSharedCircuitBreaker, outcome: bool) -> str:
    try:
        with breaker.guard("writer"):
            if not outcome:
                raise DatabaseUnavailableError("refused")
    except CircuitOpenError:
        return "refused"
    except DatabaseUnavailableError:
        return "failed"
    return "ok"


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_with_redis_down_the_shared_breaker_decides_exactly_as_the_local_one() -> None:
    def local(clock: FakeClock) -> InMemoryCircuitBreaker:
        return InMemoryCircuitBreaker(window_size=5, minimum_calls=5, recovery_time_s=1.0, clock=clock)

    plain_clock, shared_clock = FakeClock(), FakeClock()
    plain = local(plain_clock)
    redis = create_guarded_redis(RedisOptions(url=f"redis://127.0.0.1:{free_port()}/0"))
    shared = RedisSharedCircuitBreaker(
        inner=local(shared_clock),
        redis=redis,
        open_s=1.0,
        quorum=1,
        refresh_interval_s=0.01,
        clock=shared_clock,
    )
    try:
        pattern = [i % 7 not in (0, 1, 2, 3, 4, 5) for i in range(400)]  # mostly failures, some successes
        for step, outcome in enumerate(pattern):
            if step % 10 == 0:
                await asyncio.sleep(0.005)  # let the refresher try (and fail to reach) Redis
            assert await _drive(plain, outcome) == await _drive(shared, outcome), step
            assert plain.state("writer") is shared.state("writer")
            plain_clock.now += 0.05
            shared_clock.now += 0.05
        assert plain.transitions("writer") == shared.transitions("writer")
        assert plain.transitions("writer")["opened"] > 5
        assert shared.shared_refusals == 0
    finally:
        await redis.aclose()


async def test_a_guarded_call_never_waits_for_redis(shared_redis: RedisServer) -> None:
    redis = create_guarded_redis(
        RedisOptions(url=shared_redis.url(), call_timeout_s=1.0, connect_timeout_s=1.0)
    )
    breaker = RedisSharedCircuitBreaker(
        inner=InMemoryCircuitBreaker(),
        redis=redis,
        open_s=1.0,
        key_prefix="hot-path:",
        refresh_interval_s=0.1,
    )
    try:
        with breaker.guard("writer"):
            pass
        await asyncio.sleep(0.05)  # the refresher's first reading
        before = shared_redis.command_calls("evalsha")
        started = time.monotonic()
        for _ in range(50):
            for _ in range(100):
                with breaker.guard("writer"):
                    pass
            await asyncio.sleep(0.01)
        elapsed_s = time.monotonic() - started
        scripts = shared_redis.command_calls("evalsha") - before
        # 5,000 calls; Redis heard one reading of the flag per refresh interval and nothing else.
        assert scripts <= elapsed_s / 0.1 + 2
        assert breaker.state("writer") is BreakerState.CLOSED
    finally:
        await redis.aclose()


@pytest.mark.parametrize("quorum", [1])
async def test_a_successful_probe_ends_the_episode_for_every_instance(
    shared_redis: RedisServer, quorum: int
) -> None:
    """In one process, three instances (their own clients): open, expire, one probe, all closed."""
    clients = [
        create_guarded_redis(RedisOptions(url=shared_redis.url(), call_timeout_s=1.0, connect_timeout_s=1.0))
        for _ in range(3)
    ]
    breakers = [
        RedisSharedCircuitBreaker(
            inner=InMemoryCircuitBreaker(window_size=3, minimum_calls=3, recovery_time_s=0.3),
            redis=client,
            open_s=0.3,
            key_prefix="probe-ok:",
            quorum=quorum,
            refresh_interval_s=0.05,
            probe_ttl_s=0.5,
        )
        for client in clients
    ]
    try:
        for breaker in breakers:
            await _drive(breaker, True)
        await asyncio.sleep(0.1)
        for _ in range(3):
            await _drive(breakers[0], False)
        await asyncio.sleep(0.15)
        assert [await _drive(breaker, True) for breaker in breakers[1:]] == ["refused", "refused"]
        await asyncio.sleep(0.45)  # the flag expired and the next reading handed out the probe lock
        outcomes = [await _drive(breaker, True) for breaker in breakers]
        assert outcomes.count("ok") == 1, outcomes  # the one prober; the others still refuse
        await asyncio.sleep(0.15)
        assert [await _drive(breaker, True) for breaker in breakers] == ["ok", "ok", "ok"]
    finally:
        for client in clients:
            await client.aclose()
