"""The admission gate: priorities, FIFO, bounded queue, timeouts, and counts that never drift."""

from __future__ import annotations

import asyncio
import random

import pytest

from adapters.asyncio.admission_gate import AdmissionGate
from ports.connection_provider import Priority
from ports.errors import PoolQueueFullError, PoolTimeoutError, ShuttingDownError


async def _hold(
    gate: AdmissionGate, priority: Priority, order: list[str], name: str, hold: asyncio.Event
) -> None:
    async with gate.admit(priority, timeout_s=10):
        order.append(name)
        await hold.wait()


async def test_higher_classes_go_first_and_each_class_is_first_come_first_served() -> None:
    gate = AdmissionGate(name="writer", capacity=1, max_waiting=10)
    order: list[str] = []
    release = asyncio.Event()
    release.set()
    async with gate.admit(Priority.NORMAL, timeout_s=1):
        tasks = [
            asyncio.create_task(_hold(gate, p, order, n, release))
            for p, n in [
                (Priority.LOW, "low"),
                (Priority.NORMAL, "n1"),
                (Priority.CRITICAL, "crit"),
                (Priority.NORMAL, "n2"),
            ]
        ]
        await asyncio.sleep(0)
    await asyncio.gather(*tasks)
    assert order == ["crit", "n1", "n2", "low"]


async def test_a_full_queue_rejects_at_once_with_the_pool_state() -> None:
    gate = AdmissionGate(name="writer", capacity=1, max_waiting=1)
    hold = asyncio.Event()
    holder = asyncio.create_task(_hold(gate, Priority.NORMAL, [], "a", hold))
    waiter = asyncio.create_task(_hold(gate, Priority.NORMAL, [], "b", hold))
    await asyncio.sleep(0)
    with pytest.raises(PoolQueueFullError, match=r"'writer'.*in_use=1 waiting=1"):
        async with gate.admit(Priority.NORMAL, timeout_s=1):
            pass
    hold.set()
    await asyncio.gather(holder, waiter)
    assert gate.counters.rejected == 1


async def test_a_waiter_gives_up_after_its_timeout_with_a_pool_timeout_error() -> None:
    gate = AdmissionGate(name="replica-1", capacity=1, max_waiting=5)
    async with gate.admit(Priority.NORMAL, timeout_s=1):
        with pytest.raises(
            PoolTimeoutError, match=r"'replica-1' became free within 0\.010s \(capacity=1 in_use=1"
        ):
            async with gate.admit(Priority.NORMAL, timeout_s=0.01):
                pass
    assert (gate.in_use, gate.waiting, gate.counters.timed_out) == (0, 0, 1)


async def test_closing_refuses_new_and_queued_requests_but_not_holders() -> None:
    gate = AdmissionGate(name="writer", capacity=1, max_waiting=5)
    async with gate.admit(Priority.NORMAL, timeout_s=1):
        queued = asyncio.create_task(_hold(gate, Priority.HIGH, [], "q", asyncio.Event()))
        await asyncio.sleep(0)
        gate.close()
        with pytest.raises(ShuttingDownError):
            await queued
        with pytest.raises(ShuttingDownError):
            async with gate.admit(Priority.CRITICAL, timeout_s=1):
                pass
    assert gate.in_use == 0


async def test_thousands_of_cancellations_at_random_points_leave_the_count_exact() -> None:
    gate = AdmissionGate(name="writer", capacity=5, max_waiting=10_000)
    rng = random.Random(7)
    active = 0
    peak = 0

    async def worker() -> None:
        nonlocal active, peak
        async with gate.admit(rng.choice(list(Priority)), timeout_s=rng.choice([0.001, 0.01, 5])):
            active += 1
            peak = max(peak, active)
            try:
                await asyncio.sleep(rng.choice([0, 0, 0.001]))
            finally:
                active -= 1

    for _ in range(5):
        tasks = [asyncio.create_task(worker()) for _ in range(1000)]
        for _ in range(rng.randint(0, 20)):
            await asyncio.sleep(0)
        for task in rng.sample(tasks, 600):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        assert (gate.in_use, gate.waiting) == (0, 0)
    assert peak <= 5
    async with gate.admit(Priority.NORMAL, timeout_s=0.1):
        assert gate.in_use == 1


