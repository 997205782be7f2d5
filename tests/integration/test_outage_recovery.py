"""Outages on a server of the test's own: stuck calls open the circuit, probes close it again quickly.

Each test starts its own throwaway cluster (it freezes or restarts it), and builds the container
with the default settings, not the test preset, except where a test says otherwise.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest
from sqlalchemy import text

from adapters.postgres.cluster import PostgresCluster, find_binaries
from container import Container, create_container, start_resources, stop_resources
from ports.circuit_breaker import BreakerState
from ports.errors import CircuitOpenError
from settings import load_settings
from tests.chaos.load import wait_until
from tests.freezing import frozen
from tests.support import create_database

APP = "hex-outage-test"


@pytest.fixture
def cluster() -> Iterator[PostgresCluster]:
    with PostgresCluster(binaries=find_binaries()) as own:
        yield own


@asynccontextmanager
async def service(dsn: str, **groups: object) -> AsyncIterator[Container]:
    settings = load_settings(
        database={"url": dsn, "application_name": APP},
        logging={"level": "error"},
        **groups,
    )
    container = create_container(settings)
    await start_resources(container)
    try:
        yield container
    finally:
        await stop_resources(container)


@dataclass
class Workers:
    """Units of work running ``SELECT 1`` back to back; each call's end time and outcome."""

    container: Container
    count: int
    calls: list[tuple[float, str | None]] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._run()) for _ in range(self.count)]

    async def _run(self) -> None:
        while not self._stop.is_set():
            try:
                async with self.container.unit_of_work() as uow:
                    await uow.connection.execute(text("SELECT 1"))
                    await uow.commit()
            except Exception as error:
                self.calls.append((time.monotonic(), type(error).__name__))
                await asyncio.sleep(0.01)
            else:
                self.calls.append((time.monotonic(), None))

    def first_success_after(self, moment: float) -> float | None:
        ends = [at for at, error in self.calls if error is None and at >= moment]
        return min(ends) - moment if ends else None

    async def wait_for_success_after(self, moment: float, timeout_s: float) -> float | None:
        await wait_until(
            lambda: self.first_success_after(moment) is not None, timeout_s=timeout_s, interval_s=0.005
        )
        return self.first_success_after(moment)

    async def stop(self, timeout_s: float = 40.0) -> None:
        self._stop.set()
        _, pending = await asyncio.wait(self._tasks, timeout=timeout_s)
        for task in pending:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


async def _refusal_times(container: Container, calls: int) -> list[float]:
    durations = []
    for _ in range(calls):
        started = time.perf_counter()
        with pytest.raises(CircuitOpenError):
            async with container.unit_of_work():
                pass
        durations.append(time.perf_counter() - started)
    return durations


async def test_a_frozen_server_opens_the_circuit_after_the_slow_call_duration_and_service_resumes_after(
    cluster: PostgresCluster,
) -> None:
    dsn = await asyncio.to_thread(create_database, cluster.dsn(), prefix="outage")
    slow_s = 1.0
    async with service(dsn, circuit_breaker={"slow_call_duration_s": slow_s}) as container:
        workers = Workers(container, count=15)  # the pool's capacity: every connection busy
        workers.start()
        await asyncio.sleep(0.5)
        breaker = container.circuit_breaker()
        with frozen(cluster):
            frozen_at = time.monotonic()
            tick_s = slow_s / 8
            await wait_until(
                lambda: breaker.state("writer") is BreakerState.OPEN, timeout_s=10, interval_s=0.01
            )
            opened_after = time.monotonic() - frozen_at
            refusals = await _refusal_times(container, 20)
        thawed_at = time.monotonic()
        resumed = await workers.wait_for_success_after(thawed_at, timeout_s=10.0)
        await workers.stop()
        print(
            f"\nopened {opened_after:.2f}s after the freeze; refusals median "
            f"{statistics.median(refusals) * 1e6:.0f} us, max {max(refusals) * 1e6:.0f} us; "
            f"first success {resumed}s after SIGCONT"
        )

    assert slow_s <= opened_after <= slow_s + tick_s + 1.0  # slack: a loaded 2-core machine
    assert statistics.median(refusals) < 0.001
    assert resumed is not None


async def test_after_a_restart_the_first_success_comes_within_half_a_second_and_probes_stay_bounded(
    cluster: PostgresCluster,
) -> None:
    dsn = await asyncio.to_thread(create_database, cluster.dsn(), prefix="outage")
    async with service(dsn) as container:  # the defaults: 5 s recovery time, probes every 0.05-0.25 s
        workers = Workers(container, count=4)
        workers.start()
        await asyncio.sleep(0.5)
        await asyncio.to_thread(cluster.stop, "fast")
        stopped_at = time.monotonic()
        await asyncio.sleep(3.0)
        prober = container.recovery_prober()
        assert prober is not None
        attempts_while_down = prober.attempts("writer")
        down_s = time.monotonic() - stopped_at
        assert container.circuit_breaker().state("writer") is BreakerState.OPEN
        await asyncio.to_thread(cluster.start)
        accepting_at = time.monotonic()
        recovery = await workers.wait_for_success_after(accepting_at, timeout_s=10.0)
        await workers.stop()
        print(
            f"\n{attempts_while_down} probes in {down_s:.1f}s down; first success {recovery}s after "
            "the server accepted connections"
        )

    assert recovery is not None
    assert recovery <= 0.5 + 0.3  # the 0.5 s, with room for a loaded machine
    # At most one probe per 0.25 s once backed off, and a handful on the way there.
    assert 1 <= attempts_while_down <= down_s / 0.25 + 5
