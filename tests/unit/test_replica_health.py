"""Replica health: ejection and readmission, the probe's lag measurement, routes in the stats."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from structlog.testing import capture_logs

from adapters.sqlalchemy.replica_health import ReplicaHealth
from adapters.sqlalchemy.replica_probe import ReplicaProber
from adapters.sqlalchemy.wal import format_lsn


@dataclass
class Clock:
    """Time that moves only when a fake server answers (``step_s`` per answer)."""

    now: float = 100.0
    step_s: float = 0.01

    def __call__(self) -> float:
        return self.now

    def tick(self) -> None:
        self.now += self.step_s


@dataclass
class FakeServer:
    """A bare driver connection as the probe uses it: each answer advances the clock."""

    clock: Clock
    positions: list[int]
    in_recovery: bool = True
    replayed_age_s: float | None = 0.5
    terminated: bool = field(default=False)

    async def fetchrow(self, _query: str) -> tuple[Any, ...]:
        self.clock.tick()
        return self.in_recovery, format_lsn(self.positions[0]), self.replayed_age_s

    async def fetchval(self, _query: str) -> str:
        self.clock.tick()
        if len(self.positions) > 1:
            self.positions.pop(0)
        return format_lsn(self.positions[0])

    closed: bool = field(default=False)

    def is_closed(self) -> bool:
        return self.terminated or self.closed

    async def close(self, **_options: float) -> None:  # asyncpg's close(timeout=...)
        self.closed = True

    def terminate(self) -> None:
        self.terminated = True


def prober(clock: Clock, writer: FakeServer | Exception, timeout_s: float = 1.0) -> ReplicaProber:
    async def connect_writer() -> FakeServer:
        if isinstance(writer, Exception):
            raise writer
        return writer

    return ReplicaProber(writer=connect_writer, replicas={}, interval_s=1.0, timeout_s=timeout_s, clock=clock)


async def probe(probing: ReplicaProber, health: ReplicaHealth, replica: FakeServer | Exception) -> None:
    async def connect() -> FakeServer:
        if isinstance(replica, Exception):
            raise replica
        return replica

    await probing.probe(connect, health)


async def test_a_replica_that_replayed_all_the_writer_had_shows_no_lag_however_old_its_last_transaction() -> (
    None
):
    clock = Clock()
    health = ReplicaHealth("replica-1")
    replica = FakeServer(clock, [500], replayed_age_s=3600.0)

    await probe(prober(clock, FakeServer(clock, [500])), health, replica)

    assert (health.healthy(clock()), health.in_recovery, health.lag_s, health.replayed) == (
        True,
        True,
        0.0,
        500,
    )
    assert replica.closed, "a probe leaves no session behind, and says goodbye"


async def test_a_replica_behind_shows_how_long_it_took_to_replay_the_writers_position() -> None:
    clock = Clock(step_s=0.01)
    health = ReplicaHealth("replica-1")
    replica = FakeServer(clock, [100, 300, 450, 600])

    await probe(prober(clock, FakeServer(clock, [500])), health, replica)

    # Counted from asking the writer (one answer), then three answers from the replica to pass 500.
    assert health.lag_s == pytest.approx(0.04)
    assert health.replayed == 600


async def test_a_replica_that_does_not_catch_up_in_time_reports_at_least_the_time_waited() -> None:
    clock = Clock(step_s=0.02)
    health = ReplicaHealth("replica-1")
    stuck = FakeServer(clock, [100], replayed_age_s=0.01)

    await probe(prober(clock, FakeServer(clock, [500]), timeout_s=0.1), health, stuck)

    assert health.lag_s is not None
    assert health.lag_s >= 0.1
    assert health.healthy(clock()), "lagging is for the strategy to judge, not a failure"


async def test_a_replica_far_behind_reports_the_age_of_its_last_transaction_when_larger() -> None:
    clock = Clock(step_s=0.02)
    health = ReplicaHealth("replica-1")

    await probe(
        prober(clock, FakeServer(clock, [500]), timeout_s=0.1),
        health,
        FakeServer(clock, [1], replayed_age_s=42.0),
    )

    assert health.lag_s == 42.0


async def test_with_the_writer_unreachable_lag_is_unknown_and_the_replica_stays_in_rotation() -> None:
    clock = Clock()
    health = ReplicaHealth("replica-1")

    await probe(prober(clock, ConnectionRefusedError()), health, FakeServer(clock, [500]))

    assert (health.healthy(clock()), health.lag_s, health.in_recovery) == (True, None, True)


async def test_an_unreachable_replica_is_ejected_and_readmitted_by_the_next_probe_that_succeeds() -> None:
    clock = Clock()
    health = ReplicaHealth("replica-1")
    probing = prober(clock, FakeServer(clock, [500]))

    with capture_logs() as logs:
        await probe(probing, health, ConnectionRefusedError())
        await probe(probing, health, ConnectionRefusedError())
        assert (health.healthy(clock()), health.ejected) == (False, "unreachable")
        clock.now += 1
        await probe(probing, health, FakeServer(clock, [500]))

    events = [(e["event"], e.get("reason")) for e in logs if e["event"].startswith("replica.")]
    assert [e for e in events if e[0] != "replica.probe_failed"] == [
        ("replica.ejected", "unreachable"),
        ("replica.readmitted", None),
    ]
    assert health.healthy(clock())
    assert (health.ejections, health.readmissions, health.probes, health.probe_failures) == (1, 1, 3, 2)


async def test_a_standby_that_leaves_recovery_was_promoted_and_is_ejected_until_it_is_a_standby_again() -> (
    None
):
    clock = Clock()
    health = ReplicaHealth("replica-1")
    probing = prober(clock, FakeServer(clock, [500]))
    await probe(probing, health, FakeServer(clock, [500]))

    await probe(probing, health, FakeServer(clock, [500], in_recovery=False))
    await probe(probing, health, FakeServer(clock, [500], in_recovery=False))

    assert (health.healthy(clock()), health.ejected, health.in_recovery) == (False, "promoted", False)
    await probe(probing, health, FakeServer(clock, [500]))
    assert health.healthy(clock())


async def test_a_read_endpoint_on_a_primary_that_never_was_a_standby_stays_in_rotation() -> None:
    clock = Clock()
    health = ReplicaHealth("reader")

    await probe(prober(clock, FakeServer(clock, [500])), health, FakeServer(clock, [500], in_recovery=False))

    assert (health.healthy(clock()), health.in_recovery, health.lag_s) == (True, False, None)


def test_a_failed_connect_ejects_a_replica_for_the_eject_time_only() -> None:
    health = ReplicaHealth("replica-1")
    health.connect_failed(10.0, 5.0)
    assert not health.healthy(14.9)
    assert health.stats(14.9, in_flight=0, reads=0).ejected == "connect_failed"
    assert health.healthy(15.0)


def test_a_probe_that_began_before_a_failed_connect_does_not_readmit_the_replica() -> None:
    health = ReplicaHealth("replica-1")
    health.connect_failed(10.0, 5.0)

    health.probe_succeeded(started_at=9.9, in_recovery=True, lag_s=0.0)
    assert not health.healthy(11.0)
    health.probe_succeeded(started_at=10.1, in_recovery=True, lag_s=0.0)
    assert health.healthy(11.0)
    assert (health.ejections, health.readmissions) == (1, 1)