class _HalvingLimit:
    """A limit that halves on a dropped call and grows by one on a fast one."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.samples: list[tuple[float, int, bool]] = []

    def on_sample(self, *, latency_s: float, in_flight: int, dropped: bool) -> None:
        self.samples.append((latency_s, in_flight, dropped))
        self.limit = max(1, self.limit // 2) if dropped else self.limit + 1


async def test_an_adaptive_limit_moves_the_capacity_but_never_above_the_pool() -> None:
    limit = _HalvingLimit(4)
    gate = AdmissionGate(name="writer", capacity=6, max_waiting=10, limit=limit)
    assert gate.capacity == 4

    await gate.acquire(Priority.NORMAL, timeout_s=1)
    gate.release((0.5, 1, True))
    assert gate.capacity == 2
    for _ in range(10):
        await gate.acquire(Priority.NORMAL, timeout_s=1)
        gate.release((0.001, 1, False))
    assert gate.capacity == 6
    assert limit.samples[0] == (0.5, 1, True)


async def test_a_waiter_that_times_out_teaches_the_limit_it_was_dropped() -> None:
    limit = _HalvingLimit(2)
    gate = AdmissionGate(name="writer", capacity=2, max_waiting=10, limit=limit)
    async with gate.admit(Priority.NORMAL, timeout_s=1), gate.admit(Priority.NORMAL, timeout_s=1):
        with pytest.raises(PoolTimeoutError):
            await gate.acquire(Priority.NORMAL, timeout_s=0.01)
    assert limit.samples == [(0.01, 2, True)]
    assert gate.capacity == 1


async def test_a_ceiling_of_zero_admits_nobody_until_it_rises_and_then_the_oldest_first() -> None:
    queued: list[int] = []
    gate = AdmissionGate(name="writer", capacity=5, max_waiting=10, on_queue=lambda: queued.append(1))
    gate.set_ceiling(0)
    order: list[str] = []
    hold = asyncio.Event()
    tasks = [asyncio.create_task(_hold(gate, Priority.NORMAL, order, n, hold)) for n in "abc"]
    await asyncio.sleep(0)
    assert (gate.waiting, gate.unserved, len(queued)) == (3, 3, 3)

    gate.set_ceiling(1)
    assert (gate.waiting, gate.unserved) == (3, 2)  # handed a slot, not resumed yet: no longer demand
    await asyncio.sleep(0)
    assert order == ["a"]
    gate.set_ceiling(2)
    await asyncio.sleep(0)
    assert order == ["a", "b"]
    hold.set()
    await asyncio.gather(*tasks)
    assert order == ["a", "b", "c"]
    assert (gate.in_use, gate.waiting, gate.unserved) == (0, 0, 0)


async def test_failing_the_waiters_gives_each_its_own_error_and_leaves_the_counts_exact() -> None:
    gate = AdmissionGate(name="writer", capacity=1, max_waiting=10)
    gate.set_ceiling(0)
    waiters = [asyncio.create_task(gate.acquire(Priority.NORMAL, timeout_s=10)) for _ in range(3)]
    await asyncio.sleep(0)

    assert gate.fail_waiting(lambda: ShuttingDownError("no connection can be opened")) == 3
    errors = await asyncio.gather(*waiters, return_exceptions=True)

    assert all(isinstance(e, ShuttingDownError) for e in errors)
    assert len({id(e) for e in errors}) == 3
    assert (gate.in_use, gate.waiting, gate.unserved) == (0, 0, 0)


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_while_requests_keep_timing_out_a_new_waiter_waits_only_the_overload_wait() -> None:
    clock = _Clock()
    gate = AdmissionGate(
        name="writer", capacity=1, max_waiting=10, clock=clock, overload_wait_s=0.01, overload_window_s=1.0
    )
    async with gate.admit(Priority.NORMAL, timeout_s=1):
        # Nobody has timed out yet: a waiter gets its whole (short, for the test) timeout.
        with pytest.raises(PoolTimeoutError, match=r"within 0\.030s \(") as plain:
            await gate.acquire(Priority.NORMAL, timeout_s=0.03)
        assert "timing out" not in str(plain.value)
        # Within the window of that timeout a waiter asking for 10 s waits 10 ms, and says why.
        loop = asyncio.get_running_loop()
        started = loop.time()
        cut = r"within 0\.010s, the wait allowed while requests keep timing out"
        with pytest.raises(PoolTimeoutError, match=cut):
            await gate.acquire(Priority.NORMAL, timeout_s=10)
        assert loop.time() - started < 1
        # That refusal keeps the window open; once it has passed, waits are whole again.
        clock.now += 0.5
        with pytest.raises(PoolTimeoutError, match=r"within 0\.010s"):
            await gate.acquire(Priority.NORMAL, timeout_s=10)
        clock.now += 1.5
        waiter = asyncio.create_task(gate.acquire(Priority.NORMAL, timeout_s=10))
        await asyncio.sleep(0.05)
        assert not waiter.done()
    assert await waiter == pytest.approx(0.0)  # the fake clock stood still while it waited
    gate.release()
    assert (gate.counters.timed_out, gate.counters.shed) == (3, 2)
    assert (gate.in_use, gate.waiting, gate.unserved) == (0, 0, 0)


async def test_a_burst_that_drains_keeps_its_whole_wait_under_the_overload_wait() -> None:
    gate = AdmissionGate(
        name="writer", capacity=1, max_waiting=10, overload_wait_s=0.001, overload_window_s=10
    )
    order: list[str] = []

    async def one(name: str) -> None:
        async with gate.admit(Priority.NORMAL, timeout_s=5):
            order.append(name)
            await asyncio.sleep(0.005)

    await asyncio.gather(*(one(str(i)) for i in range(5)))  # each waits well past 1 ms: nobody timed out
    assert order == ["0", "1", "2", "3", "4"]
    assert (gate.counters.timed_out, gate.counters.shed) == (0, 0)


def test_the_overload_wait_must_be_positive() -> None:
    with pytest.raises(ValueError, match="overload_wait_s > 0"):
        AdmissionGate(name="writer", capacity=1, max_waiting=1, overload_wait_s=0)
