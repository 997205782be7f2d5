"""``AdmissionGate``: a fair, bounded, priority-ordered queue in front of a connection pool."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from ports.concurrency_limit import ConcurrencyLimit
from ports.connection_provider import Priority
from ports.errors import PoolQueueFullError, PoolTimeoutError, ShuttingDownError


@dataclass(slots=True)
class GateCounters:
    """Cumulative counts of one gate, for the provider's statistics."""

    served: int = 0
    queued: int = 0
    timed_out: int = 0
    #: Of ``timed_out``: requests that waited only the overload wait (see ``AdmissionGate``).
    shed: int = 0
    rejected: int = 0
    wait_total_s: float = 0.0
    wait_max_s: float = 0.0


class AdmissionGate:
    """Admits at most ``capacity`` holders at once; the others wait in FIFO order per priority.

    A higher class (lower ``Priority`` value) is always served before a lower one; within a class,
    first come, first served. A released slot is handed straight to the next waiter, so a newcomer
    can never overtake the queue. ``max_waiting`` bounds the queue: beyond it a request is rejected
    at once. The counts stay exact however a request ends (success, error, timeout or
    cancellation at any await), which is what keeps the pool from drifting. One event loop.

    **Overload wait** (optional; the idea of Facebook's controlled delay for server queues, after
    CoDel): with ``overload_wait_s`` set, a request that queues within ``overload_window_s`` of a
    request's timing out in this queue waits at most ``overload_wait_s`` instead of its own
    timeout. A burst drains before anyone times out, so its waiters keep their whole timeout; in an
    overload someone keeps timing out, and a long FIFO wait there only makes every served request
    late, as the waiters that get a slot are those that almost gave up. The excess is refused
    quickly instead (``PoolTimeoutError``, a drop for the adaptive limit), which keeps the window
    open as long as the overload lasts, and the requests served have waited briefly.
    """

    def __init__(
        self,
        *,
        name: str,
        capacity: int,
        max_waiting: int,
        describe: Callable[[], str] | None = None,
        limit: ConcurrencyLimit | None = None,
        clock: Callable[[], float] = time.monotonic,
        on_queue: Callable[[], None] | None = None,
        overload_wait_s: float | None = None,
        overload_window_s: float = 1.0,
    ) -> None:
        if capacity < 1 or max_waiting < 0:
            raise ValueError(f"gate {name!r} needs capacity >= 1 and max_waiting >= 0")
        if (overload_wait_s is not None and not overload_wait_s > 0) or not overload_window_s > 0:
            raise ValueError(f"gate {name!r} needs overload_wait_s > 0 (or None) and overload_window_s > 0")
        self.name = name
        # ``capacity`` is the ceiling (the pool's size); an adaptive ``limit`` moves the effective
        # capacity below it as it learns from the latency samples given to ``release``.
        self._max_capacity = capacity
        self._limit = limit
        self._capacity = capacity if limit is None else min(capacity, max(1, limit.limit))
        self._max_waiting = max_waiting
        self._describe = describe or self.describe
        self._clock = clock
        self._queues: dict[Priority, deque[asyncio.Future[None]]] = {p: deque() for p in Priority}
        self._in_use = 0
        self._waiting = 0
        # Queued requests already answered (a slot or an error) whose task has not resumed yet.
        self._settled = 0
        self._closed = False
        self._overload_wait_s = overload_wait_s
        self._overload_window_s = overload_window_s
        # When a request last timed out in the queue (``-inf``: never).
        self._timed_out_at = float("-inf")
        # Told whenever a request joins the queue (off the fast path), e.g. to grow the pool.
        self.on_queue = on_queue
        self.counters = GateCounters()

    @property
    def in_use(self) -> int:
        return self._in_use

    @property
    def waiting(self) -> int:
        return self._waiting

    def waiting_by_priority(self) -> dict[Priority, int]:
        """How many wait in each class now (a waiter that just gave up may count until it is dropped)."""
        return {priority: len(queue) for priority, queue in self._queues.items()}

    @property
    def unserved(self) -> int:
        """Queued requests not yet given a slot (or an error): what more connections could serve."""
        return self._waiting - self._settled

    @property
    def adaptive(self) -> bool:
        """Whether an adaptive limit learns from the samples given to :meth:`release`."""
        return self._limit is not None

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def ceiling(self) -> int:
        """The most holders ever admitted at once, whatever the adaptive limit says."""
        return self._max_capacity

    def set_ceiling(self, ceiling: int) -> None:
        """Move the ceiling (a growing pool: how many connections it holds); 0 admits nobody.

        The caller must not lower it below :attr:`in_use`: the holders already admitted keep their slots.
        """
        self._max_capacity = max(0, ceiling)
        limit = self._limit
        self._capacity = self._max_capacity if limit is None else min(self._max_capacity, max(1, limit.limit))
        self._wake()

    def fail_waiting(self, error: Callable[[], BaseException]) -> int:
        """Fail every queued request with a fresh ``error()`` (nothing will serve them); returns how many."""
        failed = 0
        for queue in self._queues.values():
            while queue:
                future = queue.popleft()
                if not future.done():
                    future.set_exception(error())
                    self._settled += 1
                    failed += 1
        return failed

    def set_capacity(self, capacity: int) -> None:
        """Change how many may hold a slot (an adaptive limit moves it); excess holders drain naturally."""
        self._capacity = max(1, capacity)
        self._wake()

    def describe(self) -> str:
        return f"capacity={self._capacity} in_use={self._in_use} waiting={self._waiting}"

    @asynccontextmanager
    async def admit(self, priority: Priority, *, timeout_s: float) -> AsyncIterator[float]:
        """Hold one slot for the block; yields the seconds spent waiting for it."""
        waited = await self.acquire(priority, timeout_s=timeout_s)
        try:
            yield waited
        finally:
            self.release()

    async def acquire(self, priority: Priority, *, timeout_s: float) -> float:
        """Take one slot (waiting up to ``timeout_s``); returns the seconds waited.

        Every successful call must be paired with exactly one :meth:`release`; prefer :meth:`admit`
        unless a hot path cannot afford a generator-based context manager.
        """
        if self._closed:
            raise ShuttingDownError(f"pool {self.name!r} is shutting down; no new work is admitted")
        if self._in_use < self._capacity and not self._waiting:
            self._in_use += 1
            self.counters.served += 1
            return 0.0
        if self._waiting >= self._max_waiting and not self._evict_below(priority):
            self.counters.rejected += 1
            raise PoolQueueFullError(f"pool {self.name!r} wait queue is full ({self._describe()})")
        return await self._wait(priority, timeout_s)

    def _evict_below(self, priority: Priority) -> bool:
        """Make room in a full queue by refusing the newest waiter of the lowest class below ``priority``.

        A full queue must not lock out critical work behind bulk work that is merely waiting.
        """
        for lower in reversed(Priority):
            if lower <= priority:
                return False
            queue = self._queues[lower]
            while queue:
                future = queue.pop()
                if not future.done():
                    self.counters.rejected += 1
                    self._settled += 1
                    future.set_exception(
                        PoolQueueFullError(
                            f"pool {self.name!r} wait queue is full; a {priority.name} request took the place"
                        )
                    )
                    return True
        return False

    async def _wait(self, priority: Priority, timeout_s: float) -> float:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queues[priority].append(future)
        self._waiting += 1
        self.counters.queued += 1
        started = self._clock()
        overload_wait_s = self._overload_wait_s
        shed = False
        if (
            overload_wait_s is not None
            and overload_wait_s < timeout_s
            and started - self._timed_out_at < self._overload_window_s
        ):
            timeout_s, shed = overload_wait_s, True
        try:
            if self.on_queue is not None:
                self.on_queue()
            async with asyncio.timeout(timeout_s):
                await future
        except BaseException as error:
            self._abandon(future, priority)
            if isinstance(error, TimeoutError):
                self.counters.timed_out += 1
                self._timed_out_at = self._clock()
                self._learn(timeout_s, self._in_use, dropped=True)
                if shed:
                    self.counters.shed += 1
                    raise PoolTimeoutError(
                        f"no connection to {self.name!r} became free within {timeout_s:.3f}s, the wait "
                        f"allowed while requests keep timing out in its queue ({self._describe()})"
                    ) from None
                raise PoolTimeoutError(
                    f"no connection to {self.name!r} became free within {timeout_s:.3f}s ({self._describe()})"
                ) from None
            raise
        finally:
            self._waiting -= 1
            if future.done() and not future.cancelled():
                self._settled -= 1
        waited = self._clock() - started
        self.counters.served += 1
        self.counters.wait_total_s += waited
        self.counters.wait_max_s = max(self.counters.wait_max_s, waited)
        return waited

    def _abandon(self, future: asyncio.Future[None], priority: Priority) -> None:
        # The slot may have been handed over in the same instant the waiter gave up: pass it on.
        if future.done() and not future.cancelled() and future.exception() is None:
            self.release()
            return
        future.cancel()
        # Out of the queue now (a rare, slow path), so that a queue holds only live waiters and a
        # release with nobody waiting has nothing to look at.
        with contextlib.suppress(ValueError):
            self._queues[priority].remove(future)

    def release(self, sample: tuple[float, int, bool] | None = None) -> None:
        """Give back a slot taken by :meth:`acquire`; the next waiter, if any, gets it at once.

        ``sample`` is ``(latency_s, in_flight_at_admission, dropped)`` of the call that held the
        slot, for the adaptive limit (ignored without one).
        """
        self._in_use -= 1
        if sample is not None:
            self._learn(*sample)
        self._wake()

    def _learn(self, latency_s: float, in_flight: int, dropped: bool) -> None:
        if self._limit is None:
            return
        self._limit.on_sample(latency_s=latency_s, in_flight=max(in_flight, 1), dropped=dropped)
        self._capacity = min(self._max_capacity, max(1, self._limit.limit))

    def _wake(self) -> None:
        if not self._waiting:
            return
        while self._in_use < self._capacity:
            future = self._next_waiter()
            if future is None:
                return
            self._in_use += 1
            self._settled += 1
            future.set_result(None)

    def _next_waiter(self) -> asyncio.Future[None] | None:
        for queue in self._queues.values():  # Priority order: CRITICAL first
            while queue:
                future = queue.popleft()
                if not future.done():
                    return future
        return None

    def close(self) -> None:
        """Refuse new requests and every queued one with ``ShuttingDownError``; holders keep their slots."""
        self._closed = True
        for queue in self._queues.values():
            while queue:
                future = queue.popleft()
                if not future.done():
                    self._settled += 1
                    future.set_exception(
                        ShuttingDownError(f"pool {self.name!r} is shutting down; queued request refused")
                    )
