"""The demo's live progress line: throughput, failures, each pool and circuit, the read routes."""

from __future__ import annotations

from adapters.memory.circuit_breaker import InMemoryCircuitBreaker
from demo import progress_line
from ports.connection_provider import ProviderStats, TargetStats


def _target(name: str, in_use: int, size: int, waiting: int) -> TargetStats:
    return TargetStats(name, "writer", size, in_use, size - in_use, 0, waiting, 0)


def test_the_line_shows_each_pool_its_circuit_and_the_read_routes() -> None:
    stats = ProviderStats(
        targets=(_target("writer", 4, 10, 2), _target("replica-1", 1, 5, 0)),
        read_routes={"replica": 90, "fallback_no_healthy_replica": 2},
    )

    line = progress_line(812, 3, stats, InMemoryCircuitBreaker())

    assert line == (
        "ops/s   812  failed     3  writer 4/10 q2 closed  replica-1 1/5 q0 closed  "
        "reads no_healthy_replica:2 replica:90"
    )
